//! The traits the tower layer needs from a limiter: [`Limiter`] answers at once,
//! [`AsyncLimiter`] may need a round trip.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::Arc;

use crate::algorithm::Algorithm;
use crate::clock::Clock;
use crate::{Decision, FixedWindow, KeyedLimiter, SlidingWindow, TokenBucket};

/// Anything that can decide whether a request for a key may pass.
///
/// Implemented by the three single-stream limiters (which ignore the key), by
/// [`KeyedLimiter`], and by `Arc`s of them. [`RateLimitLayer`](crate::RateLimitLayer) accepts
/// any implementation, so you can also plug in your own (e.g. a distributed limiter),
/// answering with [`Decision::allowed`] and [`Decision::rejected`]:
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::{Decision, Limiter};
///
/// /// Lets through requests whose key is on a list; everything else is told to come back.
/// struct AllowList(Vec<String>);
///
/// impl Limiter<str> for AllowList {
///     fn check_key(&self, key: &str, _cost: u64) -> Decision {
///         self.peek_key(key, 0)
///     }
///     fn peek_key(&self, key: &str, _cost: u64) -> Decision {
///         if self.0.iter().any(|k| k == key) {
///             Decision::allowed(1, 1, Duration::ZERO)
///         } else {
///             Decision::rejected(1, 0, Duration::ZERO, Some(Duration::from_secs(60)))
///         }
///     }
/// }
///
/// let limiter = AllowList(vec!["acme".into()]);
/// assert!(limiter.check_key("acme", 1).is_allowed());
/// assert!(!limiter.check_key("globex", 1).is_allowed());
/// ```
pub trait Limiter<K: ?Sized>: Send + Sync + 'static {
    /// Checks `cost` units for `key`, consuming them when the request passes.
    fn check_key(&self, key: &K, cost: u64) -> Decision;

    /// What [`check_key`](Limiter::check_key) would answer, consuming nothing.
    fn peek_key(&self, key: &K, cost: u64) -> Decision;

    /// How many keys are tracked, for limiters that track keys.
    fn tracked_keys(&self) -> Option<usize> {
        None
    }
}

macro_rules! single_stream {
    ($($limiter:ident),*) => {$(
        impl<K: ?Sized, C: Clock> Limiter<K> for $limiter<C> {
            #[inline]
            fn check_key(&self, _key: &K, cost: u64) -> Decision {
                self.check_n(cost)
            }

            fn peek_key(&self, _key: &K, cost: u64) -> Decision {
                self.peek(cost)
            }
        }
    )*};
}

single_stream!(TokenBucket, SlidingWindow, FixedWindow);

impl<K, Q, A, C, S> Limiter<Q> for KeyedLimiter<K, A, C, S>
where
    K: Hash + Eq + Borrow<Q> + Send + Sync + 'static,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    A: Algorithm,
    C: Clock,
    S: BuildHasher + Send + Sync + 'static,
{
    #[inline]
    fn check_key(&self, key: &Q, cost: u64) -> Decision {
        self.check_n(key, cost)
    }

    fn peek_key(&self, key: &Q, cost: u64) -> Decision {
        self.peek(key, cost)
    }

    fn tracked_keys(&self) -> Option<usize> {
        Some(KeyedLimiter::tracked_keys(self))
    }
}

impl<K: ?Sized, L: Limiter<K> + ?Sized> Limiter<K> for Arc<L> {
    #[inline]
    fn check_key(&self, key: &K, cost: u64) -> Decision {
        (**self).check_key(key, cost)
    }

    fn peek_key(&self, key: &K, cost: u64) -> Decision {
        (**self).peek_key(key, cost)
    }

    fn tracked_keys(&self) -> Option<usize> {
        (**self).tracked_keys()
    }
}

/// A decision, or the future that will give it.
pub enum Answer {
    /// Decided at once.
    Ready(Decision),
    /// Decided once the future resolves (e.g. after a call to Redis).
    Pending(Pin<Box<dyn Future<Output = Decision> + Send + 'static>>),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ready(d) => f.debug_tuple("Ready").field(d).finish(),
            Answer::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// What [`RateLimitLayer`](crate::RateLimitLayer) and the HTTP adapter take: a limiter
/// that may have to wait for its answer, like the Redis one (feature `redis`), which
/// answers from its lease at once and goes to Redis otherwise.
///
/// Every [`Limiter`] is one, answering at once; implement it yourself only for a limiter
/// that must wait.
///
/// In the layer's wait mode, a limiter without a synchronous form ([`as_sync`] `None`) is
/// asked again after each `retry_after` until the request passes or the wait would exceed
/// the maximum (there is no FIFO order across replicas to keep).
///
/// [`as_sync`]: AsyncLimiter::as_sync
pub trait AsyncLimiter<K: ?Sized>: Send + Sync + 'static {
    /// Checks `cost` units for `key`, consuming them when the request passes.
    fn check_async(&self, key: &K, cost: u64) -> Answer;

    /// The limiter as a [`Limiter`], when it can answer at once.
    fn as_sync(&self) -> Option<&dyn Limiter<K>>;
}

impl<K: ?Sized, L: Limiter<K>> AsyncLimiter<K> for L {
    #[inline]
    fn check_async(&self, key: &K, cost: u64) -> Answer {
        Answer::Ready(self.check_key(key, cost))
    }

    fn as_sync(&self) -> Option<&dyn Limiter<K>> {
        Some(self)
    }
}
