//! Parallel (DAG) sagas through the engine on all three stores: a → (b ‖ c) → d.
//!
//! * c is rejected while b is still running: b is not compensated before its action ends,
//!   a only after both b and c are undone, and d never starts.
//! * The engine dies while b hangs (c already done); an engine restarted under the same
//!   name recovers the saga at once and commits it, every step applied once.
//!
//! PostgreSQL runs in a schema of its own; SQLite in a file of its own.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maas_saga::store::{BranchStatus, PgStore, SagaStore, SqliteStore};
use maas_saga::{
    BranchCall, Engine, MemoryStore, Operation, Participant, Reply, RetryPolicy, Saga, Status,
    Step, participant,
};
use tower::service_fn;

/// What each step's action does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    Done,
    Reject,
    /// Answers after this long.
    Slow(Duration),
    /// Never answers.
    Hang,
}

/// (step, op, "start" | "end", when).
type Log = Arc<Mutex<Vec<(String, Operation, &'static str, Instant)>>>;

/// A participant whose actions do what `acts` says, idempotently: `applied` holds the
/// actions in effect (a compensation removes its step's).
#[derive(Clone, Default)]
struct World {
    log: Log,
    applied: Arc<Mutex<HashSet<String>>>,
}

impl World {
    fn participant(&self, acts: &'static [(&'static str, Act)]) -> Participant {
        let world = self.clone();
        participant(service_fn(move |call: BranchCall| {
            let world = world.clone();
            async move {
                let act = acts
                    .iter()
                    .find(|(s, _)| *s == call.branch)
                    .map_or(Act::Done, |(_, a)| *a);
                let step = call.branch.clone();
                world
                    .log
                    .lock()
                    .unwrap()
                    .push((step.clone(), call.op, "start", Instant::now()));
                let reply = match (call.op, act) {
                    (Operation::Action, Act::Reject) => Reply::Rejected("no".into()),
                    (Operation::Action, Act::Hang) => std::future::pending().await,
                    (Operation::Action, a) => {
                        if let Act::Slow(d) = a {
                            tokio::time::sleep(d).await;
                        }
                        world.applied.lock().unwrap().insert(step.clone());
                        Reply::Done
                    }
                    (_, _) => {
                        world.applied.lock().unwrap().remove(&step);
                        Reply::Done
                    }
                };
                world
                    .log
                    .lock()
                    .unwrap()
                    .push((step, call.op, "end", Instant::now()));
                Ok::<_, std::io::Error>(reply)
            }
        }))
    }

    fn when(&self, step: &str, op: Operation, what: &str) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(s, o, w, _)| s == step && *o == op && *w == what)
            .map(|e| e.3)
    }
}

/// b runs for 200 ms while c is rejected.
const FAILURE_ACTS: &[(&str, Act)] = &[
    ("b", Act::Slow(Duration::from_millis(200))),
    ("c", Act::Reject),
];

fn diamond() -> Saga {
    let step = |name: &str| {
        Step::new(name, "p")
            .timeout(Duration::from_secs(30))
            .retry(RetryPolicy::new(3).backoff(Duration::from_millis(5), Duration::from_millis(20)))
    };
    Saga::builder("diamond")
        .step(step("a"))
        .step(step("b").after(["a"]))
        .step(step("c").after(["a"]))
        .step(step("d").after(["b", "c"]))
        .build()
        .unwrap()
}

