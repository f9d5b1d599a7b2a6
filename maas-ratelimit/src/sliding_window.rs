//! The sliding window: at most N in *any* span of length W, counted over sub-buckets.
//!
//! Like Sentinel's `LeapArray`, the window W is cut into B sub-buckets of length
//! `b = ⌈W / B⌉`, kept in a ring; each bucket counts the requests admitted during its slice
//! of time, and a running total counts every bucket still in the window. Unlike a plain
//! LeapArray, the ring keeps **B + 1** buckets — the B full ones plus the one being filled —
//! so the counted span always covers at least the last W, never less.
//!
//! ## Accuracy
//!
//! * **Never more than N in any span of length W** (property-tested).
//! * The price is that a request is forgotten between W and W + b after it passed, so the
//!   limiter may admit a little less than N per W: at least N per W + b. With the default
//!   of 10 buckets that is at most 10 % conservative; more buckets are more exact and cost
//!   8 bytes each (per key, for keyed limiters) and a slightly longer rejection path.
//!
//! Compare the [`FixedWindow`](crate::FixedWindow), which can let 2N through across a
//! window boundary.
//!
//! ## Cost
//!
//! An admitted request costs a clock read, a compare-and-swap on the total and one on its
//! bucket; once per bucket length, one caller sweeps the expired buckets. Rejections scan the
//! B + 1 buckets to compute the exact `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::{ConfigError, Decision, Quota};

/// The default number of sub-buckets.
pub const DEFAULT_BUCKETS: u32 = 10;

/// A validated sliding-window configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingConfig {
    pub(crate) limit: u64,
    pub(crate) bucket: u64,
    pub(crate) buckets: u32,
    pub(crate) window: Duration,
}

impl SlidingConfig {
    pub(crate) fn new(
        quota: &Quota,
        buckets: u32,
        resolution: Duration,
    ) -> Result<Self, ConfigError> {
        let window = quota.window_nanos()?;
        if buckets == 0 {
            return Err(ConfigError::ZeroBuckets);
        }
        let bucket = window / u64::from(buckets);
        let resolution_ns = u64::try_from(resolution.as_nanos()).unwrap_or(u64::MAX);
        if bucket == 0 || bucket < resolution_ns {
            return Err(ConfigError::BucketsFinerThanClock {
                buckets,
                window: quota.period(),
                bucket: Duration::from_nanos(window.div_ceil(u64::from(buckets))),
                resolution,
            });
        }
        Ok(SlidingConfig {
            limit: quota.limit(),
            bucket: window.div_ceil(u64::from(buckets)),
            buckets,
            window: quota.period(),
        })
    }

    fn ring(&self) -> u64 {
        u64::from(self.buckets) + 1
    }
}

/// The counting state of one sliding window: a ring of B + 1 buckets, each packing
/// (epoch mod 2^32, count), the total of the live buckets, and the last swept epoch.
#[derive(Debug)]
pub struct SlidingState {
    ring: Box<[AtomicU64]>,
    total: AtomicU64,
    swept: AtomicU64,
}

fn pack(epoch: u64, count: u64) -> u64 {
    ((epoch & 0xFFFF_FFFF) << 32) | (count & 0xFFFF_FFFF)
}

fn unpack(word: u64) -> (u32, u64) {
    ((word >> 32) as u32, word & 0xFFFF_FFFF)
}

/// Buckets between `epoch` and a bucket stamped `stamp` (negative: the bucket is newer).
fn age(epoch: u64, stamp: u32) -> i64 {
    i64::from((epoch as u32).wrapping_sub(stamp) as i32)
}

impl SlidingState {
    pub(crate) fn new(config: &SlidingConfig, now: u64) -> Self {
        let epoch = now / config.bucket;
        SlidingState {
            ring: (0..config.ring()).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            swept: AtomicU64::new(epoch),
        }
    }

