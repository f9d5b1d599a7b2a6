//! Where the layer finds a request's breaker: one [`CircuitBreaker`] for every request, or
//! a [`KeyedCircuitBreaker`] and a [`KeyExtractor`] that names the request's key.

use std::fmt::Display;
use std::hash::Hash;

use crate::clock::Clock;
use crate::{CircuitBreaker, KeyedCircuitBreaker};

/// Finds the key a request's breaker is kept under (endpoint, model, tenant).
///
/// Implemented for every `Fn(&Request) -> Key`; [`NoKey`] puts every request under `()`,
/// the key of a single [`CircuitBreaker`].
pub trait KeyExtractor<R>: Send + Sync + 'static {
    /// The key type; it must match the source's ([`KeyedCircuitBreaker<Key>`]).
    type Key;

    /// The key of `request`.
    fn key(&self, request: &R) -> Self::Key;
}

impl<R, K, F> KeyExtractor<R> for F
where
    F: Fn(&R) -> K + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn key(&self, request: &R) -> K {
        self(request)
    }
}

/// Every request under the key `()`: for a single breaker.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<R> KeyExtractor<R> for NoKey {
    type Key = ();

    #[inline]
    fn key(&self, _request: &R) {}
}

/// The breaker a call goes through.
#[doc(hidden)]
pub enum Selected<'a, C: Clock> {
    /// The source's own breaker: the response future reaches it through the layer.
    Fixed(&'a CircuitBreaker<C>),
    /// A breaker the response future keeps (a key's breaker).
    Owned(CircuitBreaker<C>),
}

/// What a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) takes its breakers from:
/// a [`CircuitBreaker`] (key `()`), or a [`KeyedCircuitBreaker<Key>`].
pub trait BreakerSource<Key>: Send + Sync + 'static {
    /// The breakers' clock.
    type Clock: Clock;

    /// The breaker for `key`.
    #[doc(hidden)]
    fn select(&self, key: &Key) -> Selected<'_, Self::Clock>;

    /// The breaker [`Selected::Fixed`] refers to.
    #[doc(hidden)]
    fn fixed(&self) -> &CircuitBreaker<Self::Clock>;
}

impl<C: Clock + Send + Sync + 'static> BreakerSource<()> for CircuitBreaker<C> {
    type Clock = C;

    #[inline]
    fn select(&self, _key: &()) -> Selected<'_, C> {
        Selected::Fixed(self)
    }

    #[inline]
    fn fixed(&self) -> &CircuitBreaker<C> {
        self
    }
}

impl<K, C> BreakerSource<K> for KeyedCircuitBreaker<K, C>
where
    K: Hash + Eq + Display + Clone + Send + Sync + 'static,
    C: Clock + Clone + Send + Sync + 'static,
{
    type Clock = C;

    #[inline]
    fn select(&self, key: &K) -> Selected<'_, C> {
        Selected::Owned(self.get(key))
    }

    /// Never selected as fixed; the overflow breaker keeps this total.
    fn fixed(&self) -> &CircuitBreaker<C> {
        self.overflow()
    }
}
