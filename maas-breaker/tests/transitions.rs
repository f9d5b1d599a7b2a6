//! Every transition of the breaker, step by step, on a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::events::{Event, TransitionCause};
use maas_breaker::{
    BreakerState, CircuitBreaker, CircuitBreakerBuilder, Classification, ConfigError, Outcome,
    Window,
};

const SEC: Duration = Duration::from_secs(1);

fn builder(clock: &ManualClock) -> CircuitBreakerBuilder<ManualClock> {
    CircuitBreaker::builder()
        .name("test")
        .window(Window::Count(10))
        .minimum_calls(4)
        .failure_rate(50.0)
        .open_wait(10 * SEC)
        .half_open(2, 2)
        .max_half_open(Some(30 * SEC))
        .clock(clock.clone())
}

fn ok(b: &CircuitBreaker<ManualClock>) -> bool {
    b.call(|| Ok::<_, ()>(())).is_ok()
}

fn fail(b: &CircuitBreaker<ManualClock>) -> bool {
    !matches!(b.call(|| Err::<(), _>(())), Err(e) if e.as_rejected().is_some())
}

fn open(clock: &ManualClock) -> CircuitBreaker<ManualClock> {
    let b = builder(clock).build().unwrap();
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
    b
}

#[test]
fn closed_trips_on_failure_rate_only_after_minimum_calls() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    for _ in 0..3 {
        assert!(fail(&b));
        assert_eq!(b.state(), BreakerState::Closed, "below minimum calls");
    }
    assert!(fail(&b));
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    for _ in 0..6 {
        ok(&b);
    }
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.snapshot().failure_rate(), 40.0);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b); // the oldest success leaves: 5 of 10
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn old_outcomes_leave_the_count_window() {
    let clock = ManualClock::new();
    let b = builder(&clock).failure_rate(80.0).build().unwrap();
    for _ in 0..5 {
        fail(&b);
        ok(&b);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    // 5 of 10 failed; successes keep coming and push the failures out.
    for _ in 0..10_000 {
        ok(&b);
    }
    assert_eq!(b.snapshot().failures, 0);
    // A later run of failures is not hidden by the long run of successes.
    for _ in 0..8 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn time_window_forgets_what_is_older_than_its_length() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .window(Window::Time {
            length: 10 * SEC,
            buckets: 10,
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    clock.advance(11 * SEC);
    assert_eq!(b.snapshot().calls, 0);
    fail(&b);
    assert_eq!(
        b.state(),
        BreakerState::Closed,
        "the first three left the window"
    );
    for _ in 0..3 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn slow_calls_trip_the_breaker() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .without_failure_rate()
        .slow_calls(SEC, 75.0)
        .build()
        .unwrap();
    let slow_ok = |b: &CircuitBreaker<ManualClock>| {
        b.call(|| {
            clock.advance(2 * SEC);
            Ok::<_, ()>(())
        })
    };
    ok(&b);
    for _ in 0..2 {
        slow_ok(&b).unwrap();
    }
    assert_eq!(b.state(), BreakerState::Closed, "3 calls < minimum 4");
    slow_ok(&b).unwrap();
    assert_eq!(b.snapshot().slow, 3);
    assert_eq!(b.state(), BreakerState::Open, "3 of 4 slow = 75 %");
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let clock = ManualClock::new();
    let b = builder(&clock)
        .without_failure_rate()
        .consecutive_failures(3)
        .build()
        .unwrap();
    fail(&b);
    fail(&b);
    ok(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn ignored_outcomes_are_not_counted() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    for _ in 0..20 {
        b.try_acquire().unwrap().record(Outcome::Ignored);
    }
    assert_eq!(b.snapshot().calls, 0);
}

#[test]
fn open_rejects_without_calling_and_reports_the_remaining_time() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(4 * SEC);
    let mut called = false;
    let err = b
        .call(|| {
            called = true;
            Ok::<_, ()>(())
        })
        .unwrap_err();
    assert!(!called);
    let r = err.as_rejected().unwrap();
    assert_eq!(r.state(), BreakerState::Open);
    assert_eq!(r.retry_after(), Some(6 * SEC));
    assert_eq!(r.breaker(), "test");
}

#[test]
fn open_becomes_half_open_after_the_wait_and_closes_after_m_successes() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(10 * SEC);
    assert!(ok(&b));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(ok(&b));
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().calls, 0, "closing starts a fresh window");
}

#[test]
fn half_open_permits_exactly_n_probes_at_once() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(10 * SEC);
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let third = b.try_acquire().unwrap_err();
    assert_eq!(third.state(), BreakerState::HalfOpen);
    assert_eq!(third.retry_after(), None);
    // A cancelled probe gives its slot back without counting.
    drop(p1);
    let p3 = b.try_acquire().unwrap();
    p2.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::HalfOpen, "one success of two");
    p3.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_failed_probe_reopens_with_backoff_capped() {
    let clock = ManualClock::new();
    let b = builder(&clock).backoff(2.0, 25 * SEC).build().unwrap();
    for _ in 0..4 {
        fail(&b);
    }
    let waits: Vec<Duration> = (0..4)
        .map(|_| {
            let wait = b.try_acquire().unwrap_err().retry_after().unwrap();
            clock.advance(wait);
            fail(&b); // the probe fails: open again
            wait
        })
        .collect();
    assert_eq!(waits, vec![10 * SEC, 20 * SEC, 25 * SEC, 25 * SEC]);
    // Closing resets the backoff.
    clock.advance(25 * SEC);
    ok(&b);
    ok(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(10 * SEC));
}

