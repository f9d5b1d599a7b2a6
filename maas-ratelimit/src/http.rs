//! The HTTP adapter (feature `http`): `429 Too Many Requests` with `Retry-After` and
//! `RateLimit-*` headers, for axum, hyper or any `http`-based tower stack.
//!
//! [`HttpRateLimitLayer`] answers a request over the limit itself, without calling the inner
//! service:
//!
//! ```text
//! HTTP/1.1 429 Too Many Requests
//! content-type: application/json
//! retry-after: 1
//! ratelimit-limit: 10
//! ratelimit-remaining: 0
//! ratelimit-reset: 1
//!
//! {"error":"rate_limited","message":"too many requests, retry after 0.100 s","limit":10,"remaining":0,"reset_after_ms":100,"retry_after_ms":100}
//! ```
//!
//! and adds the three `RateLimit-*` headers to every allowed response too, so well-behaved
//! clients can slow down before they are refused. Header values are whole seconds, rounded
//! up. When several limiters are stacked, the innermost one's headers win.
//!
//! The service's error type is the inner service's, so it drops into axum as is:
//!
//! ```
//! use axum::{Router, routing::get};
//! use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer};
//!
//! # fn app() -> Result<Router, maas_ratelimit::ConfigError> {
//! let limiter = KeyedLimiter::token_bucket(Quota::per_second(10)).build::<String>()?;
//! let app = Router::new().route("/v1/models", get(|| async { "[]" })).layer(
//!     RateLimitLayer::builder(limiter)
//!         .key(|req: &axum::extract::Request| {
//!             req.headers()
//!                 .get("x-api-key")
//!                 .and_then(|v| v.to_str().ok())
//!                 .unwrap_or("anonymous")
//!                 .to_owned()
//!         })
//!         .build_http(),
//! );
//! # Ok(app) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Request, Response, StatusCode};
use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::layer::{
    Admission, CostExtractor, KeyExtractor, RateLimitLayer, RateLimitLayerBuilder, Shared,
};
use crate::{AsyncLimiter, Decision};

/// `RateLimit-Limit`
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Adds the `RateLimit-*` headers for `decision`, keeping any already present.
pub fn insert_ratelimit_headers(headers: &mut HeaderMap, decision: &Decision) {
    let mut put = |name: HeaderName, value: u64| {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from(value));
    };
    put(RATELIMIT_LIMIT, decision.limit());
    put(RATELIMIT_REMAINING, decision.remaining());
    put(RATELIMIT_RESET, ceil_secs(decision.reset_after()));
}

/// The `429 Too Many Requests` response for a rejection: JSON body, `Retry-After` (unless
/// the request can never pass) and `RateLimit-*` headers.
pub fn too_many_requests<B: From<String>>(decision: &Decision) -> Response<B> {
    let message = match decision.retry_after() {
        Some(w) => format!("too many requests, retry after {:.3} s", w.as_secs_f64()),
        None => format!(
            "the request costs more than the whole limit of {}",
            decision.limit()
        ),
    };
    let retry_ms = decision
        .retry_after()
        .map_or("null".to_owned(), |w| w.as_millis().to_string());
    let body = format!(
        r#"{{"error":"rate_limited","message":"{message}","limit":{},"remaining":{},"reset_after_ms":{},"retry_after_ms":{retry_ms}}}"#,
        decision.limit(),
        decision.remaining(),
        decision.reset_after().as_millis(),
    );
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(wait) = decision.retry_after() {
        headers.insert(RETRY_AFTER, HeaderValue::from(ceil_secs(wait).max(1)));
    }
    insert_ratelimit_headers(headers, decision);
    response
}

impl<L, KF, CF> RateLimitLayerBuilder<L, KF, CF> {
    /// Builds the HTTP flavour of the layer: rejections become `429` responses instead of
    /// errors, and allowed responses carry `RateLimit-*` headers.
    pub fn build_http(self) -> HttpRateLimitLayer<L, KF, CF> {
        HttpRateLimitLayer {
            shared: self.build().shared().clone(),
        }
    }
}

impl<L, KF, CF> RateLimitLayer<L, KF, CF> {
    /// The HTTP flavour of this layer, sharing its limiter.
    pub fn into_http(self) -> HttpRateLimitLayer<L, KF, CF> {
        HttpRateLimitLayer {
            shared: self.shared().clone(),
        }
    }
}

/// A tower layer answering `429 Too Many Requests` over the limit. Clones, and all the
/// services it makes, share one limiter. See the [module docs](self).
pub struct HttpRateLimitLayer<L, KF = crate::layer::NoKey, CF = crate::layer::UnitCost> {
    shared: Arc<Shared<L, KF, CF>>,
}

impl<L, KF, CF> Clone for HttpRateLimitLayer<L, KF, CF> {
    fn clone(&self) -> Self {
        HttpRateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<L: fmt::Debug, KF, CF> fmt::Debug for HttpRateLimitLayer<L, KF, CF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRateLimitLayer")
            .field("limiter", &self.shared.limiter)
            .field("mode", &self.shared.mode)
            .finish()
    }
}

