//! What a [`RedisLimiter`](super::RedisLimiter) answers while Redis does not: the
//! [`OutagePolicy`], and the small breaker that keeps an outage from costing every request
//! its deadline.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Decision;

/// What a Redis limiter answers while Redis is unreachable, too slow, or failing. Chosen
/// explicitly at build: the right answer depends on what the limit protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Let requests through (the limit protects nothing critical; availability first).
    FailOpen,
    /// Refuse requests, with `Retry-After` the probe interval (the limit guards money or a
    /// fragile backend).
    FailClosed,
    /// Each replica enforces its share of the limit on its own, in memory: the total stays
    /// about the limit while Redis is away.
    LocalShare {
        /// How many replicas the limit is divided among.
        replicas: Replicas,
    },
}

/// How many replicas share a limit, for [`OutagePolicy::LocalShare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replicas {
    /// A fixed count (at least 1): right when the deployment does not autoscale.
    Fixed(u32),
    /// The replicas seen recently: every limiter of the same prefix announces itself in
    /// Redis each second, and a replica silent for 5 s is no longer counted. The count held
    /// when Redis went away is the one used during the outage.
    Seen,
}

/// Whether Redis is answering, as the limiter last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    /// Down since a failure; Redis is not asked again before `retry_at`.
    Down {
        retry_at: Instant,
    },
    /// Down, and one call is asking Redis whether it is back.
    Probing,
}

/// The outage breaker: after a failure Redis is skipped for `probe_every`, then one call
/// probes it; a success closes it at once.
#[derive(Debug)]
pub(crate) struct Outage {
    health: Mutex<Health>,
    probe_every: Duration,
}

/// What a call should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Ask Redis (`probe` when this call is the one testing whether it is back).
    Redis { probe: bool },
    /// Answer by the policy without asking.
    Policy,
}

impl Outage {
    pub(crate) fn new(probe_every: Duration) -> Self {
        Outage {
            health: Mutex::new(Health::Up),
            probe_every,
        }
    }

    pub(crate) fn probe_every(&self) -> Duration {
        self.probe_every
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the call at `now` goes.
    pub(crate) fn route(&self, now: Instant) -> Route {
        let mut h = self.lock();
        match *h {
            Health::Up => Route::Redis { probe: false },
            Health::Down { retry_at } if now >= retry_at => {
                *h = Health::Probing;
                Route::Redis { probe: true }
            }
            Health::Down { .. } | Health::Probing => Route::Policy,
        }
    }

    /// Redis answered. `true` when that ends an outage.
    pub(crate) fn succeeded(&self) -> bool {
        let mut h = self.lock();
        let was_down = *h != Health::Up;
        *h = Health::Up;
        was_down
    }

    /// Redis failed at `now`. `true` when that starts an outage.
    pub(crate) fn failed(&self, now: Instant) -> bool {
        let mut h = self.lock();
        let was_up = *h == Health::Up;
        *h = Health::Down {
            retry_at: now + self.probe_every,
        };
        was_up
    }

    /// Whether the limiter is answering by its policy now.
    pub(crate) fn is_down(&self) -> bool {
        *self.lock() != Health::Up
    }
}

/// What the fail-open (`open`) or fail-closed policy answers; `LocalShare` asks its local
/// limiter instead.
pub(crate) fn fixed_answer(open: bool, limit: u64, probe_every: Duration) -> Decision {
    if open {
        Decision::allowed(limit, limit, Duration::ZERO)
    } else {
        Decision::rejected(limit, 0, probe_every, Some(probe_every))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_skips_redis_until_one_probe_and_a_success_ends_it() {
        let o = Outage::new(Duration::from_millis(250));
        let t0 = Instant::now();
        assert_eq!(o.route(t0), Route::Redis { probe: false });
        assert!(o.failed(t0), "the first failure starts the outage");
        assert!(!o.failed(t0), "a second does not start another");
        assert_eq!(o.route(t0 + Duration::from_millis(100)), Route::Policy);
        let later = t0 + Duration::from_millis(300);
        assert_eq!(o.route(later), Route::Redis { probe: true });
        assert_eq!(o.route(later), Route::Policy, "one probe at a time");
        assert!(!o.failed(later), "a failed probe continues the outage");
        assert_eq!(o.route(later + Duration::from_millis(100)), Route::Policy);
        assert_eq!(
            o.route(later + Duration::from_millis(300)),
            Route::Redis { probe: true }
        );
        assert!(o.succeeded(), "a success ends the outage");
        assert!(!o.is_down());
        assert_eq!(o.route(later), Route::Redis { probe: false });
    }

    #[test]
    fn fixed_policies_answer_without_redis() {
        let p = Duration::from_millis(250);
        assert!(fixed_answer(true, 5, p).is_allowed());
        let closed = fixed_answer(false, 5, p);
        assert!(!closed.is_allowed());
        assert_eq!(closed.retry_after(), Some(p));
    }
}
