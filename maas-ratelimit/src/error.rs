//! Errors: invalid configuration, and the rejection the tower layer returns.

use std::time::Duration;

use crate::Decision;

/// A limiter's configuration cannot be enforced. Returned by every `build()` and by
/// `set_quota`; a limiter never panics on configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The quota's limit is zero: nothing would ever pass.
    #[error("the quota's limit is zero: nothing would ever pass")]
    ZeroLimit,
    /// The quota's period (window length) is zero.
    #[error("the quota's period is zero")]
    ZeroPeriod,
    /// The token bucket's burst (capacity) is zero.
    #[error("the token bucket's burst (capacity) is zero")]
    ZeroBurst,
    /// A sliding window needs at least one sub-bucket.
    #[error("a sliding window needs at least one sub-bucket")]
    ZeroBuckets,
    /// The sub-buckets would be shorter than the clock can measure.
    #[error(
        "{buckets} sub-buckets over a {window:?} window are {bucket:?} each, \
         finer than the clock's resolution of {resolution:?}"
    )]
    BucketsFinerThanClock {
        /// Sub-buckets asked for.
        buckets: u32,
        /// The window length.
        window: Duration,
        /// The resulting sub-bucket length.
        bucket: Duration,
        /// The clock's resolution.
        resolution: Duration,
    },
    /// A fixed window shorter than the clock can measure.
    #[error("a {window:?} window is shorter than the clock's resolution of {resolution:?}")]
    WindowFinerThanClock {
        /// The window length.
        window: Duration,
        /// The clock's resolution.
        resolution: Duration,
    },
    /// The bucket refills more tokens during one clock tick than it can hold, so the real
    /// rate would fall below the quota. Raise the burst or use a finer clock.
    #[error(
        "the burst of {burst} is below the {per_tick} tokens refilled per {resolution:?} clock tick; \
         raise the burst or use MonotonicClock"
    )]
    BurstBelowClockTick {
        /// The configured burst.
        burst: u64,
        /// Tokens refilled during one tick.
        per_tick: u64,
        /// The clock's resolution.
        resolution: Duration,
    },
    /// The quota's numbers do not fit the limiter's state (a period of centuries, a limit
    /// above 2^32 per window, a burst spanning more than ~4.5 years of refill).
    #[error("the quota is too large to represent: {0}")]
    TooLarge(&'static str),
    /// Window limiters have no burst; use a token bucket for bursts.
    #[error("window limiters take no burst; a burst applies only to the token bucket")]
    BurstNotSupported,
    /// A sliding window's length is fixed when it is built; its limit can change at runtime.
    #[error("a sliding window's length cannot change at runtime (was {from:?}, asked {to:?})")]
    WindowLengthChange {
        /// Current window length.
        from: Duration,
        /// Requested window length.
        to: Duration,
    },
    /// A keyed limiter needs room for at least one key.
    #[error("a keyed limiter needs room for at least one key (max_keys is zero)")]
    ZeroMaxKeys,
}

/// A request rejected by the [`RateLimitLayer`](crate::RateLimitLayer): carries the decision,
/// with the limit, what remains and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.decision))]
pub struct RateLimited {
    decision: Decision,
}

fn describe(d: &Decision) -> String {
    match d.retry_after() {
        Some(after) => format!("rate limited: retry after {after:?}"),
        None => format!(
            "rate limited: the request's cost exceeds the limit of {}",
            d.limit()
        ),
    }
}

impl RateLimited {
    pub(crate) fn new(decision: Decision) -> Self {
        RateLimited { decision }
    }

    /// The limiter's decision.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// How long to wait before retrying; `None` when the request can never pass.
    pub fn retry_after(&self) -> Option<Duration> {
        self.decision.retry_after()
    }
}

/// The error of a rate-limited service: the limiter rejected the request, or the inner
/// service failed.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError<E> {
    /// The limiter rejected the request; the inner service was not called.
    #[error(transparent)]
    Limited(RateLimited),
    /// The inner service returned an error.
    #[error("{0}")]
    Service(E),
}

impl<E> RateLimitError<E> {
    /// The rejection, when the limiter rejected the request.
    pub fn as_limited(&self) -> Option<&RateLimited> {
        match self {
            RateLimitError::Limited(l) => Some(l),
            RateLimitError::Service(_) => None,
        }
    }
}
