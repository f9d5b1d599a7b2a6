//! The three algorithms as interchangeable per-key cores, for [`KeyedLimiter`].
//!
//! A [`KeyedLimiter`] keeps one small state per key and one configuration per quota; the
//! algorithm decides what the state is and how a check moves it. Pick one of:
//!
//! | core | state per key | see |
//! |---|---|---|
//! | [`TokenBucketCore`] | 8 bytes | [`TokenBucket`](crate::TokenBucket) |
//! | [`FixedWindowCore`] | 8 bytes | [`FixedWindow`](crate::FixedWindow) |
//! | [`SlidingWindowCore`] | 8 × (buckets + 3) bytes | [`SlidingWindow`](crate::SlidingWindow) |
//!
//! [`KeyedLimiter`]: crate::KeyedLimiter
//!
//! ## How this relates to the single-stream limiters
//!
//! There is one implementation of each algorithm, its *configuration* type (`GcraConfig`,
//! `FixedConfig`, `SlidingConfig`), which computes a check from a state and a time. Two
//! wrappers hold the state: an [`Algorithm`] core keeps one state per key inside a
//! [`KeyedLimiter`]; [`TokenBucket`](crate::TokenBucket) and
//! [`FixedWindow`](crate::FixedWindow) keep a single state word tagged with a configuration
//! generation (the crate-private `WordConfig` seam), which is what lets `set_quota` swap the
//! configuration without a lock on the check path. Both wrappers call the same step
//! functions, so a single limiter and one key of a keyed limiter decide identically.
//! To write a limiter of your own, implement [`Limiter`](crate::Limiter), answering with
//! [`Decision::allowed`](crate::Decision::allowed) / [`Decision::rejected`](crate::Decision::rejected).

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fixed_window::FixedConfig;
use crate::sliding_window::{DEFAULT_BUCKETS, SlidingConfig, SlidingState};
use crate::token_bucket::GcraConfig;
use crate::versioned::WordConfig;
use crate::{ConfigError, Decision, Quota};

mod sealed {
    pub trait Sealed {}
}

/// A rate-limiting algorithm usable per key. Implemented by the three cores of this crate
/// only (the trait is sealed); its methods are the crate's internals.
pub trait Algorithm: sealed::Sealed + Debug + Clone + Send + Sync + 'static {
    /// The validated configuration of one quota.
    #[doc(hidden)]
    type Config: Debug + Clone + Copy + PartialEq + Send + Sync + 'static;
    /// The state of one key.
    #[doc(hidden)]
    type State: Debug + Send + Sync + 'static;

    /// Validates `quota` for a clock of the given resolution.
    #[doc(hidden)]
    fn configure(&self, quota: &Quota, resolution: Duration) -> Result<Self::Config, ConfigError>;
    /// The state of a key never seen (or indistinguishable from one).
    #[doc(hidden)]
    fn fresh(&self, config: &Self::Config, now: u64) -> Self::State;
    /// The limit a configuration reports in decisions.
    #[doc(hidden)]
    fn limit(&self, config: &Self::Config) -> u64;
    /// A check; `consume` takes the cost when it passes. `now` is read after the state is
    /// loaded (and again on each retry), so the state never holds a later time.
    #[doc(hidden)]
    fn check(
        &self,
        config: &Self::Config,
        state: &Self::State,
        now: &impl Fn() -> u64,
        cost: u64,
        consume: bool,
    ) -> Decision;
    /// Gives back `units` taken earlier (never more than the state counts as taken).
    #[doc(hidden)]
    fn refund(
        &self,
        config: &Self::Config,
        state: &Self::State,
        now: &impl Fn() -> u64,
        units: u64,
    );
    /// Nanoseconds until `state` is indistinguishable from [`fresh`](Algorithm::fresh).
    #[doc(hidden)]
    fn idle_in(&self, config: &Self::Config, state: &Self::State, now: u64) -> u64;
    /// Re-expresses `state` for a new configuration, keeping what it has counted. Called
    /// with exclusive access to the state.
    #[doc(hidden)]
    fn reconfigure(
        &self,
        old: &Self::Config,
        new: &Self::Config,
        state: &Self::State,
        now: u64,
    ) -> Self::State;
}

/// CAS loop over a one-word state; `step(state, now)` gets the clock read after the load.
#[inline]
fn update_word(
    word: &AtomicU64,
    now: &impl Fn() -> u64,
    mut step: impl FnMut(u64, u64) -> (Decision, Option<u64>),
) -> Decision {
    let mut current = word.load(Ordering::Acquire);
    loop {
        let (decision, next) = step(current, now());
        let Some(next) = next else { return decision };
        match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(actual) => current = actual,
        }
    }
}

/// The token bucket (GCRA) per key: one 8-byte word.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenBucketCore;

impl sealed::Sealed for TokenBucketCore {}

impl Algorithm for TokenBucketCore {
    type Config = GcraConfig;
    type State = AtomicU64;

