//! HTTP (feature `http`): classify responses, and answer `503` when the breaker is open.
//!
//! * [`ServerErrorsAsFailures`] classifies `Result<http::Response<B>, E>`: a 5xx status is
//!   a failure (its `Retry-After`, in seconds, keeps the breaker open at least that long),
//!   anything else — 4xx included, since those are the caller's fault — is a success;
//!   errors are failures.
//! * [`ServiceUnavailableLayer`] turns the breaker's refusals into
//!   `503 Service Unavailable` with `Retry-After` (when known) and a JSON body, so an axum
//!   route protected by a breaker answers well-formed HTTP when there is no fallback:
//!
//! ```text
//! HTTP/1.1 503 Service Unavailable
//! content-type: application/json
//! retry-after: 10
//!
//! {"error":"circuit_open","message":"circuit breaker `upstream` is open; retry in 9.812 s","breaker":"upstream","state":"open","retry_after_ms":9812}
//! ```
//!
//! [`CircuitBreakerLayer::into_http`](crate::CircuitBreakerLayer::into_http) stacks both:
//!
//! ```
//! use axum::{Router, routing::get};
//! use maas_breaker::{CircuitBreaker, CircuitBreakerLayer};
//!
//! # fn app() -> Result<Router, maas_breaker::ConfigError> {
//! let breaker = CircuitBreaker::builder().name("models-api").build()?;
//! let app = Router::new()
//!     .route("/v1/models", get(|| async { "[]" }))
//!     .layer(CircuitBreakerLayer::new(breaker).into_http());
//! # Ok(app) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use pin_project::pin_project;
use tower_layer::{Layer, Stack};
use tower_service::Service;

use crate::classify::{Classification, Classify};
use crate::{BreakerError, CircuitBreakerLayer, Rejected};

/// Classifies HTTP responses: 5xx fails (honouring `Retry-After`), the rest succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorsAsFailures;

/// Reads a `Retry-After` given in seconds.
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl<B, E> Classify<Response<B>, E> for ServerErrorsAsFailures {
    fn classify(&self, result: &Result<Response<B>, E>) -> Classification {
        match result {
            Ok(r) if r.status().is_server_error() => match retry_after(r) {
                Some(pause) => Classification::FAILURE.with_retry_after(pause),
                None => Classification::FAILURE,
            },
            Ok(_) => Classification::SUCCESS,
            Err(_) => Classification::FAILURE,
        }
    }
}

/// The `503 Service Unavailable` answer for a refusal.
pub fn service_unavailable<B: From<String>>(rejected: &Rejected) -> Response<B> {
    let retry_ms = rejected
        .retry_after()
        .map_or("null".to_owned(), |d| d.as_millis().to_string());
    let body = format!(
        r#"{{"error":"circuit_open","message":"{}","breaker":"{}","state":"{}","retry_after_ms":{retry_ms}}}"#,
        json_escape(&rejected.to_string()),
        json_escape(rejected.breaker()),
        rejected.state(),
    );
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(d) = rejected.retry_after() {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Turns breaker refusals into `503` responses; other errors pass through unwrapped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceUnavailableLayer;

impl<S> Layer<S> for ServiceUnavailableLayer {
    type Service = ServiceUnavailable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceUnavailable { inner }
    }
}

/// The service made by [`ServiceUnavailableLayer`].
#[derive(Debug, Clone)]
pub struct ServiceUnavailable<S> {
    inner: S,
}

impl<S, R, B, E> Service<R> for ServiceUnavailable<S>
where
    S: Service<R, Response = Response<B>, Error = BreakerError<E>>,
    B: From<String>,
{
    type Response = Response<B>;
    type Error = E;
    type Future = UnavailableFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx).map_err(|e| match e {
            BreakerError::Service(e) => e,
            BreakerError::Rejected(_) => unreachable!("a breaker never refuses in poll_ready"),
        })
    }

    fn call(&mut self, request: R) -> Self::Future {
        UnavailableFuture {
            future: self.inner.call(request),
        }
    }
}

/// The response future of [`ServiceUnavailable`].
#[pin_project]
#[derive(Debug)]
pub struct UnavailableFuture<F> {
    #[pin]
    future: F,
}

impl<F, B, E> Future for UnavailableFuture<F>
where
    F: Future<Output = Result<Response<B>, BreakerError<E>>>,
    B: From<String>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx).map(|r| match r {
            Ok(response) => Ok(response),
            Err(BreakerError::Rejected(rejected)) => Ok(service_unavailable(&rejected)),
            Err(BreakerError::Service(e)) => Err(e),
        })
    }
}

impl<B: Clone, KF: Clone, K> CircuitBreakerLayer<B, KF, K> {
    /// This layer for HTTP services: responses classified by [`ServerErrorsAsFailures`],
    /// refusals answered with `503` by [`ServiceUnavailableLayer`]. The resulting service
    /// has the inner service's error type, so it drops into axum as is.
    pub fn into_http(
        self,
    ) -> Stack<CircuitBreakerLayer<B, KF, ServerErrorsAsFailures>, ServiceUnavailableLayer> {
        Stack::new(
            self.classify(ServerErrorsAsFailures),
            ServiceUnavailableLayer,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BreakerState, Outcome};

    #[test]
    fn server_errors_fail_with_their_retry_after() {
        let k = ServerErrorsAsFailures;
        let r = |status: u16, retry: Option<&str>| {
            let mut b = Response::builder().status(status);
            if let Some(v) = retry {
                b = b.header(RETRY_AFTER, v);
            }
            Ok::<_, ()>(b.body(()).unwrap())
        };
        assert_eq!(k.classify(&r(200, None)).outcome, Outcome::Success);
        assert_eq!(k.classify(&r(404, None)).outcome, Outcome::Success);
        assert_eq!(k.classify(&r(429, Some("5"))).outcome, Outcome::Success);
        assert_eq!(k.classify(&r(500, None)), Classification::FAILURE);
        assert_eq!(
            k.classify(&r(503, Some("7"))),
            Classification::FAILURE.with_retry_after(Duration::from_secs(7))
        );
        assert_eq!(
            k.classify(&Err::<Response<()>, _>(())).outcome,
            Outcome::Failure
        );
    }

    #[test]
    fn refusal_becomes_a_json_503() {
        let rejected = Rejected {
            breaker: "up\"stream".into(),
            state: BreakerState::Open,
            remaining: Some(Duration::from_millis(1500)),
        };
        let r: Response<String> = service_unavailable(&rejected);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert!(
            r.body().contains(r#""breaker":"up\"stream""#),
            "{}",
            r.body()
        );
        assert!(r.body().contains(r#""retry_after_ms":1500"#));
    }
}
