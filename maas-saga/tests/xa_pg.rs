//! XA (two-phase commit) on real PostgreSQL: two branch databases made by the test on the
//! local server, and for the restart and the disabled-setting cases clusters of the test's
//! own (`initdb`/`pg_ctl` on a free port).
//!
//! * both branches commit, or — when one refuses — neither, and no prepared transaction is
//!   left;
//! * "prepared transaction does not exist" in phase 2 is resolved by the marker: a branch
//!   committed behind the engine's back counts as committed when the decision is commit, and
//!   blocks the transaction (never taken for success) when the decision is rollback;
//! * a branch database restarted between prepare and commit: the transaction completes;
//! * a database with `max_prepared_transactions = 0`: a typed error at start.

#[path = "support/own_pg.rs"]
mod own_pg;
#[path = "support/pg.rs"]
mod pg;
#[path = "support/xa.rs"]
mod xa;

use std::sync::Arc;
use std::time::Duration;

use maas_saga::xa::{XaBranch, XaError};
use maas_saga::{Engine, EngineError, MemoryStore, Reply, SagaId, Status, Step, Xa};
use serde_json::json;

/// Branch `model` inserts the model row; branch `quota` deducts from the tenant's quota and
/// refuses when there is not enough.
async fn branches(models_url: &str, billing_url: &str) -> (XaBranch, XaBranch) {
    pg::connect(models_url)
        .await
        .batch_execute("CREATE TABLE IF NOT EXISTS models (id text PRIMARY KEY)")
        .await
        .unwrap();
    pg::connect(billing_url)
        .await
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS quota (tenant text PRIMARY KEY, amount bigint NOT NULL);
             INSERT INTO quota VALUES ('acme', 25) ON CONFLICT DO NOTHING",
        )
        .await
        .unwrap();
    let model = XaBranch::new(xa::pool(models_url, 4), |tx, call| {
        Box::pin(async move {
            let id = call.payload["model"].as_str().unwrap_or_default();
            tx.execute("INSERT INTO models (id) VALUES ($1)", &[&id])
                .await?;
            Ok(Reply::Done)
        })
    });
    // A refusal waits until the model branch has prepared, so the rollback has a prepared
    // transaction to roll back (tries run at once; otherwise which ends first is luck).
    let models = models_url.to_owned();
    let quota = XaBranch::new(xa::pool(billing_url, 4), move |tx, call| {
        let models = models.clone();
        Box::pin(async move {
            let cost = call.payload["cost"].as_i64().unwrap_or_default();
            let n = tx
                .execute(
                    "UPDATE quota SET amount = amount - $1 WHERE tenant = 'acme' AND amount >= $1",
                    &[&cost],
                )
                .await?;
            if n == 1 {
                return Ok(Reply::Done);
            }
            prepared_gid(&models, &call.saga_id).await;
            Ok(Reply::Rejected("quota exhausted".into()))
        })
    });
    (model, quota)
}

