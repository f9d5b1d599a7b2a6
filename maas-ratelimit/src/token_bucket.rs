//! The token bucket, as GCRA: bursts up to a capacity, a steady average rate.
//!
//! A bucket holds up to `burst` tokens and refills at `limit / period`; a request of cost
//! `n` passes when `n` tokens are in the bucket, and takes them. It is computed as the
//! Generic Cell Rate Algorithm: the whole state is one number, the *theoretical arrival
//! time* (TAT) — the moment the bucket would be full again — so a check is one atomic
//! compare-and-swap. Each token stands for an *emission interval* `T = period / limit`
//! (rounded up to a whole nanosecond, so the rate never exceeds the quota), and a request
//! of cost `n` passes at time `now` when `max(TAT, now) + n·T − now ≤ burst·T`.
//!
//! Guarantee: in any interval of length `t`, at most `burst + t / T` units of cost pass.
//!
//! ## Capacity of the state word
//!
//! A [`TokenBucket`] keeps its TAT in 60 bits (the other 4 tag the quota generation), read
//! modulo 2^60 ns (about 36.5 years): a TAT at most `burst·T` ahead of now is a debt, any
//! other value is in the past (a full bucket). Because every check reads the clock after
//! loading the state, a real TAT is never further ahead than `burst·T`, so clock readings of
//! any size (2^60, 2^63, `u64::MAX`) work. The one misreading: a bucket left idle for a span
//! within `burst·T` below a multiple of 2^60 ns looks like it owes that much — it then
//! admits *less*, for at most `burst·T`, never more. Keyed buckets keep 64 bits (2^64 ns,
//! 584 years, in place of 2^60).

use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};
use crate::versioned::{Step, VALUE_MASK, Versioned, WordConfig, Words};
use crate::{ConfigError, Decision, Quota};

/// The largest debt (in nanoseconds of refill) a bucket may represent: an eighth of the
/// state's range (~4.5 years), so a debt can never be mistaken for a time in the past.
const MAX_TAU: u64 = VALUE_MASK / 8;

/// A validated token-bucket configuration, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraConfig {
    /// Nanoseconds per token.
    pub(crate) interval: u64,
    /// Tokens the bucket holds.
    pub(crate) capacity: u64,
    /// `capacity × interval`: how far ahead of now the TAT may run.
    pub(crate) tau: u64,
}

impl GcraConfig {
    pub(crate) fn new(quota: &Quota, resolution: Duration) -> Result<Self, ConfigError> {
        if quota.limit() == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if quota.period().is_zero() {
            return Err(ConfigError::ZeroPeriod);
        }
        if quota.burst() == 0 {
            return Err(ConfigError::ZeroBurst);
        }
        let period = u64::try_from(quota.period().as_nanos())
            .map_err(|_| ConfigError::TooLarge("the period exceeds u64 nanoseconds"))?;
        if quota.limit() > period {
            return Err(ConfigError::TooLarge(
                "more than one unit per nanosecond is not representable",
            ));
        }
        let interval = period.div_ceil(quota.limit());
        let capacity = quota.burst();
        let tau = capacity
            .checked_mul(interval)
            .filter(|tau| *tau <= MAX_TAU)
            .ok_or(ConfigError::TooLarge(
                "burst × (period / limit) exceeds ~4.5 years",
            ))?;
        let resolution = u64::try_from(resolution.as_nanos()).unwrap_or(u64::MAX);
        let per_tick = resolution.div_ceil(interval);
        if per_tick > capacity {
            return Err(ConfigError::BurstBelowClockTick {
                burst: capacity,
                per_tick,
                resolution: Duration::from_nanos(resolution),
            });
        }
        Ok(GcraConfig {
            interval,
            capacity,
            tau,
        })
    }

    /// The debt a bucket in state `tat` owes at `now`, reading `tat` modulo `mask + 1`: a
    /// value at most `tau` ahead of now is a debt, anything else lies in the past.
    #[inline]
    fn debt(&self, tat: u64, now: u64, mask: u64) -> u64 {
        let ahead = tat.wrapping_sub(now) & mask;
        if ahead <= self.tau { ahead } else { 0 }
    }

    /// Nanoseconds until a bucket in state `tat` is full again (indistinguishable from new).
    /// `now` may have been read before a concurrent check stored `tat`, so any value in the
    /// forward half of the range counts as a debt here: an entry is never evicted early.
    #[inline]
    pub(crate) fn idle_in(&self, tat: u64, now: u64, mask: u64) -> u64 {
        let ahead = tat.wrapping_sub(now) & mask;
        if ahead <= mask / 2 { ahead } else { 0 }
    }

