//! The Redis scripts decide as the local cores: random sequences of weighted checks and
//! peeks (costs from 0 to past the limit) go through a local limiter on a stopped manual
//! clock and through the Redis script on the real server, and every decision agrees — passed
//! or not, what remains, the limit, and whether the cost can ever pass.
//!
//! Quotas are per day, so the milliseconds the server's clock moves during a sequence change
//! nothing; a sequence never starts within a minute of a window's end.

use std::time::Duration;

use maas_ratelimit::clock::ManualClock;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter};
use maas_ratelimit::{Decision, FixedWindow, Limiter, Quota, SlidingWindow, TokenBucket};
use proptest::prelude::*;

mod support;
use support::{redis_url, unreachable};

const DAY: Duration = Duration::from_secs(86_400);

/// One step: a check (consuming) or a peek, of `cost`.
#[derive(Debug, Clone, Copy)]
struct Step {
    check: bool,
    cost: u64,
}

fn steps(limit: u64) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (any::<bool>(), 0..=limit + 2).prop_map(|(check, cost)| Step { check, cost }),
        1..24,
    )
}

fn same(step: usize, got: &Decision, want: &Decision) -> Result<(), TestCaseError> {
    let shape = |d: &Decision| (d.is_allowed(), d.remaining(), d.limit(), d.can_never_pass());
    prop_assert_eq!(
        shape(got),
        shape(want),
        "step {}: Redis {:?}, local {:?}",
        step,
        got,
        want
    );
    Ok(())
}

fn run(
    rt: &tokio::runtime::Runtime,
    algorithm: RedisAlgorithm,
    local: &dyn Limiter<str>,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    rt.block_on(async {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let url = redis_url();
        let redis = RedisLimiter::builder(url.as_str(), algorithm, OutagePolicy::FailClosed)
            .prefix(format!("maas:test:props:{}:{nanos}", std::process::id()))
            .deadline(Duration::from_secs(2))
            .per_request()
            .connect()
            .await
            .unwrap_or_else(|e| unreachable(&url, e));
        // Not within a minute of the server's window end.
        let first = redis.try_peek("k", 0).await.unwrap();
        if first.reset_after() > Duration::ZERO && first.reset_after() < Duration::from_secs(60) {
            tokio::time::sleep(first.reset_after() + Duration::from_secs(1)).await;
        }
        for (i, s) in steps.iter().enumerate() {
            let (got, want) = if s.check {
                (
                    redis.try_check("k", s.cost).await.unwrap(),
                    local.check_key("k", s.cost),
                )
            } else {
                (
                    redis.try_peek("k", s.cost).await.unwrap(),
                    local.peek_key("k", s.cost),
                )
            };
            same(i, &got, &want)?;
        }
        Ok(())
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn the_token_bucket_script_decides_as_the_local_core(limit in 1u64..40, burst in 1u64..40, seq in steps(40)) {
        let quota = Quota::new(limit, DAY).with_burst(burst);
        let local = TokenBucket::builder(quota).clock(ManualClock::new()).build().unwrap();
        run(&runtime(), RedisAlgorithm::TokenBucket(quota), &local, &seq)?;
    }

    #[test]
    fn the_fixed_window_script_decides_as_the_local_core(limit in 1u64..40, seq in steps(40)) {
        let quota = Quota::new(limit, DAY);
        let local = FixedWindow::builder(quota).clock(ManualClock::new()).build().unwrap();
        run(&runtime(), RedisAlgorithm::FixedWindow(quota), &local, &seq)?;
    }

    #[test]
    fn the_sliding_window_script_decides_as_the_local_core(limit in 1u64..40, buckets in 1u32..12, seq in steps(40)) {
        let quota = Quota::new(limit, DAY);
        let local = SlidingWindow::builder(quota).buckets(buckets).clock(ManualClock::new()).build().unwrap();
        run(&runtime(), RedisAlgorithm::SlidingWindow { quota, buckets }, &local, &seq)?;
    }
}
