//! Leases on the real Redis: a hot key is answered locally, the units outstanding stay
//! under the maximum overshoot, given-back units return to Redis exactly, an idle key's
//! lease goes back on its own, and a lease nobody returns expires with its lifetime.

use std::time::Duration;

use maas_ratelimit::Quota;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter, RedisMetrics};
use prometheus::Registry;

mod support;
use support::{metric, prefix, raw, redis_url, unreachable};

async fn leased(
    algorithm: RedisAlgorithm,
    prefix: &str,
    metrics: Option<&RedisMetrics>,
) -> RedisLimiter {
    let url = redis_url();
    let mut b = RedisLimiter::builder(url.as_str(), algorithm, OutagePolicy::FailClosed)
        .prefix(prefix)
        .deadline(Duration::from_secs(2))
        .lease_lifetime(Duration::from_millis(400));
    if let Some(m) = metrics {
        b = b.metrics(m);
    }
    b.connect().await.unwrap_or_else(|e| unreachable(&url, e))
}

/// The fixed window's count in Redis for `key`.
async fn window_count(l: &RedisLimiter, key: &str) -> u64 {
    let n: Option<u64> = redis::cmd("HGET")
        .arg(l.redis_key(key))
        .arg("n")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    n.unwrap_or(0)
}

async fn records(l: &RedisLimiter, key: &str) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(format!("{}:leases", l.redis_key(key)))
        .query_async(&mut raw().await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_answered_from_its_lease_and_returns_what_it_did_not_use() {
    let registry = Registry::new();
    let metrics = RedisMetrics::register(&registry).unwrap();
    // 1,000,000 per hour: at most 10,000 (1 %) out in leases.
    let quota = Quota::per_hour(1_000_000);
    let l = leased(
        RedisAlgorithm::FixedWindow(quota),
        &prefix("hot"),
        Some(&metrics),
    )
    .await;
    let mut admitted = 0;
    for _ in 0..20_000 {
        admitted += u64::from(l.check("hot", 1).await.is_allowed());
    }
    assert_eq!(admitted, 20_000);
    let local = metric(&registry, "maas_ratelimit_redis_lease_answers_total") as u64;
    let calls = metric(&registry, "maas_ratelimit_redis_calls_total") as u64;
    assert!(
        local >= 19_000 && calls < 1_000,
        "{local} checks answered locally, {calls} calls to Redis"
    );
    let held: u64 = records(&l, "hot").await[0]
        .1
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(held <= 10_000, "a lease of {held} exceeds the overshoot");
    let counted = window_count(&l, "hot").await;
    assert!(
        counted >= admitted && counted <= admitted + 10_000,
        "{counted}"
    );
    let back = l.give_back_leases().await;
    assert_eq!(
        window_count(&l, "hot").await,
        admitted,
        "after {back} units came back, Redis counts exactly what was admitted"
    );
    assert_eq!(
        metric(&registry, "maas_ratelimit_redis_returned_units_total") as u64,
        back
    );
    assert!(
        records(&l, "hot").await.is_empty(),
        "the record went with the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_leasing_one_key_stay_within_the_overshoot_both_ways() {
    let p = prefix("three");
    // 30,000 per hour: leases hold at most 300 in all.
    for algorithm in [
        RedisAlgorithm::FixedWindow(Quota::per_hour(30_000)),
        RedisAlgorithm::TokenBucket(Quota::per_hour(30_000)),
        RedisAlgorithm::SlidingWindow {
            quota: Quota::per_hour(30_000),
            buckets: 10,
        },
    ] {
        let p = format!("{p}:{algorithm:?}");
        let replicas = [
            leased(algorithm, &p, None).await,
            leased(algorithm, &p, None).await,
            leased(algorithm, &p, None).await,
        ];
        let mut tasks = Vec::new();
        for r in replicas {
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                for _ in 0..15_000 {
                    n += u64::from(r.check("tenant", 1).await.is_allowed());
                }
                n
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert!(
            (29_700..=30_300).contains(&admitted),
            "{algorithm:?}: 3 replicas admitted {admitted} of 45,000 against 30,000 ± 300"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_key_gives_its_lease_back_and_an_unreturned_lease_expires() {
    let registry = Registry::new();
    let metrics = RedisMetrics::register(&registry).unwrap();
    let p = prefix("idle");
    let quota = Quota::per_hour(1_000_000);
    let l = leased(RedisAlgorithm::FixedWindow(quota), &p, Some(&metrics)).await;
    for _ in 0..2_000 {
        assert!(l.check("idle", 1).await.is_allowed());
    }
    // Idle for a quarter of the 400 ms lifetime, then the upkeep (every 100 ms) runs.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        window_count(&l, "idle").await,
        2_000,
        "the idle lease went back"
    );
    assert!(metric(&registry, "maas_ratelimit_redis_lease_returns_total") as u64 >= 1);

    // A replica that never returns its lease (its background task cannot run: the lease is
    // taken on a runtime that is then dropped, as a crash would).
    let p2 = p.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = leased(RedisAlgorithm::FixedWindow(quota), &p2, None).await;
            for _ in 0..2_000 {
                assert!(l.check("lost", 1).await.is_allowed());
            }
            std::mem::forget(l);
        });
    })
    .join()
    .unwrap();
    let before = records(&l, "lost").await;
    assert_eq!(
        before.len(),
        1,
        "the lost replica holds a lease: {before:?}"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    // The next call on the key drops the expired record (and Redis would expire the hash).
    assert!(l.try_peek("lost", 1).await.unwrap().is_allowed());
    l.check("lost", 1).await;
    let after = records(&l, "lost").await;
    assert!(
        after.iter().all(|(id, _)| before[0].0 != *id),
        "the lost lease outlived its lifetime: {after:?}"
    );
}
