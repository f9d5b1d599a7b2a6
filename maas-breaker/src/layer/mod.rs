//! The tower layer: [`CircuitBreakerLayer`] and its service.

mod future;

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

pub use future::{Recorder, Release, ResponseFuture};

use crate::breaker::Ticket;
use crate::classify::{Classify, ErrorsAreFailures};
use crate::clock::{Clock, MonotonicClock};
use crate::{BreakerError, CircuitBreaker};

/// A tower layer that puts a circuit breaker in front of a service.
///
/// When the breaker is open the service is not called: the call fails at once with
/// [`BreakerError::Rejected`], which carries the time left before the breaker lets a probe
/// through. Every service the layer makes, and every clone, shares the one breaker.
///
/// ```
/// use maas_breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::builder().consecutive_failures(2).build()?;
/// let mut upstream = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service(service_fn(|_: ()| async { Err::<(), _>("upstream down") }));
///
/// for _ in 0..2 {
///     assert!(upstream.ready().await?.call(()).await.unwrap_err().as_rejected().is_none());
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// let err = upstream.ready().await?.call(()).await.unwrap_err();
/// assert!(err.as_rejected().unwrap().retry_after().is_some());
/// # Ok(()) }
/// ```
pub struct CircuitBreakerLayer<K = ErrorsAreFailures, C: Clock = MonotonicClock> {
    shared: Arc<Shared<K, C>>,
}

/// The breaker and the classifier, shared by every service a layer makes (one `Arc` clone
/// per call carries both to the response future).
pub struct Shared<K, C: Clock> {
    breaker: CircuitBreaker<C>,
    classify: K,
}

impl<K, C: Clock> Release for Arc<Shared<K, C>> {
    fn release(&self, ticket: Ticket) {
        self.breaker.release_ticket(ticket);
    }
}

impl<K: Classify<T, E>, C: Clock, T, E> Recorder<T, E> for Arc<Shared<K, C>> {
    #[inline]
    fn complete(&self, ticket: Ticket, result: &Result<T, E>) {
        self.breaker
            .complete_ticket(ticket, self.classify.classify(result));
    }
}

impl<K, C: Clock> Clone for CircuitBreakerLayer<K, C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<K, C: Clock> std::fmt::Debug for CircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.shared.breaker)
            .finish_non_exhaustive()
    }
}

impl<C: Clock> CircuitBreakerLayer<ErrorsAreFailures, C> {
    /// A layer recording `Err` results as failures.
    pub fn new(breaker: CircuitBreaker<C>) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared {
                breaker,
                classify: ErrorsAreFailures,
            }),
        }
    }
}

impl<K, C: Clock> CircuitBreakerLayer<K, C> {
    /// Classifies results with `classify` instead (see [`classify`](crate::classify)).
    pub fn classify<K2>(self, classify: K2) -> CircuitBreakerLayer<K2, C> {
        CircuitBreakerLayer {
            shared: Arc::new(Shared {
                breaker: self.shared.breaker.clone(),
                classify,
            }),
        }
    }

    /// The breaker, e.g. to read its state or force it open.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.shared.breaker
    }
}

impl<S, K, C: Clock> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = CircuitBreakerService<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct CircuitBreakerService<S, K, C: Clock> {
    inner: S,
    shared: Arc<Shared<K, C>>,
}

impl<S: Clone, K, C: Clock> Clone for CircuitBreakerService<S, K, C> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, K, C: Clock> std::fmt::Debug for CircuitBreakerService<S, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, R> Service<R> for CircuitBreakerService<S, K, C>
where
    S: Service<R>,
    K: Classify<S::Response, S::Error>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, Arc<Shared<K, C>>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Service)
    }

    #[inline]
    fn call(&mut self, request: R) -> Self::Future {
        match self.shared.breaker.acquire_ticket() {
            Ok(ticket) => {
                ResponseFuture::called(self.inner.call(request), self.shared.clone(), ticket)
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
