//! The longest duration the engine and its stores represent, and time arithmetic that
//! saturates at it instead of overflowing.
//!
//! A deadline, TTL, timeout, lease or pause may come from an API caller, so any
//! [`Duration`] is accepted — up to `Duration::MAX` — and anything longer than
//! [`MAX_DURATION`] (100 years: as good as never, and inside what every store can hold)
//! is treated as exactly that long. Nothing larger ever reaches a database: PostgreSQL
//! refuses intervals past ~178 million years and timestamps past 294276 AD, and one refused
//! row would otherwise fail every write committed in the same batch.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// The longest deadline, TTL, step timeout, lease or retry pause the engine represents:
/// 100 years. Longer durations are clamped to it.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `d`, at most [`MAX_DURATION`].
pub(crate) fn clamp(d: Duration) -> Duration {
    d.min(MAX_DURATION)
}

/// `t + d`, with `d` clamped (and `t` itself if even that does not fit).
pub(crate) fn system_after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(clamp(d)).unwrap_or(t)
}

/// `t + d` for tokio's clock, with `d` clamped.
pub(crate) fn instant_after(t: Instant, d: Duration) -> Instant {
    t.checked_add(clamp(d)).unwrap_or(t)
}

/// `d` in whole milliseconds, clamped, for a database column.
#[cfg(any(feature = "postgres", feature = "sqlite", test))]
pub(crate) fn millis(d: Duration) -> i64 {
    // 100 years is 3.2 × 10^12 ms: far inside i64.
    clamp(d).as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturates_instead_of_overflowing() {
        assert_eq!(clamp(Duration::MAX), MAX_DURATION);
        assert_eq!(millis(Duration::MAX), 3_153_600_000_000);
        let now = SystemTime::now();
        assert_eq!(system_after(now, Duration::MAX), now + MAX_DURATION);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        let _ = system_after(far, Duration::MAX); // no panic, whatever the platform holds
        let t = Instant::now();
        assert_eq!(instant_after(t, Duration::MAX), t + MAX_DURATION);
    }
}