    /// The capacity and the emission interval this configuration enforces.
    pub(crate) fn describe(&self) -> (u64, Duration) {
        (self.capacity, Duration::from_nanos(self.interval))
    }
}

impl WordConfig for GcraConfig {
    fn to_words(self) -> Words {
        [self.interval, self.capacity, self.tau]
    }

    fn from_words(w: &Words) -> Self {
        GcraConfig {
            interval: w[0],
            capacity: w[1],
            tau: w[2],
        }
    }

    /// One check at `now` against the state `tat` (modulo 2^60). Returns the decision and,
    /// when the request passes and `consume` is set, the new TAT.
    #[inline]
    fn step(&self, tat: u64, now: u64, cost: u64, consume: bool) -> Step<Decision> {
        self.step_masked(tat, now, cost, consume, VALUE_MASK)
    }

    fn convert_from(&self, old: &GcraConfig, tat: u64, now: u64) -> u64 {
        self.convert_masked(old, tat, now, VALUE_MASK)
    }
}

impl GcraConfig {
    /// [`step`](WordConfig::step) for a TAT kept modulo `mask + 1`.
    #[inline]
    pub(crate) fn step_masked(
        &self,
        tat: u64,
        now: u64,
        cost: u64,
        consume: bool,
        mask: u64,
    ) -> Step<Decision> {
        let debt = self.debt(tat, now, mask);
        let available = (self.tau - debt) / self.interval;
        let rejected = |retry_after| Decision {
            allowed: false,
            limit: self.capacity,
            remaining: available,
            reset_after: Duration::from_nanos(debt),
            retry_after,
        };
        if cost > self.capacity {
            return (rejected(None), None);
        }
        // cost ≤ capacity, so cost × interval ≤ tau and nothing here overflows.
        let new_debt = debt + cost * self.interval;
        if new_debt <= self.tau {
            let decision = Decision {
                allowed: true,
                limit: self.capacity,
                remaining: (self.tau - new_debt) / self.interval,
                reset_after: Duration::from_nanos(new_debt),
                retry_after: None,
            };
            let next = (consume && cost > 0).then_some(now.wrapping_add(new_debt) & mask);
            (decision, next)
        } else {
            let wait = Duration::from_nanos(new_debt - self.tau);
            (rejected(Some(wait)), None)
        }
    }

    /// Gives `units` back to a bucket in state `tat`: its debt shrinks by their refill time,
    /// down to none (a full bucket). The decision reports the bucket after the refund.
    pub(crate) fn refund_masked(
        &self,
        tat: u64,
        now: u64,
        units: u64,
        mask: u64,
    ) -> Step<Decision> {
        let debt = self
            .debt(tat, now, mask)
            .saturating_sub(units.saturating_mul(self.interval));
        let decision = Decision::allowed(
            self.capacity,
            (self.tau - debt) / self.interval,
            Duration::from_nanos(debt),
        );
        (
            decision,
            (units > 0).then_some(now.wrapping_add(debt) & mask),
        )
    }

    /// Converts a TAT from `old` to this configuration, keeping the tokens the bucket holds
    /// now (clamped to the new capacity): an empty bucket stays empty and refills at the
    /// new rate, so a quota change never hands out a fresh burst.
    pub(crate) fn convert_masked(&self, old: &GcraConfig, tat: u64, now: u64, mask: u64) -> u64 {
        let debt = old.debt(tat, now, mask);
        // Tokens held, as nanoseconds of the old refill, re-expressed in the new one.
        let held =
            u128::from(old.tau - debt) * u128::from(self.interval) / u128::from(old.interval);
        let held = held.min(u128::from(self.tau)) as u64;
        now.wrapping_add(self.tau - held) & mask
    }
}

/// A lock-free token bucket for one stream of requests.
///
/// `check` costs one clock read and one compare-and-swap; the limiter is `Sync`, so share
/// it behind an `Arc` (or let [`RateLimitLayer`](crate::RateLimitLayer) do so).
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::{Quota, TokenBucket};
/// use maas_ratelimit::clock::ManualClock;
///
/// let clock = ManualClock::new();
/// // 10 per second, bursts of up to 5.
/// let bucket = TokenBucket::builder(Quota::per_second(10).with_burst(5))
///     .clock(clock.clone())
///     .build()?;
/// assert!(bucket.check_n(5).is_allowed());
/// assert!(!bucket.check().is_allowed());
/// clock.advance(Duration::from_millis(100)); // one token refilled
/// assert!(bucket.check().is_allowed());
/// # Ok::<(), maas_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct TokenBucket<C: Clock = MonotonicClock> {
    cell: Versioned<GcraConfig>,
    /// The quota as last given (the cell keeps only what checks need).
    quota: std::sync::Mutex<Quota>,
    clock: C,
}

