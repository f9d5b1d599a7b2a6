//! The operators' API, served only on the admin listener (`MAAS_ADMIN_ADDR`, which the
//! Ingress does not expose) and only with the admin token (`MAAS_ADMIN_TOKEN`):
//!
//! * `POST /admin/tenants/{tenant}/keys` creates an API key and shows it, once;
//!   `GET` lists the tenant's keys by id; `DELETE /admin/keys/{id}` revokes one.
//! * `PUT /admin/tenants/{tenant}/quota {"credits": n}` sets a tenant's remaining credits.
//! * `PUT /admin/backend {"healthy": bool}` marks the simulated model backend up or down.
//! * `POST /admin/alerts` is Alertmanager's webhook, relayed to the chat robots.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::{ApiError, AppState, body, unavailable};

/// The admin routes; the caller adds the admin-token check.
pub(crate) fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/admin/tenants/{tenant}/keys",
            post(create_key).get(list_keys),
        )
        .route("/admin/keys/{id}", delete(revoke_key))
        .route("/admin/tenants/{tenant}/quota", put(set_quota))
        .route("/admin/backend", put(set_backend))
        .route("/admin/alerts", post(relay_alerts))
        .with_state(state)
}

/// Tenant names: what model names allow, so that they are safe in URLs and logs.
fn tenant_name(tenant: &str) -> Result<(), ApiError> {
    crate::api::valid_name("a tenant", tenant)
}

/// Makes a key for `tenant` and stores its digest; the key itself goes back to the caller
/// and nowhere else.
pub(crate) async fn new_key(
    store: &crate::store::Store,
    tenant: &str,
) -> Result<crate::keys::NewKey, ApiError> {
    // 32-bit ids: a clash is rare, and a few tries make it vanishingly so.
    for _ in 0..4 {
        let key = crate::keys::generate().map_err(|e| unavailable("making an API key", e))?;
        let stored = store
            .add_key(&key.id, tenant, &key.hash)
            .await
            .map_err(|e| unavailable("storing the API key", e))?;
        if stored {
            tracing::info!(key = %key.id, %tenant, "API key created");
            return Ok(key);
        }
    }
    Err(ApiError::Unavailable(
        "could not find a free key id; try again".into(),
    ))
}

/// `POST /admin/tenants/{tenant}/keys`: 201 with the key, which is never shown again.
async fn create_key(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    tenant_name(&tenant)?;
    let key = new_key(&s.store, &tenant).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": key.id, "tenant": tenant, "key": key.key,
                     "note": "store the key now: it is not shown again" })),
    ))
}

/// `GET /admin/tenants/{tenant}/keys`: the tenant's keys by id and prefix.
async fn list_keys(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tenant_name(&tenant)?;
    let keys = s
        .store
        .keys(&tenant)
        .await
        .map_err(|e| unavailable("listing API keys", e))?;
    let keys: Vec<_> = keys
        .into_iter()
        .map(|k| {
            json!({ "id": k.id, "prefix": format!("maas_{}_", k.id), "created": k.created,
                    "revoked": k.revoked })
        })
        .collect();
    Ok(Json(json!({ "tenant": tenant, "keys": keys })))
}

/// `DELETE /admin/keys/{id}`: revokes the key at once (every replica reads keys from the
/// shared database on each request).
async fn revoke_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !s
        .store
        .revoke_key(&id)
        .await
        .map_err(|e| unavailable("revoking the API key", e))?
    {
        return Err(ApiError::NotFound(format!("no API key {id}")));
    }
    tracing::warn!(key = %id, "API key revoked");
    Ok(Json(json!({ "id": id, "revoked": true })))
}

#[derive(Deserialize)]
struct Credits {
    credits: i64,
}

/// `PUT /admin/tenants/{tenant}/quota {"credits": n}`.
async fn set_quota(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    json: Result<Json<Credits>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tenant_name(&tenant)?;
    let credits = body(json)?.credits;
    if credits < 0 {
        return Err(ApiError::BadRequest("`credits` cannot be negative".into()));
    }
    s.store
        .set_quota(&tenant, credits)
        .await
        .map_err(|e| unavailable("setting the quota", e))?;
    tracing::warn!(%tenant, credits, "tenant quota set by an operator");
    Ok(Json(json!({ "tenant": tenant, "remaining": credits })))
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
    s.chat.set_healthy(healthy);
    tracing::warn!(healthy, "model backend marked by an operator");
    Ok(Json(
        json!({ "healthy": healthy, "breaker": s.chat.breaker_state() }),
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
