//! `MAAS_REDIS_URL` makes the per-key request limit one limit for all replicas: two platform
//! instances (sharing PostgreSQL at 127.0.0.1:5432, where the API keys live, and Redis at
//! 127.0.0.1:6379) let an API key through `MAAS_RATE_PER_MINUTE` requests in all, not per
//! instance; without Redis, each instance limits on its own. The chat token limit is shared
//! the same way, its reconciliation included.

mod support;

use std::time::Duration;

use maas_platform::{Config, Platform};

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

async fn instance(name: &str, redis: Option<String>) -> Platform {
    Platform::start(
        Config {
            database_url: Some(DATABASE.to_owned()),
            instance: format!("{name}-{}", std::process::id()),
            rate_per_minute: 5,
            tokens_per_minute: 100,
            redis_url: redis,
            builders: 1,
            build_time: Duration::from_millis(10),
            ..support::config(name)
        },
        prometheus::Registry::new(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the platform did not start ({e:?}); it needs PostgreSQL on 127.0.0.1:5432 and, \
             with MAAS_REDIS_URL, Redis on 127.0.0.1:6379: start them with \
             `scripts/dev-services up`"
        )
    })
}

/// Sends 10 requests of a new API key of `tenant`, alternating between the instances;
/// returns how many were not rate limited.
async fn passed(instances: &[&Platform], tenant: &str) -> usize {
    let http = reqwest::Client::new();
    let admin = format!("http://{}", instances[0].admin_addr());
    let key = support::create_key(&http, &admin, tenant).await;
    let mut passed = 0;
    for i in 0..10 {
        let addr = instances[i % instances.len()].addr();
        let r = http
            .get(format!("http://{addr}/v1/tenants/{tenant}/quota"))
            .bearer_auth(&key)
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

/// One chat on the fallback model ("ok": a 5-token prompt; the answer uses 10 tokens unless
/// `max_tokens` is smaller): its status and `x-ratelimit-remaining-tokens`.
async fn chat(instance: &Platform, key: &str, max_tokens: u64) -> (u16, u64) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", instance.addr()))
        .bearer_auth(key)
        .json(
            &serde_json::json!({ "model": "maas-fallback", "max_tokens": max_tokens,
                                   "messages": [{ "role": "user", "content": "ok" }] }),
        )
        .send()
        .await
        .unwrap();
    let left = r.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    (status, left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_url_makes_the_token_limit_global_reconciliation_included() {
    let tenant = format!("tokens-{}-{}", std::process::id(), fastrand::u32(..));
    let (a, b) = (
        instance("ta", Some(redis_url())).await,
        instance("tb", Some(redis_url())).await,
    );
    let http = reqwest::Client::new();
    let key = support::create_key(&http, &format!("http://{}", a.admin_addr()), &tenant).await;
    // Estimate 45 of 100 on A; its answer used 15, so 30 go back to Redis.
    assert_eq!(chat(&a, &key, 40).await, (200, 55));
    // B sees the shared count, the refund included (it lands just after A's answer). Each
    // probe of max_tokens 1 uses its whole estimate of 6; after k probes, 85 − 6k are left
    // once the refund is in (one more if the bucket refilled a token meanwhile).
    // (At most 3 probes: the request limit here is 5 a minute.)
    for k in 1..=3 {
        let (status, left) = chat(&b, &key, 1).await;
        assert_eq!(status, 200);
        let want = 85 - 6 * k;
        if (want..=want + 1).contains(&left) {
            break;
        }
        assert!(
            k < 3 && left + 30 >= want,
            "x-ratelimit-remaining-tokens {left} after {k} probes: the refund did not land"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the shared limit on either replica: 429.
    assert_eq!(chat(&a, &key, 90).await.0, 429);
    a.shutdown().await;
    b.shutdown().await;
}
