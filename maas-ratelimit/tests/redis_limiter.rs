//! `RedisLimiter` on the real Redis: decisions as the local limiters give them, one limit
//! for several limiters (replicas), the key's expiry set by the script, a flushed script
//! cache survived, and a deadline instead of a hang.

use std::time::Duration;

use maas_ratelimit::clock::ManualClock;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimitError, RedisLimiter};
use maas_ratelimit::{Decision, FixedWindow, Quota, SlidingWindow, TokenBucket};

mod support;
use support::{prefix, raw, redis_url, unreachable};

/// Connects, or fails the test saying how to start Redis.
async fn limiter(algorithm: RedisAlgorithm, prefix: &str) -> RedisLimiter {
    let url = redis_url();
    RedisLimiter::builder(url.as_str(), algorithm, OutagePolicy::FailClosed)
        .prefix(prefix)
        .deadline(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| unreachable(&url, e))
}

/// The Redis decision `got` says what the local limiter's `want` says: allowed or not, what
/// remains, the limit, and whether the request can ever pass.
fn assert_same(got: &Decision, want: &Decision, cost: u64) {
    assert_eq!(
        got.is_allowed(),
        want.is_allowed(),
        "cost {cost}: {got:?} vs {want:?}"
    );
    assert_eq!(
        got.remaining(),
        want.remaining(),
        "cost {cost}: {got:?} vs {want:?}"
    );
    assert_eq!(
        got.limit(),
        want.limit(),
        "cost {cost}: {got:?} vs {want:?}"
    );
    assert_eq!(got.can_never_pass(), want.can_never_pass(), "cost {cost}");
}

fn close(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) < Duration::from_secs(1)
}

#[tokio::test]
async fn the_token_bucket_decides_as_the_local_one() {
    // 5 per hour: the clock barely moves during the test, so the local bucket on a stopped
    // manual clock is the reference.
    let quota = Quota::per_hour(5);
    let local = TokenBucket::builder(quota)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let redis = limiter(RedisAlgorithm::TokenBucket(quota), &prefix("tb")).await;
    for cost in [1, 1, 2, 1, 1, 6, 0] {
        let want = local.check_n(cost);
        let got = redis.try_check("acme", cost).await.unwrap();
        assert_same(&got, &want, cost);
        assert!(
            close(got.reset_after(), want.reset_after()),
            "{got:?} vs {want:?}"
        );
        match (got.retry_after(), want.retry_after()) {
            (Some(g), Some(w)) => assert!(close(g, w), "{g:?} vs {w:?}"),
            (g, w) => assert_eq!(g, w),
        }
    }
    // peek consumes nothing; another key is untouched.
    let before = redis.try_peek("acme", 1).await.unwrap();
    assert_eq!(
        redis.try_peek("acme", 1).await.unwrap().remaining(),
        before.remaining()
    );
    assert_eq!(redis.try_check("globex", 5).await.unwrap().remaining(), 0);
}

#[tokio::test]
async fn the_fixed_window_decides_as_the_local_one() {
    let quota = Quota::per_hour(3);
    let local = FixedWindow::builder(quota)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let redis = limiter(RedisAlgorithm::FixedWindow(quota), &prefix("fw")).await;
    for cost in [1, 2, 1, 4] {
        let want = local.check_n(cost);
        let got = redis.try_check("acme", cost).await.unwrap();
        assert_same(&got, &want, cost);
        if let Some(r) = got.retry_after() {
            // Until the end of the server's current window: at most the period.
            assert!(r <= Duration::from_secs(3600), "{r:?}");
        }
    }
}

#[tokio::test]
async fn the_sliding_window_decides_as_the_local_one() {
    let quota = Quota::per_hour(4);
    let local = SlidingWindow::builder(quota)
        .buckets(10)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let redis = limiter(
        RedisAlgorithm::SlidingWindow { quota, buckets: 10 },
        &prefix("sw"),
    )
    .await;
    for cost in [1, 2, 2, 1, 5, 0] {
        let want = local.check_n(cost);
        let got = redis.try_check("acme", cost).await.unwrap();
        assert_same(&got, &want, cost);
        if let Some(r) = got.retry_after() {
            // The oldest bucket leaves between W and W + one bucket after it filled.
            assert!(r <= Duration::from_secs(3600 + 360), "{r:?}");
            assert!(r >= Duration::from_secs(3600 - 360), "{r:?}");
        }
    }
}

