//! The barrier in PostgreSQL, inside the participant's transaction.
//!
//! ```no_run
//! use maas_saga::barrier::{BranchKey, postgres};
//! use maas_saga::{BranchCall, Reply};
//!
//! async fn deduct(client: &mut tokio_postgres::Client, call: &BranchCall) -> Result<Reply, tokio_postgres::Error> {
//!     let tx = client.transaction().await?;
//!     let barrier = postgres::enter(&tx, &BranchKey::of(call)).await?;
//!     if barrier.should_apply() {
//!         let n = tx.execute("UPDATE quota SET amount = amount - 10 WHERE tenant = 'acme' AND amount >= 10", &[]).await?;
//!         if n == 0 {
//!             // Business failure: roll back (the barrier forgets this attempt too).
//!             return Ok(Reply::Rejected("quota exhausted".into()));
//!         }
//!     }
//!     tx.commit().await?;
//!     Ok(barrier.reply())
//! }
//! ```

use std::time::Duration;

use tokio_postgres::GenericClient;

use super::{APPLIED, BLOCKED, Barrier, BranchKey, CleanupTask};

/// Creates the barrier table if it does not exist.
///
/// # Cancel safety
///
/// Cancel safe: the table is created in one statement, which either ran or did not.
pub async fn migrate(client: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS maas_saga_barrier (
                saga_id TEXT NOT NULL,
                branch TEXT NOT NULL,
                op TEXT NOT NULL,
                reason TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (saga_id, branch, op)
            );
            CREATE INDEX IF NOT EXISTS maas_saga_barrier_created ON maas_saga_barrier (created_at);",
        )
        .await
}

async fn insert(
    client: &impl GenericClient,
    key: &BranchKey,
    op: &str,
    reason: &str,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "INSERT INTO maas_saga_barrier (saga_id, branch, op, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&key.saga_id, &key.branch, &op, &reason],
        )
        .await?;
    Ok(n == 1)
}

/// Enters the barrier for `key` inside the transaction `tx`; do the work only if the
/// answer [`should_apply`](Barrier::should_apply), then commit.
///
/// # Cancel safety
///
/// Cancel safe when `tx` is a transaction: dropped before the commit, the transaction rolls
/// back and the barrier row goes with it.
pub async fn enter(
    tx: &impl GenericClient,
    key: &BranchKey,
) -> Result<Barrier, tokio_postgres::Error> {
    match key.op.undoes() {
        None => {
            if insert(tx, key, key.op.as_str(), APPLIED).await? {
                return Ok(Barrier::Proceed);
            }
            let reason: String = tx
                .query_one(
                    "SELECT reason FROM maas_saga_barrier WHERE saga_id = $1 AND branch = $2 AND op = $3",
                    &[&key.saga_id, &key.branch, &key.op.as_str()],
                )
                .await?
                .get(0);
            Ok(if reason == BLOCKED {
                Barrier::Refused
            } else {
                Barrier::Duplicate
            })
        }
        Some(forward) => {
            // Block the forward operation; if that works, it never ran.
            let never_ran = insert(tx, key, forward.as_str(), BLOCKED).await?;
            if !insert(tx, key, key.op.as_str(), APPLIED).await? {
                return Ok(Barrier::Duplicate);
            }
            Ok(if never_ran {
                Barrier::NullCompensation
            } else {
                Barrier::Proceed
            })
        }
    }
}

/// Deletes barrier rows older than `retention`; returns how many.
///
/// # Cancel safety
///
/// Cancel safe: one `DELETE` statement; dropped, it either ran or it did not.
pub async fn cleanup(
    client: &impl GenericClient,
    retention: Duration,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "DELETE FROM maas_saga_barrier WHERE created_at < now() - $1::bigint * interval '1 millisecond'",
            // Clamped: cast unclamped, Duration::MAX wrapped and deleted every row.
            &[&crate::duration::millis(retention)],
        )
        .await
}

/// Runs [`cleanup`] with `retention` now and then every `every`, on a connection from `pool`
/// taken for each run (so a database restart costs one failed run, logged, not the task),
/// until the returned task is dropped. Needs a tokio runtime. Choose a retention longer than
/// any transaction can live (its deadline or TTL plus the time recovery may take): a row
/// deleted while its transaction can still call would let a late attempt apply.
///
/// ```no_run
/// # async fn demo(pool: maas_saga::deadpool_postgres::Pool) {
/// use std::time::Duration;
/// use maas_saga::barrier::postgres;
/// let cleanup = postgres::spawn_cleanup(pool, Duration::from_secs(7 * 24 * 3600), Duration::from_secs(600));
/// // ... serve; dropping `cleanup` stops it.
/// # drop(cleanup); }
/// ```
pub fn spawn_cleanup(
    pool: deadpool_postgres::Pool,
    retention: Duration,
    every: Duration,
) -> CleanupTask {
    CleanupTask::every(every, move || {
        let pool = pool.clone();
        async move {
            let deleted = match pool.get().await {
                Ok(client) => cleanup(&**client, retention)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match deleted {
                Ok(n) => tracing::debug!(target: "maas_saga", deleted = n, "barrier cleanup"),
                Err(e) => tracing::warn!(target: "maas_saga", error = %e, "barrier cleanup failed"),
            }
        }
    })
}
