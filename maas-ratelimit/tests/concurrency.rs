//! Threads hammering one limiter under a frozen clock admit exactly the quota: no lost
//! updates, no double spending, whatever the interleaving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use maas_ratelimit::clock::ManualClock;
use maas_ratelimit::{FixedWindow, KeyedLimiter, Limiter, Quota, SlidingWindow, TokenBucket};

const THREADS: usize = 8;
const ATTEMPTS: usize = 20_000;

/// Runs `THREADS` threads each trying `ATTEMPTS` checks; returns how many passed.
fn hammer<L: Limiter<u32>>(limiter: L) -> u64 {
    let limiter = Arc::new(limiter);
    let passed = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let limiter = limiter.clone();
            let passed = passed.clone();
            thread::spawn(move || {
                for i in 0..ATTEMPTS {
                    // Keys 0..4 spread over threads, so keyed limiters see contention too.
                    let key = ((t + i) % 4) as u32;
                    if limiter.check_key(&key, 1).is_allowed() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("hammer thread");
    }
    passed.load(Ordering::Relaxed)
}

#[test]
fn token_bucket_admits_exactly_its_burst() {
    let b = TokenBucket::builder(Quota::per_second(10).with_burst(12_345))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    assert_eq!(hammer(b), 12_345);
}

#[test]
fn sliding_window_admits_exactly_its_limit() {
    let w = SlidingWindow::builder(Quota::per_minute(23_456))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    assert_eq!(hammer(w), 23_456);
}

#[test]
fn fixed_window_admits_exactly_its_limit() {
    let w = FixedWindow::builder(Quota::per_minute(34_567))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    assert_eq!(hammer(w), 34_567);
}

#[test]
fn keyed_limiters_admit_exactly_the_quota_per_key() {
    let clock = ManualClock::new();
    let tb = KeyedLimiter::token_bucket(Quota::per_hour(1_000))
        .clock(clock.clone())
        .build::<u32>()
        .unwrap();
    assert_eq!(hammer(tb), 4 * 1_000);
    let sw = KeyedLimiter::sliding_window(Quota::per_hour(2_000))
        .clock(clock.clone())
        .build::<u32>()
        .unwrap();
    assert_eq!(hammer(sw), 4 * 2_000);
    let fw = KeyedLimiter::fixed_window(Quota::per_hour(3_000))
        .clock(clock)
        .build::<u32>()
        .unwrap();
    assert_eq!(hammer(fw), 4 * 3_000);
}

#[test]
fn set_quota_racing_with_checks_never_hands_out_a_fresh_burst() {
    // While threads drain the bucket, another thread keeps changing the quota between
    // two values with the same capacity. Tokens held are carried over at each change, so
    // the total admitted can never exceed one full bucket.
    let clock = ManualClock::new();
    let b = Arc::new(
        TokenBucket::builder(Quota::per_hour(5_000))
            .clock(clock)
            .build()
            .unwrap(),
    );
    let changer = {
        let b = b.clone();
        thread::spawn(move || {
            for i in 0..2_000 {
                let q = if i % 2 == 0 {
                    Quota::per_minute(5_000)
                } else {
                    Quota::per_hour(5_000)
                };
                b.set_quota(q).unwrap();
            }
        })
    };
    let passed = hammer(b);
    changer.join().unwrap();
    assert_eq!(passed, 5_000);
}
