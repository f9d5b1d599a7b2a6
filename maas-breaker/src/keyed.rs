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
use std::time::Duration;

use hashbrown::HashMap;

use crate::clock::{Clock, MonotonicClock, nanos};
use crate::config::CircuitBreakerBuilder;
use crate::{CircuitBreaker, ConfigError};

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
///
/// Cheap to clone: clones share the breakers (hand one to a
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) and keep one to inspect them).
pub struct KeyedCircuitBreaker<K, C: Clock = MonotonicClock> {
    inner: Arc<Keyed<K, C>>,
}

impl<K, C: Clock> Clone for KeyedCircuitBreaker<K, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
        }
    }
}

impl<K, C: Clock> std::fmt::Debug for KeyedCircuitBreaker<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("name", &self.inner.base)
            .field("max_keys", &self.inner.max_keys)
            .finish_non_exhaustive()
    }
}

struct Keyed<K, C: Clock> {
    template: CircuitBreakerBuilder<C>,
    base: String,
    breakers: RwLock<HashMap<K, Entry<C>, foldhash::fast::RandomState>>,
    max_keys: usize,
    idle_timeout: u64,
    overflow: CircuitBreaker<C>,
    clock: C,
    #[cfg(feature = "prometheus")]
    tracked: Option<prometheus::IntGauge>,
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
        let overflow = self
            .template
            .named(format!("{base}:overflow"))
            .build_member(&base)?;
        let clock = overflow.clock().clone();
        #[cfg(feature = "prometheus")]
        let tracked = self.template.tracked_keys_gauge(&base);
        Ok(KeyedCircuitBreaker {
            inner: Arc::new(Keyed {
                template: self.template,
                base,
                breakers: RwLock::new(HashMap::default()),
                max_keys: self.max_keys,
                idle_timeout: nanos(self.idle_timeout),
                overflow,
                clock,
                #[cfg(feature = "prometheus")]
                tracked,
            }),
        })
    }
}

impl<K: Hash + Eq + Display, C: Clock + Clone> Keyed<K, C> {
    /// See [`KeyedCircuitBreaker::get`].
    fn get<Q>(&self, key: &Q) -> CircuitBreaker<C>
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
        self.report_len(map.len());
        breaker
    }

    fn build_for(&self, key: &K) -> CircuitBreaker<C> {
        // The template was validated in build(); renaming cannot invalidate it.
        self.template
            .named(format!("{}:{key}", self.base))
            .build_member(&self.base)
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
            let evict = idle && e.breaker.is_evictable();
            if evict {
                e.breaker.forget_metrics();
            }
            !evict
        });
        self.report_len(map.len());
        before - map.len()
    }

    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))]
    fn report_len(&self, len: usize) {
        #[cfg(feature = "prometheus")]
        if let Some(g) = &self.tracked {
            g.set(i64::try_from(len).unwrap_or(i64::MAX));
        }
    }

    /// See [`KeyedCircuitBreaker::evict_idle`].
    fn evict_idle(&self) -> usize {
        let now = self.clock.now_nanos();
        let mut map = self
            .breakers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.evict(&mut map, now)
    }

    /// See [`KeyedCircuitBreaker::len`].
    fn len(&self) -> usize {
        self.breakers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
        self.inner.get(key)
    }

    /// Forgets every breaker idle for `idle_timeout` that holds nothing worth keeping;
    /// returns how many. Call it periodically to keep memory low; new keys also trigger it
    /// when the bound is reached.
    pub fn evict_idle(&self) -> usize {
        self.inner.evict_idle()
    }

    /// Number of keys with a breaker now.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.inner.len() == 0
    }

    /// The breaker new keys share when the bound is reached.
    pub fn overflow(&self) -> &CircuitBreaker<C> {
        &self.inner.overflow
    }
}