/// Builds a [`TokenBucket`]; invalid quotas fail at [`build`](TokenBucketBuilder::build).
#[derive(Debug, Clone)]
pub struct TokenBucketBuilder<C: Clock = MonotonicClock> {
    quota: Quota,
    clock: C,
}

impl TokenBucket<MonotonicClock> {
    /// Starts building a token bucket enforcing `quota`.
    pub fn builder(quota: Quota) -> TokenBucketBuilder<MonotonicClock> {
        TokenBucketBuilder {
            quota,
            clock: MonotonicClock,
        }
    }
}

impl<C: Clock> TokenBucketBuilder<C> {
    /// Uses another clock (a [`CoarseClock`](crate::clock::CoarseClock) for the cheapest
    /// checks, a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock<C2: Clock>(self, clock: C2) -> TokenBucketBuilder<C2> {
        TokenBucketBuilder {
            quota: self.quota,
            clock,
        }
    }

    /// Validates the quota against the clock and builds a full bucket.
    pub fn build(self) -> Result<TokenBucket<C>, ConfigError> {
        let config = GcraConfig::new(&self.quota, self.clock.resolution())?;
        // A TAT of now: a full bucket, whatever the clock reads.
        Ok(TokenBucket {
            cell: Versioned::new(config, self.clock.now_nanos()),
            quota: std::sync::Mutex::new(self.quota),
            clock: self.clock,
        })
    }
}

impl<C: Clock> TokenBucket<C> {
    /// Takes one token if there is one.
    #[inline]
    pub fn check(&self) -> Decision {
        self.check_n(1)
    }

    /// Takes `cost` tokens if all of them are there; takes nothing otherwise.
    #[inline]
    pub fn check_n(&self, cost: u64) -> Decision {
        self.cell.decide(|| self.clock.now_nanos(), cost, true)
    }

    /// What `check_n(cost)` would answer now, without taking anything.
    pub fn peek(&self, cost: u64) -> Decision {
        self.cell.decide(|| self.clock.now_nanos(), cost, false)
    }

