//! The fixed window counter: at most N per window, counted from zero at each window start.
//!
//! Time is cut into windows of length W (aligned to the clock's epoch); each window counts
//! from zero. It is the cheapest algorithm (one atomic word), and the least exact:
//!
//! ## The boundary burst
//!
//! A client can spend the whole quota at the very end of one window and again at the very
//! start of the next, so **up to 2N requests can pass within a span much shorter than W**:
//!
//! ```text
//!  window k                      window k+1
//! |-----------------------NNNNN|NNNNN-----------------------|
//!                          ^^^^^^^^^^ 2N in an instant
//! ```
//!
//! Use a [`SlidingWindow`](crate::SlidingWindow) when that matters; it never lets more than
//! N through in any span of length W.

use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::versioned::{Step, Versioned, WordConfig, Words};
use crate::{ConfigError, Decision, Quota};

const COUNT_BITS: u32 = 32;
const INDEX_BITS: u32 = 28;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A validated fixed-window configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedConfig {
    pub(crate) window: u64,
    pub(crate) limit: u64,
}

/// The state: the window's index (modulo 2^28) and the count spent in it.
fn unpack(state: u64) -> (u64, u64) {
    ((state >> COUNT_BITS) & INDEX_MASK, state & COUNT_MASK)
}

fn pack(index: u64, count: u64) -> u64 {
    ((index & INDEX_MASK) << COUNT_BITS) | (count & COUNT_MASK)
}

/// Windows from `stored` to `current`, modulo 2^28.
///
/// Checks read the clock after loading the state, so with a clock that never goes back the
/// stored window is never ahead of a check's: any difference means the stored count is
/// stale. The only misreading is a state left idle for an exact multiple of 2^28 windows,
/// whose count then applies until the end of the current window, and no longer.
fn windows_since(current: u64, stored: u64) -> u64 {
    current.wrapping_sub(stored) & INDEX_MASK
}

impl FixedConfig {
    pub(crate) fn new(quota: &Quota, resolution: Duration) -> Result<Self, ConfigError> {
        let window = quota.window_nanos()?;
        if quota.period() < resolution {
            return Err(ConfigError::WindowFinerThanClock {
                window: quota.period(),
                resolution,
            });
        }
        Ok(FixedConfig {
            window,
            limit: quota.limit(),
        })
    }

    /// Nanoseconds until `state` is indistinguishable from a fresh window. `now` may have
    /// been read before a concurrent check stored a later window, so a stored window ahead
    /// of `now` (in the forward half of the index range) counts as live, for at most one
    /// window from `now`: an entry is never evicted early, nor pinned for long.
    pub(crate) fn idle_in(&self, state: u64, now: u64) -> u64 {
        let (stored, count) = unpack(state);
        let current = now / self.window;
        let since = windows_since(current, stored);
        let windows_left = match since {
            _ if count == 0 => return 0,
            0 => 1,
            s if s >= 1 << (INDEX_BITS - 1) => 2, // stored ahead of `now`
            _ => return 0,                        // a stale count
        };
        current
            .saturating_add(windows_left)
            .saturating_mul(self.window)
            .saturating_sub(now)
    }
}

impl FixedConfig {
    /// Gives `units` back to the current window's count (a count of an earlier window has
    /// expired already: nothing to give back).
    pub(crate) fn refund(&self, state: u64, now: u64, units: u64) -> Step<Decision> {
        let current = now / self.window;
        let (stored, count) = unpack(state);
        let live = windows_since(current, stored) == 0 && count > 0;
        let count = if live { count.saturating_sub(units) } else { 0 };
        let window_end = current.saturating_add(1).saturating_mul(self.window);
        let reset = if count == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(window_end.saturating_sub(now))
        };
        let d = Decision::allowed(self.limit, self.limit.saturating_sub(count), reset);
        (d, (live && units > 0).then(|| pack(stored, count)))
    }
}

impl WordConfig for FixedConfig {
    fn to_words(self) -> Words {
        [self.window, self.limit, 0]
    }

    fn from_words(w: &Words) -> Self {
        FixedConfig {
            window: w[0],
            limit: w[1],
        }
    }