    fn configure(&self, quota: &Quota, resolution: Duration) -> Result<GcraConfig, ConfigError> {
        GcraConfig::new(quota, resolution)
    }

    fn limit(&self, c: &GcraConfig) -> u64 {
        c.capacity
    }

    fn fresh(&self, _config: &GcraConfig, now: u64) -> AtomicU64 {
        // A TAT of now: a full bucket, whatever the clock reads.
        AtomicU64::new(now)
    }

    #[inline]
    fn check(
        &self,
        c: &GcraConfig,
        s: &AtomicU64,
        now: &impl Fn() -> u64,
        cost: u64,
        consume: bool,
    ) -> Decision {
        update_word(s, now, |tat, now| {
            c.step_masked(tat, now, cost, consume, u64::MAX)
        })
    }

    fn refund(&self, c: &GcraConfig, s: &AtomicU64, now: &impl Fn() -> u64, units: u64) {
        update_word(s, now, |tat, now| {
            c.refund_masked(tat, now, units, u64::MAX)
        });
    }

    fn idle_in(&self, c: &GcraConfig, s: &AtomicU64, now: u64) -> u64 {
        c.idle_in(s.load(Ordering::Acquire), now, u64::MAX)
    }

    fn reconfigure(
        &self,
        old: &GcraConfig,
        new: &GcraConfig,
        s: &AtomicU64,
        now: u64,
    ) -> AtomicU64 {
        AtomicU64::new(new.convert_masked(old, s.load(Ordering::Acquire), now, u64::MAX))
    }
}

/// The fixed window per key: one 8-byte word.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedWindowCore;

impl sealed::Sealed for FixedWindowCore {}

impl Algorithm for FixedWindowCore {
    type Config = FixedConfig;
    type State = AtomicU64;

    fn configure(&self, quota: &Quota, resolution: Duration) -> Result<FixedConfig, ConfigError> {
        FixedConfig::new(quota, resolution)
    }

    fn limit(&self, c: &FixedConfig) -> u64 {
        c.limit
    }

    fn fresh(&self, _config: &FixedConfig, _now: u64) -> AtomicU64 {
        // Count zero: indistinguishable from any window's start.
        AtomicU64::new(0)
    }

    #[inline]
    fn check(
        &self,
        c: &FixedConfig,
        s: &AtomicU64,
        now: &impl Fn() -> u64,
        cost: u64,
        consume: bool,
    ) -> Decision {
        update_word(s, now, |state, now| c.step(state, now, cost, consume))
    }

    fn refund(&self, c: &FixedConfig, s: &AtomicU64, now: &impl Fn() -> u64, units: u64) {
        update_word(s, now, |state, now| c.refund(state, now, units));
    }

    fn idle_in(&self, c: &FixedConfig, s: &AtomicU64, now: u64) -> u64 {
        c.idle_in(s.load(Ordering::Acquire), now)
    }

    fn reconfigure(
        &self,
        old: &FixedConfig,
        new: &FixedConfig,
        s: &AtomicU64,
        now: u64,
    ) -> AtomicU64 {
        AtomicU64::new(new.convert_from(old, s.load(Ordering::Acquire), now))
    }
}

/// The sliding window per key, with a number of sub-buckets (10 by default).
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindowCore {
    buckets: u32,
}

impl SlidingWindowCore {
    /// A sliding window cut into `buckets` sub-buckets.
    pub fn with_buckets(buckets: u32) -> Self {
        SlidingWindowCore { buckets }
    }
}

impl Default for SlidingWindowCore {
    fn default() -> Self {
        SlidingWindowCore {
            buckets: DEFAULT_BUCKETS,
        }
    }
}

impl sealed::Sealed for SlidingWindowCore {}

impl Algorithm for SlidingWindowCore {
    type Config = SlidingConfig;
    type State = SlidingState;

    fn configure(&self, quota: &Quota, resolution: Duration) -> Result<SlidingConfig, ConfigError> {
        SlidingConfig::new(quota, self.buckets, resolution)
    }

    fn limit(&self, c: &SlidingConfig) -> u64 {
        c.limit
    }

    fn fresh(&self, config: &SlidingConfig, now: u64) -> SlidingState {
        SlidingState::new(config, now)
    }

    #[inline]
    fn check(
        &self,
        c: &SlidingConfig,
        s: &SlidingState,
        now: &impl Fn() -> u64,
        cost: u64,
        consume: bool,
    ) -> Decision {
        s.check(c, now(), cost, consume)
    }

    fn refund(&self, c: &SlidingConfig, s: &SlidingState, now: &impl Fn() -> u64, units: u64) {
        s.refund(c, now(), units);
    }

    fn idle_in(&self, c: &SlidingConfig, s: &SlidingState, now: u64) -> u64 {
        s.idle_in(c, now)
    }

    fn reconfigure(
        &self,
        old: &SlidingConfig,
        new: &SlidingConfig,
        s: &SlidingState,
        now: u64,
    ) -> SlidingState {
        s.relayout(old, new, now)
    }
}
