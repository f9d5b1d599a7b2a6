//! The tenants' HTTP API (`/v1`, behind an API key). Every error is JSON:
//! `{"error": "<code>", "message": "..."}` with the matching status.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maas_saga::{Engine, Saga, Status, Step};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
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

/// The request limiter's key: the caller's API key id (the authentication layer, which runs
/// first, put the [`Caller`] there).
pub fn key_of(req: &Request) -> String {
    req.extensions()
        .get::<Caller>()
        .map_or_else(String::new, |c| c.key.clone())
}

/// The `/v1` routes; the caller adds authentication and the request limit.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/models", post(upload))
        .route("/models/{id}", get(model))
        .route("/models/{id}/infer", post(infer))
        .route("/tenants/{tenant}/quota", get(quota))
        .with_state(state)
}

/// `GET /health`.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The answer to a path no route serves: JSON 404.
pub async fn no_route(req: Request) -> ApiError {
    ApiError::NotFound(format!("no route {}", req.uri().path()))
}

/// The answer to a method a route does not serve: JSON 405 (axum adds `Allow`).
pub async fn no_method(req: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not served on {}",
        req.method(),
        req.uri().path()
    ))
}

/// An API failure.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed.
    BadRequest(String),
    /// 401: no credential, or not a valid one.
    Unauthorized(String),
    /// 403: the caller's tenant does not own that.
    Forbidden(String),
    /// 405: the route does not serve that method.
    MethodNotAllowed(String),
    /// 413: the body is over the limit.
    TooLarge(String),
    /// 404: no such model.
    NotFound(String),
    /// 409: the model exists but cannot do that yet.
    Conflict(String),
    /// 402: the tenant's quota is spent; the saga was compensated.
    QuotaExhausted { saga: String, message: String },
    /// 503: a dependency failed.
    Unavailable(String),
    /// 500: a bug (a panic), logged with its backtrace.
    Internal(String),
    /// 504: the request did not finish in time.
    Timeout(String),
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
            ApiError::Unauthorized(m) => {
                let body = json!({ "error": "unauthorized", "message": m });
                return (
                    StatusCode::UNAUTHORIZED,
                    [(WWW_AUTHENTICATE, "Bearer")],
                    Json(body),
                )
                    .into_response();
            }
            ApiError::Forbidden(m) => (
                StatusCode::FORBIDDEN,
                json!({ "error": "forbidden", "message": m }),
            ),
            ApiError::MethodNotAllowed(m) => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "error": "method_not_allowed", "message": m }),
            ),
            ApiError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({ "error": "too_large", "message": m }),
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
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "internal", "message": m }),
            ),
            ApiError::Timeout(m) => (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "error": "timeout", "message": m }),
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
pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::Unavailable(format!("{what}: {e}"))
}

pub(crate) fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(e.body_text())
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

/// Refuses what another tenant owns.
fn owned_by(caller: &Caller, tenant: &str, what: &str) -> Result<(), ApiError> {
    if caller.tenant == tenant {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{what} belongs to another tenant"
        )))
    }
}

#[derive(Deserialize)]
struct Upload {
    name: String,
}

/// `POST /v1/models {"name": ...}`: registers the model and charges the tenant in one saga,
/// then queues its build. 202 with the model; 402 when the quota is spent.
async fn upload(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
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
    let tenant = caller.tenant;
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
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<crate::store::Model>, ApiError> {
    let model = s
        .store
        .model(&id)
        .await
        .map_err(|e| unavailable("reading the model", e))?
        .ok_or_else(|| ApiError::NotFound(format!("no model {id}")))?;
    owned_by(&caller, &model.tenant, &format!("model {id}"))?;
    Ok(Json(model))
}

/// `GET /v1/tenants/{tenant}/quota`.
async fn quota(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owned_by(&caller, &tenant, &format!("the quota of {tenant}"))?;
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
    Extension(caller): Extension<Caller>,
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
    owned_by(&caller, &model.tenant, &format!("model {id}"))?;
    if model.status != "ready" {
        return Err(ApiError::Conflict(format!(
            "model {id} is {}, not ready",
            model.status
        )));
    }
    Ok(Json(s.inference.infer(&model.id, &prompt).await))
}