async fn failure_while_a_branch_runs(store: Arc<dyn SagaStore>, which: &str) {
    let world = World::default();
    let engine = Engine::builder_arc(store)
        .participant("p", world.participant(FAILURE_ACTS))
        .start()
        .await
        .unwrap();
    let outcome = engine.run(diamond()).await.unwrap();
    assert_eq!(outcome.status, Status::Compensated, "{which}");
    let states: Vec<(String, BranchStatus)> = outcome
        .branches
        .iter()
        .map(|b| (b.name.clone(), b.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a".to_owned(), BranchStatus::Compensated),
            ("b".to_owned(), BranchStatus::Compensated),
            ("c".to_owned(), BranchStatus::Compensated),
            ("d".to_owned(), BranchStatus::Skipped),
        ],
        "{which}"
    );
    let w = |s, o, e| {
        world
            .when(s, o, e)
            .unwrap_or_else(|| panic!("{which}: no {e} of {s} {o:?}"))
    };
    // c was rejected while b still ran.
    assert!(
        w("c", Operation::Action, "end") < w("b", Operation::Action, "end"),
        "{which}"
    );
    // b is not compensated while its action may still apply.
    assert!(
        w("b", Operation::Action, "end") <= w("b", Operation::Compensate, "start"),
        "{which}"
    );
    // a is undone last: after everything that depends on it.
    for dependent in ["b", "c"] {
        assert!(
            w(dependent, Operation::Compensate, "end") <= w("a", Operation::Compensate, "start"),
            "{which}: a compensated before {dependent}"
        );
    }
    assert!(
        world.when("d", Operation::Action, "start").is_none(),
        "{which}: d started"
    );
    assert!(
        world.applied.lock().unwrap().is_empty(),
        "{which}: {:?}",
        world.applied
    );
    engine.shutdown(Duration::from_secs(1)).await;
}

async fn crash_mid_way(
    first: Arc<dyn SagaStore>,
    reopen: impl std::future::Future<Output = Arc<dyn SagaStore>>,
    which: &str,
) {
    let owner = format!("dag-{which}-{}", std::process::id());
    let before = World::default();
    let engine = Engine::builder_arc(first)
        .owner(owner.clone())
        .participant("p", before.participant(&[("b", Act::Hang)]))
        .start()
        .await
        .unwrap();
    let id = engine.submit(diamond()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while before.when("c", Operation::Action, "end").is_none()
        || before.when("b", Operation::Action, "start").is_none()
    {
        assert!(Instant::now() < deadline, "{which}: b and c did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The engine dies with b in flight: nothing more is written, the lease stays.
    engine.shutdown(Duration::ZERO).await;
    drop(engine);

    let after = World::default();
    let restarted = Engine::builder_arc(reopen.await)
        .owner(owner)
        .participant("p", after.participant(&[]))
        .start()
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), restarted.wait(&id))
        .await
        .unwrap_or_else(|_| panic!("{which}: the recovered saga did not finish"))
        .unwrap();
    assert_eq!(outcome.status, Status::Committed, "{which}");
    assert!(
        outcome
            .branches
            .iter()
            .all(|b| b.state == BranchStatus::Done),
        "{which}: {:?}",
        outcome.branches
    );
    let mut applied: Vec<String> = before.applied.lock().unwrap().iter().cloned().collect();
    applied.extend(after.applied.lock().unwrap().iter().cloned());
    applied.sort();
    applied.dedup();
    assert_eq!(applied, ["a", "b", "c", "d"], "{which}");
    // The restarted engine re-drove from the intent; d ran only there.
    assert!(
        before.when("d", Operation::Action, "start").is_none(),
        "{which}"
    );
    restarted.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_sagas_on_the_memory_store() {
    failure_while_a_branch_runs(Arc::new(MemoryStore::new()), "memory").await;
    let store: Arc<dyn SagaStore> = Arc::new(MemoryStore::new());
    crash_mid_way(store.clone(), async move { store }, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_sagas_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("maas-saga-dag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("failure.db");
    let b = dir.join("crash.db");
    for p in [&a, &b] {
        let _ = std::fs::remove_file(p);
    }
    failure_while_a_branch_runs(Arc::new(SqliteStore::open(&a).await.unwrap()), "sqlite").await;
    let first: Arc<dyn SagaStore> = Arc::new(SqliteStore::open(&b).await.unwrap());
    let path = b.clone();
    crash_mid_way(
        first,
        async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn SagaStore> },
        "sqlite",
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_sagas_on_postgres() {
    let schema = support::pg::Schema::create("dag").await;
    failure_while_a_branch_runs(
        Arc::new(PgStore::connect(&schema.url).await.unwrap()),
        "postgres",
    )
    .await;
    let first: Arc<dyn SagaStore> = Arc::new(PgStore::connect(&schema.url).await.unwrap());
    let url = schema.url.clone();
    crash_mid_way(
        first,
        async move { Arc::new(PgStore::connect(&url).await.unwrap()) as Arc<dyn SagaStore> },
        "postgres",
    )
    .await;
    schema.drop_it().await;
}
