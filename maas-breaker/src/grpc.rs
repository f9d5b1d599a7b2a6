//! gRPC (feature `grpc`): classify calls by their `grpc-status`, and answer `UNAVAILABLE`
//! when the breaker is open.
//!
//! A gRPC error travels as HTTP 200 with a non-zero `grpc-status` — in the response headers
//! ("trailers-only", what servers send for an immediate error) or in the trailers after the
//! messages. The HTTP classifier would count both as successes. [`GrpcBreaker`] reads the
//! status where it is: from the headers when the response starts, else from the trailers as
//! the body ends, so the call is recorded only once its status is known. A body dropped
//! before its trailers is a cancelled call: nothing is recorded and a half-open probe slot
//! is given back.
//!
//! Which codes are failures of the dependency ([`is_failure`]): `UNKNOWN`,
//! `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`, and a
//! missing or unreadable status. The others (`NOT_FOUND`, `INVALID_ARGUMENT`,
//! `PERMISSION_DENIED`, ...) are answers of a working server: successes, as HTTP 4xx are.
//!
//! ```
//! use maas_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), maas_breaker::ConfigError> {
//! let breaker = CircuitBreaker::builder().name("embeddings").consecutive_failures(5).build()?;
//! // In front of a tonic `Channel` (or any HTTP/2 gRPC client service):
//! let layer = ServiceBuilder::new().layer(CircuitBreakerLayer::new(breaker).into_grpc());
//! # let _ = layer; Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project::{pin_project, pinned_drop};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Ticket;
use crate::clock::Clock;
use crate::layer::{BreakerSource, KeyExtractor, Selected};
use crate::{CircuitBreaker, CircuitBreakerLayer, Classification, Rejected};

/// `grpc-status` codes that mean the dependency is failing.
const FAILURE_CODES: [u32; 6] = [
    2,  // UNKNOWN
    4,  // DEADLINE_EXCEEDED
    8,  // RESOURCE_EXHAUSTED
    13, // INTERNAL
    14, // UNAVAILABLE
    15, // DATA_LOSS
];

/// `UNAVAILABLE`: what a refused call answers.
const UNAVAILABLE: &str = "14";

/// Whether a `grpc-status` code counts as a failure of the dependency.
pub fn is_failure(code: u32) -> bool {
    FAILURE_CODES.contains(&code)
}

/// The classification of a `grpc-status` header value; a missing or unreadable one is a
/// failure (the server broke the protocol).
fn classify_status(value: Option<&HeaderValue>) -> Classification {
    match value
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u32>().ok())
    {
        Some(code) if !is_failure(code) => Classification::SUCCESS,
        _ => Classification::FAILURE,
    }
}

fn status_of(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get("grpc-status")
}

impl<B: Clone, KF: Clone, K> CircuitBreakerLayer<B, KF, K> {
    /// This layer for gRPC services: calls are classified by their `grpc-status` (headers
    /// or trailers; see [`grpc`](crate::grpc)) instead of by the layer's classifier, and a
    /// refused call is answered `UNAVAILABLE` (with `grpc-retry-pushback-ms` when the
    /// breaker knows how long it stays open) rather than failing with
    /// [`BreakerError`](crate::BreakerError), so a tonic client sees an ordinary
    /// [`Status`](https://docs.rs/tonic/latest/tonic/struct.Status.html).
    pub fn into_grpc(self) -> GrpcBreakerLayer<B, KF> {
        GrpcBreakerLayer {
            shared: Arc::new((self.source().clone(), self.key_extractor().clone())),
        }
    }
}

/// A layer putting a circuit breaker in front of a gRPC service; made by
/// [`CircuitBreakerLayer::into_grpc`].
pub struct GrpcBreakerLayer<B, KF> {
    shared: Arc<(B, KF)>,
}

impl<B, KF> Clone for GrpcBreakerLayer<B, KF> {
    fn clone(&self) -> Self {
        GrpcBreakerLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: std::fmt::Debug, KF> std::fmt::Debug for GrpcBreakerLayer<B, KF> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBreakerLayer")
            .field("source", &self.shared.0)
            .finish_non_exhaustive()
    }
}

impl<S, B, KF> Layer<S> for GrpcBreakerLayer<B, KF> {
    type Service = GrpcBreaker<S, B, KF>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`GrpcBreakerLayer`].
pub struct GrpcBreaker<S, B, KF> {
    inner: S,
    shared: Arc<(B, KF)>,
}

impl<S: Clone, B, KF> Clone for GrpcBreaker<S, B, KF> {
    fn clone(&self) -> Self {
        GrpcBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, B: std::fmt::Debug, KF> std::fmt::Debug for GrpcBreaker<S, B, KF> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBreaker")
            .field("inner", &self.inner)
            .field("source", &self.shared.0)
            .finish_non_exhaustive()
    }
}

impl<S, B, KF, ReqB, ResB> Service<Request<ReqB>> for GrpcBreaker<S, B, KF>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    KF: KeyExtractor<Request<ReqB>>,
    B: BreakerSource<KF::Key>,
{
    type Response = Response<GrpcBody<ResB, B::Clock>>;
    type Error = S::Error;
    type Future = GrpcFuture<S::Future, B::Clock>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let key = self.shared.1.key(&request);
        let breaker = match self.shared.0.select(&key) {
            Selected::Fixed(b) => b.clone(),
            Selected::Owned(b) => b,
        };
        match breaker.acquire_ticket() {
            Ok(ticket) => GrpcFuture {
                state: FutureState::Called(self.inner.call(request)),
                guard: Some((breaker, ticket)),
            },
            Err(rejected) => GrpcFuture {
                state: FutureState::Rejected(Some(rejected)),
                guard: None,
            },
        }
    }
}