impl<L, KF, CF> HttpRateLimitLayer<L, KF, CF> {
    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.shared.limiter
    }
}

impl<S, L, KF, CF> Layer<S> for HttpRateLimitLayer<L, KF, CF> {
    type Service = HttpRateLimit<S, L, KF, CF>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`HttpRateLimitLayer`].
pub struct HttpRateLimit<S, L, KF, CF> {
    inner: S,
    shared: Arc<Shared<L, KF, CF>>,
}

impl<S: Clone, L, KF, CF> Clone for HttpRateLimit<S, L, KF, CF> {
    fn clone(&self) -> Self {
        HttpRateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, L: fmt::Debug, KF, CF> fmt::Debug for HttpRateLimit<S, L, KF, CF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.limiter)
            .finish()
    }
}

type Waiting<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The response future of [`HttpRateLimit`].
#[pin_project(project = HttpFutureProj)]
pub enum HttpResponseFuture<F, B, E> {
    /// Passed: the inner service's future, and the decision for the headers.
    Called {
        /// The inner future.
        #[pin]
        future: F,
        /// The limiter's decision.
        decision: Decision,
    },
    /// Rejected: the 429 response.
    Limited {
        /// The response, until polled.
        response: Option<Response<B>>,
    },
    /// Waiting for quota.
    Waiting {
        /// The wait followed by the inner call.
        future: Waiting<Response<B>, E>,
    },
}

impl<F, B, E> fmt::Debug for HttpResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpResponseFuture::Called { .. } => "HttpResponseFuture::Called",
            HttpResponseFuture::Limited { .. } => "HttpResponseFuture::Limited",
            HttpResponseFuture::Waiting { .. } => "HttpResponseFuture::Waiting",
        })
    }
}

impl<F, B, E> Future for HttpResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HttpFutureProj::Called { future, decision } => {
                future.poll(cx).map_ok(|mut response| {
                    insert_ratelimit_headers(response.headers_mut(), decision);
                    response
                })
            }
            HttpFutureProj::Limited { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("HttpResponseFuture polled after completion"),
            },
            HttpFutureProj::Waiting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, L, KF, CF, ReqB, ResB> Service<Request<ReqB>> for HttpRateLimit<S, L, KF, CF>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: From<String> + Send + 'static,
    ReqB: Send + 'static,
    KF: KeyExtractor<Request<ReqB>>,
    CF: CostExtractor<Request<ReqB>>,
    L: AsyncLimiter<KF::Key>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = HttpResponseFuture<S::Future, ResB, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let key = self.shared.key.key(&request);
        let cost = self.shared.cost.cost(&request);
        match self.shared.admit(&key, cost) {
            Admission::Pass(decision) => HttpResponseFuture::Called {
                future: self.inner.call(request),
                decision,
            },
            Admission::Reject(d) => HttpResponseFuture::Limited {
                response: Some(too_many_requests(&d)),
            },
            Admission::Wait => {
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                HttpResponseFuture::Waiting {
                    future: Box::pin(async move {
                        match shared.wait_turn(key, cost).await {
                            Ok(decision) => {
                                let mut response = ready.call(request).await?;
                                insert_ratelimit_headers(response.headers_mut(), &decision);
                                Ok(response)
                            }
                            Err(d) => Ok(too_many_requests(&d)),
                        }
                    }),
                }
            }
            Admission::Pending(answer) => {
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                HttpResponseFuture::Waiting {
                    future: Box::pin(async move {
                        let admission = Shared::<L, KF, CF>::verdict(answer.await);
                        shared.record(&admission);
                        match admission {
                            Admission::Pass(decision) => {
                                let mut response = ready.call(request).await?;
                                insert_ratelimit_headers(response.headers_mut(), &decision);
                                Ok(response)
                            }
                            Admission::Reject(d) => Ok(too_many_requests(&d)),
                            _ => unreachable!("a verdict passes or rejects"),
                        }
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn too_many_requests_has_headers_and_json() {
        let d = Decision {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after: Duration::from_millis(1500),
            retry_after: Some(Duration::from_millis(100)),
        };
        let r: Response<String> = too_many_requests(&d);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers();
        assert_eq!(h[RETRY_AFTER], "1");
        assert_eq!(h[RATELIMIT_LIMIT], "10");
        assert_eq!(h[RATELIMIT_REMAINING], "0");
        assert_eq!(h[RATELIMIT_RESET], "2");
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert!(r.body().contains(r#""retry_after_ms":100"#), "{}", r.body());
    }

    #[test]
    fn cost_above_limit_has_no_retry_after() {
        let d = Decision {
            allowed: false,
            limit: 10,
            remaining: 10,
            reset_after: Duration::ZERO,
            retry_after: None,
        };
        let r: Response<String> = too_many_requests(&d);
        assert!(!r.headers().contains_key(RETRY_AFTER));
        assert!(r.body().contains(r#""retry_after_ms":null"#));
    }
}
