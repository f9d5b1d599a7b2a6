//! A breaker per key — endpoint, model, tenant — with a bound on keys and idle eviction.
//!
//! One failing model should not open the breaker for every model. A
//! [`KeyedCircuitBreaker`] builds a breaker per key from one validated configuration (each
//! named `<name>:<key>`), keeps at most `max_keys` of them, and forgets a key's breaker
//! once it has been idle for `idle_timeout` (and holds nothing worth keeping: a closed
//! breaker, or an open one whose wait is over). When the bound is reached and no breaker
//! can be forgotten, new keys share one overflow breaker until room frees up.

use std::fmt::Display;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hashbrown::HashMap;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Ticket;
use crate::classify::{Classify, ErrorsAreFailures};
use crate::clock::{Clock, MonotonicClock, nanos};
use crate::config::CircuitBreakerBuilder;
use crate::layer::{Recorder, Release, ResponseFuture};
use crate::{BreakerError, CircuitBreaker, ConfigError};

struct Entry<C: Clock> {
    breaker: CircuitBreaker<C>,
    last_used: AtomicU64,
}

/// Breakers by key, built from one configuration.
///
/// ```
/// use maas_breaker::{BreakerState, CircuitBreaker, KeyedCircuitBreaker};
///
/// let per_model = KeyedCircuitBreaker::<String>::builder(
///     CircuitBreaker::builder().name("model").consecutive_failures(1),
/// )
/// .max_keys(1_000)
/// .build()?;
/// let _ = per_model.get("llama").call(|| Err::<(), _>("down"));
/// assert_eq!(per_model.get("llama").state(), BreakerState::Open);
/// assert_eq!(per_model.get("mistral").state(), BreakerState::Closed);
/// assert_eq!(per_model.get("llama").name(), "model:llama");
/// # Ok::<(), maas_breaker::ConfigError>(())
/// ```
pub struct KeyedCircuitBreaker<K, C: Clock = MonotonicClock> {
    template: CircuitBreakerBuilder<C>,
    base: String,
    breakers: RwLock<HashMap<K, Entry<C>, foldhash::fast::RandomState>>,
    max_keys: usize,
    idle_timeout: u64,
    overflow: CircuitBreaker<C>,
    clock: C,
}

/// Configures a [`KeyedCircuitBreaker`].
pub struct KeyedCircuitBreakerBuilder<K, C: Clock = MonotonicClock> {
    template: CircuitBreakerBuilder<C>,
    max_keys: usize,
    idle_timeout: Duration,
    key: PhantomData<fn() -> K>,
}

impl<K> KeyedCircuitBreaker<K> {
    /// Breakers for every key, each configured like `template` (its name becomes the prefix
    /// `<name>:<key>`).
    pub fn builder<C: Clock + Clone>(
        template: CircuitBreakerBuilder<C>,
    ) -> KeyedCircuitBreakerBuilder<K, C> {
        KeyedCircuitBreakerBuilder {
            template,
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
            key: PhantomData,
        }
    }
}

impl<K, C: Clock + Clone> KeyedCircuitBreakerBuilder<K, C> {
    /// The most breakers kept at once (default 10,000).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How long a key must go unused before its breaker may be forgotten (default 10 min).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Validates the template and builds the keyed breaker.
    pub fn build(self) -> Result<KeyedCircuitBreaker<K, C>, ConfigError>
    where
        K: Hash + Eq + Display,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        let base = self.template.current_name().to_owned();
        let overflow = self.template.named(format!("{base}:overflow")).build()?;
        let clock = overflow.clock().clone();
        Ok(KeyedCircuitBreaker {
            template: self.template,
            base,
            breakers: RwLock::new(HashMap::default()),
            max_keys: self.max_keys,
            idle_timeout: nanos(self.idle_timeout),
            overflow,
            clock,
        })
    }
}

impl<K: Hash + Eq + Display, C: Clock + Clone> KeyedCircuitBreaker<K, C> {
    /// The breaker for `key`, created on first use. When `max_keys` breakers exist and
    /// none can be forgotten, the shared overflow breaker.
    pub fn get<Q>(&self, key: &Q) -> CircuitBreaker<C>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now_nanos();
        {
            let map = self.breakers.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = map.get(key) {
                e.last_used.store(now, Ordering::Relaxed);
                return e.breaker.clone();
            }
        }
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = map.get(key) {
            return e.breaker.clone();
        }
        if map.len() >= self.max_keys {
            self.evict(&mut map, now);
            if map.len() >= self.max_keys {
                return self.overflow.clone();
            }
        }
        let key = key.to_owned();
        let breaker = self.build_for(&key);
        map.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
    }

    fn build_for(&self, key: &K) -> CircuitBreaker<C> {
        // The template was validated in build(); renaming cannot invalidate it.
        self.template
            .named(format!("{}:{key}", self.base))
            .build()
            .unwrap_or_else(|_| self.overflow.clone())
    }

    fn evict(
        &self,
        map: &mut HashMap<K, Entry<C>, foldhash::fast::RandomState>,
        now: u64,
    ) -> usize {
        let before = map.len();
        map.retain(|_, e| {
            let idle = now.saturating_sub(e.last_used.load(Ordering::Relaxed)) >= self.idle_timeout;
            !(idle && e.breaker.is_evictable())
        });
        before - map.len()
    }

    /// Forgets every breaker idle for `idle_timeout` that holds nothing worth keeping;
    /// returns how many. Call it periodically to keep memory low; new keys also trigger it
    /// when the bound is reached.
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.now_nanos();
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.evict(&mut map, now)
    }

    /// Number of keys with a breaker now.
    pub fn len(&self) -> usize {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The breaker new keys share when the bound is reached.
    pub fn overflow(&self) -> &CircuitBreaker<C> {
        &self.overflow
    }
}

