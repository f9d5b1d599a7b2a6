//! Property tests: for any arrival sequence, no limiter lets through more than it promises.

use std::time::Duration;

use maas_ratelimit::clock::ManualClock;
use maas_ratelimit::{FixedWindow, Quota, SlidingWindow, TokenBucket};
use proptest::prelude::*;

/// (gap since the previous arrival in ms, cost).
fn arrivals() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..400, 1u64..4), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// In any interval of length t, a token bucket admits at most burst + t / T.
    #[test]
    fn token_bucket_never_exceeds_burst_plus_rate(
        limit in 1u64..50,
        period_ms in 100u64..3_000,
        burst in 1u64..20,
        arrivals in arrivals(),
    ) {
        let clock = ManualClock::new();
        let bucket = TokenBucket::builder(Quota::new(limit, Duration::from_millis(period_ms)).with_burst(burst))
            .clock(clock.clone())
            .build()
            .unwrap();
        let (_, interval) = bucket.emission();
        let interval = interval.as_nanos() as u64;
        let mut now = 0u64;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_millis(gap));
            now += gap * 1_000_000;
            if bucket.check_n(cost).is_allowed() {
                admitted.push((now, cost));
            }
        }
        for i in 0..admitted.len() {
            let mut total = 0;
            for j in i..admitted.len() {
                total += admitted[j].1;
                let span = admitted[j].0 - admitted[i].0;
                prop_assert!(
                    total <= burst + span / interval,
                    "{total} admitted within {span} ns; bound {}", burst + span / interval
                );
            }
        }
    }

    /// In any span of length W, a sliding window admits at most N.
    #[test]
    fn sliding_window_never_exceeds_n_per_window(
        limit in 1u64..30,
        window_ms in 200u64..2_000,
        buckets in 1u32..20,
        arrivals in arrivals(),
    ) {
        let clock = ManualClock::new();
        let window = SlidingWindow::builder(Quota::new(limit, Duration::from_millis(window_ms)))
            .buckets(buckets)
            .clock(clock.clone())
            .build()
            .unwrap();
        let w = window_ms * 1_000_000;
        let mut now = 0u64;
        let mut admitted: Vec<(u64, u64)> = Vec::new();
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_millis(gap));
            now += gap * 1_000_000;
            let peeked = window.peek(cost).is_allowed();
            let decision = window.check_n(cost);
            prop_assert_eq!(peeked, decision.is_allowed(), "peek disagrees with check");
            if decision.is_allowed() {
                admitted.push((now, cost));
            }
        }
        for i in 0..admitted.len() {
            let total: u64 = admitted[i..]
                .iter()
                .take_while(|(t, _)| *t < admitted[i].0 + w)
                .map(|(_, c)| c)
                .sum();
            prop_assert!(total <= limit, "{total} admitted in one window of {window_ms} ms, limit {limit}");
        }
    }

    /// A rejected request told to retry after d passes at d (token bucket, and the sliding
    /// window when nothing else arrives), and not before.
    #[test]
    fn retry_after_is_exact(
        limit in 1u64..30,
        period_ms in 100u64..3_000,
        burst in 1u64..10,
        cost in 1u64..10,
    ) {
        prop_assume!(cost <= burst);
        let clock = ManualClock::new();
        let bucket = TokenBucket::builder(Quota::new(limit, Duration::from_millis(period_ms)).with_burst(burst))
            .clock(clock.clone())
            .build()
            .unwrap();
        while bucket.check_n(cost).is_allowed() {}
        let wait = bucket.check_n(cost).retry_after().unwrap();
        clock.advance(wait - Duration::from_nanos(1));
        prop_assert!(!bucket.peek(cost).is_allowed());
        clock.advance(Duration::from_nanos(1));
        prop_assert!(bucket.check_n(cost).is_allowed());
    }

    /// The fixed window counts at most N per calendar window.
    #[test]
    fn fixed_window_never_exceeds_n_per_calendar_window(
        limit in 1u64..30,
        window_ms in 100u64..2_000,
        arrivals in arrivals(),
    ) {
        let clock = ManualClock::new();
        let fixed = FixedWindow::builder(Quota::new(limit, Duration::from_millis(window_ms)))
            .clock(clock.clone())
            .build()
            .unwrap();
        let mut now = 0u64;
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        for (gap, cost) in arrivals {
            clock.advance(Duration::from_millis(gap));
            now += gap;
            if fixed.check_n(cost).is_allowed() {
                *per_window.entry(now / window_ms).or_default() += cost;
            }
        }
        for (w, n) in per_window {
            prop_assert!(n <= limit, "window {w} admitted {n} > {limit}");
        }
    }
}
