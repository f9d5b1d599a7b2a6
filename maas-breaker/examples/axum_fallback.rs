//! Degradation in an axum service: a breaker in front of a "large model" upstream, and a
//! fallback to a "small model" while the breaker is open.
//!
//! ```sh
//! cargo run -p maas-breaker --features http --example axum_fallback
//! # in another shell:
//! curl -s -XPOST localhost:3001/v1/completions -d 'hello'      # large model answers
//! curl -s -XPOST localhost:3001/admin/upstream/fail             # the upstream starts failing
//! for i in 1 2 3 4; do curl -s -XPOST localhost:3001/v1/completions -d 'hello'; echo; done
//! #   three errors, then the breaker opens and the small model answers
//! curl -s localhost:3001/admin/breaker                          # {"state":"open"}
//! curl -s -XPOST localhost:3001/admin/upstream/heal             # the upstream recovers
//! sleep 5; curl -s -XPOST localhost:3001/v1/completions -d 'hi' # a probe closes the breaker
//! ```
//!
//! Listens on 127.0.0.1:3001 (`PORT` to change it); Ctrl-C stops it cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use maas_breaker::{BreakerError, CircuitBreaker, CircuitBreakerLayer, FallbackLayer, fallback_fn};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// The upstream's failure, as the platform sees it.
#[derive(Debug)]
struct ModelDown;

impl std::fmt::Display for ModelDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the large model is down")
    }
}

impl std::error::Error for ModelDown {}

type Model = BoxCloneSyncService<String, String, BreakerError<ModelDown>>;

#[derive(Clone)]
struct App {
    model: Model,
    breaker: CircuitBreaker,
    upstream_failing: Arc<AtomicBool>,
}

async fn completions(State(app): State<App>, prompt: String) -> (StatusCode, String) {
    match app.model.oneshot(prompt).await {
        Ok(answer) => (StatusCode::OK, answer),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream_failing = Arc::new(AtomicBool::new(false));
    let failing = upstream_failing.clone();
    // Stands in for an HTTP client calling a model server.
    let large_model = service_fn(move |prompt: String| {
        let failing = failing.clone();
        async move {
            if failing.load(Ordering::SeqCst) {
                Err(ModelDown)
            } else {
                Ok(format!("large model says: {prompt}"))
            }
        }
    });

    let breaker = CircuitBreaker::builder()
        .name("large-model")
        .consecutive_failures(3)
        .failure_rate(50.0)
        .minimum_calls(10)
        .open_wait(Duration::from_secs(5))
        .half_open(1, 1)
        .on_event(|e| println!("breaker event: {e:?}"))
        .build()?;

    let model = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            |prompt: &String| prompt.clone(),
            fallback_fn(|prompt: String, _: BreakerError<ModelDown>| async move {
                Ok(format!("small model says: {prompt}"))
            }),
        ))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(large_model);

    let app = App {
        model: BoxCloneSyncService::new(model),
        breaker,
        upstream_failing,
    };
    let router = Router::new()
        .route("/v1/completions", post(completions))
        .route(
            "/admin/breaker",
            get(|State(app): State<App>| async move {
                format!("{{\"state\":\"{}\"}}", app.breaker.state())
            }),
        )
        .route(
            "/admin/upstream/fail",
            post(|State(app): State<App>| async move {
                app.upstream_failing.store(true, Ordering::SeqCst)
            }),
        )
        .route(
            "/admin/upstream/heal",
            post(|State(app): State<App>| async move {
                app.upstream_failing.store(false, Ordering::SeqCst)
            }),
        )
        .with_state(app);

    let port = std::env::var("PORT").unwrap_or_else(|_| "3001".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