    /// One check at `now` against `state`.
    #[inline]
    fn step(&self, state: u64, now: u64, cost: u64, consume: bool) -> Step<Decision> {
        let current = now / self.window;
        let (stored, count) = unpack(state);
        // A new window starts from zero. An empty state belongs to no window in particular.
        let count = if windows_since(current, stored) == 0 {
            count
        } else {
            0
        };
        let window_end = current.saturating_add(1).saturating_mul(self.window);
        let until_end = Duration::from_nanos(window_end.saturating_sub(now));
        let reset = |count: u64| {
            if count == 0 {
                Duration::ZERO
            } else {
                until_end
            }
        };
        if cost > self.limit {
            let d = Decision {
                allowed: false,
                limit: self.limit,
                remaining: self.limit.saturating_sub(count),
                reset_after: reset(count),
                retry_after: None,
            };
            return (d, None);
        }
        if count + cost <= self.limit {
            let d = Decision {
                allowed: true,
                limit: self.limit,
                remaining: self.limit - count - cost,
                reset_after: reset(count + cost),
                retry_after: None,
            };
            let next = (consume && cost > 0).then(|| pack(current, count + cost));
            (d, next)
        } else {
            let d = Decision {
                allowed: false,
                limit: self.limit,
                remaining: self.limit.saturating_sub(count),
                reset_after: until_end,
                retry_after: Some(until_end),
            };
            (d, None)
        }
    }

    /// Re-expresses `state` under this configuration: the count spent in the current
    /// window carries over into the current window of the new length (no fresh quota).
    fn convert_from(&self, old: &FixedConfig, state: u64, now: u64) -> u64 {
        let (stored, count) = unpack(state);
        let live = windows_since(now / old.window, stored) == 0;
        pack(now / self.window, if live { count } else { 0 })
    }
}

/// A lock-free fixed-window counter: at most `limit` per window of length `period`.
///
/// Mind the boundary burst described in the [module docs](crate::fixed_window).
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::{FixedWindow, Quota};
/// use maas_ratelimit::clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let limiter = FixedWindow::builder(Quota::per_second(2)).clock(clock.clone()).build()?;
/// assert!(limiter.check().is_allowed());
/// assert!(limiter.check().is_allowed());
/// assert!(!limiter.check().is_allowed());
/// clock.advance(Duration::from_secs(1)); // next window
/// assert!(limiter.check().is_allowed());
/// # Ok::<(), maas_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct FixedWindow<C: Clock = MonotonicClock> {
    cell: Versioned<FixedConfig>,
    clock: C,
}

/// Builds a [`FixedWindow`]; invalid quotas fail at [`build`](FixedWindowBuilder::build).
#[derive(Debug, Clone)]
pub struct FixedWindowBuilder<C: Clock = MonotonicClock> {
    quota: Quota,
    clock: C,
}

impl FixedWindow<MonotonicClock> {
    /// Starts building a fixed window enforcing `quota` (limit per period).
    pub fn builder(quota: Quota) -> FixedWindowBuilder<MonotonicClock> {
        FixedWindowBuilder {
            quota,
            clock: MonotonicClock,
        }
    }
}

impl<C: Clock> FixedWindowBuilder<C> {
    /// Uses another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> FixedWindowBuilder<C2> {
        FixedWindowBuilder {
            quota: self.quota,
            clock,
        }
    }

    /// Validates the quota and builds the limiter.
    pub fn build(self) -> Result<FixedWindow<C>, ConfigError> {
        let config = FixedConfig::new(&self.quota, self.clock.resolution())?;
        let now = self.clock.now_nanos();
        Ok(FixedWindow {
            cell: Versioned::new(config, pack(now / config.window, 0)),
            clock: self.clock,
        })
    }
}

impl<C: Clock> FixedWindow<C> {
    /// Counts one request if the window has room.
    #[inline]
    pub fn check(&self) -> Decision {
        self.check_n(1)
    }

    /// Counts `cost` if all of it fits in the window; counts nothing otherwise.
    #[inline]
    pub fn check_n(&self, cost: u64) -> Decision {
        self.cell.decide(|| self.clock.now_nanos(), cost, true)
    }

    /// What `check_n(cost)` would answer now, without counting anything.
    pub fn peek(&self, cost: u64) -> Decision {
        self.cell.decide(|| self.clock.now_nanos(), cost, false)
    }