#[tokio::test]
async fn replicas_share_one_limit_and_keys_expire() {
    let p = prefix("shared");
    let quota = Quota::per_hour(10);
    let replicas = [
        limiter(RedisAlgorithm::TokenBucket(quota), &p).await,
        limiter(RedisAlgorithm::TokenBucket(quota), &p).await,
        limiter(RedisAlgorithm::TokenBucket(quota), &p).await,
    ];
    let mut allowed = 0;
    for i in 0..30 {
        if replicas[i % 3]
            .try_check("tenant", 1)
            .await
            .unwrap()
            .is_allowed()
        {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 10,
        "three replicas let {allowed} of 30 through a limit of 10"
    );
    let key = replicas[0].redis_key("tenant");
    assert!(key.ends_with(":{tenant}"), "{key}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 3_600_000,
        "the script set no expiry: PTTL {ttl}"
    );
}

#[tokio::test]
async fn a_flushed_script_cache_is_survived() {
    let redis = limiter(
        RedisAlgorithm::TokenBucket(Quota::per_hour(3)),
        &prefix("flush"),
    )
    .await;
    assert!(redis.try_check("k", 1).await.unwrap().is_allowed());
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let d = redis.try_check("k", 1).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(d.remaining(), 1, "state kept across the reload");
}

#[test]
fn keys_carry_a_hash_tag_with_braces_escaped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = rt.block_on(limiter(
        RedisAlgorithm::FixedWindow(Quota::per_second(1)),
        "p",
    ));
    assert_eq!(redis.redis_key("a{b}%"), "p:{a%7Bb%7D%25}");
}

#[tokio::test]
async fn a_server_that_never_answers_costs_the_deadline_not_a_hang() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let start = std::time::Instant::now();
    let built = RedisLimiter::builder(
        format!("redis://{addr}/"),
        RedisAlgorithm::TokenBucket(Quota::per_second(1)),
        OutagePolicy::FailOpen,
    )
    .deadline(Duration::from_millis(50))
    .connect()
    .await;
    assert!(
        matches!(built, Err(RedisLimitError::Timeout(_))),
        "{built:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    for algorithm in [
        RedisAlgorithm::TokenBucket(Quota::per_second(0)),
        RedisAlgorithm::FixedWindow(Quota::new(5, Duration::ZERO)),
        RedisAlgorithm::TokenBucket(Quota::new(1, Duration::MAX)),
        RedisAlgorithm::SlidingWindow {
            quota: Quota::per_second(5),
            buckets: 0,
        },
    ] {
        let built = RedisLimiter::builder(redis_url(), algorithm, OutagePolicy::FailClosed)
            .connect()
            .await;
        assert!(
            matches!(built, Err(RedisLimitError::Config(_))),
            "{algorithm:?}: {built:?}"
        );
    }
}

/// With the server's clock moving: each algorithm refuses once its quota is spent, says
/// when to come back, and lets requests through again after that.
#[tokio::test]
async fn every_algorithm_lets_requests_through_again_once_time_passes() {
    let quota = Quota::new(3, Duration::from_millis(300));
    for algorithm in [
        RedisAlgorithm::TokenBucket(quota),
        RedisAlgorithm::FixedWindow(quota),
        RedisAlgorithm::SlidingWindow { quota, buckets: 3 },
    ] {
        let redis = limiter(algorithm, &prefix("time")).await;
        let mut passed = 0;
        let mut refused = None;
        for _ in 0..12 {
            let d = redis.try_check("k", 1).await.unwrap();
            if d.is_allowed() {
                passed += 1;
            } else {
                refused = d.retry_after();
                break;
            }
        }
        // A fixed window may pass up to 2N across a window boundary; the others exactly N.
        let most = if matches!(algorithm, RedisAlgorithm::FixedWindow(_)) {
            6
        } else {
            3
        };
        assert!(
            (3..=most).contains(&passed),
            "{algorithm:?}: {passed} passed"
        );
        let wait = refused.unwrap_or_else(|| panic!("{algorithm:?}: never refused"));
        assert!(
            wait <= Duration::from_millis(400),
            "{algorithm:?}: retry after {wait:?}"
        );
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        assert!(
            redis.try_check("k", 1).await.unwrap().is_allowed(),
            "{algorithm:?}: still refused after the retry delay"
        );
    }
}