    /// Clears buckets that left the window. Runs once per epoch (per bucket length), by
    /// whichever caller first sees the new epoch; others go on with a total that may still
    /// hold expired counts, which can only make them stricter.
    fn sweep(&self, config: &SlidingConfig, epoch: u64) {
        let last = self.swept.load(Ordering::Acquire);
        if epoch <= last
            || self
                .swept
                .compare_exchange(last, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        // After an idle spell of 2^31 buckets, stamps may alias: everything is stale.
        let all_stale = epoch - last >= 1 << 31;
        let span = i64::from(config.buckets);
        for slot in self.ring.iter() {
            let mut word = slot.load(Ordering::Acquire);
            loop {
                let (stamp, count) = unpack(word);
                if count == 0 || !(all_stale || age(epoch, stamp) > span) {
                    break;
                }
                match slot.compare_exchange_weak(
                    word,
                    pack(u64::from(stamp), 0),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.total.fetch_sub(count, Ordering::AcqRel);
                        break;
                    }
                    Err(actual) => word = actual,
                }
            }
        }
    }

    /// Adds `cost` to the bucket of `epoch`, recycling the slot if it holds an old epoch.
    fn record(&self, config: &SlidingConfig, epoch: u64, cost: u64) {
        let slot = &self.ring[(epoch % config.ring()) as usize];
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let (stamp, count) = unpack(word);
            let a = age(epoch, stamp);
            let (new, released) = if a > 0 {
                // The slot holds an epoch a whole ring ago: recycle it.
                (pack(epoch, cost), count)
            } else {
                // Our epoch, or a newer one (our clock read lags): count it there.
                (pack(u64::from(stamp), count + cost), 0)
            };
            match slot.compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if released > 0 {
                        self.total.fetch_sub(released, Ordering::AcqRel);
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Nanoseconds from `now` until the oldest buckets holding `need` units have expired.
    fn time_until_freed(&self, config: &SlidingConfig, epoch: u64, now: u64, need: u64) -> u64 {
        let span = i64::from(config.buckets);
        let mut live: Vec<(i64, u64)> = self
            .ring
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(_, count)| *count > 0)
            .map(|(stamp, count)| (age(epoch, stamp), count))
            .filter(|(a, _)| *a <= span)
            .collect();
        live.sort_unstable_by_key(|(age, _)| std::cmp::Reverse(*age)); // oldest first
        let expiry = |a: i64| {
            // The bucket `a` epochs old leaves the window at its epoch + span + 1.
            let leaves = (epoch as i128 - i128::from(a) + i128::from(span) + 1).max(0);
            u64::try_from(leaves as u128 * u128::from(config.bucket))
                .unwrap_or(u64::MAX)
                .saturating_sub(now)
        };
        let mut freed = 0;
        for (a, count) in &live {
            freed += count;
            if freed >= need {
                return expiry(*a);
            }
        }
        // The rest is admitted but not yet in a bucket: it leaves with the newest bucket.
        expiry(0)
    }

    /// Nanoseconds until every counted request has left the window.
    fn time_until_empty(&self, config: &SlidingConfig, epoch: u64, now: u64) -> u64 {
        if self.total.load(Ordering::Acquire) == 0 {
            0
        } else {
            let all = self.total.load(Ordering::Acquire);
            self.time_until_freed(config, epoch, now, all)
        }
    }

    /// One check at `now`; `consume` records an allowed request.
    pub(crate) fn check(
        &self,
        config: &SlidingConfig,
        now: u64,
        cost: u64,
        consume: bool,
    ) -> Decision {
        let epoch = now / config.bucket;
        self.sweep(config, epoch);
        let limit = config.limit;
        let mut total = self.total.load(Ordering::Acquire);
        let rejected = |total: u64, retry_after: Option<Duration>| Decision {
            allowed: false,
            limit,
            remaining: limit.saturating_sub(total),
            reset_after: Duration::from_nanos(self.time_until_empty(config, epoch, now)),
            retry_after,
        };
        if cost > limit {
            return rejected(total, None);
        }
        loop {
            if total + cost > limit {
                let need = total + cost - limit;
                let wait = self.time_until_freed(config, epoch, now, need);
                return rejected(total, Some(Duration::from_nanos(wait)));
            }
            if !consume || cost == 0 {
                break;
            }
            match self.total.compare_exchange_weak(
                total,
                total + cost,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.record(config, epoch, cost);
                    break;
                }
                Err(actual) => total = actual,
            }
        }
        let after = total + if consume { cost } else { 0 };
        let reset = if after == 0 {
            0
        } else {
            epoch
                .saturating_add(u64::from(config.buckets) + 1)
                .saturating_mul(config.bucket)
                .saturating_sub(now)
        };
        Decision {
            allowed: true,
            limit,
            remaining: limit - total - cost,
            reset_after: Duration::from_nanos(reset),
            retry_after: None,
        }
    }

