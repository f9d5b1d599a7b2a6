//! How a branch call is retried: exponential backoff with jitter, bounded attempts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Retry policy of one step or branch.
///
/// Attempt `n` (from 1) that ends with an *unknown* outcome is followed by a pause drawn
/// uniformly from `[d/2, d]`, where `d = min(initial × multiplier^(n-1), max_backoff)`
/// ("equal jitter": spread out, never zero). Actions and tries stop after `max_attempts`
/// (or at the saga's deadline); compensations, confirms and cancels ignore `max_attempts`
/// and keep going, because a transaction cannot be left half undone.
///
/// ```
/// use std::time::Duration;
/// use maas_saga::RetryPolicy;
/// let p = RetryPolicy::new(5).backoff(Duration::from_millis(100), Duration::from_secs(2));
/// assert_eq!(p.max_attempts, 5);
/// assert!(p.pause_after(3) <= Duration::from_millis(400));
/// assert!(p.pause_after(3) >= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts an action or try gets before its outcome is declared unknown for good.
    pub max_attempts: u32,
    /// Pause after the first failed attempt.
    #[serde(with = "millis")]
    pub initial: Duration,
    /// Longest pause.
    #[serde(with = "millis")]
    pub max_backoff: Duration,
    /// Growth of the pause per attempt.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling up to 5 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts with the default backoff.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..RetryPolicy::default()
        }
    }

    /// Sets the first and the longest pause.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the growth factor of the pause (at least 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The pause after attempt `attempt` (from 1) failed with an unknown outcome: between
    /// half and all of `initial × multiplier^(attempt − 1)`, capped at `max_backoff` and at
    /// [`MAX_DURATION`](crate::MAX_DURATION). Any settings are accepted; none panics.
    pub fn pause_after(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let most = crate::duration::clamp(self.max_backoff).as_secs_f64();
        let ceiling = (self.initial.as_secs_f64() * exp).min(most);
        // Never more than MAX_DURATION (100 years), whatever the settings.
        let ceiling = Duration::try_from_secs_f64(ceiling.max(0.0))
            .map_or(crate::MAX_DURATION, crate::duration::clamp);
        let half = ceiling / 2;
        half + ceiling.mul_f64(fastrand::f64()) / 2
    }
}

/// Durations as integer milliseconds in the stored intent.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_and_are_capped() {
        let p = RetryPolicy::new(10).backoff(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let first = p.pause_after(1);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let late = p.pause_after(20);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&late));
        }
    }
}
