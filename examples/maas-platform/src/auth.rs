//! Who is calling: tenants by API key on the public listener, operators by the admin token
//! on the admin listener. Both answer 401 in JSON when the credential is missing or wrong,
//! and neither ever logs or echoes a credential.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::keys::{self, KeyHash};
use crate::store::Store;

/// The tenant an API key acts for, put in the request's extensions by [`require_key`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id (what the request limit is keyed by).
    pub key: String,
    /// The tenant it acts for (what the quota and the models belong to).
    pub tenant: String,
}

/// The admin token's digest, or none when no token is configured (admin routes then refuse
/// everything).
#[derive(Clone)]
pub(crate) struct AdminToken(pub(crate) Option<Arc<KeyHash>>);

fn credential(req: &Request) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(keys::bearer)
}

/// Middleware: lets the request through with its [`Caller`] when it carries a live API key.
pub(crate) async fn require_key(
    State(store): State<Store>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(presented) = credential(&req) else {
        return ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <key>`".into(),
        )
        .into_response();
    };
    let invalid = || ApiError::Unauthorized("invalid API key".into()).into_response();
    let Some(id) = keys::id_of(presented) else {
        return invalid();
    };
    let stored = match store.key(id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return invalid(),
        Err(e) => return crate::api::unavailable("checking the API key", e).into_response(),
    };
    let matches = <&KeyHash>::try_from(stored.hash.as_slice())
        .is_ok_and(|h| keys::same(h, &keys::digest(presented)));
    if !matches {
        return invalid();
    }
    if stored.revoked {
        return ApiError::Unauthorized(format!("API key {id} was revoked")).into_response();
    }
    let caller = Caller {
        key: id.to_owned(),
        tenant: stored.tenant,
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Middleware: lets the request through when it carries the admin token.
pub(crate) async fn require_admin(
    State(token): State<AdminToken>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = &token.0 else {
        return ApiError::Unavailable("no admin token is configured: set MAAS_ADMIN_TOKEN".into())
            .into_response();
    };
    let Some(presented) = credential(&req) else {
        return ApiError::Unauthorized(
            "missing admin token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response();
    };
    if !keys::same(expected, &keys::digest(presented)) {
        return ApiError::Unauthorized("invalid admin token".into()).into_response();
    }
    next.run(req).await
}
