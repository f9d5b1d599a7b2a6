//! The HTTP API. Every error is JSON: `{"error": "<code>", "message": "..."}` with the
//! matching status.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use maas_saga::{Engine, Saga, Status, Step};
use serde::Deserialize;
use serde_json::json;

use crate::inference::Inference;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Models and quota.
    pub store: Store,
    /// The saga engine running "create model + deduct quota".
    pub engine: Arc<Engine>,
    /// Produces build tasks.
    /// Wakes the outbox relay after a saga enqueued a build task.
    pub(crate) outbox: crate::outbox::Wake,
    /// The sagas billing refused: a 402, where any other rollback is a 503.
    pub(crate) refusals: crate::store::Refusals,
    /// Inference behind the breaker.
    pub inference: Inference,
    /// Credits a build costs.
    pub build_cost: i64,
    /// Credits a new tenant starts with.
    pub tenant_quota: i64,
    /// The topic of build tasks.
    pub topic: String,
    /// Where alerts are relayed.
    pub robots: crate::alerts::Robots,
    /// The client that calls the robots.
    pub http: reqwest::Client,
}

/// The tenant a request acts for: the `x-tenant` header, else `default`.
pub fn tenant(headers: &HeaderMap) -> String {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("default")
        .to_owned()
}

/// The rate limiter's key: the tenant.
pub fn tenant_of(req: &Request) -> String {
    tenant(req.headers())
}

/// The `/v1` routes (rate limited by the caller) and the operator routes.
pub fn routes(state: AppState) -> (Router, Router) {
    let v1 = Router::new()
        .route("/models", post(upload))
        .route("/models/{id}", get(model))
        .route("/models/{id}/infer", post(infer))
        .route("/tenants/{tenant}/quota", get(quota))
        .with_state(state.clone());
    let ops = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/admin/backend", put(set_backend))
        .route("/admin/alerts", post(relay_alerts))
        .with_state(state);
    (v1, ops)
}

/// An API failure.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 404: no such model.
    NotFound(String),
    /// 409: the model exists but cannot do that yet.
    Conflict(String),
    /// 402: the tenant's quota is spent; the saga was compensated.
    QuotaExhausted { saga: String, message: String },
    /// 503: a dependency failed.
    Unavailable(String),
    /// 502: a robot refused an alert (Alertmanager retries).
    DeliveryFailed(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                json!({ "error": "bad_request", "message": m }),
            ),
            ApiError::NotFound(m) => (
                StatusCode::NOT_FOUND,
                json!({ "error": "not_found", "message": m }),
            ),
            ApiError::Conflict(m) => (
                StatusCode::CONFLICT,
                json!({ "error": "conflict", "message": m }),
            ),
            ApiError::QuotaExhausted { saga, message } => (
                StatusCode::PAYMENT_REQUIRED,
                json!({ "error": "quota_exhausted", "message": message, "saga": saga,
                        "saga_status": "compensated" }),
            ),
            ApiError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "unavailable", "message": m }),
            ),
            ApiError::DeliveryFailed(m) => (
                StatusCode::BAD_GATEWAY,
                json!({ "error": "delivery_failed", "message": m }),
            ),
        };
        (status, Json(body)).into_response()
    }
}

/// A dependency failed while doing `what`: logged, and answered with 503.
fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::Unavailable(format!("{what}: {e}"))
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Deserialize)]
struct Upload {
    name: String,
}

