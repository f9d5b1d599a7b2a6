//! Models and quota in SQLite (one instance: embedded mode). SQLite calls are short and
//! local; they run inline on the runtime's threads.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use maas_saga::barrier::{BranchKey, sqlite as barrier};
use maas_saga::{BranchCall, Operation, Reply, participant};
use rusqlite::{Connection, OptionalExtension, params};
use tower::service_fn;

use super::{Artifact, Model, Outcome};

/// The application database in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteApp {
    db: Arc<Mutex<Connection>>,
}

impl SqliteApp {
    /// Opens (and creates) `app.db` in `dir`.
    pub fn open(dir: &Path) -> rusqlite::Result<SqliteApp> {
        let conn = Connection::open(dir.join("app.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS models (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL,
                 status TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS quota (
                 tenant TEXT PRIMARY KEY, amount INTEGER NOT NULL CHECK (amount >= 0));
             CREATE TABLE IF NOT EXISTS refunds (
                 model TEXT PRIMARY KEY, tenant TEXT NOT NULL, amount INTEGER NOT NULL,
                 recharged INTEGER NOT NULL DEFAULT 0);",
        )?;
        conn.execute_batch(super::keys::SQLITE_SCHEMA)?;
        add_column(&conn, "models", "reason", "TEXT")?;
        add_column(&conn, "models", "builds", "INTEGER NOT NULL DEFAULT 0")?;
        add_column(&conn, "models", "digest", "TEXT NOT NULL DEFAULT ''")?;
        add_column(&conn, "models", "size", "INTEGER NOT NULL DEFAULT 0")?;
        add_column(&conn, "models", "metadata", "TEXT")?;
        barrier::migrate(&conn)?;
        maas_queue::outbox::sqlite::install(&conn, super::OUTBOX).map_err(outbox_err)?;
        Ok(SqliteApp {
            db: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model `id`, if registered.
    pub fn model(&self, id: &str) -> rusqlite::Result<Option<Model>> {
        self.conn()
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = ?1"),
                params![id],
                model_of,
            )
            .optional()
    }

    /// See [`Store::ping`](super::Store::ping).
    pub fn ping(&self) -> rusqlite::Result<()> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))
    }

    /// See [`Store::ready_models`](super::Store::ready_models).
    pub fn ready_models(&self, tenant: &str) -> rusqlite::Result<Vec<Model>> {
        let conn = self.conn();
        let mut q = conn.prepare(&format!(
            "SELECT {MODEL_COLUMNS} FROM models WHERE tenant = ?1 AND status = 'ready' ORDER BY id"
        ))?;
        q.query_map(params![tenant], model_of)?.collect()
    }

    /// See [`Store::start_build`](super::Store::start_build).
    pub fn start_build(&self, id: &str) -> rusqlite::Result<bool> {
        let n = self.conn().execute(
            "UPDATE models SET status = 'building' WHERE id = ?1 AND status <> 'ready'",
            params![id],
        )?;
        Ok(n == 1)
    }

    /// See [`Store::finish`](super::Store::finish).
    pub fn finish(&self, id: &str, outcome: Outcome<'_>) -> rusqlite::Result<bool> {
        let n = match outcome {
            Outcome::Ready(metadata) => self.conn().execute(
                "UPDATE models SET status = 'ready', reason = NULL, builds = builds + 1,
                     metadata = ?2
                 WHERE id = ?1 AND status <> 'ready'",
                params![id, serde_json::to_string(metadata).unwrap_or_default()],
            )?,
            Outcome::Failed(reason) => self.conn().execute(
                "UPDATE models SET status = 'failed', reason = ?2 WHERE id = ?1 AND status <> 'ready'",
                params![id, reason],
            )?,
        };
        Ok(n == 1)
    }

