//! The breaker's decisions as pure functions: when to trip, and how long to stay open.
//! No atomics and no clock here — the breaker reads its state and asks; these are
//! unit-tested on plain numbers.

use crate::config::Config;
use crate::events::TransitionCause;
use crate::window::Snapshot;

/// Why a closed breaker should open after a failure, if it should. `snapshot` is asked for
/// only when the consecutive-failure rule did not already decide (it costs a window read).
pub(crate) fn trip_cause(
    config: &Config,
    consecutive: u32,
    snapshot: impl FnOnce() -> Snapshot,
) -> Option<TransitionCause> {
    if config
        .consecutive_failures
        .is_some_and(|n| consecutive >= n)
    {
        return Some(TransitionCause::ConsecutiveFailures(consecutive));
    }
    if config.failure_rate.is_none() && config.slow_rate.is_none() {
        return None;
    }
    let s = snapshot();
    if s.calls < config.minimum_calls {
        return None;
    }
    if config.failure_rate.is_some_and(|t| s.failure_rate() >= t) {
        return Some(TransitionCause::FailureRate {
            rate: s.failure_rate(),
            calls: s.calls,
        });
    }
    if config.slow_rate.is_some_and(|t| s.slow_rate() >= t) {
        return Some(TransitionCause::SlowCallRate {
            rate: s.slow_rate(),
            calls: s.calls,
        });
    }
    None
}

/// How long the breaker stays open after its `trips`-th trip in a row (0 for the first):
/// the open wait times `backoff^trips`, capped at the maximum, and never shorter than a
/// pause the dependency asked for (`requested`, e.g. from `Retry-After`). Nanoseconds.
pub(crate) fn open_wait(config: &Config, trips: u32, requested: u64) -> u64 {
    let growth = config.backoff.powi(trips.min(64) as i32);
    let wait = (config.open_wait as f64 * growth).min(config.max_open_wait as f64) as u64;
    wait.max(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Window;
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;

    fn config() -> Config {
        Config {
            name: Arc::from("t"),
            window: Window::Count(100),
            minimum_calls: 10,
            failure_rate: Some(50.0),
            slow_rate: Some(80.0),
            slow_call: Some(SEC),
            consecutive_failures: Some(5),
            open_wait: 10 * SEC,
            backoff: 2.0,
            max_open_wait: 60 * SEC,
            probes: 1,
            successes_to_close: 1,
            max_half_open: None,
        }
    }

    fn snap(calls: u64, failures: u64, slow: u64) -> Snapshot {
        Snapshot {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn consecutive_failures_trip_without_reading_the_window() {
        let c = config();
        let cause = trip_cause(&c, 5, || panic!("the window was read"));
        assert_eq!(cause, Some(TransitionCause::ConsecutiveFailures(5)));
    }

    #[test]
    fn rates_count_only_from_the_minimum_calls() {
        let c = config();
        assert_eq!(trip_cause(&c, 1, || snap(9, 9, 0)), None);
        assert_eq!(
            trip_cause(&c, 1, || snap(10, 5, 0)),
            Some(TransitionCause::FailureRate {
                rate: 50.0,
                calls: 10
            })
        );
        assert_eq!(trip_cause(&c, 1, || snap(10, 4, 7)), None);
        assert_eq!(
            trip_cause(&c, 1, || snap(10, 4, 8)),
            Some(TransitionCause::SlowCallRate {
                rate: 80.0,
                calls: 10
            })
        );
    }

    #[test]
    fn without_rate_thresholds_the_window_is_not_read() {
        let c = Config {
            failure_rate: None,
            slow_rate: None,
            ..config()
        };
        assert_eq!(trip_cause(&c, 4, || panic!("the window was read")), None);
    }

    #[test]
    fn the_open_wait_grows_with_trips_up_to_its_cap_and_honours_requests() {
        let c = config();
        assert_eq!(open_wait(&c, 0, 0), 10 * SEC);
        assert_eq!(open_wait(&c, 1, 0), 20 * SEC);
        assert_eq!(open_wait(&c, 2, 0), 40 * SEC);
        assert_eq!(open_wait(&c, 3, 0), 60 * SEC);
        assert_eq!(open_wait(&c, u32::MAX, 0), 60 * SEC);
        assert_eq!(open_wait(&c, 0, 90 * SEC), 90 * SEC);
        let flat = Config {
            backoff: 1.0,
            ..config()
        };
        assert_eq!(open_wait(&flat, 40, 0), 10 * SEC);
    }
}
