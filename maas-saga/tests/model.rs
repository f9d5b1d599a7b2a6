//! Property test: random participant outcomes (success, rejection, unknown, lost answer,
//! delay) and random crashes of the engine, against what a saga or TCC must guarantee:
//!
//! * every transaction ends, all committed or all compensated;
//! * no compensation starts while its action may still be running, or before it was
//!   attempted and finished (or declared failed);
//! * no action applies after its compensation.
//!
//! Participants keep barrier semantics in memory, as the real barrier does in a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_saga::{
    BranchCall, Engine, MemoryStore, Operation, Reply, RetryPolicy, Saga, SagaId, SagaStore,
    Status, Step, Tcc, Transaction, participant,
};
use proptest::prelude::*;
use tower::service_fn;

#[derive(Debug, Clone, Copy)]
enum Act {
    Ok,
    Reject,
    Err,
    LoseAnswer,
    Slow,
}

fn act(b: u8) -> Act {
    match b % 10 {
        0..=4 => Act::Ok,
        5 => Act::Reject,
        6 => Act::Err,
        7 => Act::LoseAnswer,
        _ => Act::Slow,
    }
}

#[derive(Default, Debug)]
struct Branch {
    applied: bool,
    undone: bool,
    blocked: bool,
    confirmed: bool,
    forward_in_flight: u32,
    /// Failed undo attempts so far: a participant that never recovers would keep any saga
    /// from finishing, so each undo fails at most a few times.
    undo_failures: u32,
}

#[derive(Default, Debug)]
struct World {
    branches: HashMap<String, Branch>,
    script: Vec<u8>,
    next: usize,
    violations: Vec<String>,
}

/// Marks a forward call finished however its future ends (answered, timed out, dropped).
struct InFlight(Arc<Mutex<World>>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut w = self.0.lock().unwrap();
        w.branches
            .entry(self.1.clone())
            .or_default()
            .forward_in_flight -= 1;
    }
}

fn participant_for(world: Arc<Mutex<World>>) -> maas_saga::Participant {
    participant(service_fn(move |call: BranchCall| {
        let world = world.clone();
        async move {
            let key = call.branch.clone();
            let choice = {
                let mut w = world.lock().unwrap();
                let c = if w.script.is_empty() {
                    0
                } else {
                    w.script[w.next % w.script.len()]
                };
                w.next += 1;
                act(c)
            };
            let forward = call.op.is_forward();
            if !forward {
                // The engine's view: no attempt of the forward operation may still be
                // waiting for an answer when its undo starts.
                let mut guard = world.lock().unwrap();
                let World {
                    branches,
                    violations,
                    ..
                } = &mut *guard;
                if branches.entry(key.clone()).or_default().forward_in_flight > 0 {
                    violations.push(format!(
                        "{key}: {} while an attempt of its forward operation was awaited",
                        call.op
                    ));
                }
            }
            // Counted while the engine awaits this attempt (dropped when it times out).
            let _awaited = forward.then(|| {
                world
                    .lock()
                    .unwrap()
                    .branches
                    .entry(key.clone())
                    .or_default()
                    .forward_in_flight += 1;
                InFlight(world.clone(), key.clone())
            });
            // The work runs on its own, like a real service's: an attempt the engine gave up
            // on may still apply later — which is what the barrier is for.
            let work = tokio::spawn(work(world.clone(), call, choice));
            work.await
                .unwrap_or_else(|_| Err(std::io::Error::other("participant task failed")))
        }
    }))
}

