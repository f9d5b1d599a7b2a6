//! Models and quota in PostgreSQL: what several replicas share. The participants use the
//! saga barrier's PostgreSQL flavour inside the same transaction as their change.

use std::sync::Arc;

use deadpool_postgres::Pool;
use maas_queue::BoxError;
use maas_saga::barrier::{BranchKey, postgres as barrier};
use maas_saga::{BranchCall, Operation, Reply, participant};
use tower::service_fn;

use super::{Artifact, Model, Outcome, StoreError};
use crate::database::Database;

/// The application database in PostgreSQL, on a pool of connections.
#[derive(Clone)]
pub struct PgApp {
    pool: Pool,
    database: Arc<Database>,
}

/// What [`model_of`] reads.
const MODEL_COLUMNS: &str = "id, name, tenant, status, reason, builds, digest, size, metadata";

fn model_of(r: &tokio_postgres::Row) -> Model {
    Model {
        id: r.get(0),
        name: r.get(1),
        tenant: r.get(2),
        status: r.get(3),
        reason: r.get(4),
        builds: r.get(5),
        artifact: Artifact {
            digest: r.get(6),
            size: r.get(7),
        },
        metadata: super::metadata_of(r.get(8)),
    }
}

/// Which participant a call is for.
#[derive(Clone, Copy)]
enum Change {
    Models,
    Billing { initial: i64 },
}