/// `POST /v1/models {"name": ...}`: registers the model and charges the tenant in one saga,
/// then queues its build. 202 with the model; 402 when the quota is spent.
async fn upload(
    State(s): State<AppState>,
    headers: HeaderMap,
    json: Result<Json<Upload>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let upload = body(json)?;
    let name = upload.name.trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::BadRequest(
            "`name` must be 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let tenant = tenant(&headers);
    let id = format!("m-{:016x}", fastrand::u64(..));
    let traceparent = maas_telemetry::propagation::current_traceparent();
    let payload = json!({ "model": id, "name": name, "tenant": tenant, "cost": s.build_cost,
                          "topic": s.topic, "traceparent": traceparent });
    // Paid first; registered last, with the build task in the same transaction: once the
    // model exists its build is on its way, and nothing after it can undo it.
    let mut saga = Saga::builder("create-model")
        .step(Step::new("deduct-quota", "billing").payload(payload.clone()))
        .step(Step::new("register-model", "models").payload(payload));
    // The saga (and its recovery after a crash) continues the request's trace.
    if let Some(tp) = maas_telemetry::propagation::current_traceparent() {
        saga = saga.traceparent(tp);
    }
    let saga = saga
        .build()
        .map_err(|e| unavailable("building the saga", e))?;
    let outcome = s
        .engine
        .run(saga)
        .await
        .map_err(|e| unavailable("running the create-model saga", e))?;
    if outcome.status != Status::Committed {
        // Only billing refusing is a quota answer; a step whose participant did not answer
        // rolled the saga back for a reason the tenant did not cause.
        if !s.refusals.take(&outcome.id.to_string()) {
            return Err(unavailable(
                "the create-model saga was rolled back",
                format!("a participant did not answer (saga {})", outcome.id),
            ));
        }
        return Err(ApiError::QuotaExhausted {
            saga: outcome.id.to_string(),
            message: format!(
                "tenant {tenant} cannot pay {} credits for a build; nothing was registered",
                s.build_cost
            ),
        });
    }
    s.outbox.wake().await;
    tracing::info!(model = %id, %name, %tenant, saga = %outcome.id, "model registered; build queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "id": id, "name": name, "tenant": tenant, "status": "queued",
                     "saga": outcome.id.to_string() }),
        ),
    ))
}

/// `GET /v1/models/{id}`.
async fn model(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<crate::store::Model>, ApiError> {
    s.store
        .model(&id)
        .await
        .map_err(|e| unavailable("reading the model", e))?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no model {id}")))
}

/// `GET /v1/tenants/{tenant}/quota`.
async fn quota(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let left = s
        .store
        .quota(&tenant)
        .await
        .map_err(|e| unavailable("reading the quota", e))?
        .unwrap_or(s.tenant_quota);
    Ok(Json(
        json!({ "tenant": tenant, "remaining": left, "build_cost": s.build_cost }),
    ))
}

#[derive(Deserialize)]
struct Prompt {
    prompt: String,
}

/// `POST /v1/models/{id}/infer {"prompt": ...}`: the model's answer, or the fallback's.
async fn infer(
    State(s): State<AppState>,
    Path(id): Path<String>,
    json: Result<Json<Prompt>, JsonRejection>,
) -> Result<Json<crate::inference::Answer>, ApiError> {
    let prompt = body(json)?.prompt;
    let model = s
        .store
        .model(&id)
        .await
        .map_err(|e| unavailable("reading the model", e))?
        .ok_or_else(|| ApiError::NotFound(format!("no model {id}")))?;
    if model.status != "ready" {
        return Err(ApiError::Conflict(format!(
            "model {id} is {}, not ready",
            model.status
        )));
    }
    Ok(Json(s.inference.infer(&model.id, &prompt).await))
}

#[derive(Deserialize)]
struct Backend {
    healthy: bool,
}

/// `PUT /admin/backend {"healthy": bool}`: marks the simulated model backend up or down.
async fn set_backend(
    State(s): State<AppState>,
    json: Result<Json<Backend>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let healthy = body(json)?.healthy;
    s.inference.set_healthy(healthy);
    tracing::warn!(healthy, "model backend marked by an operator");
    Ok(Json(
        json!({ "healthy": healthy, "breaker": s.inference.breaker_state() }),
    ))
}

/// `POST /admin/alerts`: Alertmanager's webhook; relays the notification to the robots.
async fn relay_alerts(
    State(s): State<AppState>,
    json: Result<Json<crate::alerts::Notification>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = body(json)?;
    if !s.robots.any() {
        tracing::warn!(title = %n.title(), "alert received but no robot is configured");
        return Ok(Json(
            json!({ "delivered": false, "reason": "no robot configured" }),
        ));
    }
    let errors = s.robots.deliver(&s.http, &n).await;
    if !errors.is_empty() {
        tracing::error!(title = %n.title(), ?errors, "alert delivery failed");
        return Err(ApiError::DeliveryFailed(errors.join("; ")));
    }
    tracing::info!(title = %n.title(), "alert relayed");
    Ok(Json(json!({ "delivered": true })))
}