async fn work(
    world: Arc<Mutex<World>>,
    call: BranchCall,
    choice: Act,
) -> Result<Reply, std::io::Error> {
    let key = call.branch.clone();
    let forward = call.op.is_forward();
    if matches!(choice, Act::Slow) {
        // Slower than the engine's timeout; undo operations are slow only a few times, or
        // they could never finish.
        let slow = forward || {
            let mut w = world.lock().unwrap();
            let b = w.branches.entry(key.clone()).or_default();
            b.undo_failures += 1;
            b.undo_failures <= 3
        };
        if slow {
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    let mut guard = world.lock().unwrap();
    let World {
        branches,
        violations,
        ..
    } = &mut *guard;
    let b = branches.entry(key.clone()).or_default();
    match call.op {
        Operation::Action | Operation::Try => {
            if b.blocked || b.undone {
                return Ok(Reply::Rejected("refused: already undone".into()));
            }
            if b.applied {
                return Ok(Reply::Done);
            }
            match choice {
                Act::Ok | Act::Slow => {
                    b.applied = true;
                    Ok(Reply::Done)
                }
                Act::Reject => Ok(Reply::Rejected("business failure".into())),
                Act::Err => Err(std::io::Error::other("unknown")),
                Act::LoseAnswer => {
                    b.applied = true;
                    Err(std::io::Error::other("answer lost"))
                }
            }
        }
        Operation::Compensate | Operation::Cancel => {
            if b.confirmed {
                violations.push(format!("{key}: cancel after confirm"));
            }
            if matches!(choice, Act::Err) && b.undo_failures < 3 {
                b.undo_failures += 1;
                return Err(std::io::Error::other("undo failed, retry"));
            }
            if !b.applied {
                b.blocked = true; // null compensation: the action is refused from now on
            }
            b.undone = true;
            Ok(Reply::Done)
        }
        Operation::Confirm => {
            if b.undone || !b.applied {
                violations.push(format!(
                    "{key}: confirm of a try that is undone or never applied"
                ));
            }
            if matches!(choice, Act::Err) && b.undo_failures < 3 {
                b.undo_failures += 1;
                return Err(std::io::Error::other("confirm failed, retry"));
            }
            b.confirmed = true;
            Ok(Reply::Done)
        }
    }
}

fn steps(n: usize) -> Vec<Step> {
    (0..n)
        .map(|i| {
            Step::new(format!("b{i}"), "p")
                .timeout(Duration::from_millis(25))
                .retry(
                    RetryPolicy::new(3)
                        .backoff(Duration::from_millis(5), Duration::from_millis(20)),
                )
        })
        .collect()
}

async fn start(store: &MemoryStore, world: &Arc<Mutex<World>>) -> Engine {
    Engine::builder(store.clone())
        .participant("p", participant_for(world.clone()))
        .owner("model")
        .recovery_interval(Duration::from_millis(10))
        .start()
        .await
        .unwrap()
}

async fn scenario(
    tcc: bool,
    n: usize,
    script: Vec<u8>,
    crashes: Vec<(u64, u64)>,
) -> Result<(), TestCaseError> {
    let world = Arc::new(Mutex::new(World {
        script,
        ..World::default()
    }));
    let store = MemoryStore::new();
    let transaction: Transaction = if tcc {
        steps(n)
            .into_iter()
            .fold(Tcc::builder("t"), |b, s| b.branch(s))
            .ttl(Duration::from_millis(400))
            .build()
            .unwrap()
            .into()
    } else {
        steps(n)
            .into_iter()
            .fold(Saga::builder("s"), |b, s| b.step(s))
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap()
            .into()
    };
    let id = SagaId::new();
    let mut engine = start(&store, &world).await;
    assert!(
        engine
            .submit_with_id(id.clone(), transaction)
            .await
            .unwrap()
    );
    for (after, down) in crashes {
        tokio::time::sleep(Duration::from_millis(after)).await;
        engine.shutdown(Duration::ZERO).await; // a crash: drivers vanish mid-flight
        drop(engine);
        // Down for a while: deadlines and TTLs may pass before the restart.
        tokio::time::sleep(Duration::from_millis(down)).await;
        engine = start(&store, &world).await; // restart: recovers at once
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let record = loop {
        let r = store.get(&id).await.unwrap().unwrap();
        if r.status.is_final() {
            break r;
        }
        prop_assert!(
            tokio::time::Instant::now() < deadline,
            "transaction never finished: {:?}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    engine.shutdown(Duration::from_millis(100)).await;
    let w = world.lock().unwrap();
    prop_assert!(w.violations.is_empty(), "violations: {:?}", w.violations);
    for i in 0..n {
        let b = w.branches.get(&format!("b{i}"));
        let applied = b.is_some_and(|b| b.applied);
        let undone = b.is_some_and(|b| b.undone);
        match record.status {
            Status::Committed => {
                prop_assert!(
                    applied && !undone,
                    "committed but b{i} applied={applied} undone={undone}"
                );
                if tcc {
                    prop_assert!(
                        b.is_some_and(|b| b.confirmed),
                        "committed TCC with b{i} unconfirmed"
                    );
                }
            }
            Status::Compensated => {
                prop_assert!(!applied || undone, "compensated but b{i} still applied");
                prop_assert!(
                    !b.is_some_and(|b| b.confirmed),
                    "compensated TCC with b{i} confirmed"
                );
            }
            other => prop_assert!(false, "not final: {other}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_transaction_ends_all_or_nothing_despite_crashes(
        tcc in any::<bool>(),
        n in 1usize..5,
        script in prop::collection::vec(any::<u8>(), 1..40),
        crashes in prop::collection::vec((0u64..150, prop_oneof![Just(0u64), 0u64..800]), 0..4),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(scenario(tcc, n, script, crashes))?;
    }
}
