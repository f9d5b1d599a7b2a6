//! What every request of both listeners goes through before its route: a time limit
//! (`MAAS_REQUEST_TIMEOUT_SECS`, a JSON 504 past it) and a panic guard (a JSON 500; the
//! panic itself is logged as one JSON error event with its backtrace and trace id by the
//! hook `maas-telemetry` installs).
//!
//! The limit runs until the response's head is ready: a streamed body is not cut by it. A
//! model upload (`POST /v1/models`) is exempt — a large file takes as long as it takes — and
//! limits instead each pause in its body to the same time (408).

use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::ApiError;

/// `router` with the time limit inside the panic guard.
pub(crate) fn harden(router: Router, limit: Duration) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(limit, time_limit))
        .layer(CatchPanicLayer::custom(panicked))
}

async fn time_limit(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST && req.uri().path() == crate::api::UPLOAD_PATH {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis() as u64, "request timed out");
            ApiError::Timeout(format!(
                "the request did not finish within {} ms",
                limit.as_millis()
            ))
            .into_response()
        }
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal("the request failed on an internal error, which is logged".into())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn ask(router: &Router, path: &str) -> (u16, serde_json::Value) {
        let r = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_panic_is_a_json_500_and_a_slow_handler_a_json_504() {
        let router = harden(
            Router::new()
                .route(
                    "/panic",
                    get(|| async {
                        let empty: Vec<u8> = Vec::new();
                        if empty.is_empty() {
                            panic!("a handler bug");
                        }
                        "unreachable"
                    }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route(
                    "/fast",
                    get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
                ),
            Duration::from_millis(100),
        );
        let (status, body) = ask(&router, "/panic").await;
        assert_eq!((status, body["error"].as_str()), (500, Some("internal")));
        let (status, body) = ask(&router, "/slow").await;
        assert_eq!((status, body["error"].as_str()), (504, Some("timeout")));
        let (status, body) = ask(&router, "/fast").await;
        assert_eq!((status, body["ok"].as_bool()), (200, Some(true)));
    }
}