#[test]
fn retry_after_from_the_dependency_keeps_it_open_longer() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    b.try_acquire()
        .unwrap()
        .record(Classification::FAILURE.with_retry_after(45 * SEC));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(45 * SEC));
}

#[test]
fn a_shorter_retry_after_does_not_shorten_the_wait() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    for _ in 0..3 {
        fail(&b);
    }
    b.try_acquire()
        .unwrap()
        .record(Classification::FAILURE.with_retry_after(SEC));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Some(10 * SEC));
}

#[test]
fn half_open_too_long_reopens() {
    let clock = ManualClock::new();
    let b = open(&clock);
    clock.advance(10 * SEC);
    let p1 = b.try_acquire().unwrap(); // half-open; this probe never answers
    let _p2 = b.try_acquire().unwrap();
    clock.advance(30 * SEC);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.state(), BreakerState::Open);
    // The stuck probe's late answer belongs to a finished test: ignored.
    p1.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn results_from_a_previous_generation_are_ignored() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    let before = b.try_acquire().unwrap(); // issued while closed
    for _ in 0..4 {
        fail(&b);
    }
    clock.advance(10 * SEC);
    ok(&b);
    ok(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    before.record(Outcome::Failure);
    assert_eq!(
        b.snapshot().calls,
        0,
        "a result from before the trip was counted"
    );
}

#[test]
fn operator_states() {
    let clock = ManualClock::new();
    let b = builder(&clock).build().unwrap();
    b.force_open();
    assert_eq!(b.state(), BreakerState::ForcedOpen);
    clock.advance(3_600 * SEC);
    let r = b.try_acquire().unwrap_err();
    assert_eq!(
        (r.state(), r.retry_after()),
        (BreakerState::ForcedOpen, None)
    );
    b.disable();
    for _ in 0..100 {
        assert!(fail(&b));
    }
    assert_eq!(b.state(), BreakerState::Disabled);
    assert_eq!(b.snapshot().calls, 0);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(ok(&b));
}

#[test]
fn events_report_each_transition_in_order() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let b = builder(&clock)
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    for _ in 0..4 {
        fail(&b);
    }
    let _ = b.try_acquire();
    clock.advance(10 * SEC);
    ok(&b);
    ok(&b);
    let transitions: Vec<(BreakerState, BreakerState, TransitionCause)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::Transition {
                from, to, cause, ..
            } => Some((*from, *to, *cause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        vec![
            (
                BreakerState::Closed,
                BreakerState::Open,
                TransitionCause::FailureRate {
                    rate: 100.0,
                    calls: 4
                }
            ),
            (
                BreakerState::Open,
                BreakerState::HalfOpen,
                TransitionCause::OpenWaitElapsed
            ),
            (
                BreakerState::HalfOpen,
                BreakerState::Closed,
                TransitionCause::ProbesSucceeded
            ),
        ]
    );
    let rejections = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Rejected {
                    state: BreakerState::Open,
                    ..
                }
            )
        })
        .count();
    assert_eq!(rejections, 1);
}

#[test]
fn invalid_configuration_fails_at_build() {
    let err = |b: CircuitBreakerBuilder| b.build().map(|_| ()).unwrap_err();
    let base = CircuitBreaker::builder;
    assert!(matches!(
        err(base().failure_rate(0.0)),
        ConfigError::RateOutOfRange { .. }
    ));
    assert!(matches!(
        err(base().failure_rate(100.5)),
        ConfigError::RateOutOfRange { .. }
    ));
    assert!(matches!(
        err(base().failure_rate(f64::NAN)),
        ConfigError::RateOutOfRange { .. }
    ));
    assert!(matches!(
        err(base().slow_calls(SEC, -1.0)),
        ConfigError::RateOutOfRange { .. }
    ));
    assert!(matches!(
        err(base().window(Window::Count(0))),
        ConfigError::EmptyWindow(_)
    ));
    assert!(matches!(
        err(base().window(Window::Time {
            length: Duration::ZERO,
            buckets: 4
        })),
        ConfigError::EmptyWindow(_)
    ));
    assert!(matches!(
        err(base().window(Window::Time {
            length: SEC,
            buckets: 0
        })),
        ConfigError::EmptyWindow(_)
    ));
    assert_eq!(err(base().half_open(0, 1)), ConfigError::ZeroProbes);
    assert_eq!(
        err(base().half_open(1, 0)),
        ConfigError::ZeroSuccessesToClose
    );
    assert!(matches!(
        err(base().open_wait(Duration::ZERO)),
        ConfigError::ZeroDuration(_)
    ));
    assert_eq!(
        err(base().backoff(0.5, SEC)),
        ConfigError::BackoffBelowOne(0.5)
    );
    assert_eq!(
        err(base().without_failure_rate()),
        ConfigError::NoTripCondition
    );
    assert_eq!(
        err(base().consecutive_failures(0)),
        ConfigError::ZeroConsecutiveFailures
    );
    assert!(matches!(
        err(base().half_open(70_000, 1)),
        ConfigError::TooLarge { .. }
    ));
}
