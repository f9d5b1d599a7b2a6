//! An axum server with a rate limit per API key.
//!
//! ```sh
//! cargo run -p maas-ratelimit --features http --example axum_per_key
//! # then, in another shell (the fourth request within a minute gets 429):
//! for i in 1 2 3 4; do curl -si -H 'x-api-key: alice' localhost:3000/v1/models | head -6; done
//! curl -si -H 'x-api-key: enterprise' localhost:3000/v1/models   # 600 per minute
//! ```
//!
//! Listens on 127.0.0.1:3000 (set `PORT` to change it) and stops cleanly on Ctrl-C.

use axum::Router;
use axum::extract::Request;
use axum::routing::{get, post};
use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer, WhenFull};

/// The key a request is limited under: its API key, or one shared key for anonymous
/// callers (who therefore share one quota).
fn api_key(request: &Request) -> String {
    request
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned()
}

/// Inference calls are charged by the tokens they ask for (`x-max-tokens`, default 1).
fn tokens(request: &Request) -> u64 {
    request
        .headers()
        .get("x-max-tokens")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 3 requests per minute per key; at most 10,000 keys in memory. When all of them are
    // active, unknown keys share a small overflow quota instead of evicting anyone.
    let requests = KeyedLimiter::token_bucket(Quota::per_minute(3))
        .max_keys(10_000)
        .when_full(WhenFull::Overflow(Quota::per_minute(30)))
        .build::<String>()?;
    requests.set_key_quota("enterprise".to_owned(), Quota::per_minute(600))?;

    // Model tokens: 1,000 per minute per key, weighted by each call's x-max-tokens.
    let model_tokens = KeyedLimiter::sliding_window(Quota::per_minute(1_000)).build::<String>()?;

    let inference = Router::new()
        .route("/v1/completions", post(|| async { "{\"text\":\"...\"}" }))
        .layer(
            RateLimitLayer::builder(model_tokens)
                .key(api_key)
                .cost(tokens)
                .build_http(),
        );
    let app = Router::new()
        .route("/v1/models", get(|| async { "[\"llama-3-8b\"]" }))
        .merge(inference)
        .layer(RateLimitLayer::builder(requests).key(api_key).build_http());

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
