//! The reference scenario: "create a model + deduct billing quota" as one saga.
//!
//! ```sh
//! cargo run -p maas-saga --example model_and_billing
//! ```
//!
//! Two participants — a model registry and a billing service — keep their data in a SQLite
//! file (`target/model_and_billing/app.db`) and protect every operation with the saga
//! barrier; the engine keeps its own records in `target/model_and_billing/sagas.db`. The
//! first saga fits the tenant's quota and commits; the second does not, so billing refuses
//! and the model created by the first step is compensated (deleted).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use maas_saga::barrier::{BranchKey, sqlite as barrier};
use maas_saga::store::SqliteStore;
use maas_saga::{BranchCall, Engine, Operation, Reply, Saga, Step, participant};
use rusqlite::{Connection, params};
use serde_json::json;
use tower::service_fn;

type Db = Arc<Mutex<Connection>>;

/// The model registry: `action` registers a model, `compensate` removes it.
fn models(db: Db) -> maas_saga::Participant {
    participant(service_fn(move |call: BranchCall| {
        let db = db.clone();
        async move {
            let mut conn = db.lock().expect("database lock");
            let tx = conn.transaction()?;
            let b = barrier::enter(&tx, &BranchKey::of(&call))?;
            if b.should_apply() {
                let model = call.payload["model"].as_str().unwrap_or_default();
                match call.op {
                    Operation::Action => {
                        tx.execute(
                            "INSERT INTO models (id, tenant) VALUES (?1, ?2)",
                            params![model, call.payload["tenant"].as_str()],
                        )?;
                    }
                    Operation::Compensate => {
                        tx.execute("DELETE FROM models WHERE id = ?1", params![model])?;
                    }
                    _ => {}
                }
            }
            tx.commit()?;
            Ok::<_, rusqlite::Error>(b.reply())
        }
    }))
}

/// Billing: `action` deducts quota (refusing when it would go negative), `compensate`
/// refunds it.
fn billing(db: Db) -> maas_saga::Participant {
    participant(service_fn(move |call: BranchCall| {
        let db = db.clone();
        async move {
            let mut conn = db.lock().expect("database lock");
            let tx = conn.transaction()?;
            let b = barrier::enter(&tx, &BranchKey::of(&call))?;
            let tenant = call.payload["tenant"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let cost = call.payload["cost"].as_i64().unwrap_or(0);
            if b.should_apply() {
                match call.op {
                    Operation::Action => {
                        let n = tx.execute(
                            "UPDATE quota SET amount = amount - ?2 WHERE tenant = ?1 AND amount >= ?2",
                            params![tenant, cost],
                        )?;
                        if n == 0 {
                            // A business failure: roll back (the barrier row too) and refuse.
                            return Ok(Reply::Rejected(format!(
                                "{tenant} has less than {cost} quota left"
                            )));
                        }
                    }
                    Operation::Compensate => {
                        tx.execute(
                            "UPDATE quota SET amount = amount + ?2 WHERE tenant = ?1",
                            params![tenant, cost],
                        )?;
                    }
                    _ => {}
                }
            }
            tx.commit()?;
            Ok::<_, rusqlite::Error>(b.reply())
        }
    }))
}

fn create_model(model: &str, tenant: &str, cost: i64) -> Saga {
    let payload = json!({ "model": model, "tenant": tenant, "cost": cost });
    Saga::builder("create-model")
        .step(Step::new("register-model", "models").payload(payload.clone()))
        .step(Step::new("deduct-quota", "billing").payload(payload))
        .build()
        .expect("a valid saga")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/model_and_billing");
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("app.db"));

    let app = Connection::open(dir.join("app.db"))?;
    app.execute_batch(
        "CREATE TABLE models (id TEXT PRIMARY KEY, tenant TEXT NOT NULL);
         CREATE TABLE quota (tenant TEXT PRIMARY KEY, amount INTEGER NOT NULL CHECK (amount >= 0));
         INSERT INTO quota VALUES ('acme', 100);",
    )?;
    barrier::migrate(&app)?;
    let app: Db = Arc::new(Mutex::new(app));

    let engine = Engine::builder(SqliteStore::open(dir.join("sagas.db")).await?)
        .participant("models", models(app.clone()))
        .participant("billing", billing(app.clone()))
        .owner("example")
        .start()
        .await?;

    for (model, cost) in [("llama-3-8b", 60), ("mistral-7b", 60)] {
        let outcome = engine.run(create_model(model, "acme", cost)).await?;
        println!(
            "saga {} for {model} (cost {cost}): {}",
            outcome.id, outcome.status
        );
        for b in &outcome.branches {
            println!("  {:<15} {:<12} attempts {}", b.name, b.state, b.attempts);
        }
    }

    let conn = app.lock().expect("database lock");
    let models: Vec<String> = conn
        .prepare("SELECT id FROM models ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let quota: i64 = conn.query_row("SELECT amount FROM quota WHERE tenant = 'acme'", [], |r| {
        r.get(0)
    })?;
    println!("models: {models:?}; acme's quota left: {quota}");
    assert_eq!(models, ["llama-3-8b"]);
    assert_eq!(quota, 40);
    Ok(())
}
