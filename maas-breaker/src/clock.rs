//! Time for the breaker: how long it stays open, how long a call took, which time bucket an
//! outcome falls in.
//!
//! The breaker reads time only through a [`Clock`]: [`MonotonicClock`] in production,
//! [`ManualClock`] in tests, where time moves only when the test advances it. A breaker
//! configured without slow-call detection and with a count-based window reads no clock at
//! all while closed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Monotonic time in nanoseconds since an epoch of the clock's choosing.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the clock's epoch; never decreases.
    fn now_nanos(&self) -> u64;
}

/// `std::time::Instant`, as nanoseconds since the first reading in the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock moved by hand; clones share one time.
///
/// ```
/// use std::time::Duration;
/// use maas_breaker::clock::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.clone().now_nanos(), 2_000_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward, saturating at `u64::MAX` nanoseconds.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Saturates at u64::MAX nanoseconds (584 years): the clock never wraps back.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(nanos))
            });
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Whole nanoseconds of a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