/// The response future of [`GrpcBreaker`].
#[pin_project(PinnedDrop)]
pub struct GrpcFuture<F, C: Clock> {
    #[pin]
    state: FutureState<F>,
    guard: Option<(CircuitBreaker<C>, Ticket)>,
}

#[pin_project(project = FutureProj)]
enum FutureState<F> {
    Called(#[pin] F),
    Rejected(Option<Rejected>),
    Gone,
}

impl<F, C: Clock, ResB, E> Future for GrpcFuture<F, C>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<GrpcBody<ResB, C>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            FutureProj::Called(future) => {
                let result = std::task::ready!(future.poll(cx));
                let guard = this.guard.take();
                Poll::Ready(match result {
                    Err(e) => {
                        if let Some((breaker, ticket)) = guard {
                            breaker.complete_ticket(ticket, Classification::FAILURE);
                        }
                        Err(e)
                    }
                    Ok(response) => {
                        let guard = match (guard, status_of(response.headers())) {
                            // Trailers-only: the status is known now.
                            (Some((breaker, ticket)), Some(status)) => {
                                breaker.complete_ticket(ticket, classify_status(Some(status)));
                                None
                            }
                            (guard, _) => guard,
                        };
                        Ok(response.map(|body| GrpcBody {
                            inner: Some(body),
                            guard,
                        }))
                    }
                })
            }
            FutureProj::Rejected(rejected) => {
                let rejected = rejected.take().expect("GrpcFuture polled after completion");
                Poll::Ready(Ok(unavailable(&rejected)))
            }
            FutureProj::Gone => panic!("GrpcFuture polled after completion"),
        }
    }
}

#[pinned_drop]
impl<F, C: Clock> PinnedDrop for GrpcFuture<F, C> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if let Some((breaker, ticket)) = this.guard.take() {
            // Cancelled before the response: the inner call goes first, then the slot.
            this.state.set(FutureState::Gone);
            breaker.release_ticket(ticket);
        }
    }
}

/// The trailers-only `UNAVAILABLE` answer to a refused call.
fn unavailable<B, C: Clock>(rejected: &Rejected) -> Response<GrpcBody<B, C>> {
    let mut response = Response::new(GrpcBody {
        inner: None,
        guard: None,
    });
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from_static(UNAVAILABLE));
    // grpc-message is percent-encoded; a breaker name is kept to safe characters.
    let name: String = rejected
        .breaker
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("circuit%20breaker%20{name}%20is%20open")) {
        headers.insert("grpc-message", v);
    }
    if let Some(ms) = rejected.retry_after().map(|d| d.as_millis())
        && let Ok(v) = HeaderValue::from_str(&ms.to_string())
    {
        headers.insert("grpc-retry-pushback-ms", v);
    }
    response
}

/// A response body that records the call's `grpc-status` when its trailers arrive.
#[pin_project(PinnedDrop)]
pub struct GrpcBody<B, C: Clock> {
    #[pin]
    inner: Option<B>,
    guard: Option<(CircuitBreaker<C>, Ticket)>,
}

impl<B, C: Clock> std::fmt::Debug for GrpcBody<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBody")
            .field("awaiting_status", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: http_body::Body, C: Clock> http_body::Body for GrpcBody<B, C> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let frame = std::task::ready!(inner.poll_frame(cx));
        let classification = match &frame {
            Some(Ok(f)) => f
                .trailers_ref()
                .map(|trailers| classify_status(status_of(trailers))),
            Some(Err(_)) => Some(Classification::FAILURE),
            // The body ended without a status: a broken response.
            None => Some(Classification::FAILURE),
        };
        if let Some(c) = classification
            && let Some((breaker, ticket)) = this.guard.take()
        {
            breaker.complete_ticket(ticket, c);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

#[pinned_drop]
impl<B, C: Clock> PinnedDrop for GrpcBody<B, C> {
    fn drop(self: Pin<&mut Self>) {
        let mut this = self.project();
        if let Some((breaker, ticket)) = this.guard.take() {
            // Dropped before its status: cancelled, nothing recorded.
            this.inner.set(None);
            breaker.release_ticket(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;

    #[test]
    fn server_trouble_fails_and_answers_of_a_working_server_succeed() {
        let of = |s: &str| classify_status(Some(&HeaderValue::from_str(s).unwrap())).outcome;
        for code in ["2", "4", "8", "13", "14", "15", "x", "-1"] {
            assert_eq!(of(code), Outcome::Failure, "code {code}");
        }
        for code in ["0", "1", "3", "5", "6", "7", "9", "10", "11", "12", "16"] {
            assert_eq!(of(code), Outcome::Success, "code {code}");
        }
        assert_eq!(classify_status(None).outcome, Outcome::Failure);
    }

    #[test]
    fn a_refusal_is_a_trailers_only_unavailable() {
        let rejected = Rejected {
            breaker: "up stream\"x".into(),
            state: crate::BreakerState::Open,
            remaining: Some(std::time::Duration::from_millis(1500)),
        };
        let r: Response<GrpcBody<(), crate::clock::MonotonicClock>> = unavailable(&rejected);
        assert_eq!(r.status(), http::StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "1500");
        assert_eq!(
            r.headers()["grpc-message"],
            "circuit%20breaker%20up_stream_x%20is%20open"
        );
    }
}