/// A tower layer with a breaker per key of the request.
///
/// ```
/// use maas_breaker::{CircuitBreaker, KeyedCircuitBreaker, KeyedCircuitBreakerLayer};
/// use tower::{ServiceBuilder, service_fn};
///
/// # fn main() -> Result<(), maas_breaker::ConfigError> {
/// let breakers = KeyedCircuitBreaker::<String>::builder(CircuitBreaker::builder().name("model")).build()?;
/// // Requests are (model, prompt); each model gets its own breaker.
/// let svc = ServiceBuilder::new()
///     .layer(KeyedCircuitBreakerLayer::new(breakers, |req: &(String, String)| req.0.clone()))
///     .service(service_fn(|(_, prompt): (String, String)| async move { Ok::<_, std::io::Error>(prompt) }));
/// # let _ = svc; Ok(()) }
/// ```
pub struct KeyedCircuitBreakerLayer<K, F, Cl = ErrorsAreFailures, C: Clock = MonotonicClock> {
    shared: Arc<KeyedShared<K, F, C>>,
    classify: Arc<Cl>,
}

struct KeyedShared<K, F, C: Clock> {
    breakers: KeyedCircuitBreaker<K, C>,
    key: F,
}

impl<K, F, C: Clock> KeyedCircuitBreakerLayer<K, F, ErrorsAreFailures, C> {
    /// A layer choosing the breaker by `key(&request)`; `Err` results are failures.
    pub fn new(breakers: KeyedCircuitBreaker<K, C>, key: F) -> Self {
        KeyedCircuitBreakerLayer {
            shared: Arc::new(KeyedShared { breakers, key }),
            classify: Arc::new(ErrorsAreFailures),
        }
    }
}

impl<K, F, Cl, C: Clock> KeyedCircuitBreakerLayer<K, F, Cl, C> {
    /// Classifies results with `classify` instead.
    pub fn classify<Cl2>(self, classify: Cl2) -> KeyedCircuitBreakerLayer<K, F, Cl2, C> {
        KeyedCircuitBreakerLayer {
            shared: self.shared,
            classify: Arc::new(classify),
        }
    }

    /// The keyed breakers.
    pub fn breakers(&self) -> &KeyedCircuitBreaker<K, C> {
        &self.shared.breakers
    }
}

impl<K, F, Cl, C: Clock> Clone for KeyedCircuitBreakerLayer<K, F, Cl, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerLayer {
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, F, Cl, C: Clock> std::fmt::Debug for KeyedCircuitBreakerLayer<K, F, Cl, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Cl, C: Clock> Layer<S> for KeyedCircuitBreakerLayer<K, F, Cl, C> {
    type Service = KeyedCircuitBreakerService<S, K, F, Cl, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreakerService {
            inner,
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// The service made by [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreakerService<S, K, F, Cl, C: Clock> {
    inner: S,
    shared: Arc<KeyedShared<K, F, C>>,
    classify: Arc<Cl>,
}

impl<S: Clone, K, F, Cl, C: Clock> Clone for KeyedCircuitBreakerService<S, K, F, Cl, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreakerService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, K, F, Cl, C: Clock> std::fmt::Debug for KeyedCircuitBreakerService<S, K, F, Cl, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreakerService")
            .finish_non_exhaustive()
    }
}

impl<S, K, F, Cl, C, R> Service<R> for KeyedCircuitBreakerService<S, K, F, Cl, C>
where
    S: Service<R>,
    K: Hash + Eq + Display + Clone,
    F: Fn(&R) -> K,
    Cl: Classify<S::Response, S::Error>,
    C: Clock + Clone,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = ResponseFuture<S::Future, KeyedRecorder<Cl, C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Service)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let key = (self.shared.key)(&request);
        let breaker = self.shared.breakers.get(&key);
        match breaker.acquire_ticket() {
            Ok(ticket) => ResponseFuture::called(
                self.inner.call(request),
                KeyedRecorder {
                    breaker,
                    classify: self.classify.clone(),
                },
                ticket,
            ),
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}

/// What a keyed call's future needs to record its result: the key's breaker and the
/// classifier.
pub struct KeyedRecorder<Cl, C: Clock> {
    breaker: CircuitBreaker<C>,
    classify: Arc<Cl>,
}

impl<Cl, C: Clock> Release for KeyedRecorder<Cl, C> {
    fn release(&self, ticket: Ticket) {
        self.breaker.release_ticket(ticket);
    }
}

impl<Cl: Classify<T, E>, C: Clock, T, E> Recorder<T, E> for KeyedRecorder<Cl, C> {
    fn complete(&self, ticket: Ticket, result: &Result<T, E>) {
        self.breaker
            .complete_ticket(ticket, self.classify.classify(result));
    }
}
