//! Tokens per minute per API key: a completion is admitted by its estimate (prompt tokens +
//! `max_tokens`), charged at once, and reconciled when its answer ends — the unused part of
//! the estimate given back, an overrun charged — whether it ended whole, streamed, failed or
//! was dropped by a client that hung up.
//!
//! With `MAAS_REDIS_URL` the count is in Redis, one limit for every replica; otherwise each
//! replica counts on its own.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maas_ratelimit::redis::RedisLimiter;
use maas_ratelimit::{Decision, KeyedLimiter, Quota};
use serde_json::json;

/// The token limit of every API key: this replica's own, or one in Redis for all replicas.
#[derive(Clone)]
pub enum TokenLimit {
    /// Counted by this replica alone.
    Local(Arc<KeyedLimiter<String>>),
    /// Counted in Redis, one limit for every replica (`MAAS_REDIS_URL`).
    Redis(RedisLimiter),
}

impl TokenLimit {
    /// `per_minute` tokens a minute per key, counted here (the whole minute's worth may come
    /// at once).
    pub fn local(per_minute: u64) -> Result<TokenLimit, maas_ratelimit::ConfigError> {
        let limiter = KeyedLimiter::token_bucket(Quota::per_minute(per_minute)).build()?;
        Ok(TokenLimit::Local(Arc::new(limiter)))
    }

    /// Admits `estimate` tokens for `key`: the charge to reconcile, or the refusal (a 429).
    ///
    /// # Cancel safety
    ///
    /// Dropped while Redis is asked, the estimate may have been charged and is not given
    /// back (the limit errs on the strict side).
    pub async fn admit(&self, key: &str, estimate: u64) -> Result<Charge, Refused> {
        let decision = match self {
            TokenLimit::Local(l) => l.check_n(key, estimate),
            TokenLimit::Redis(r) => r.check(key, estimate).await,
        };
        if !decision.is_allowed() {
            return Err(Refused { decision, estimate });
        }
        Ok(Charge {
            limit: self.clone(),
            key: key.to_owned(),
            estimate,
            used: estimate,
            decision,
        })
    }
}

/// An admitted estimate; dropped, it settles with the tokens [`used`](Charge::use_tokens).
pub struct Charge {
    limit: TokenLimit,
    key: String,
    estimate: u64,
    used: u64,
    decision: Decision,
}

impl Charge {
    /// Records what the completion used in all (prompt and answer so far).
    pub fn use_tokens(&mut self, used: u64) {
        self.used = used;
    }

    /// The `x-ratelimit-*-tokens` headers of the admission.
    pub fn headers(&self, headers: &mut HeaderMap) {
        token_headers(&self.decision, headers);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let (unused, extra) = (
            self.estimate.saturating_sub(self.used),
            self.used.saturating_sub(self.estimate),
        );
        match &self.limit {
            TokenLimit::Local(l) => {
                if unused > 0 {
                    l.refund(&self.key, unused);
                } else if extra > 0 && !l.check_n(&self.key, extra).is_allowed() {
                    // Over the estimate (an upstream that ignored max_tokens): charged as
                    // far as the key has tokens left.
                    let left = l.peek(&self.key, 0).remaining();
                    l.check_n(&self.key, left);
                }
            }
            TokenLimit::Redis(r) if unused > 0 || extra > 0 => {
                let (r, key) = (r.clone(), std::mem::take(&mut self.key));
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if unused > 0 {
                            r.refund(&key, unused).await;
                        } else {
                            r.check(&key, extra).await;
                        }
                    });
                }
            }
            TokenLimit::Redis(_) => {}
        }
    }
}

fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().ceil() as u64)
}

fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

fn token_headers(d: &Decision, headers: &mut HeaderMap) {
    put(headers, "x-ratelimit-limit-tokens", d.limit().to_string());
    put(
        headers,
        "x-ratelimit-remaining-tokens",
        d.remaining().to_string(),
    );
    put(
        headers,
        "x-ratelimit-reset-tokens",
        seconds(d.reset_after()),
    );
}

/// An estimate the key cannot afford now (or ever: more than its whole limit).
#[derive(Debug)]
pub struct Refused {
    decision: Decision,
    estimate: u64,
}

impl IntoResponse for Refused {
    /// 429 in OpenAI's shape, with `Retry-After` (unless it can never pass), the
    /// `RateLimit-*` headers and OpenAI's `x-ratelimit-*-tokens`.
    fn into_response(self) -> Response {
        refusal(&self.decision, self.estimate)
    }
}

fn refusal(d: &Decision, estimate: u64) -> Response {
    let message = match d.retry_after() {
        Some(wait) => format!(
            "rate limit reached for tokens: this request needs up to {estimate} (prompt + \
             max_tokens), {} are left; try again in {}",
            d.remaining(),
            seconds(wait)
        ),
        None => format!(
            "this request needs up to {estimate} tokens (prompt + max_tokens), more than the \
             limit of {} a minute: lower max_tokens",
            d.limit()
        ),
    };
    let body = json!({ "error": { "message": message, "type": "tokens",
                                  "param": null, "code": "rate_limit_exceeded" } });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    token_headers(d, headers);
    maas_ratelimit::http::insert_ratelimit_headers(headers, d);
    if let Some(wait) = d.retry_after() {
        put(
            headers,
            "retry-after",
            (wait.as_secs_f64().ceil() as u64).to_string(),
        );
    }
    response
}

/// Wraps every `/v1` answer (outside the request limiter): its `RateLimit-*` headers are
/// given OpenAI's names too, and on the OpenAI routes the request limiter's 429 is rewritten
/// into OpenAI's error shape (`"type": "requests"`), so OpenAI clients read it as their typed
/// rate-limit error.
pub(crate) async fn openai_limits(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let openai = matches!(
        (req.method().as_str(), req.uri().path()),
        ("POST", "/chat/completions") | ("GET", "/models")
    );
    let mut response = next.run(req).await;
    request_headers(response.headers_mut());
    let from_request_limit = response.status() == StatusCode::TOO_MANY_REQUESTS
        && !response.headers().contains_key("x-ratelimit-limit-tokens");
    if !(openai && from_request_limit) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let message = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "too many requests".into()),
        Err(_) => "too many requests".into(),
    };
    let body = json!({ "error": { "message": format!("rate limit reached for requests: {message}"),
                                  "type": "requests", "param": null,
                                  "code": "rate_limit_exceeded" } });
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut rewritten = (parts.status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// Mirrors the request limit's `RateLimit-*` headers (set by the `/v1` request limiter) as
/// OpenAI's `x-ratelimit-*-requests`.
fn request_headers(headers: &mut HeaderMap) {
    for (from, to) in [
        ("ratelimit-limit", "x-ratelimit-limit-requests"),
        ("ratelimit-remaining", "x-ratelimit-remaining-requests"),
    ] {
        if let Some(v) = headers.get(from).cloned() {
            headers.insert(HeaderName::from_static(to), v);
        }
    }
    if let Some(reset) = headers
        .get("ratelimit-reset")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        put(headers, "x-ratelimit-reset-requests", format!("{reset}s"));
    }
}
