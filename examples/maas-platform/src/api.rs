//! The tenants' HTTP API (`/v1`, behind an API key). Every error is JSON:
//! `{"error": "<code>", "message": "..."}` with the matching status.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use maas_saga::{Engine, Saga, Status, Step};
use serde::Deserialize;
use serde_json::json;

use crate::artifacts::{ArtifactStore, PutError, Stored};
use crate::auth::Caller;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Models and quota.
    pub store: Store,
    /// The saga engine running "create model + deduct quota".
    pub engine: Arc<Engine>,
    /// Wakes the outbox relay after a saga enqueued a build task.
    pub(crate) outbox: crate::outbox::Wake,
    /// The sagas billing refused: a 402, where any other rollback is a 503.
    pub(crate) refusals: crate::store::Refusals,
    /// Chat completions: the backends behind the breaker, and the fallback model.
    pub chat: crate::chat::Gateway,
    /// Resolves when the listeners stop: streams in progress end then.
    pub(crate) stopped: crate::Stopped,
    /// Tokens per minute per API key.
    pub tokens: crate::chat::TokenLimit,
    /// Where model files are stored.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// The largest model file an upload may send, in bytes.
    pub max_model_bytes: u64,
    /// How long an upload's body may pause before it fails with 408.
    pub upload_idle: Duration,
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
        .route(UPLOAD_PATH.trim_start_matches("/v1"), post(upload))
        .route("/models/{id}", get(model))
        .route("/tenants/{tenant}/quota", get(quota))
        .with_state(state)
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
    /// 402: the tenant's quota is spent; the saga, if one ran, was compensated.
    QuotaExhausted {
        /// The compensated saga (none when the upload was refused before one ran).
        saga: Option<String>,
        /// What to tell the caller.
        message: String,
    },
    /// 408: the request body stopped arriving.
    RequestTimeout(String),
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
            ApiError::QuotaExhausted { saga, message } => {
                let mut body = json!({ "error": "quota_exhausted", "message": message });
                if let Some(saga) = saga {
                    body["saga"] = saga.into();
                    body["saga_status"] = "compensated".into();
                }
                (StatusCode::PAYMENT_REQUIRED, body)
            }
            ApiError::RequestTimeout(m) => (
                StatusCode::REQUEST_TIMEOUT,
                json!({ "error": "request_timeout", "message": m }),
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

/// Names of tenants and models: 1 to 64 letters, digits, '-', '_' or '.', so that they are
/// safe in URLs and logs.
pub(crate) fn valid_name(what: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{what} is 1 to 64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

#[derive(Deserialize)]
struct Upload {
    name: Option<String>,
}

/// The path of the upload route, which the request time limit leaves alone (see
/// [`idle_limited`]).
pub(crate) const UPLOAD_PATH: &str = "/v1/models";

/// `body` as a stream that fails with `TimedOut` when no chunk arrives for `idle`: an upload
/// may take as long as it needs, as long as it keeps moving.
fn idle_limited(body: axum::body::Body, idle: Duration) -> crate::artifacts::Body<'static> {
    let chunks = body
        .into_data_stream()
        .map(|c| c.map_err(std::io::Error::other));
    futures::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(chunks))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no data for {} ms", idle.as_millis()),
                )),
                None,
            )),
        }
    })
    .boxed()
}

