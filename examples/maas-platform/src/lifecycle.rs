//! The probes and the drain: `/health/live` (the process serves), `/health/ready` (not
//! draining, and the database, the broker and Redis — when configured — answer), and the
//! `Connection: close` every answer carries once the platform drains, so keep-alive clients
//! move to another replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header::CONNECTION};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maas_queue::Producer;
use maas_ratelimit::redis::RedisLimiter;
use serde_json::json;

use crate::store::Store;

/// How long each dependency may take to answer a readiness check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes look at.
#[derive(Clone)]
pub(crate) struct Health {
    /// Set when the shutdown starts: ready answers 503, answers close their connection.
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) store: Store,
    pub(crate) producer: Producer,
    /// A topic whose metadata the broker must answer for.
    pub(crate) topic: String,
    pub(crate) redis: Vec<RedisLimiter>,
}

/// `GET /health/live` (and `/health`): 200 while the process serves.
pub(crate) async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /health/ready`: 200 when this replica should get traffic; 503 with the reasons.
pub(crate) async fn ready(State(h): State<Health>) -> Response {
    if h.draining.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let mut failing = Vec::new();
    let database = tokio::time::timeout(CHECK_TIMEOUT, h.store.ping()).await;
    if !matches!(database, Ok(Ok(()))) {
        failing.push("database");
    }
    let broker = tokio::time::timeout(CHECK_TIMEOUT, h.producer.partitions(&h.topic)).await;
    if !matches!(broker, Ok(Ok(_))) {
        failing.push("broker");
    }
    if h.redis.iter().any(RedisLimiter::is_degraded) {
        failing.push("redis");
    }
    if failing.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "failing": failing })),
        )
            .into_response()
    }
}

/// Adds `Connection: close` to every answer once the platform drains.
pub(crate) async fn close_when_draining(
    State(draining): State<Arc<AtomicBool>>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    if draining.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
