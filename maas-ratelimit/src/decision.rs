//! The answer every limiter gives.

use std::time::Duration;

/// The outcome of a check: whether the request may pass, and what a client should be told.
///
/// All three algorithms answer with this one type, so a layer or an HTTP adapter can turn
/// any of them into `429 Too Many Requests` with `Retry-After` and `RateLimit-*` headers.
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::{Quota, TokenBucket};
/// use maas_ratelimit::clock::ManualClock;
///
/// let limiter = TokenBucket::builder(Quota::per_second(2))
///     .clock(ManualClock::new())
///     .build()
///     .unwrap();
/// assert!(limiter.check().is_allowed());
/// let d = limiter.check();
/// assert!(d.is_allowed());
/// assert_eq!(d.remaining(), 0);
/// let d = limiter.check();
/// assert!(!d.is_allowed());
/// assert_eq!(d.retry_after(), Some(Duration::from_millis(500)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    pub(crate) reset_after: Duration,
    pub(crate) retry_after: Option<Duration>,
}

impl Decision {
    /// An allowed request: `remaining` units would still pass after it, and the limiter is
    /// back to its full quota after `reset_after` if nothing else arrives. For limiters
    /// written outside this crate (a distributed one, say) to plug into
    /// [`RateLimitLayer`](crate::RateLimitLayer) and the HTTP adapter.
    ///
    /// ```
    /// use std::time::Duration;
    /// use maas_ratelimit::Decision;
    /// let d = Decision::allowed(10, 9, Duration::from_secs(1));
    /// assert!(d.is_allowed() && d.retry_after().is_none());
    /// ```
    pub fn allowed(limit: u64, remaining: u64, reset_after: Duration) -> Self {
        Decision {
            allowed: true,
            limit,
            remaining: remaining.min(limit),
            reset_after,
            retry_after: None,
        }
    }

    /// A rejected request. `retry_after` is when the same request would pass; `None` means
    /// it never can (its cost exceeds the limit).
    ///
    /// ```
    /// use std::time::Duration;
    /// use maas_ratelimit::Decision;
    /// let d = Decision::rejected(10, 0, Duration::from_secs(1), Some(Duration::from_millis(100)));
    /// assert!(!d.is_allowed() && !d.can_never_pass());
    /// assert!(Decision::rejected(10, 10, Duration::ZERO, None).can_never_pass());
    /// ```
    pub fn rejected(
        limit: u64,
        remaining: u64,
        reset_after: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        Decision {
            allowed: false,
            limit,
            remaining: remaining.min(limit),
            reset_after,
            retry_after,
        }
    }

    /// Whether the request may pass (its cost was consumed, unless this was a peek).
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The quota's limit: the bucket capacity, or the number of requests per window.
    #[inline]
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How many more units of cost would pass right now, after this decision.
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Time until the limiter is back to its full quota if nothing else arrives
    /// (the `RateLimit-Reset` header).
    #[inline]
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// For a rejection, the time until the same request would pass (the `Retry-After`
    /// header). `None` when the request was allowed, and also when it can never pass because
    /// its cost exceeds the limit (see [`can_never_pass`](Decision::can_never_pass)).
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// True when the request was rejected because its cost exceeds the whole limit, so
    /// waiting will not help.
    #[inline]
    pub fn can_never_pass(&self) -> bool {
        !self.allowed && self.retry_after.is_none()
    }
}