    /// Changes the quota, keeping the tokens already used: a bucket that was empty stays
    /// empty, and refills at the new rate. Fails (leaving the quota unchanged) when the new
    /// quota is invalid.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let new = GcraConfig::new(&quota, self.clock.resolution())?;
        let mut current = self.quota.lock().unwrap_or_else(|p| p.into_inner());
        self.cell.retune(new, || self.clock.now_nanos());
        *current = quota;
        Ok(())
    }

    /// The quota in force, as it was given (like [`FixedWindow::quota`](crate::FixedWindow::quota)).
    pub fn quota(&self) -> Quota {
        *self.quota.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bucket's capacity (its burst) and emission interval — the time one token takes
    /// to refill, `period / limit` rounded up to a whole nanosecond.
    pub fn emission(&self) -> (u64, Duration) {
        self.cell.config().describe()
    }

    /// The clock this bucket reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn bucket(quota: Quota) -> (TokenBucket<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let b = TokenBucket::builder(quota)
            .clock(clock.clone())
            .build()
            .unwrap();
        (b, clock)
    }

    #[test]
    fn full_bucket_allows_the_burst_then_refills_at_the_rate() {
        let (b, clock) = bucket(Quota::per_second(10).with_burst(3));
        for left in (0..3).rev() {
            let d = b.check();
            assert!(d.is_allowed());
            assert_eq!(d.remaining(), left);
            assert_eq!(d.limit(), 3);
        }
        let d = b.check();
        assert!(!d.is_allowed());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(100)));
        assert_eq!(d.reset_after(), Duration::from_millis(300));
        clock.advance(Duration::from_millis(99));
        assert!(!b.check().is_allowed());
        clock.advance(Duration::from_millis(1));
        assert!(b.check().is_allowed());
        assert!(!b.check().is_allowed());
        clock.advance(Duration::from_secs(10));
        assert_eq!(b.peek(1).remaining(), 2);
    }

    #[test]
    fn check_n_is_all_or_nothing() {
        let (b, _clock) = bucket(Quota::per_second(4));
        assert!(b.check_n(3).is_allowed());
        let d = b.check_n(2);
        assert!(!d.is_allowed());
        assert_eq!(d.remaining(), 1);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(250)));
        assert!(b.check_n(1).is_allowed());
    }

    #[test]
    fn cost_above_capacity_can_never_pass() {
        let (b, _clock) = bucket(Quota::per_second(4));
        let d = b.check_n(5);
        assert!(d.can_never_pass());
        assert_eq!(d.remaining(), 4, "nothing was consumed");
    }

    #[test]
    fn peek_consumes_nothing() {
        let (b, _clock) = bucket(Quota::per_second(1));
        assert!(b.peek(1).is_allowed());
        assert!(b.peek(1).is_allowed());
        assert!(b.check().is_allowed());
        assert!(!b.peek(1).is_allowed());
    }

    #[test]
    fn zero_cost_always_passes_and_takes_nothing() {
        let (b, _clock) = bucket(Quota::per_second(1));
        assert!(b.check().is_allowed());
        assert!(b.check_n(0).is_allowed());
        assert!(!b.check().is_allowed());
    }

    #[test]
    fn set_quota_keeps_used_tokens_no_fresh_burst() {
        let (b, clock) = bucket(Quota::per_second(10));
        assert!(b.check_n(10).is_allowed());
        // Raising the limit must not refill the empty bucket.
        b.set_quota(Quota::per_second(100)).unwrap();
        let d = b.check();
        assert!(!d.is_allowed(), "fresh burst after set_quota: {d:?}");
        // It now refills ten times faster: one token per 10 ms.
        assert_eq!(d.retry_after(), Some(Duration::from_millis(10)));
        clock.advance(Duration::from_millis(10));
        assert!(b.check().is_allowed());
        assert_eq!(b.emission(), (100, Duration::from_millis(10)));
        assert_eq!(b.quota(), Quota::per_second(100));
    }

    #[test]
    fn set_quota_to_a_smaller_bucket_clamps_the_tokens_held() {
        let (b, clock) = bucket(Quota::per_second(10));
        assert!(b.check_n(4).is_allowed());
        // 6 tokens held; the new bucket holds at most 2.
        b.set_quota(Quota::per_second(2)).unwrap();
        assert!(b.check_n(2).is_allowed());
        let d = b.check();
        assert_eq!(d.retry_after(), Some(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(500));
        assert!(b.check().is_allowed());
    }

    #[test]
    fn set_quota_keeps_a_partly_used_bucket_partly_used() {
        let (b, _clock) = bucket(Quota::per_second(10));
        assert!(b.check_n(7).is_allowed());
        b.set_quota(Quota::per_second(100)).unwrap();
        assert_eq!(b.peek(1).remaining(), 2, "3 tokens held before and after");
    }

    #[test]
    fn invalid_quotas_fail_at_build() {
        let build = |q| TokenBucket::builder(q).build().map(|_| ());
        assert_eq!(build(Quota::per_second(0)), Err(ConfigError::ZeroLimit));
        assert_eq!(
            build(Quota::new(1, Duration::ZERO)),
            Err(ConfigError::ZeroPeriod)
        );
        assert_eq!(
            build(Quota::per_second(1).with_burst(0)),
            Err(ConfigError::ZeroBurst)
        );
        assert!(matches!(
            build(Quota::new(10, Duration::from_nanos(5))),
            Err(ConfigError::TooLarge(_))
        ));
        assert!(matches!(
            build(Quota::per_hour(1).with_burst(u64::MAX / 2)),
            Err(ConfigError::TooLarge(_))
        ));
    }

    #[test]
    fn coarse_clock_needs_a_burst_that_covers_a_tick() {
        let err = TokenBucket::builder(Quota::per_second(10_000).with_burst(5))
            .clock(crate::clock::CoarseClock::new())
            .build()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::BurstBelowClockTick {
                burst: 5,
                per_tick: 10,
                resolution: Duration::from_millis(1)
            }
        );
    }

    #[test]
    fn set_quota_rejects_invalid_and_keeps_the_old_one() {
        let (b, _clock) = bucket(Quota::per_second(3));
        assert_eq!(
            b.set_quota(Quota::per_second(0)),
            Err(ConfigError::ZeroLimit)
        );
        assert_eq!(b.emission().0, 3);
    }
}