    /// Gives `units` back, from the newest buckets first (they would leave the window last),
    /// never more than the live buckets hold.
    pub(crate) fn refund(&self, config: &SlidingConfig, now: u64, mut units: u64) {
        let epoch = now / config.bucket;
        self.sweep(config, epoch);
        let span = i64::from(config.buckets);
        // Slots by age, newest first (a slot stamped ahead of `epoch` counts as newest).
        let mut slots: Vec<&AtomicU64> = self.ring.iter().collect();
        slots.sort_by_key(|slot| age(epoch, unpack(slot.load(Ordering::Acquire)).0));
        for slot in slots {
            if units == 0 {
                return;
            }
            let mut word = slot.load(Ordering::Acquire);
            loop {
                let (stamp, count) = unpack(word);
                if count == 0 || age(epoch, stamp) > span {
                    break;
                }
                let back = count.min(units);
                match slot.compare_exchange_weak(
                    word,
                    pack(u64::from(stamp), count - back),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.total.fetch_sub(back, Ordering::AcqRel);
                        units -= back;
                        break;
                    }
                    Err(actual) => word = actual,
                }
            }
        }
    }

    /// Nanoseconds until this window is indistinguishable from a fresh one.
    pub(crate) fn idle_in(&self, config: &SlidingConfig, now: u64) -> u64 {
        let epoch = now / config.bucket;
        self.sweep(config, epoch);
        self.time_until_empty(config, epoch, now)
    }

    /// Re-lays the state out for `new` (exclusive access required): everything still
    /// counted moves into the current bucket, so it is forgotten no sooner than before.
    pub(crate) fn relayout(&self, old: &SlidingConfig, new: &SlidingConfig, now: u64) -> Self {
        self.sweep(old, now / old.bucket);
        let total = self.total.load(Ordering::Acquire);
        let state = SlidingState::new(new, now);
        if total > 0 {
            state.total.store(total, Ordering::Release);
            state.record(new, now / new.bucket, total);
        }
        state
    }
}

/// A lock-free sliding window limiter: at most `limit` per any span of `period`.
///
/// See the [module docs](crate::sliding_window) for its accuracy.
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::{Quota, SlidingWindow};
/// use maas_ratelimit::clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let limiter = SlidingWindow::builder(Quota::per_second(4))
///     .buckets(4) // 250 ms each
///     .clock(clock.clone())
///     .build()?;
/// assert!(limiter.check_n(4).is_allowed());
/// clock.advance(Duration::from_millis(600));
/// let d = limiter.check();
/// assert!(!d.is_allowed());
/// // The four leave the window when their bucket does: 1.25 s after they passed.
/// assert_eq!(d.retry_after(), Some(Duration::from_millis(650)));
/// # Ok::<(), maas_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct SlidingWindow<C: Clock = MonotonicClock> {
    config: SlidingConfig,
    limit: AtomicU64,
    state: SlidingState,
    clock: C,
}

