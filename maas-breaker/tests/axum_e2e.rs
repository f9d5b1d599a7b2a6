//! End to end over real HTTP on 127.0.0.1: a failing upstream trips the breaker, the
//! fallback answers without touching the upstream, a route without fallback answers 503
//! with Retry-After, and once the upstream recovers a probe closes the breaker again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use maas_breaker::{
    BreakerError, BreakerState, CircuitBreaker, CircuitBreakerLayer, FallbackLayer, fallback_fn,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[derive(Clone, Default)]
struct Upstream {
    failing: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

async fn upstream_generate(State(u): State<Upstream>, prompt: String) -> impl IntoResponse {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if u.failing.load(Ordering::SeqCst) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "model crashed".to_owned(),
        )
    } else {
        (StatusCode::OK, format!("large model: {prompt}"))
    }
}

/// Why a call to the upstream failed.
#[derive(Debug)]
enum UpstreamError {
    Status(u16),
    Transport(String),
}

impl std::error::Error for UpstreamError {}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Status(s) => write!(f, "upstream answered {s}"),
            UpstreamError::Transport(e) => write!(f, "upstream unreachable: {e}"),
        }
    }
}

type Client = BoxCloneSyncService<String, String, BreakerError<UpstreamError>>;

#[derive(Clone)]
struct Platform {
    client: Client,
}

async fn completions(State(p): State<Platform>, prompt: String) -> (StatusCode, String) {
    match p.client.oneshot(prompt).await {
        Ok(answer) => (StatusCode::OK, answer),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[tokio::test]
async fn failing_upstream_trips_fallback_answers_recovery_closes() {
    let upstream = Upstream::default();
    let upstream_addr = serve(
        Router::new()
            .route("/generate", post(upstream_generate))
            .with_state(upstream.clone()),
    )
    .await;

    let breaker = CircuitBreaker::builder()
        .name("large-model")
        .consecutive_failures(3)
        .open_wait(Duration::from_millis(300))
        .half_open(1, 1)
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://{upstream_addr}/generate");
    let call_upstream = service_fn(move |prompt: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(&url)
                .body(prompt)
                .send()
                .await
                .map_err(|e| UpstreamError::Transport(e.to_string()))?;
            if r.status().is_success() {
                r.text()
                    .await
                    .map_err(|e| UpstreamError::Transport(e.to_string()))
            } else {
                Err(UpstreamError::Status(r.status().as_u16()))
            }
        }
    });
    let client = ServiceBuilder::new()
        .layer(FallbackLayer::new(
            |prompt: &String| prompt.clone(),
            fallback_fn(
                |prompt: String, _: BreakerError<UpstreamError>| async move {
                    Ok(format!("small model: {prompt}"))
                },
            ),
        ))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(call_upstream);
    let platform = serve(
        Router::new()
            .route("/v1/completions", post(completions))
            .with_state(Platform {
                client: BoxCloneSyncService::new(client),
            }),
    )
    .await;

    let http = reqwest::Client::new();
    let ask = |prompt: &'static str| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{platform}/v1/completions"))
                .body(prompt)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };

    // Healthy.
    assert_eq!(ask("hi").await, (200, "large model: hi".to_owned()));

    // The upstream fails: three failures reach the caller, then the breaker opens.
    upstream.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(ask("hi").await.0, 502);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let hits = upstream.hits.load(Ordering::SeqCst);

    // Open: the fallback answers and the upstream is left alone.
    for _ in 0..5 {
        assert_eq!(ask("hello").await, (200, "small model: hello".to_owned()));
    }
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        hits,
        "the open breaker called the upstream"
    );

    // The upstream recovers; after the open wait one probe closes the breaker.
    upstream.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(ask("back?").await, (200, "large model: back?".to_owned()));
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(ask("again").await, (200, "large model: again".to_owned()));
}

#[tokio::test]
async fn without_fallback_an_open_route_answers_503_with_retry_after() {
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let breaker = CircuitBreaker::builder()
        .name("models-api")
        .consecutive_failures(2)
        .open_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/v1/models",
            post(move || {
                let failing = f.clone();
                async move {
                    if failing.load(Ordering::SeqCst) {
                        (StatusCode::SERVICE_UNAVAILABLE, "registry down")
                    } else {
                        (StatusCode::OK, "[]")
                    }
                }
            }),
        )
        .layer(CircuitBreakerLayer::new(breaker.clone()).into_http());
    let addr = serve(app).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .post(format!("http://{addr}/v1/models"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(
            r.text().await.unwrap(),
            "registry down",
            "the route's own 503"
        );
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let r = http
        .post(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body = r.text().await.unwrap();
    assert!(body.starts_with(r#"{"error":"circuit_open","#), "{body}");
    assert!(body.contains(r#""breaker":"models-api""#), "{body}");
    failing.store(false, Ordering::SeqCst);
}
