//! Extreme and hostile values: every builder either refuses them with a `ConfigError` or
//! builds a limiter that keeps its guarantee — no panic, no silent wrap-around. Run in debug
//! and in release (`scripts/test` does both), since overflow checks differ between them.

use std::convert::Infallible;
use std::time::Duration;

use maas_ratelimit::clock::ManualClock;
use maas_ratelimit::{
    FixedWindow, KeyedLimiter, Quota, RateLimitLayer, SlidingWindow, TokenBucket,
};
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

const SEC: u64 = 1_000_000_000;

#[test]
fn a_token_bucket_keeps_limiting_with_a_clock_past_two_to_the_60() {
    // Before: a clock reading of 2^60 ns or more wrapped the 60-bit state, and 100,000 of
    // 100,000 checks passed in one second against a bound of 20.
    for start in [
        1u64 << 60,
        (1 << 60) - 1,
        1 << 62,
        1 << 63,
        u64::MAX - 2 * SEC,
    ] {
        let clock = ManualClock::new();
        clock.set_nanos(start);
        let bucket = TokenBucket::builder(Quota::per_second(10).with_burst(10))
            .clock(clock.clone())
            .build()
            .unwrap();
        let mut passed = 0;
        for _ in 0..100_000 {
            clock.advance(Duration::from_nanos(10_000)); // 100,000 × 10 µs = 1 s
            passed += u64::from(bucket.check().is_allowed());
        }
        assert!(passed <= 20, "start {start}: {passed} passed in one second");
        assert!(passed >= 10, "start {start}: only {passed} passed");
    }
}

#[test]
fn a_fixed_window_never_locks_a_client_out_after_a_long_idle_spell() {
    // Before: after 2^27 or more idle windows, 5 per 1 ms rejected for up to 37 hours.
    let clock = ManualClock::new();
    let window = FixedWindow::builder(Quota::new(5, Duration::from_millis(1)))
        .clock(clock.clone())
        .build()
        .unwrap();
    let keyed = KeyedLimiter::fixed_window(Quota::new(5, Duration::from_millis(1)))
        .clock(clock.clone())
        .build::<u8>()
        .unwrap();
    assert!(window.check_n(5).is_allowed());
    assert!(keyed.check_n(&1, 5).is_allowed());
    clock.advance(Duration::from_millis((1 << 27) + 5));
    assert!(window.check_n(5).is_allowed());
    assert!(keyed.check_n(&1, 5).is_allowed());
}

#[test]
fn a_sliding_window_of_u64_max_nanoseconds_checks_without_panicking() {
    let clock = ManualClock::new();
    let window = SlidingWindow::builder(Quota::new(3, Duration::from_nanos(u64::MAX)))
        .clock(clock.clone())
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(window.check().is_allowed());
    }
    let d = window.check();
    assert!(!d.is_allowed());
    clock.set_nanos(u64::MAX);
    let _ = window.check();
}

#[test]
fn huge_shard_counts_are_a_config_error() {
    let built = KeyedLimiter::token_bucket(Quota::per_second(1))
        .max_keys(usize::MAX)
        .shards(usize::MAX)
        .build::<u64>();
    assert!(built.is_err());
    let built = KeyedLimiter::token_bucket(Quota::per_second(1))
        .max_keys(usize::MAX)
        .build::<u64>();
    assert!(built.is_ok());
}

#[tokio::test]
async fn waiting_up_to_duration_max_never_panics() {
    // Before: the first over-limit request panicked computing its deadline.
    let limiter = TokenBucket::builder(Quota::new(1, Duration::from_millis(50)).with_burst(1))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::MAX)
                .build(),
        )
        .service(service_fn(|n: u64| async move { Ok::<_, Infallible>(n) }));
    for n in 0..3 {
        let answer = svc.ready().await.unwrap().call(n).await;
        assert_eq!(answer.unwrap(), n, "waited, then passed");
    }
}

fn clock_start() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just((1 << 60) - 1),
        Just(1 << 60),
        Just((1 << 63) - 1),
        Just(1 << 63),
        Just(u64::MAX / 2),
        any::<u64>().prop_map(|n| n >> 1), // leave room for the run itself
    ]
}

fn period() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        Just(Duration::from_nanos(u64::MAX)),
        (1u64..10_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_nanos),
    ]
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::from(u32::MAX)),
        1u64..100
    ]
}

/// Gaps between arrivals: small, one window, and idle spells of up to 2^40 windows.
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0u64..2_000_000,
        1 => Just(SEC),
        1 => (0u32..41).prop_map(|e| 1u64 << e),
    ]
}

fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (
            gap(),
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), 1u64..5],
        ),
        1..150,
    )
}

/// Admitted (time, cost) pairs never exceed `bound(span)` over any span of arrivals.
fn check_bound(admitted: &[(u64, u64)], bound: impl Fn(u64) -> u128) -> Result<(), TestCaseError> {
    for i in 0..admitted.len() {
        let mut total = 0u128;
        for j in i..admitted.len() {
            total += u128::from(admitted[j].1);
            let span = admitted[j].0 - admitted[i].0;
            prop_assert!(total <= bound(span), "{total} admitted within {span} ns");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any quota, any clock start, costs from 0 to u64::MAX, idle gaps up to 2^40: the
    /// token bucket never panics and never admits more than burst + t / T.
    #[test]
    fn token_bucket_extremes(limit in count(), period in period(), burst in count(),
                             start in clock_start(), arrivals in arrivals()) {
        let clock = ManualClock::new();
        clock.set_nanos(start);
        let quota = Quota::new(limit, period).with_burst(burst);
        let Ok(bucket) = TokenBucket::builder(quota).clock(clock.clone()).build() else {
            return Ok(());
        };
        let keyed = KeyedLimiter::token_bucket(quota).clock(clock.clone()).build::<u8>().unwrap();
        let (capacity, interval) = bucket.emission();
        let interval = interval.as_nanos() as u64;
        let (mut single, mut per_key) = (Vec::new(), Vec::new());
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_nanos(gap));
            let now = clock.now_nanos_for_tests();
            let _ = bucket.peek(cost);
            if bucket.check_n(cost).is_allowed() && cost > 0 {
                single.push((now, cost));
            }
            if keyed.check_n(&0, cost).is_allowed() && cost > 0 {
                per_key.push((now, cost));
            }
        }
        let bound = |span: u64| u128::from(capacity) + u128::from(span / interval);
        check_bound(&single, bound)?;
        check_bound(&per_key, bound)?;
    }

    /// The fixed window admits at most its limit per window, whatever the clock and gaps.
    #[test]
    fn fixed_window_extremes(limit in count(), period in period(), start in clock_start(),
                             arrivals in arrivals()) {
        let clock = ManualClock::new();
        clock.set_nanos(start);
        let quota = Quota::new(limit, period);
        let Ok(window) = FixedWindow::builder(quota).clock(clock.clone()).build() else {
            return Ok(());
        };
        let keyed = KeyedLimiter::fixed_window(quota).clock(clock.clone()).build::<u8>().unwrap();
        let w = u64::try_from(period.as_nanos()).unwrap();
        let mut per_window = std::collections::HashMap::<u64, (u128, u128)>::new();
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_nanos(gap));
            let index = clock.now_nanos_for_tests() / w;
            let entry = per_window.entry(index).or_default();
            if window.check_n(cost).is_allowed() {
                entry.0 += u128::from(cost);
            }
            if keyed.check_n(&0, cost).is_allowed() {
                entry.1 += u128::from(cost);
            }
            prop_assert!(entry.0 <= u128::from(limit) && entry.1 <= u128::from(limit));
        }
    }

    /// The sliding window never panics and never admits more than N in a span of W.
    #[test]
    fn sliding_window_extremes(limit in count(), period in period(), buckets in prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..20],
                               start in clock_start(), arrivals in arrivals()) {
        let clock = ManualClock::new();
        clock.set_nanos(start);
        let quota = Quota::new(limit, period);
        let Ok(window) = SlidingWindow::builder(quota).buckets(buckets.min(64)).clock(clock.clone()).build() else {
            return Ok(());
        };
        let w = u64::try_from(period.as_nanos()).unwrap();
        let mut admitted = Vec::new();
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_nanos(gap));
            let _ = window.peek(cost);
            if window.check_n(cost).is_allowed() && cost > 0 {
                admitted.push((clock.now_nanos_for_tests(), cost));
            }
        }
        check_bound(&admitted, |span| if span < w { u128::from(limit) } else { u128::MAX })?;
    }
}

/// Reads a manual clock (the trait method, under a name that says why a test needs it).
trait NowForTests {
    fn now_nanos_for_tests(&self) -> u64;
}

impl NowForTests for ManualClock {
    fn now_nanos_for_tests(&self) -> u64 {
        maas_ratelimit::clock::Clock::now_nanos(self)
    }
}
