//! Prometheus metrics: allowed / rejected counters per limiter name and the tracked-keys
//! gauge, read back from the registry the caller passed.

use std::convert::Infallible;

use maas_ratelimit::metrics::RateLimitMetrics;
use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer};
use prometheus::{Encoder, Registry, TextEncoder};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn scrape(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn counters_and_gauge_show_in_the_registry() {
    let registry = Registry::new();
    let metrics = RateLimitMetrics::register(&registry).unwrap();
    let limiter = KeyedLimiter::token_bucket(Quota::per_minute(2))
        .max_keys(100)
        .metrics(&metrics, "api")
        .build::<u64>()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .key(|n: &u64| n % 3)
                .metrics(&metrics, "api")
                .build(),
        )
        .service(service_fn(|n: u64| async move { Ok::<_, Infallible>(n) }));
    for n in 0..9u64 {
        let _ = svc.ready().await.unwrap().call(n).await;
    }
    let text = scrape(&registry);
    assert!(
        text.contains(r#"maas_ratelimit_allowed_total{limiter="api"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"maas_ratelimit_rejected_total{limiter="api"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"maas_ratelimit_tracked_keys{limiter="api"} 3"#),
        "{text}"
    );
    assert!(text.contains("# HELP maas_ratelimit_allowed_total"));
    assert!(text.contains("# TYPE maas_ratelimit_tracked_keys gauge"));

    // Registering twice in one registry is an error, not a panic.
    assert!(RateLimitMetrics::register(&registry).is_err());
}
