//! A `RedisLimiter` in the tower layer and the HTTP adapter, unchanged: three axum servers
//! (replicas), each with its own limiter on the same Redis prefix, share one limit per API
//! key and answer 429 with the usual headers; a hot key is answered from its lease; the wait
//! mode waits for the Redis limiter's retry time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter};
use maas_ratelimit::{Quota, RateLimitLayer};
use reqwest::StatusCode;
use tower::{Service, ServiceBuilder, ServiceExt};

mod support;
use support::{prefix, redis_url, unreachable};

async fn limiter(algorithm: RedisAlgorithm, prefix: &str) -> RedisLimiter {
    let url = redis_url();
    RedisLimiter::builder(url.as_str(), algorithm, OutagePolicy::FailClosed)
        .prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|e| unreachable(&url, e))
}

fn api_key(req: &Request) -> String {
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

async fn replica(limiter: RedisLimiter) -> SocketAddr {
    let app = Router::new()
        .route("/v1/models", get(|| async { "[]" }))
        .layer(RateLimitLayer::builder(limiter).key(api_key).build_http());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_http_replicas_share_one_limit_per_key_with_429s() {
    let p = prefix("http");
    let quota = Quota::per_minute(5);
    let mut addrs = Vec::new();
    for _ in 0..3 {
        addrs.push(replica(limiter(RedisAlgorithm::FixedWindow(quota), &p).await).await);
    }
    let client = reqwest::Client::new();
    let mut passed = 0;
    let mut limited = None;
    for i in 0..20 {
        let r = client
            .get(format!("http://{}/v1/models", addrs[i % 3]))
            .header("x-api-key", "acme")
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => limited = Some(r),
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(
        passed, 5,
        "3 replicas let {passed} of 20 through a limit of 5"
    );
    let r = limited.expect("some requests were limited");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.headers()["ratelimit-limit"], "5");
    // Another key has its own limit.
    let other = client
        .get(format!("http://{}/v1/models", addrs[0]))
        .header("x-api-key", "globex")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_answers_a_hot_key_from_the_lease_and_waits_for_redis_retry_times() {
    // A hot key: most calls answered at once from the lease.
    let hot = limiter(
        RedisAlgorithm::TokenBucket(Quota::per_second(100_000)),
        &prefix("hot"),
    )
    .await;
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(hot.clone())
                .key(|r: &String| r.clone())
                .build(),
        )
        .service_fn(|_: String| async { Ok::<_, std::convert::Infallible>(()) });
    for _ in 0..5_000 {
        svc.ready().await.unwrap().call("k".into()).await.unwrap();
    }
    assert_eq!(hot.leased_keys(), 1, "the hot key has a lease");

    // Wait mode: 2 per second, bursts of 1; the second request waits ~500 ms for Redis.
    let slow = limiter(
        RedisAlgorithm::TokenBucket(Quota::per_second(2).with_burst(1)),
        &prefix("wait"),
    )
    .await;
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(slow)
                .key(|r: &String| r.clone())
                .wait_up_to(Duration::from_secs(2))
                .build(),
        )
        .service_fn(|_: String| async { Ok::<_, std::convert::Infallible>(()) });
    svc.ready().await.unwrap().call("k".into()).await.unwrap();
    let start = Instant::now();
    svc.ready().await.unwrap().call("k".into()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "waited {waited:?}"
    );
    // Past the maximum wait: rejected at once.
    let mut strict = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(
                limiter(
                    RedisAlgorithm::FixedWindow(Quota::per_hour(1)),
                    &prefix("strict"),
                )
                .await,
            )
            .key(|r: &String| r.clone())
            .wait_up_to(Duration::from_millis(100))
            .build(),
        )
        .service_fn(|_: String| async { Ok::<_, std::convert::Infallible>(()) });
    strict
        .ready()
        .await
        .unwrap()
        .call("k".into())
        .await
        .unwrap();
    let err = strict
        .ready()
        .await
        .unwrap()
        .call("k".into())
        .await
        .unwrap_err();
    assert!(err.as_limited().is_some(), "{err:?}");
}
