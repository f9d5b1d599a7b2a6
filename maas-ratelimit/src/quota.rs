//! How much traffic a limiter lets through.

use std::time::Duration;

use crate::ConfigError;

/// A quota: `limit` units of cost per `period`, with an optional burst for the token bucket.
///
/// * For a [`TokenBucket`](crate::TokenBucket): the bucket refills at `limit / period` and
///   holds at most `burst` tokens (`limit` when no burst is given).
/// * For a [`SlidingWindow`](crate::SlidingWindow) or [`FixedWindow`](crate::FixedWindow):
///   at most `limit` per window of length `period`; a burst is refused at build.
///
/// A quota is plain data; it is validated when a limiter is built, and an invalid one (zero
/// limit, zero period, zero burst) is a [`ConfigError`](crate::ConfigError) there.
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::Quota;
/// let q = Quota::per_second(100).with_burst(20);
/// assert_eq!(q.limit(), 100);
/// assert_eq!(q.burst(), 20);
/// assert_eq!(Quota::per_minute(60), Quota::new(60, Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    period: Duration,
    burst: Option<u64>,
}

impl Quota {
    /// `limit` units of cost per `period`.
    pub const fn new(limit: u64, period: Duration) -> Self {
        Quota {
            limit,
            period,
            burst: None,
        }
    }

    /// `limit` per second.
    pub const fn per_second(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` per minute.
    pub const fn per_minute(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` per hour.
    pub const fn per_hour(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// Sets the token bucket's capacity: how much may pass at once after a quiet period.
    pub const fn with_burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Units of cost per period.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The period (the window length, for window limiters).
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The burst: the explicit one, or the limit.
    pub const fn burst(&self) -> u64 {
        match self.burst {
            Some(b) => b,
            None => self.limit,
        }
    }

    /// Whether a burst was set explicitly.
    pub const fn has_explicit_burst(&self) -> bool {
        self.burst.is_some()
    }

    /// Checks the quota for a window limiter (N per window, N < 2^32, no burst) and returns
    /// the window length in nanoseconds.
    pub(crate) fn window_nanos(&self) -> Result<u64, ConfigError> {
        if self.has_explicit_burst() {
            return Err(ConfigError::BurstNotSupported);
        }
        if self.limit == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if self.period.is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        if self.limit > u64::from(u32::MAX) {
            return Err(ConfigError::TooLarge("a window limit above 2^32 - 1"));
        }
        u64::try_from(self.period.as_nanos())
            .map_err(|_| ConfigError::TooLarge("the window exceeds u64 nanoseconds"))
    }
}
