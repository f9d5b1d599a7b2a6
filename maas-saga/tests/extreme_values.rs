//! Extreme and hostile values: every builder and operation either refuses them with a typed
//! error or works — no panic, no silent wrap-around. Run in debug and in release
//! (`scripts/test` does both), since overflow checks differ between them.

use std::time::Duration;

use maas_saga::{
    BoxError, BranchCall, ConfigError, Engine, EngineError, MAX_DURATION, MemoryStore, Operation,
    Reply, RetryPolicy, Saga, Status, Step, Tcc, Transaction, participant,
};
use proptest::prelude::*;
use tower::service_fn;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(MAX_DURATION),
        Just(MAX_DURATION + Duration::from_secs(1)),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn multiplier() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(-1.0),
        Just(f64::MAX),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::NAN),
        0.0f64..100.0,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any retry policy gives a pause within [0, min(max_backoff, MAX_DURATION)].
    #[test]
    fn retry_pauses_never_panic_and_stay_bounded(
        initial in duration(),
        max in duration(),
        multiplier in multiplier(),
        attempt in prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..100],
    ) {
        let p = RetryPolicy::new(3).backoff(initial, max).multiplier(multiplier);
        let pause = p.pause_after(attempt);
        prop_assert!(pause <= MAX_DURATION);
        prop_assert!(pause <= max.max(Duration::from_nanos(1)) || max.is_zero());
    }

    /// Any deadline, TTL or timeout builds (or is a `DefinitionError` for zero), and what
    /// is built holds at most MAX_DURATION.
    #[test]
    fn definitions_clamp_durations(deadline in duration(), ttl in duration(), timeout in duration()) {
        let saga = Saga::builder("s").step(Step::new("a", "p").timeout(timeout)).deadline(deadline).build();
        prop_assert_eq!(saga.is_err(), deadline.is_zero() || timeout.is_zero());
        let tcc = Tcc::builder("t").branch(Step::new("a", "p").timeout(timeout)).ttl(ttl).build();
        prop_assert_eq!(tcc.is_err(), ttl.is_zero() || timeout.is_zero());
        if let Ok(tcc) = tcc {
            prop_assert!(tcc.ttl() <= MAX_DURATION);
        }
    }
}

/// Answers every try, action, confirm, cancel and compensation at once.
fn answering(reject_actions: bool) -> maas_saga::Participant {
    participant(service_fn(move |call: BranchCall| async move {
        let reject = reject_actions && matches!(call.op, Operation::Action) && call.branch == "b";
        Ok::<_, BoxError>(if reject {
            Reply::Rejected("no".into())
        } else {
            Reply::Done
        })
    }))
}

/// Engines with extreme settings start, run sagas and TCCs with extreme durations to their
/// end (committed, or compensated after a rejection), and shut down without panicking.
#[tokio::test]
async fn engines_and_transactions_with_extreme_durations_run_to_their_end() {
    let extremes = [
        Duration::from_millis(1),
        MAX_DURATION,
        Duration::MAX,
        Duration::from_nanos(u64::MAX),
    ];
    for (i, &d) in extremes.iter().enumerate() {
        for reject in [false, true] {
            let engine = Engine::builder(MemoryStore::new())
                .participant("p", answering(reject))
                .lease(d.max(Duration::from_millis(50)))
                .recovery_interval(d.max(Duration::from_millis(10)))
                .retention(d)
                .gc_interval(d)
                .start()
                .await
                .unwrap();
            let retry = RetryPolicy::new(u32::MAX)
                .backoff(d, d)
                .multiplier(f64::MAX);
            let saga: Transaction = Saga::builder("s")
                .step(
                    Step::new("a", "p")
                        .timeout(d.max(Duration::from_secs(1)))
                        .retry(retry),
                )
                .step(Step::new("b", "p").after(["a"]))
                .deadline(d)
                .build()
                .unwrap()
                .into();
            let tcc: Transaction = Tcc::builder("t")
                .branch(Step::new("a", "p").timeout(d.max(Duration::from_secs(1))))
                .ttl(d)
                .build()
                .unwrap()
                .into();
            let s = engine.run(saga).await.unwrap();
            let want = if reject {
                Status::Compensated
            } else {
                Status::Committed
            };
            assert_eq!(s.status, want, "saga, duration #{i}, reject {reject}");
            let t = engine.run(tcc).await.unwrap();
            assert_eq!(t.status, Status::Committed, "tcc, duration #{i}");
            engine.shutdown(Duration::MAX).await;
        }
    }
}

/// A setting that would make a loop spin on the store fails at start, with a typed error
/// naming it, before the store is touched.
#[tokio::test]
async fn zero_engine_intervals_are_refused() {
    let base = || Engine::builder(MemoryStore::new());
    for (builder, want) in [
        (
            base().lease(Duration::ZERO),
            ConfigError::Zero { setting: "lease" },
        ),
        (
            base().recovery_interval(Duration::ZERO),
            ConfigError::Zero {
                setting: "recovery_interval",
            },
        ),
        (
            base().gc_interval(Duration::ZERO),
            ConfigError::Zero {
                setting: "gc_interval",
            },
        ),
        (base().recovery_batch(0), ConfigError::EmptyRecoveryBatch),
    ] {
        match builder.start().await {
            Err(EngineError::Config(got)) => assert_eq!(got, want),
            other => panic!("expected {want:?}, got {other:?}"),
        }
    }
}