    /// Changes the limit and/or the window length, keeping what the current window has
    /// already counted.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let new = FixedConfig::new(&quota, self.clock.resolution())?;
        self.cell.retune(new, || self.clock.now_nanos());
        Ok(())
    }

    /// The current quota.
    pub fn quota(&self) -> Quota {
        let c = self.cell.config();
        Quota::new(c.limit, Duration::from_nanos(c.window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn window(quota: Quota) -> (FixedWindow<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let w = FixedWindow::builder(quota)
            .clock(clock.clone())
            .build()
            .unwrap();
        (w, clock)
    }

    #[test]
    fn counts_per_window_and_resets_at_the_boundary() {
        let (w, clock) = window(Quota::per_second(3));
        clock.advance(Duration::from_millis(400));
        for left in (0..3).rev() {
            assert_eq!(w.check().remaining(), left);
        }
        let d = w.check();
        assert!(!d.is_allowed());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(600)));
        assert_eq!(d.reset_after(), Duration::from_millis(600));
        clock.advance(Duration::from_millis(600));
        assert_eq!(w.check().remaining(), 2);
    }

    #[test]
    fn boundary_burst_lets_2n_through_in_an_instant() {
        let (w, clock) = window(Quota::per_second(100));
        clock.advance(Duration::from_millis(999));
        let before = (0..200).filter(|_| w.check().is_allowed()).count();
        clock.advance(Duration::from_millis(2));
        let after = (0..200).filter(|_| w.check().is_allowed()).count();
        // 200 requests passed within 2 ms, although the quota is 100 per second.
        assert_eq!(before + after, 200);
    }

    #[test]
    fn check_n_all_or_nothing_and_peek() {
        let (w, _clock) = window(Quota::per_second(5));
        assert!(w.check_n(4).is_allowed());
        assert!(!w.peek(2).is_allowed());
        assert!(!w.check_n(2).is_allowed());
        assert!(w.peek(1).is_allowed());
        assert!(w.check_n(1).is_allowed());
        assert!(w.check_n(6).can_never_pass());
    }

    #[test]
    fn set_quota_keeps_the_count_of_the_current_window() {
        let (w, clock) = window(Quota::per_second(10));
        assert!(w.check_n(8).is_allowed());
        w.set_quota(Quota::per_second(5)).unwrap();
        assert!(!w.check().is_allowed());
        w.set_quota(Quota::per_second(9)).unwrap();
        assert_eq!(w.check().remaining(), 0);
        // A longer window: the 9 already counted stay counted in the new window.
        w.set_quota(Quota::new(12, Duration::from_secs(10)))
            .unwrap();
        assert_eq!(w.check().remaining(), 2);
        clock.advance(Duration::from_secs(10));
        assert_eq!(w.check().remaining(), 11);
        assert_eq!(w.quota(), Quota::new(12, Duration::from_secs(10)));
    }

    #[test]
    fn invalid_quotas_fail_at_build() {
        let build = |q| FixedWindow::builder(q).build().map(|_| ());
        assert_eq!(build(Quota::per_second(0)), Err(ConfigError::ZeroLimit));
        assert_eq!(
            build(Quota::new(1, Duration::ZERO)),
            Err(ConfigError::ZeroPeriod)
        );
        assert_eq!(
            build(Quota::per_second(2).with_burst(4)),
            Err(ConfigError::BurstNotSupported)
        );
        assert!(matches!(
            build(Quota::per_second(u64::from(u32::MAX) + 1)),
            Err(ConfigError::TooLarge(_))
        ));
        let coarse = FixedWindow::builder(Quota::new(1, Duration::from_micros(10)))
            .clock(crate::clock::CoarseClock::new())
            .build()
            .map(|_| ());
        assert!(matches!(
            coarse,
            Err(ConfigError::WindowFinerThanClock { .. })
        ));
    }

    #[test]
    fn a_long_idle_spell_never_locks_a_client_out() {
        // Before: after 2^27 or more idle windows the stale count was read as a future
        // window's, and a 5-per-ms window rejected for up to 37 hours.
        let (w, clock) = window(Quota::new(5, Duration::from_millis(1)));
        assert!(w.check_n(5).is_allowed());
        for idle in [1u64 << 27, (1 << 27) + 3, (1 << 28) - 1, (1 << 40) + 7] {
            clock.advance(Duration::from_millis(idle));
            assert!(w.check_n(5).is_allowed(), "after {idle} idle windows");
            assert!(!w.check().is_allowed());
        }
        // An exact multiple of 2^28 windows reads as the current window: the count applies
        // until its end, and no longer.
        clock.advance(Duration::from_millis(1 << 28));
        assert!(!w.check().is_allowed());
        clock.advance(Duration::from_millis(1));
        assert!(w.check_n(5).is_allowed());
    }
}
