//! The tower layer: [`CircuitBreakerLayer`] and its service, for one breaker or a breaker
//! per key of the request.

mod future;
mod source;

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

pub use future::{Recorder, Release, ResponseFuture};
pub use source::{BreakerSource, KeyExtractor, NoKey, Selected};

use crate::breaker::Ticket;
use crate::classify::{Classify, ErrorsAreFailures};
use crate::{BreakerError, CircuitBreaker};

/// A tower layer that puts a circuit breaker in front of a service.
///
/// When the breaker is open the service is not called: the call fails at once with
/// [`BreakerError::Rejected`], which carries the time left before the breaker lets a probe
/// through. Every service the layer makes, and every clone, shares the breakers.
///
/// The breaker comes from a [`BreakerSource`]: one [`CircuitBreaker`] for every request, or
/// a [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker) with a [`key`](Self::key)
/// extractor, so one failing model or endpoint does not open the breaker for the others.
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
///
/// A breaker per model, the model read from the request:
///
/// ```
/// use maas_breaker::{CircuitBreaker, CircuitBreakerLayer, KeyedCircuitBreaker};
/// use tower::{ServiceBuilder, service_fn};
///
/// # fn main() -> Result<(), maas_breaker::ConfigError> {
/// let per_model = KeyedCircuitBreaker::<String>::builder(CircuitBreaker::builder().name("model"))
///     .max_keys(1_000)
///     .build()?;
/// // Requests are (model, prompt).
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(per_model).key(|req: &(String, String)| req.0.clone()))
///     .service(service_fn(|(_, prompt): (String, String)| async move { Ok::<_, std::io::Error>(prompt) }));
/// # let _ = svc; Ok(()) }
/// ```
pub struct CircuitBreakerLayer<B = CircuitBreaker, KF = NoKey, K = ErrorsAreFailures> {
    shared: Arc<Shared<B, KF, K>>,
}

/// The breaker source, the key extractor and the classifier, shared by every service a
/// layer makes (one `Arc` clone per call carries them to the response future).
pub struct Shared<B, KF, K> {
    source: B,
    key: KF,
    classify: K,
}

/// What a call's response future keeps: the layer's shared parts and, for a keyed source,
/// the key's breaker.
pub struct CallRecorder<B: BreakerSource<Key>, Key, KF, K> {
    shared: Arc<Shared<B, KF, K>>,
    owned: Option<CircuitBreaker<B::Clock>>,
    key: PhantomData<fn(&Key)>,
}

impl<B: BreakerSource<Key>, Key, KF, K> CallRecorder<B, Key, KF, K> {
    #[inline]
    fn breaker(&self) -> &CircuitBreaker<B::Clock> {
        match &self.owned {
            Some(b) => b,
            None => self.shared.source.fixed(),
        }
    }
}

impl<B: BreakerSource<Key>, Key, KF, K> Release for CallRecorder<B, Key, KF, K> {
    fn release(&self, ticket: Ticket) {
        self.breaker().release_ticket(ticket);
    }
}

impl<B: BreakerSource<Key>, Key, KF, K: Classify<T, E>, T, E> Recorder<T, E>
    for CallRecorder<B, Key, KF, K>
{
    #[inline]
    fn complete(&self, ticket: Ticket, result: &Result<T, E>) {
        self.breaker()
            .complete_ticket(ticket, self.shared.classify.classify(result));
    }
}

impl<B, KF, K> Clone for CircuitBreakerLayer<B, KF, K> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<B: std::fmt::Debug, KF, K> std::fmt::Debug for CircuitBreakerLayer<B, KF, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("source", &self.shared.source)
            .finish_non_exhaustive()
    }
}

impl<B> CircuitBreakerLayer<B, NoKey, ErrorsAreFailures> {
    /// A layer taking its breakers from `source`, recording `Err` results as failures.
    /// For a [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker), add a [`key`](Self::key).
    pub fn new(source: B) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared {
                source,
                key: NoKey,
                classify: ErrorsAreFailures,
            }),
        }
    }
}

impl<B, KF, K> CircuitBreakerLayer<B, KF, K> {
    fn rebuild<KF2, K2>(self, key: KF2, classify: K2) -> CircuitBreakerLayer<B, KF2, K2>
    where
        B: Clone,
    {
        CircuitBreakerLayer {
            shared: Arc::new(Shared {
                source: self.shared.source.clone(),
                key,
                classify,
            }),
        }
    }

    /// Chooses each request's breaker by `key(&request)` (see [`KeyExtractor`]).
    pub fn key<KF2>(self, key: KF2) -> CircuitBreakerLayer<B, KF2, K>
    where
        B: Clone,
        K: Clone,
    {
        let classify = self.shared.classify.clone();
        self.rebuild(key, classify)
    }

    /// Classifies results with `classify` instead (see [`classify`](crate::classify)).
    pub fn classify<K2>(self, classify: K2) -> CircuitBreakerLayer<B, KF, K2>
    where
        B: Clone,
        KF: Clone,
    {
        let key = self.shared.key.clone();
        self.rebuild(key, classify)
    }

    /// The breaker source, e.g. to read a breaker's state or force it open.
    pub fn source(&self) -> &B {
        &self.shared.source
    }

    /// The key extractor.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn key_extractor(&self) -> &KF {
        &self.shared.key
    }
}

impl<C: crate::clock::Clock, KF, K> CircuitBreakerLayer<CircuitBreaker<C>, KF, K> {
    /// The breaker, e.g. to read its state or force it open.
    pub fn breaker(&self) -> &CircuitBreaker<C> {
        &self.shared.source
    }
}

impl<S, B, KF, K> Layer<S> for CircuitBreakerLayer<B, KF, K> {
    type Service = CircuitBreakerService<S, B, KF, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`].
pub struct CircuitBreakerService<S, B, KF, K> {
    inner: S,
    shared: Arc<Shared<B, KF, K>>,
}

impl<S: Clone, B, KF, K> Clone for CircuitBreakerService<S, B, KF, K> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, B: std::fmt::Debug, KF, K> std::fmt::Debug
    for CircuitBreakerService<S, B, KF, K>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("source", &self.shared.source)
            .finish_non_exhaustive()
    }
}

impl<S, B, KF, K, R> Service<R> for CircuitBreakerService<S, B, KF, K>
where
    S: Service<R>,
    KF: KeyExtractor<R>,
    B: BreakerSource<KF::Key>,
    K: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, CallRecorder<B, KF::Key, KF, K>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Service)
    }

    #[inline]
    fn call(&mut self, request: R) -> Self::Future {
        let key = self.shared.key.key(&request);
        let (ticket, owned) = match self.shared.source.select(&key) {
            Selected::Fixed(b) => (b.acquire_ticket(), None),
            Selected::Owned(b) => (b.acquire_ticket(), Some(b)),
        };
        match ticket {
            Ok(ticket) => ResponseFuture::called(
                self.inner.call(request),
                CallRecorder {
                    shared: self.shared.clone(),
                    owned,
                    key: PhantomData,
                },
                ticket,
            ),
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
