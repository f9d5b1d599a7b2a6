//! The barrier in SQLite, inside the participant's transaction.
//!
//! ```
//! use maas_saga::barrier::{Barrier, BranchKey, sqlite};
//! use maas_saga::Operation;
//!
//! let mut conn = rusqlite::Connection::open_in_memory()?;
//! sqlite::migrate(&conn)?;
//! let key = |op| BranchKey { saga_id: "s-1".into(), branch: "quota".into(), op };
//!
//! let tx = conn.transaction()?;
//! assert_eq!(sqlite::enter(&tx, &key(Operation::Compensate))?, Barrier::NullCompensation);
//! tx.commit()?;
//! let tx = conn.transaction()?;
//! assert_eq!(sqlite::enter(&tx, &key(Operation::Action))?, Barrier::Refused);
//! tx.commit()?;
//! # Ok::<(), rusqlite::Error>(())
//! ```

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};

use super::{APPLIED, BLOCKED, Barrier, BranchKey, CleanupTask};

fn now_millis() -> i64 {
    crate::store::to_millis(SystemTime::now())
}

/// Creates the barrier table if it does not exist.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS maas_saga_barrier (
            saga_id TEXT NOT NULL,
            branch TEXT NOT NULL,
            op TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (saga_id, branch, op)
        );
        CREATE INDEX IF NOT EXISTS maas_saga_barrier_created ON maas_saga_barrier (created_at);",
    )
}

fn insert(conn: &Connection, key: &BranchKey, op: &str, reason: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "INSERT INTO maas_saga_barrier (saga_id, branch, op, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        params![key.saga_id, key.branch, op, reason, now_millis()],
    )? == 1)
}

/// Enters the barrier for `key` inside the transaction `tx` (any `Connection` deref,
/// e.g. a `rusqlite::Transaction`); do the work only if the answer
/// [`should_apply`](Barrier::should_apply), then commit.
pub fn enter(tx: &Connection, key: &BranchKey) -> rusqlite::Result<Barrier> {
    match key.op.undoes() {
        None => {
            if insert(tx, key, key.op.as_str(), APPLIED)? {
                return Ok(Barrier::Proceed);
            }
            let reason: String = tx.query_row(
                "SELECT reason FROM maas_saga_barrier WHERE saga_id = ?1 AND branch = ?2 AND op = ?3",
                params![key.saga_id, key.branch, key.op.as_str()],
                |r| r.get(0),
            )?;
            Ok(if reason == BLOCKED {
                Barrier::Refused
            } else {
                Barrier::Duplicate
            })
        }
        Some(forward) => {
            let never_ran = insert(tx, key, forward.as_str(), BLOCKED)?;
            if !insert(tx, key, key.op.as_str(), APPLIED)? {
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
pub fn cleanup(conn: &Connection, retention: Duration) -> rusqlite::Result<u64> {
    // Clamped: a retention of Duration::MAX keeps everything (cast unclamped, it wrapped to a
    // negative number and deleted every row, so retries would have applied twice).
    let cutoff = now_millis().saturating_sub(crate::duration::millis(retention));
    conn.execute(
        "DELETE FROM maas_saga_barrier WHERE created_at < ?1",
        params![cutoff],
    )
    .map(|n| n as u64)
}

/// Runs [`cleanup`] with `retention` now and then every `every`, on `conn` (locked for each
/// pass, on a blocking thread), until the returned task is dropped. Needs a tokio runtime.
/// Choose a retention longer than any transaction can live: a row deleted while its
/// transaction can still call would let a late attempt apply.
pub fn spawn_cleanup(
    conn: std::sync::Arc<std::sync::Mutex<Connection>>,
    retention: Duration,
    every: Duration,
) -> CleanupTask {
    CleanupTask::every(every, move || {
        let conn = conn.clone();
        async move {
            let pass = tokio::task::spawn_blocking(move || {
                let conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                cleanup(&conn, retention)
            })
            .await;
            match pass {
                Ok(Ok(n)) => tracing::debug!(target: "maas_saga", deleted = n, "barrier cleanup"),
                Ok(Err(e)) => {
                    tracing::warn!(target: "maas_saga", error = %e, "barrier cleanup failed")
                }
                Err(e) => {
                    tracing::warn!(target: "maas_saga", error = %e, "barrier cleanup panicked")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operation;

    fn key(op: Operation) -> BranchKey {
        BranchKey {
            saga_id: "s".into(),
            branch: "b".into(),
            op,
        }
    }

    fn once(conn: &mut Connection, op: Operation) -> Barrier {
        let tx = conn.transaction().unwrap();
        let b = enter(&tx, &key(op)).unwrap();
        tx.commit().unwrap();
        b
    }

    #[test]
    fn cleanup_with_an_endless_retention_keeps_every_row() {
        // Before: Duration::MAX wrapped to a negative cut-off and every row was deleted,
        // so a retried action would have applied twice.
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        assert_eq!(once(&mut c, Operation::Action), Barrier::Proceed);
        for retention in [
            Duration::MAX,
            Duration::from_nanos(u64::MAX),
            Duration::from_secs(60),
        ] {
            assert_eq!(cleanup(&c, retention).unwrap(), 0, "{retention:?}");
        }
        assert_eq!(once(&mut c, Operation::Action), Barrier::Duplicate);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cleanup(&c, Duration::ZERO).unwrap(), 1);
    }

    #[tokio::test]
    async fn a_scheduled_cleanup_deletes_old_rows() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        assert_eq!(once(&mut c, Operation::Action), Barrier::Proceed);
        let conn = std::sync::Arc::new(std::sync::Mutex::new(c));
        let task = spawn_cleanup(
            conn.clone(),
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        let rows = || -> i64 {
            conn.lock()
                .unwrap()
                .query_row("SELECT count(*) FROM maas_saga_barrier", [], |r| r.get(0))
                .unwrap()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rows() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduled cleanup never ran"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.stop();
    }

    #[test]
    fn every_row_of_the_table() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        assert_eq!(once(&mut c, Operation::Action), Barrier::Proceed);
        assert_eq!(once(&mut c, Operation::Action), Barrier::Duplicate);
        assert_eq!(once(&mut c, Operation::Compensate), Barrier::Proceed);
        assert_eq!(once(&mut c, Operation::Compensate), Barrier::Duplicate);
        assert_eq!(
            once(&mut c, Operation::Action),
            Barrier::Duplicate,
            "still the applied row"
        );

        let mut c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        assert_eq!(once(&mut c, Operation::Cancel), Barrier::NullCompensation);
        assert_eq!(once(&mut c, Operation::Try), Barrier::Refused);
        assert_eq!(once(&mut c, Operation::Cancel), Barrier::Duplicate);
        assert_eq!(once(&mut c, Operation::Confirm), Barrier::Proceed);
        assert_eq!(once(&mut c, Operation::Confirm), Barrier::Duplicate);
    }

    #[test]
    fn a_rolled_back_attempt_is_forgotten() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        let tx = c.transaction().unwrap();
        assert_eq!(
            enter(&tx, &key(Operation::Action)).unwrap(),
            Barrier::Proceed
        );
        tx.rollback().unwrap();
        assert_eq!(once(&mut c, Operation::Action), Barrier::Proceed);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cleanup(&c, Duration::from_millis(1)).unwrap(), 1);
    }
}