/// Builds a [`SlidingWindow`]; invalid quotas fail at [`build`](SlidingWindowBuilder::build).
#[derive(Debug, Clone)]
pub struct SlidingWindowBuilder<C: Clock = MonotonicClock> {
    quota: Quota,
    buckets: u32,
    clock: C,
}

impl SlidingWindow<MonotonicClock> {
    /// Starts building a sliding window enforcing `quota` (limit per period).
    pub fn builder(quota: Quota) -> SlidingWindowBuilder<MonotonicClock> {
        SlidingWindowBuilder {
            quota,
            buckets: DEFAULT_BUCKETS,
            clock: MonotonicClock,
        }
    }
}

impl<C: Clock> SlidingWindowBuilder<C> {
    /// Number of sub-buckets the window is cut into (default 10). More is more exact.
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// Uses another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> SlidingWindowBuilder<C2> {
        SlidingWindowBuilder {
            quota: self.quota,
            buckets: self.buckets,
            clock,
        }
    }

    /// Validates the configuration and builds the limiter.
    pub fn build(self) -> Result<SlidingWindow<C>, ConfigError> {
        let config = SlidingConfig::new(&self.quota, self.buckets, self.clock.resolution())?;
        let state = SlidingState::new(&config, self.clock.now_nanos());
        Ok(SlidingWindow {
            limit: AtomicU64::new(config.limit),
            config,
            state,
            clock: self.clock,
        })
    }
}

impl<C: Clock> SlidingWindow<C> {
    fn config(&self) -> SlidingConfig {
        SlidingConfig {
            limit: self.limit.load(Ordering::Acquire),
            ..self.config
        }
    }

    /// Counts one request if the window has room.
    #[inline]
    pub fn check(&self) -> Decision {
        self.check_n(1)
    }

    /// Counts `cost` if all of it fits; counts nothing otherwise.
    #[inline]
    pub fn check_n(&self, cost: u64) -> Decision {
        let now = self.clock.now_nanos();
        self.state.check(&self.config(), now, cost, true)
    }

    /// What `check_n(cost)` would answer now, without counting anything.
    pub fn peek(&self, cost: u64) -> Decision {
        let now = self.clock.now_nanos();
        self.state.check(&self.config(), now, cost, false)
    }

