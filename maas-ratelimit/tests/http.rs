//! End to end over real HTTP: an axum server on 127.0.0.1 behind the HTTP rate-limit layer,
//! driven by a real client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer, TokenBucket};
use reqwest::StatusCode;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

fn api_key(req: &Request) -> String {
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

async fn get_as(client: &reqwest::Client, url: &str, key: &str) -> reqwest::Response {
    client
        .get(url)
        .header("x-api-key", key)
        .send()
        .await
        .expect("request to the test server")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let limiter = KeyedLimiter::token_bucket(Quota::per_minute(3))
        .build::<String>()
        .unwrap();
    let app = Router::new()
        .route("/v1/models", get(|| async { "[]" }))
        .layer(RateLimitLayer::builder(limiter).key(api_key).build_http());
    let addr = serve(app).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/models");

    for remaining in ["2", "1", "0"] {
        let r = get_as(&client, &url, "alice").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-limit"), "3");
        assert_eq!(header(&r, "ratelimit-remaining"), remaining);
        assert!(header(&r, "ratelimit-reset").parse::<u64>().unwrap() <= 60);
        assert_eq!(r.text().await.unwrap(), "[]");
    }

    let r = get_as(&client, &url, "alice").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&r, "retry-after"), "20", "one token per 20 s");
    assert_eq!(header(&r, "ratelimit-limit"), "3");
    assert_eq!(header(&r, "ratelimit-remaining"), "0");
    assert_eq!(header(&r, "ratelimit-reset"), "60");
    assert_eq!(header(&r, "content-type"), "application/json");
    let body = r.text().await.unwrap();
    assert!(body.starts_with(r#"{"error":"rate_limited","#), "{body}");
    assert!(
        body.contains(r#""limit":3"#) && body.contains(r#""remaining":0"#),
        "{body}"
    );

    // Another key is untouched.
    let r = get_as(&client, &url, "bob").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "ratelimit-remaining"), "2");
}

#[tokio::test]
async fn one_limit_across_connections_and_axum_clones() {
    // axum clones the service stack for every connection and request; the limit must hold
    // across all of them (the trap tower's own RateLimit falls into).
    let limiter = TokenBucket::builder(Quota::per_minute(10)).build().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(limiter).into_http());
    let addr = serve(app).await;
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..25 {
        // A new client each time: a new connection each time.
        let r = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (10, 15));
}

#[tokio::test]
async fn wait_mode_delays_instead_of_refusing() {
    let limiter = TokenBucket::builder(Quota::per_second(10).with_burst(1))
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        RateLimitLayer::builder(limiter)
            .wait_up_to(Duration::from_secs(1))
            .build_http(),
    );
    let addr = serve(app).await;
    let client = reqwest::Client::new();
    let start = Instant::now();
    let requests = (0..5).map(|_| client.get(format!("http://{addr}/")).send());
    for r in futures_join(requests).await {
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("ratelimit-remaining"));
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(380),
        "not paced: {elapsed:?}"
    );
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