impl PgApp {
    /// Connects to `database` with a pool of up to `size` connections and creates the tables
    /// if needed; replicas starting together take turns through an advisory lock.
    pub(crate) async fn connect(database: Database, size: usize) -> Result<PgApp, BoxError> {
        let pool = database.pool(size)?;
        let client = pool.get().await?;
        client
            .batch_execute(
                "SELECT pg_advisory_lock(7465001);
                 CREATE TABLE IF NOT EXISTS maas_platform_models (
                     id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL,
                     status TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS maas_platform_quota (
                     tenant TEXT PRIMARY KEY, amount BIGINT NOT NULL CHECK (amount >= 0));
                 CREATE TABLE IF NOT EXISTS maas_platform_refunds (
                     model TEXT PRIMARY KEY, tenant TEXT NOT NULL, amount BIGINT NOT NULL,
                     recharged BOOLEAN NOT NULL DEFAULT false);
                 ALTER TABLE maas_platform_models
                     ADD COLUMN IF NOT EXISTS reason TEXT,
                     ADD COLUMN IF NOT EXISTS builds BIGINT NOT NULL DEFAULT 0,
                     ADD COLUMN IF NOT EXISTS digest TEXT NOT NULL DEFAULT '',
                     ADD COLUMN IF NOT EXISTS size BIGINT NOT NULL DEFAULT 0,
                     ADD COLUMN IF NOT EXISTS metadata TEXT;",
            )
            .await?;
        client.batch_execute(super::keys::PG_SCHEMA).await?;
        let migrated: Result<(), BoxError> = match barrier::migrate(&**client).await {
            Ok(()) => maas_queue::outbox::pg::install(&**client, super::OUTBOX)
                .await
                .map_err(Into::into),
            Err(e) => Err(e.into()),
        };
        client
            .batch_execute("SELECT pg_advisory_unlock(7465001)")
            .await?;
        migrated?;
        drop(client);
        Ok(PgApp {
            pool,
            database: Arc::new(database),
        })
    }

    /// A connection from the pool (a new one if the server closed the last).
    pub(super) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Where the database is and how to reach it (for the outbox relay).
    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    pub(super) async fn model(&self, id: &str) -> Result<Option<Model>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {MODEL_COLUMNS} FROM maas_platform_models WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(model_of))
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub(super) async fn ready_models(&self, tenant: &str) -> Result<Vec<Model>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {MODEL_COLUMNS} FROM maas_platform_models
                     WHERE tenant = $1 AND status = 'ready' ORDER BY id"
                ),
                &[&tenant],
            )
            .await?;
        Ok(rows.iter().map(model_of).collect())
    }

    pub(super) async fn start_build(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE maas_platform_models SET status = 'building'
                 WHERE id = $1 AND status <> 'ready'",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// See [`Store::finish`](super::Store::finish).
    pub(super) async fn finish(&self, id: &str, outcome: Outcome<'_>) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = match outcome {
            Outcome::Ready(metadata) => {
                let metadata = serde_json::to_string(metadata).unwrap_or_default();
                client
                    .execute(
                        "UPDATE maas_platform_models
                         SET status = 'ready', reason = NULL, builds = builds + 1, metadata = $2
                         WHERE id = $1 AND status <> 'ready'",
                        &[&id, &metadata],
                    )
                    .await?
            }
            Outcome::Failed(reason) => {
                client
                    .execute(
                        "UPDATE maas_platform_models SET status = 'failed', reason = $2
                         WHERE id = $1 AND status <> 'ready'",
                        &[&id, &reason],
                    )
                    .await?
            }
        };
        Ok(n == 1)
    }

    /// See [`Store::refund`](super::Store::refund).
    pub(super) async fn refund(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A first refund inserts the row; a model charged again by a redrive and
        // dead-lettered again is refunded again; otherwise this is a repeat.
        let due = tx
            .execute(
                "INSERT INTO maas_platform_refunds (model, tenant, amount) VALUES ($1, $2, $3)
                 ON CONFLICT (model) DO UPDATE SET recharged = false
                 WHERE maas_platform_refunds.recharged",
                &[&model, &tenant, &cost],
            )
            .await?
            == 1;
        if due {
            tx.execute(
                "UPDATE maas_platform_quota SET amount = amount + $2 WHERE tenant = $1",
                &[&tenant, &cost],
            )
            .await?;
        }
        tx.execute(
            "UPDATE maas_platform_models SET status = 'failed', reason = coalesce(reason, $2)
             WHERE id = $1",
            &[&model, &reason],
        )
        .await?;
        tx.commit().await?;
        Ok(due)
    }

    /// See [`Store::recharge_if_refunded`](super::Store::recharge_if_refunded).
    pub(super) async fn recharge_if_refunded(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT recharged FROM maas_platform_refunds WHERE model = $1 FOR UPDATE",
                &[&model],
            )
            .await?;
        if row.is_none_or(|r| r.get::<_, bool>(0)) {
            return Ok(true); // never refunded, or charged again already
        }
        let paid = tx
            .execute(
                "UPDATE maas_platform_quota SET amount = amount - $2
                 WHERE tenant = $1 AND amount >= $2",
                &[&tenant, &cost],
            )
            .await?
            == 1;
        if paid {
            tx.execute(
                "UPDATE maas_platform_refunds SET recharged = true WHERE model = $1",
                &[&model],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(paid)
    }

    pub(super) async fn quota(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT amount FROM maas_platform_quota WHERE tenant = $1",
                &[&tenant],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Wakes the outbox relays (after a commit that enqueued).
    pub(crate) async fn notify_outbox(&self) -> Result<(), BoxError> {
        let client = self.client().await?;
        Ok(maas_queue::outbox::pg::notify(&**client, super::OUTBOX).await?)
    }

    pub(super) fn models_participant(&self) -> maas_saga::Participant {
        self.guarded(Change::Models)
    }

    pub(super) fn billing_participant(&self, initial: i64) -> maas_saga::Participant {
        self.guarded(Change::Billing { initial })
    }

    /// A participant applying `change` in one transaction behind the saga barrier.
    fn guarded(&self, change: Change) -> maas_saga::Participant {
        let app = self.clone();
        participant(service_fn(move |call: BranchCall| {
            let app = app.clone();
            async move {
                let mut client = app.client().await?;
                let tx = client.transaction().await?;
                let b = barrier::enter(&*tx, &BranchKey::of(&call)).await?;
                if b.should_apply()
                    && let Some(refusal) = apply(&tx, &call, change).await?
                {
                    return Ok(refusal); // dropping `tx` rolls back, barrier row included
                }
                tx.commit().await?;
                Ok::<_, BoxError>(b.reply())
            }
        }))
    }
}

/// The change itself; `Some(reply)` refuses the call.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    call: &BranchCall,
    change: Change,
) -> Result<Option<Reply>, BoxError> {
    let field = |k: &str| call.payload[k].as_str().unwrap_or_default().to_owned();
    match (change, &call.op) {
        (Change::Models, Operation::Action) => {
            // The model and its build task, in one transaction.
            let size = call.payload["size"].as_i64().unwrap_or(0);
            tx.execute(
                "INSERT INTO maas_platform_models (id, name, tenant, status, digest, size)
                 VALUES ($1, $2, $3, 'queued', $4, $5)",
                &[
                    &field("model"),
                    &field("name"),
                    &field("tenant"),
                    &field("digest"),
                    &size,
                ],
            )
            .await?;
            maas_queue::outbox::pg::enqueue(tx, super::OUTBOX, &super::build_task(&call.payload))
                .await?;
        }
        (Change::Models, Operation::Compensate) => {
            tx.execute(
                "DELETE FROM maas_platform_models WHERE id = $1",
                &[&field("model")],
            )
            .await?;
        }
        (Change::Billing { initial }, op) => {
            let tenant = field("tenant");
            let cost = call.payload["cost"].as_i64().unwrap_or(0);
            tx.execute(
                "INSERT INTO maas_platform_quota (tenant, amount) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&tenant, &initial],
            )
            .await?;
            match op {
                Operation::Action => {
                    let n = tx
                        .execute(
                            "UPDATE maas_platform_quota SET amount = amount - $2
                             WHERE tenant = $1 AND amount >= $2",
                            &[&tenant, &cost],
                        )
                        .await?;
                    if n == 0 {
                        return Ok(Some(Reply::Rejected(format!(
                            "tenant {tenant} has less than {cost} credits left"
                        ))));
                    }
                }
                Operation::Compensate => {
                    tx.execute(
                        "UPDATE maas_platform_quota SET amount = amount + $2 WHERE tenant = $1",
                        &[&tenant, &cost],
                    )
                    .await?;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(None)
}