    /// Changes the limit, keeping everything counted in the window. The window length is
    /// fixed at build (a keyed limiter can change it); asking for another one is an error.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let new = SlidingConfig::new(&quota, self.config.buckets, self.clock.resolution())?;
        if new.window != self.config.window {
            return Err(ConfigError::WindowLengthChange {
                from: self.config.window,
                to: new.window,
            });
        }
        self.limit.store(new.limit, Ordering::Release);
        Ok(())
    }

    /// The current quota.
    pub fn quota(&self) -> Quota {
        Quota::new(self.limit.load(Ordering::Acquire), self.config.window)
    }

    /// Number of sub-buckets.
    pub fn buckets(&self) -> u32 {
        self.config.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn window(quota: Quota, buckets: u32) -> (SlidingWindow<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let w = SlidingWindow::builder(quota)
            .buckets(buckets)
            .clock(clock.clone())
            .build()
            .unwrap();
        (w, clock)
    }

    #[test]
    fn no_boundary_burst() {
        // The same traffic that lets 2N through a fixed window's boundary.
        let (w, clock) = window(Quota::per_second(100), 10);
        clock.advance(Duration::from_millis(999));
        let before = (0..200).filter(|_| w.check().is_allowed()).count();
        clock.advance(Duration::from_millis(2));
        let after = (0..200).filter(|_| w.check().is_allowed()).count();
        assert_eq!(before, 100);
        assert_eq!(after, 0);
    }

    #[test]
    fn requests_leave_after_the_window_plus_at_most_one_bucket() {
        let (w, clock) = window(Quota::per_second(10), 10);
        clock.advance(Duration::from_millis(50)); // middle of bucket 0
        assert!(w.check_n(10).is_allowed());
        let d = w.check();
        assert_eq!(d.retry_after(), Some(Duration::from_millis(1050)));
        assert_eq!(d.reset_after(), Duration::from_millis(1050));
        clock.advance(Duration::from_millis(1049));
        assert!(!w.check().is_allowed());
        clock.advance(Duration::from_millis(1));
        assert_eq!(w.check().remaining(), 9);
    }

    #[test]
    fn retry_after_points_at_the_oldest_bucket_that_frees_enough() {
        let (w, clock) = window(Quota::new(6, Duration::from_millis(1200)), 3); // 400 ms buckets
        assert!(w.check_n(2).is_allowed()); // bucket 0
        clock.advance(Duration::from_millis(500));
        assert!(w.check_n(4).is_allowed()); // bucket 1
        // One more needs bucket 0 gone: at (0 + 3 + 1) × 400 ms = 1600 ms.
        assert_eq!(w.check().retry_after(), Some(Duration::from_millis(1100)));
        // Three more need bucket 1 gone too: at 5 × 400 ms = 2000 ms.
        assert_eq!(
            w.check_n(3).retry_after(),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn ring_slots_are_recycled_and_long_idle_spells_clear_everything() {
        let (w, clock) = window(Quota::per_second(5), 5);
        for _ in 0..50 {
            assert!(w.check().is_allowed());
            clock.advance(Duration::from_millis(300));
        }
        clock.advance(Duration::from_secs(3600));
        assert_eq!(w.check_n(5).remaining(), 0);
    }

    #[test]
    fn check_n_peek_and_cost_above_limit() {
        let (w, _clock) = window(Quota::per_second(5), 5);
        assert!(w.check_n(3).is_allowed());
        assert!(!w.peek(3).is_allowed());
        assert!(w.peek(2).is_allowed());
        assert!(!w.check_n(3).is_allowed());
        assert_eq!(w.check_n(2).remaining(), 0);
        assert!(w.check_n(6).can_never_pass());
    }

    #[test]
    fn set_quota_changes_the_limit_keeps_the_count() {
        let (w, _clock) = window(Quota::per_second(10), 10);
        assert!(w.check_n(6).is_allowed());
        w.set_quota(Quota::per_second(5)).unwrap();
        assert!(!w.check().is_allowed());
        w.set_quota(Quota::per_second(8)).unwrap();
        assert_eq!(w.check().remaining(), 1);
        assert_eq!(
            w.set_quota(Quota::per_minute(8)),
            Err(ConfigError::WindowLengthChange {
                from: Duration::from_secs(1),
                to: Duration::from_secs(60)
            })
        );
        assert_eq!(w.quota(), Quota::per_second(8));
    }

    #[test]
    fn invalid_configs_fail_at_build() {
        let build = |q, b| SlidingWindow::builder(q).buckets(b).build().map(|_| ());
        assert_eq!(build(Quota::per_second(0), 10), Err(ConfigError::ZeroLimit));
        assert_eq!(
            build(Quota::new(1, Duration::ZERO), 10),
            Err(ConfigError::ZeroPeriod)
        );
        assert_eq!(
            build(Quota::per_second(1), 0),
            Err(ConfigError::ZeroBuckets)
        );
        assert!(matches!(
            build(Quota::new(1, Duration::from_nanos(5)), 10),
            Err(ConfigError::BucketsFinerThanClock { .. })
        ));
        let coarse = SlidingWindow::builder(Quota::per_second(1))
            .buckets(2000)
            .clock(crate::clock::CoarseClock::new())
            .build()
            .map(|_| ());
        assert!(matches!(
            coarse,
            Err(ConfigError::BucketsFinerThanClock { .. })
        ));
        assert_eq!(
            build(Quota::per_second(1).with_burst(2), 10),
            Err(ConfigError::BurstNotSupported)
        );
    }
}
