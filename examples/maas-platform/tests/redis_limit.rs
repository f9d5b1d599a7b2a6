//! `MAAS_REDIS_URL` makes the per-tenant limit one limit for all replicas: two platform
//! instances (embedded storage each, Redis at 127.0.0.1:6379 shared) let a tenant through
//! `MAAS_RATE_PER_MINUTE` requests in all, not per instance; without it, each instance
//! limits on its own.

use std::time::Duration;

use maas_platform::{Config, Platform};

fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

async fn instance(name: &str, redis: Option<String>) -> Platform {
    let dir = std::env::temp_dir().join(format!(
        "maas-redis-limit-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    Platform::start(
        Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir,
            instance: format!("{name}-{}", std::process::id()),
            rate_per_minute: 5,
            redis_url: redis,
            builders: 1,
            build_time: Duration::from_millis(10),
            ..Config::default()
        },
        prometheus::Registry::new(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the platform did not start ({e}); with MAAS_REDIS_URL it needs Redis on \
             127.0.0.1:6379: start it with `scripts/dev-services`"
        )
    })
}

/// Sends 10 requests for `tenant`, alternating between the instances; returns how many
/// were not rate limited.
async fn passed(instances: &[&Platform], tenant: &str) -> usize {
    let http = reqwest::Client::new();
    let mut passed = 0;
    for i in 0..10 {
        let addr = instances[i % instances.len()].addr();
        let r = http
            .get(format!("http://{addr}/v1/tenants/{tenant}/quota"))
            .header("x-tenant", tenant)
            .send()
            .await
            .unwrap();
        if r.status() != 429 {
            passed += 1;
        } else {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    passed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_makes_the_tenant_limit_global() {
    let tenant = format!("tenant-{}-{}", std::process::id(), fastrand::u32(..));
    let (a, b) = (
        instance("a", Some(redis_url())).await,
        instance("b", Some(redis_url())).await,
    );
    assert_eq!(
        passed(&[&a, &b], &tenant).await,
        5,
        "two replicas on Redis share one limit of 5"
    );
    a.shutdown().await;
    b.shutdown().await;

    let (c, d) = (instance("c", None).await, instance("d", None).await);
    assert_eq!(
        passed(&[&c, &d], &tenant).await,
        10,
        "without Redis each replica has its own limit of 5"
    );
    c.shutdown().await;
    d.shutdown().await;
}