    /// See [`Store::refund`](super::Store::refund).
    pub fn refund(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
        reason: &str,
    ) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // A first refund inserts the row; a model charged again by a redrive (recharged)
        // and dead-lettered again is refunded again; otherwise this is a repeat.
        let due = tx.execute(
            "INSERT INTO refunds (model, tenant, amount) VALUES (?1, ?2, ?3)
             ON CONFLICT (model) DO UPDATE SET recharged = 0 WHERE recharged = 1",
            params![model, tenant, cost],
        )? == 1;
        if due {
            tx.execute(
                "UPDATE quota SET amount = amount + ?2 WHERE tenant = ?1",
                params![tenant, cost],
            )?;
        }
        tx.execute(
            "UPDATE models SET status = 'failed', reason = coalesce(reason, ?2) WHERE id = ?1",
            params![model, reason],
        )?;
        tx.commit()?;
        Ok(due)
    }

    /// See [`Store::recharge_if_refunded`](super::Store::recharge_if_refunded).
    pub fn recharge_if_refunded(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
    ) -> rusqlite::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let refunded: Option<i64> = tx
            .query_row(
                "SELECT recharged FROM refunds WHERE model = ?1",
                params![model],
                |r| r.get(0),
            )
            .optional()?;
        if refunded != Some(0) {
            return Ok(true); // never refunded, or charged again already
        }
        let paid = tx.execute(
            "UPDATE quota SET amount = amount - ?2 WHERE tenant = ?1 AND amount >= ?2",
            params![tenant, cost],
        )? == 1;
        if paid {
            tx.execute(
                "UPDATE refunds SET recharged = 1 WHERE model = ?1",
                params![model],
            )?;
        }
        tx.commit()?;
        Ok(paid)
    }

    /// A tenant's remaining quota (`None` before its first upload).
    pub fn quota(&self, tenant: &str) -> rusqlite::Result<Option<i64>> {
        self.conn()
            .query_row(
                "SELECT amount FROM quota WHERE tenant = ?1",
                params![tenant],
                |r| r.get(0),
            )
            .optional()
    }

    /// A participant whose every call runs `apply` in one SQLite transaction behind the
    /// saga barrier: `apply` runs only when the barrier says the operation must apply, and
    /// a `Some(reply)` from it refuses the call, rolling everything back (barrier row too).
    fn guarded<F>(&self, apply: F) -> maas_saga::Participant
    where
        F: Fn(&rusqlite::Transaction<'_>, &BranchCall) -> rusqlite::Result<Option<Reply>>
            + Clone
            + Send
            + Sync
            + 'static,
    {
        let store = self.clone();
        participant(service_fn(move |call: BranchCall| {
            let (store, apply) = (store.clone(), apply.clone());
            async move {
                let mut conn = store.conn();
                let tx = conn.transaction()?;
                let b = barrier::enter(&tx, &BranchKey::of(&call))?;
                if b.should_apply()
                    && let Some(refusal) = apply(&tx, &call)?
                {
                    return Ok(refusal);
                }
                tx.commit()?;
                Ok::<_, rusqlite::Error>(b.reply())
            }
        }))
    }

    /// The model registry: `action` registers the model, `compensate` removes it.
    pub fn models_participant(&self) -> maas_saga::Participant {
        self.guarded(|tx, call| {
            let field = |k: &str| call.payload[k].as_str().unwrap_or_default().to_owned();
            match call.op {
                Operation::Action => {
                    // The model and its build task, in one transaction: the task is
                    // published if and only if the model is registered.
                    tx.execute(
                        "INSERT INTO models (id, name, tenant, status, digest, size)
                         VALUES (?1, ?2, ?3, 'queued', ?4, ?5)",
                        params![
                            field("model"),
                            field("name"),
                            field("tenant"),
                            field("digest"),
                            call.payload["size"].as_i64().unwrap_or(0)
                        ],
                    )?;
                    maas_queue::outbox::sqlite::enqueue(
                        tx,
                        super::OUTBOX,
                        &super::build_task(&call.payload),
                    )
                    .map_err(outbox_err)?;
                }
                Operation::Compensate => {
                    tx.execute("DELETE FROM models WHERE id = ?1", params![field("model")])?;
                }
                _ => {}
            }
            Ok(None)
        })
    }

    /// Billing: `action` deducts the build's cost from the tenant's quota (a tenant starts
    /// with `initial` credits) and refuses when it would go negative; `compensate` refunds.
    pub fn billing_participant(&self, initial: i64) -> maas_saga::Participant {
        self.guarded(move |tx, call| {
            let tenant = call.payload["tenant"].as_str().unwrap_or_default();
            let cost = call.payload["cost"].as_i64().unwrap_or(0);
            tx.execute(
                "INSERT OR IGNORE INTO quota (tenant, amount) VALUES (?1, ?2)",
                params![tenant, initial],
            )?;
            match call.op {
                Operation::Action => {
                    let n = tx.execute(
                        "UPDATE quota SET amount = amount - ?2 WHERE tenant = ?1 AND amount >= ?2",
                        params![tenant, cost],
                    )?;
                    if n == 0 {
                        return Ok(Some(Reply::Rejected(format!(
                            "tenant {tenant} has less than {cost} credits left"
                        ))));
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
            Ok(None)
        })
    }
}

/// An outbox failure as the SQLite error it carries (the table name is a constant).
fn outbox_err(e: maas_queue::outbox::sqlite::SqliteOutboxError) -> rusqlite::Error {
    match e {
        maas_queue::outbox::sqlite::SqliteOutboxError::Db(e) => e,
        other => rusqlite::Error::InvalidParameterName(other.to_string()),
    }
}

/// What [`model_of`] reads.
const MODEL_COLUMNS: &str = "id, name, tenant, status, reason, builds, digest, size, metadata";

fn model_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Model> {
    Ok(Model {
        id: r.get(0)?,
        name: r.get(1)?,
        tenant: r.get(2)?,
        status: r.get(3)?,
        reason: r.get(4)?,
        builds: r.get(5)?,
        artifact: Artifact {
            digest: r.get(6)?,
            size: r.get(7)?,
        },
        metadata: super::metadata_of(r.get(8)?),
    })
}

/// Adds `column` to `table` unless a database made by an earlier version has it already
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let present: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        params![table, column],
        |r| r.get(0),
    )?;
    if !present {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_an_earlier_version_gains_the_new_columns() {
        let dir = std::env::temp_dir().join(format!(
            "maas-migrate-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Connection::open(dir.join("app.db"))
            .unwrap()
            .execute_batch(
                "CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT NOT NULL,
                     tenant TEXT NOT NULL, status TEXT NOT NULL);
                 INSERT INTO models VALUES ('m-1', 'old', 'acme', 'building');",
            )
            .unwrap();
        let app = SqliteApp::open(&dir).unwrap();
        let old = app.model("m-1").unwrap().unwrap();
        assert_eq!((old.reason, old.builds), (None, 0));
        let meta = crate::artifacts::ModelMetadata {
            format: crate::artifacts::Format::Gguf,
            tensors: 1,
            parameters: 32,
            dtypes: vec!["F32".into()],
            architecture: None,
        };
        assert_eq!(old.artifact.digest, "");
        assert!(app.finish("m-1", Outcome::Ready(&meta)).unwrap());
        assert_eq!(
            app.model("m-1").unwrap().unwrap().metadata,
            Some(meta.clone())
        );
        assert_eq!(app.model("m-1").unwrap().unwrap().builds, 1);
        // A second delivery of the task that finishes too is not a second build.
        assert!(!app.start_build("m-1").unwrap());
        assert!(!app.finish("m-1", Outcome::Ready(&meta)).unwrap());
        assert!(!app.finish("m-1", Outcome::Failed("late")).unwrap());
        assert_eq!(app.model("m-1").unwrap().unwrap().builds, 1);
        drop(app);
        // Opened again: nothing to add, nothing lost.
        let again = SqliteApp::open(&dir).unwrap();
        assert_eq!(again.model("m-1").unwrap().unwrap().builds, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dead_lettered_build_is_refunded_once_and_a_redrive_charges_it_once() {
        let dir = std::env::temp_dir().join(format!(
            "maas-refunds-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let app = SqliteApp::open(&dir).unwrap();
        app.conn()
            .execute_batch(
                "INSERT INTO quota (tenant, amount) VALUES ('acme', 15);
                 INSERT INTO models (id, name, tenant, status) VALUES ('m-1', 'x', 'acme', 'building');",
            )
            .unwrap();
        let left = || app.quota("acme").unwrap().unwrap();
        assert!(app.refund("m-1", "acme", 10, "dead-lettered: x").unwrap());
        assert!(
            !app.refund("m-1", "acme", 10, "dead-lettered: x").unwrap(),
            "a repeat refunds nothing"
        );
        assert_eq!(left(), 25);
        let failed = app.model("m-1").unwrap().unwrap();
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.reason.as_deref(), Some("dead-lettered: x"));
        // Redriven: charged again once, however often the task is delivered.
        assert!(app.recharge_if_refunded("m-1", "acme", 10).unwrap());
        assert!(app.recharge_if_refunded("m-1", "acme", 10).unwrap());
        assert_eq!(left(), 15);
        // Dead-lettered again: refunded again, once.
        assert!(app.refund("m-1", "acme", 10, "dead-lettered: x").unwrap());
        assert!(!app.refund("m-1", "acme", 10, "dead-lettered: x").unwrap());
        assert_eq!(left(), 25);
        // A tenant that cannot pay again gets no rebuild.
        app.conn()
            .execute("UPDATE quota SET amount = 5 WHERE tenant = 'acme'", [])
            .unwrap();
        assert!(!app.recharge_if_refunded("m-1", "acme", 10).unwrap());
        assert_eq!(left(), 5);
        // A model never refunded is built without a charge.
        assert!(app.recharge_if_refunded("m-2", "acme", 10).unwrap());
        let _ = std::fs::remove_dir_all(dir);
    }
}
