//! Extreme and hostile settings: every builder either refuses them with a `ConfigError` or
//! builds a breaker that keeps its guarantees — no panic, no silent wrap-around. Run in debug
//! and in release (`scripts/test` does both), since overflow checks differ between them.

use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::{BreakerState, CircuitBreaker, ConfigError, Outcome, Window};
use proptest::prelude::*;

fn fail(b: &CircuitBreaker<ManualClock>) {
    let _ = b.call(|| Err::<(), _>("down"));
}

fn succeed(b: &CircuitBreaker<ManualClock>) {
    let _ = b.call(|| Ok::<_, ()>(()));
}

#[test]
fn a_minimum_above_a_count_window_is_a_config_error() {
    // Before: it built, and 1,000 failures left it closed.
    let err = CircuitBreaker::builder()
        .window(Window::Count(10))
        .minimum_calls(20)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::MinimumCallsAboveWindow {
            minimum_calls: 20,
            window: 10
        }
    );
    // Left at its default, the minimum shrinks to the window, so the breaker can trip.
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .window(Window::Count(10))
        .clock(clock)
        .build()
        .unwrap();
    for _ in 0..10 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn reaching_the_minimum_on_a_success_trips() {
    for window in [
        Window::Count(100),
        Window::Time {
            length: Duration::from_secs(10),
            buckets: 10,
        },
    ] {
        let b = CircuitBreaker::builder()
            .window(window)
            .minimum_calls(10)
            .failure_rate(50.0)
            .clock(ManualClock::new())
            .build()
            .unwrap();
        for _ in 0..5 {
            fail(&b);
        }
        for _ in 0..4 {
            succeed(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed, "{window:?}: 9 calls");
        succeed(&b); // the tenth call: 5 of 10 failed
        assert_eq!(b.state(), BreakerState::Open, "{window:?}");
    }
}

#[test]
fn millions_of_calls_in_one_time_slice_still_trip() {
    // Before: 2^22 calls in one slice wrapped the packed counter; after the window had
    // passed it still counted 4,194,304 calls and 50,000 failures could not open it.
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder()
        .window(Window::Time {
            length: Duration::from_secs(60),
            buckets: 1,
        })
        .minimum_calls(100)
        .failure_rate(50.0)
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..(1 << 22) + 1_000 {
        succeed(&b);
    }
    assert_eq!(b.snapshot().calls, (1 << 22) + 1_000);
    clock.advance(Duration::from_secs(61));
    assert_eq!(b.snapshot().calls, 0);
    for _ in 0..50_000 {
        fail(&b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_nanos(u64::MAX)),
        (0u64..=u64::MAX).prop_map(Duration::from_nanos),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn clock_start() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1 << 60),
        Just((1 << 60) - 1),
        Just(1 << 63),
        Just(u64::MAX - 1_000_000_000),
        any::<u64>(),
    ]
}

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(1 << 24),
            Just((1 << 24) + 1),
            Just(u32::MAX),
            1u32..200
        ]
        .prop_map(Window::Count),
        (
            duration(),
            prop_oneof![Just(0u32), Just(1), Just(10_000), Just(u32::MAX), 1u32..50]
        )
            .prop_map(|(length, buckets)| Window::Time { length, buckets }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Fail,
    Succeed,
    Ignore,
    Advance(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Fail),
        3 => Just(Op::Succeed),
        1 => Just(Op::Ignore),
        1 => duration().prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any settings, any clock, any sequence of calls: no panic, and consecutive failures
    /// (when configured) still trip a closed breaker.
    #[test]
    fn extreme_settings_never_panic(
        window in window(),
        minimum in prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..300],
        open_wait in duration(),
        backoff in prop_oneof![Just(1.0f64), Just(f64::MAX), Just(f64::INFINITY), Just(f64::NAN), 0.0f64..10.0],
        max_open in duration(),
        slow in duration(),
        probes in prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..5],
        max_half_open in prop::option::of(duration()),
        consecutive in prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..5],
        start in clock_start(),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let clock = ManualClock::new();
        clock.advance(Duration::from_nanos(start));
        let built = CircuitBreaker::builder()
            .window(window)
            .minimum_calls(minimum)
            .open_wait(open_wait)
            .backoff(backoff, max_open)
            .slow_calls(slow, 50.0)
            .half_open(probes, probes)
            .max_half_open(max_half_open)
            .consecutive_failures(consecutive)
            .clock(clock.clone())
            .build();
        let Ok(b) = built else { return Ok(()) };
        let mut run = 0u32;
        for op in ops {
            let was = b.state();
            match op {
                Op::Fail => {
                    fail(&b);
                    run = if was == BreakerState::Closed { run + 1 } else { 0 };
                    if was == BreakerState::Closed && run >= consecutive {
                        prop_assert_ne!(b.state(), BreakerState::Closed);
                    }
                }
                Op::Succeed => { succeed(&b); run = 0; }
                Op::Ignore => {
                    if let Ok(p) = b.try_acquire() {
                        p.record(Outcome::Ignored);
                    }
                }
                Op::Advance(d) => clock.advance(d),
            }
            if b.state() != BreakerState::Closed {
                run = 0;
            }
            let s = b.snapshot();
            prop_assert!(s.failures <= s.calls && s.slow <= s.calls);
            if let Window::Count(n) = window {
                prop_assert!(s.calls <= u64::from(n));
            }
        }
    }
}
