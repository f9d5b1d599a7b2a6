//! One bad write never fails the others committed in the same batch, on PostgreSQL and on
//! SQLite: a saga whose deadline no database can hold is clamped before it is written
//! (validation), and a row the database refuses anyway fails its own submit alone
//! (isolation).

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use maas_saga::store::{Lease, NewSaga, PgStore, SqliteStore};
use maas_saga::{
    BranchCall, Engine, MAX_DURATION, Participant, Reply, Saga, SagaId, SagaStore, Status, Step,
    Tcc, Transaction, participant,
};
use support::pg::{Schema, connect};
use tower::service_fn;

const SUBMITS: usize = 350;

fn ok_participant() -> Participant {
    participant(service_fn(|_call: BranchCall| async {
        Ok::<_, maas_saga::BoxError>(Reply::Done)
    }))
}

fn saga(name: &str, deadline: Option<Duration>) -> Transaction {
    let b = Saga::builder(name).step(Step::new("a", "p").timeout(Duration::from_secs(5)));
    match deadline {
        Some(d) => b.deadline(d).build().unwrap().into(),
        None => b.build().unwrap().into(),
    }
}

/// Submits `SUBMITS` sagas at once through one engine, one of them with the hostile
/// setting, and waits for all of them: every one commits.
async fn one_hostile_saga_among_many(store: Arc<dyn SagaStore>) {
    let engine = Engine::builder_arc(store.clone())
        .participant("p", ok_participant())
        .start()
        .await
        .unwrap();
    let hostile = SUBMITS / 2;
    let runs = (0..SUBMITS).map(|i| {
        let engine = engine.clone();
        async move {
            let t: Transaction = match i {
                // Before: PostgreSQL refused the interval and failed the whole batch;
                // SQLite panicked after writing the record.
                _ if i == hostile => saga("hostile", Some(Duration::MAX)),
                _ if i == hostile + 1 => Tcc::builder("hostile-tcc")
                    .branch(Step::new("a", "p"))
                    .ttl(Duration::MAX)
                    .build()
                    .unwrap()
                    .into(),
                _ => saga("ordinary", Some(Duration::from_secs(60))),
            };
            engine.run(t).await
        }
    });
    let outcomes = join_all(runs).await;
    let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {SUBMITS} failed: {:?}",
        failed.len(),
        failed.first()
    );
    for o in outcomes {
        assert_eq!(o.unwrap().status, Status::Committed);
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

fn lease() -> Lease {
    Lease {
        owner: "isolation".into(),
        incarnation: "1".into(),
        duration: Duration::from_secs(30),
    }
}

/// Creates `SUBMITS` intents at once, the one named `poison` refused by a trigger: only that
/// create fails, the others are written.
async fn a_refused_row_fails_alone(store: Arc<dyn SagaStore>) {
    let creates = (0..SUBMITS).map(|i| {
        let store = store.clone();
        async move {
            let name = if i == SUBMITS / 3 {
                "poison"
            } else {
                "ordinary"
            };
            let id = SagaId::from(format!("iso-{i}").as_str());
            let created = store
                .create(
                    NewSaga {
                        id: id.clone(),
                        transaction: saga(name, None),
                        deadline_after: Some(Duration::MAX), // clamped, never refused
                    },
                    &lease(),
                )
                .await;
            (id, name, created)
        }
    });
    let results = join_all(creates).await;
    for (id, name, created) in &results {
        if *name == "poison" {
            assert!(created.is_err(), "the refused row reported success");
        } else {
            assert!(matches!(created, Ok(true)), "{id}: {created:?}");
            let record = store.get(id).await.unwrap().expect("written");
            assert!(record.deadline.is_some());
        }
    }
    let poisoned = results.iter().find(|r| r.1 == "poison").unwrap();
    assert!(store.get(&poisoned.0).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_hostile_saga_fails_nobody() {
    let schema = Schema::create("batch_hostile").await;
    let store = PgStore::connect(&schema.url).await.unwrap();
    one_hostile_saga_among_many(Arc::new(store)).await;
    schema.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refused_row_fails_only_its_own_write() {
    let schema = Schema::create("batch_refused").await;
    let store = PgStore::connect(&schema.url).await.unwrap();
    connect(&schema.url)
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
             CREATE TRIGGER refuse_poison BEFORE INSERT ON maas_saga
             FOR EACH ROW WHEN (NEW.name = 'poison') EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();
    a_refused_row_fails_alone(Arc::new(store)).await;
    schema.drop_it().await;
}

fn sqlite_path(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("maas-saga-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("sagas.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_one_hostile_saga_fails_nobody() {
    let path = sqlite_path("hostile");
    let store = SqliteStore::open(&path).await.unwrap();
    one_hostile_saga_among_many(Arc::new(store)).await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_refused_row_fails_only_its_own_write() {
    let path = sqlite_path("refused");
    let store = SqliteStore::open(&path).await.unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON maas_saga
             WHEN NEW.name = 'poison' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    a_refused_row_fails_alone(Arc::new(store)).await;
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn durations_are_clamped_when_a_transaction_is_built() {
    let t = saga("s", Some(Duration::MAX));
    let Transaction::Saga(s) = &t else { panic!() };
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(
        json["deadline"],
        serde_json::json!(MAX_DURATION.as_millis() as u64)
    );
}