#[tokio::test]
async fn a_key_can_have_a_quota_of_its_own() {
    let redis = limiter(
        RedisAlgorithm::FixedWindow(Quota::per_hour(2)),
        &prefix("perkey"),
    )
    .await;
    redis.set_key_quota("vip", Quota::per_hour(5)).unwrap();
    let passed = |key: &'static str| {
        let redis = redis.clone();
        async move {
            let mut n = 0;
            for _ in 0..8 {
                let d = redis.try_check(key, 1).await.unwrap();
                n += u32::from(d.is_allowed());
            }
            n
        }
    };
    assert_eq!(passed("vip").await, 5);
    assert_eq!(passed("regular").await, 2);
    assert_eq!(redis.try_peek("vip", 1).await.unwrap().limit(), 5);
    assert!(redis.clear_key_quota("vip"));
    assert!(!redis.clear_key_quota("vip"));
    assert_eq!(redis.try_peek("vip", 1).await.unwrap().limit(), 2);
    assert!(matches!(
        redis.set_key_quota("bad", Quota::per_hour(0)),
        Err(RedisLimitError::Config(_))
    ));
}

#[tokio::test]
async fn refunds_give_back_what_was_charged_and_no_more() {
    let quota = Quota::per_hour(100);
    for (name, algorithm) in [
        ("tb", RedisAlgorithm::TokenBucket(quota)),
        ("fw", RedisAlgorithm::FixedWindow(quota)),
        ("sw", RedisAlgorithm::SlidingWindow { quota, buckets: 10 }),
    ] {
        let p = prefix(&format!("refund-{name}"));
        let a = limiter(algorithm, &p).await;
        let b = limiter(algorithm, &p).await;
        assert!(a.check("k", 80).await.is_allowed(), "{name}");
        // Given back through one replica, seen through the other.
        a.refund("k", 50).await;
        assert_eq!(b.peek("k", 0).await.remaining(), 70, "{name}");
        assert!(b.check("k", 70).await.is_allowed(), "{name}");
        assert!(!a.check("k", 1).await.is_allowed(), "{name}");
        // More than was charged: full, never above the limit.
        b.refund("k", 1_000).await;
        assert_eq!(a.peek("k", 0).await.remaining(), 100, "{name}");
        assert!(!a.check("k", 101).await.is_allowed(), "{name}");
    }
}

#[tokio::test]
async fn a_refund_is_right_when_the_charge_came_from_a_lease() {
    // Large enough for leases (over 200 a window): a hot key is answered from its lease.
    let p = prefix("refund-lease");
    let a = limiter(RedisAlgorithm::TokenBucket(Quota::per_hour(100_000)), &p).await;
    for _ in 0..50 {
        assert!(a.check("hot", 1_000).await.is_allowed());
    }
    assert!(a.leased_keys() > 0, "the key was not leased");
    a.refund("hot", 20_000).await;
    // 100,000 − 50,000 + 20,000 left, as this replica sees it (Redis plus its lease).
    let left = a.peek("hot", 0).await.remaining();
    assert!((69_000..=71_000).contains(&left), "{left}");
    // Leases given back, Redis alone says the same.
    a.give_back_leases().await;
    let b = limiter(RedisAlgorithm::TokenBucket(Quota::per_hour(100_000)), &p).await;
    let left = b.peek("hot", 0).await.remaining();
    assert!((69_000..=71_000).contains(&left), "{left}");
}