fn create_model(model: &str, cost: i64) -> Xa {
    Xa::builder("create-model")
        .branch(Step::new("model", "models-db").payload(json!({ "model": model })))
        .branch(Step::new("quota", "billing-db").payload(json!({ "cost": cost })))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn count(url: &str, sql: &str) -> i64 {
    pg::connect(url)
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn both_branches_commit_or_neither_does() {
    let server = pg::base_url();
    let (models, billing) = (
        xa::database(&server, "m").await,
        xa::database(&server, "b").await,
    );
    let (model, quota) = branches(&models, &billing).await;
    let engine = Engine::builder(MemoryStore::new())
        .xa_branch("models-db", model)
        .xa_branch("billing-db", quota)
        .start()
        .await
        .unwrap();
    let ok = engine.run(create_model("m-1", 10)).await.unwrap();
    assert_eq!(ok.status, Status::Committed);
    // 15 left: 20 is refused, and the model row of that transaction rolls back with it.
    let refused = engine.run(create_model("m-2", 20)).await.unwrap();
    assert_eq!(refused.status, Status::Compensated);
    assert_eq!(count(&models, "SELECT count(*) FROM models").await, 1);
    assert_eq!(
        count(&models, "SELECT count(*) FROM models WHERE id = 'm-1'").await,
        1
    );
    assert_eq!(count(&billing, "SELECT amount FROM quota").await, 15);
    assert!(xa::prepared(&models).await.is_empty());
    assert!(xa::prepared(&billing).await.is_empty());
    // The markers: both branches of the committed transaction, none of the refused one.
    assert_eq!(
        count(&models, "SELECT count(*) FROM maas_xa_marker").await,
        1
    );
    assert_eq!(
        count(&billing, "SELECT count(*) FROM maas_xa_marker").await,
        1
    );
    // An XA branch that names an ordinary participant is refused before anything runs.
    let wrong = Xa::builder("x")
        .branch(Step::new("a", "nobody"))
        .build()
        .unwrap();
    assert!(matches!(
        engine.submit(wrong).await,
        Err(EngineError::UnknownParticipant { .. })
    ));
}

/// Commits (or rolls back) the model branch's prepared transaction of `id` from outside the
/// engine, as an operator or another coordinator might.
async fn resolve_behind_the_engine(url: &str, id: &SagaId, commit: bool) {
    let gid = prepared_gid(url, id).await;
    let client = pg::connect(url).await;
    let verb = if commit { "COMMIT" } else { "ROLLBACK" };
    client
        .batch_execute(&format!("{verb} PREPARED '{gid}'"))
        .await
        .unwrap();
}

/// The gid of transaction `id`'s prepared transaction in the database of `url`, once there.
async fn prepared_gid(url: &str, id: &SagaId) -> String {
    let client = pg::connect(url).await;
    let mut gid = None;
    for _ in 0..100 {
        gid = client
            .query_opt(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE '%' || $1 || '%'",
                &[&id.as_str()],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, String>(0));
        if gid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gid.expect("the model branch prepared")
}

#[tokio::test]
async fn a_missing_prepared_transaction_is_resolved_by_its_marker_both_ways() {
    let server = pg::base_url();
    let (models, billing) = (
        xa::database(&server, "m").await,
        xa::database(&server, "b").await,
    );
    let (model, quota) = branches(&models, &billing).await;
    // At the decision to commit, the model branch is committed behind the engine's back;
    // at a decision to roll back, likewise — which contradicts the decision.
    let hook_url = models.clone();
    let store = xa::Hooked {
        inner: MemoryStore::new(),
        hook: Arc::new(move |id, decision, after| {
            let url = hook_url.clone();
            Box::pin(async move {
                if after && matches!(decision, Status::Committing | Status::Compensating) {
                    resolve_behind_the_engine(&url, &id, true).await;
                }
            })
        }),
    };
    let engine = Engine::builder(store)
        .xa_branch("models-db", model)
        .xa_branch("billing-db", quota)
        .start()
        .await
        .unwrap();
    // Commit: the model branch is gone from pg_prepared_xacts, its marker says committed.
    let ok = engine.run(create_model("m-1", 10)).await.unwrap();
    assert_eq!(ok.status, Status::Committed);
    assert_eq!(count(&models, "SELECT count(*) FROM models").await, 1);
    assert_eq!(count(&billing, "SELECT amount FROM quota").await, 15);

    // Roll back: the quota branch refuses (it never prepares, and its rollback finds no
    // marker: rolled back, done), the model branch was committed behind the engine's back.
    // The engine must not report success: the transaction stays compensating and its
    // cancel keeps failing.
    let id = engine.submit(create_model("m-2", 100)).await.unwrap();
    let attempts = |v: &maas_saga::SagaView| {
        v.branches
            .iter()
            .find(|b| b.name == "model")
            .map_or(0, |b| b.attempts)
    };
    let mut view = engine.saga(&id).await.unwrap().expect("the transaction");
    for _ in 0..150 {
        if view.status != Status::Running && attempts(&view) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = engine.saga(&id).await.unwrap().expect("the transaction");
    }
    assert_eq!(view.status, Status::Compensating, "{view:?}");
    assert!(
        attempts(&view) >= 3,
        "the cancel is retried, not taken for done: {view:?}"
    );
    let quota_branch = view.branches.iter().find(|b| b.name == "quota").unwrap();
    assert_eq!(quota_branch.state.as_str(), "cancelled", "{view:?}");
}

#[tokio::test]
async fn a_branch_database_restarted_between_prepare_and_commit() {
    let own = Arc::new(own_pg::OwnPostgres::start(
        "xa-restart",
        "max_prepared_transactions = 16",
    ));
    let models = xa::database(&own.url(), "m").await;
    let billing = xa::database(&pg::base_url(), "b").await;
    let (model, quota) = branches(&models, &billing).await;
    // Once the decision to commit is durable, the model database goes down for 2 s.
    let db = own.clone();
    let store = xa::Hooked {
        inner: MemoryStore::new(),
        hook: Arc::new(move |_, decision, after| {
            let db = db.clone();
            Box::pin(async move {
                if after && decision == Status::Committing {
                    let down = db.clone();
                    tokio::task::spawn_blocking(move || down.stop())
                        .await
                        .unwrap();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        tokio::task::spawn_blocking(move || db.resume())
                            .await
                            .unwrap();
                    });
                }
            })
        }),
    };
    let engine = Engine::builder(store)
        .xa_branch("models-db", model)
        .xa_branch("billing-db", quota)
        .start()
        .await
        .unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(60), engine.run(create_model("m-1", 10)))
            .await
            .expect("the transaction completes after the database returns")
            .unwrap();
    assert_eq!(outcome.status, Status::Committed);
    assert_eq!(count(&models, "SELECT count(*) FROM models").await, 1);
    assert_eq!(count(&billing, "SELECT amount FROM quota").await, 15);
    assert!(xa::prepared(&models).await.is_empty());
}

#[tokio::test]
async fn prepared_transactions_disabled_is_a_typed_error_at_start() {
    let own = own_pg::OwnPostgres::start("xa-off", "max_prepared_transactions = 0");
    let branch = XaBranch::new(xa::pool(&own.url(), 2), |_, _| {
        Box::pin(async { Ok(Reply::Done) })
    });
    let refused = Engine::builder(MemoryStore::new())
        .xa_branch("models-db", branch)
        .start()
        .await;
    match refused {
        Err(EngineError::Xa { branch, error }) => {
            assert_eq!(branch, "models-db");
            assert!(matches!(
                *error,
                XaError::PreparedTransactionsDisabled { .. }
            ));
            let text = error.to_string();
            assert!(text.contains("max_prepared_transactions"), "{text}");
        }
        other => panic!("expected EngineError::Xa, got {:?}", other.err()),
    }
}