/// `POST /v1/models?name=<name>` with the model file (safetensors or GGUF) as the body:
/// streams it into the artifact store, then registers the model and charges the tenant in
/// one saga, which queues its build. 202 with the model and the file's digest and size; 402
/// when the quota is spent (checked before the body is read, and by the saga); 413 past
/// `MAAS_MAX_MODEL_BYTES`.
async fn upload(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<Upload>, QueryRejection>,
    request: Request,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Query(upload) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = upload.name.unwrap_or_default();
    let name = name.trim();
    valid_name("`name` (a query parameter)", name)?;
    let tenant = caller.tenant;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_model_bytes) {
        let e = PutError::TooLarge {
            max: s.max_model_bytes,
        };
        return Err(ApiError::TooLarge(e.to_string()));
    }
    // A tenant that cannot pay is told before it sends gigabytes; the saga still decides.
    let left = credits_left(&s, &tenant).await?;
    if left < s.build_cost {
        return Err(ApiError::QuotaExhausted {
            saga: None,
            message: format!(
                "tenant {tenant} has {left} credits; a build costs {}",
                s.build_cost
            ),
        });
    }
    let body = idle_limited(request.into_body(), s.upload_idle);
    let stored = s
        .artifacts
        .put(body, s.max_model_bytes)
        .await
        .map_err(|e| match e {
            PutError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
            PutError::Body(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                ApiError::RequestTimeout(e.to_string())
            }
            PutError::Body(_) => ApiError::BadRequest(e.to_string()),
            PutError::Store(_) => unavailable("storing the model file", e),
        })?;
    let forget = |stored: Stored| {
        let artifacts = s.artifacts.clone();
        async move {
            // Only a file this upload brought; one that was there already is another's.
            if stored.new
                && let Err(e) = artifacts.remove(&stored.digest).await
            {
                tracing::warn!(digest = %stored.digest, error = %e, "unused model file not removed");
            }
        }
    };
    if stored.size == 0 {
        forget(stored).await;
        return Err(ApiError::BadRequest(
            "the body is empty: send the model file".into(),
        ));
    }
    let id = format!("m-{:016x}", fastrand::u64(..));
    let traceparent = maas_telemetry::propagation::current_traceparent();
    let digest = stored.digest.to_string();
    let payload = json!({ "model": id, "name": name, "tenant": tenant, "cost": s.build_cost,
                          "digest": digest, "size": stored.size,
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
    // On an error the saga's fate is the engine's to settle (recovery may still commit
    // it), so its file stays.
    let outcome = s
        .engine
        .run(saga)
        .await
        .map_err(|e| unavailable("running the create-model saga", e))?;
    if outcome.status != Status::Committed {
        // Nothing refers to the file. (An identical upload racing this one may have found it
        // present and be about to register it: its build then fails `missing` and is
        // refunded.)
        forget(stored).await;
        // Only billing refusing is a quota answer; a step whose participant did not answer
        // rolled the saga back for a reason the tenant did not cause.
        if !s.refusals.take(&outcome.id.to_string()) {
            return Err(unavailable(
                "the create-model saga was rolled back",
                format!("a participant did not answer (saga {})", outcome.id),
            ));
        }
        return Err(ApiError::QuotaExhausted {
            saga: Some(outcome.id.to_string()),
            message: format!(
                "tenant {tenant} cannot pay {} credits for a build; nothing was registered",
                s.build_cost
            ),
        });
    }
    s.outbox.wake().await;
    tracing::info!(model = %id, %name, %tenant, %digest, size = stored.size,
        saga = %outcome.id, "model registered; build queued");
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "id": id, "name": name, "tenant": tenant, "status": "queued",
                     "saga": outcome.id.to_string(),
                     "artifact": { "digest": digest, "size": stored.size } }),
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

/// The credits `tenant` has left (a new tenant: the starting quota).
async fn credits_left(s: &AppState, tenant: &str) -> Result<i64, ApiError> {
    Ok(s.store
        .quota(tenant)
        .await
        .map_err(|e| unavailable("reading the quota", e))?
        .unwrap_or(s.tenant_quota))
}

/// `GET /v1/tenants/{tenant}/quota`.
async fn quota(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owned_by(&caller, &tenant, &format!("the quota of {tenant}"))?;
    let left = credits_left(&s, &tenant).await?;
    Ok(Json(
        json!({ "tenant": tenant, "remaining": left, "build_cost": s.build_cost }),
    ))
}
