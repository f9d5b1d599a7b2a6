//! A SQLite store: one durable file, for a single engine process.
//!
//! Writes are batched into one transaction (see the module docs of [`store`](super)); the
//! database runs in WAL mode with `synchronous=FULL`, so a committed write survives power
//! loss, not just a process crash.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::batch::{Batcher, Write, first_creates};
use super::sql::{self, backend, json};
use super::{
    AdminRequest, BoxFuture, BranchProgress, Lease, NewSaga, Renewed, SagaRecord, SagaStore,
    StoreError, to_millis,
};
use crate::duration::millis;
use crate::{SagaId, Status};

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE IF NOT EXISTS maas_saga (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        status TEXT NOT NULL,
        owner TEXT,
        incarnation TEXT,
        lease_until INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deadline INTEGER,
        progress TEXT,
        request TEXT
    );
    CREATE INDEX IF NOT EXISTS maas_saga_unfinished ON maas_saga (lease_until)
        WHERE status IN ('running', 'compensating', 'committing');
    CREATE INDEX IF NOT EXISTS maas_saga_finished ON maas_saga (updated_at)
        WHERE status IN ('committed', 'compensated');",
];

/// A [`SagaStore`] in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    writer: Batcher,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates its schema. Needs a
    /// tokio runtime (a background task commits batched writes).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes whatever was opened; a migration runs in a
    /// transaction of its own.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let conn = Connection::open(&path).map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(backend)?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(backend)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
            migrate(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(backend)??;
        let conn = Arc::new(Mutex::new(conn));
        let writer_conn = conn.clone();
        // SQLite has one writer at a time: one worker.
        let writer = Batcher::spawn(
            256,
            vec![move |writes: Vec<Write>| {
                let conn = writer_conn.clone();
                async move {
                    let done = tokio::task::spawn_blocking(move || {
                        let result = commit(&mut lock(&conn), &writes);
                        (writes, result)
                    })
                    .await;
                    match done {
                        Ok(done) => done,
                        // The blocking task panicked: its writes are gone with it.
                        Err(e) => (Vec::new(), Err(backend(e))),
                    }
                }
            }],
        );
        Ok(SqliteStore { conn, writer })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(backend)?
    }
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS maas_saga_migrations (version INTEGER PRIMARY KEY)",
    )
    .map_err(backend)?;
    let done: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM maas_saga_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(backend)?;
    for (i, sql) in SCHEMA.iter().enumerate().skip(done as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; INSERT INTO maas_saga_migrations (version) VALUES ({}); COMMIT;",
            i + 1
        ))
        .map_err(backend)?;
    }
    Ok(())
}

fn commit(conn: &mut Connection, writes: &[Write]) -> Result<Vec<bool>, StoreError> {
    let now = to_millis(SystemTime::now());
    let firsts = first_creates(writes);
    let tx = conn.transaction().map_err(backend)?;
    let mut results = Vec::with_capacity(writes.len());
    for (write, first) in writes.iter().zip(firsts) {
        let changed = match write {
            Write::Create(s, lease) => {
                let definition = serde_json::to_string(&s.transaction).map_err(backend)?;
                let deadline = s.deadline_after.map(|d| now.saturating_add(millis(d)));
                first
                    && tx
                        .execute(
                            "INSERT INTO maas_saga (id, kind, name, definition, status, owner, incarnation,
                                lease_until, created_at, updated_at, deadline)
                             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?8, ?9)
                             ON CONFLICT (id) DO NOTHING",
                            params![
                                s.id.as_str(),
                                s.transaction.kind().as_str(),
                                s.transaction.name(),
                                definition,
                                lease.owner,
                                lease.incarnation,
                                now.saturating_add(millis(lease.duration)),
                                now,
                                deadline
                            ],
                        )
                        .map_err(backend)?
                        == 1
            }
            Write::Decision {
                id,
                lease,
                status,
                progress,
            } => {
                tx.execute(
                    "UPDATE maas_saga SET status = ?4, progress = ?5, updated_at = ?6
                     WHERE id = ?1 AND owner = ?2 AND incarnation = ?3 AND status IN ('running', ?4)",
                    params![
                        id.as_str(),
                        lease.owner,
                        lease.incarnation,
                        status.as_str(),
                        json(progress),
                        now
                    ],
                )
                .map_err(backend)?
                    == 1
            }
            Write::Finish {
                id,
                lease,
                status,
                progress,
            } => {
                tx.execute(
                    "UPDATE maas_saga SET status = ?4, progress = ?5, updated_at = ?6,
                        owner = NULL, incarnation = NULL, lease_until = NULL, request = NULL
                     WHERE id = ?1 AND owner = ?2 AND incarnation = ?3
                       AND status IN ('running', 'compensating', 'committing')",
                    params![
                        id.as_str(),
                        lease.owner,
                        lease.incarnation,
                        status.as_str(),
                        json(progress),
                        now
                    ],
                )
                .map_err(backend)?
                    == 1
            }
        };
        results.push(changed);
    }
    tx.commit().map_err(backend)?;
    Ok(results)
}

const COLUMNS: &str =
    "id, definition, status, created_at, updated_at, deadline, progress, owner, request";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<SagaRecord, StoreError>> {
    Ok(sql::Row {
        id: row.get(0)?,
        definition: row.get(1)?,
        status: row.get(2)?,
        created_ms: row.get(3)?,
        updated_ms: row.get(4)?,
        deadline_ms: row.get(5)?,
        progress: row.get(6)?,
        owner: row.get(7)?,
        request: row.get(8)?,
    }
    .decode())
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<Result<SagaRecord, StoreError>>>,
) -> Result<Vec<SagaRecord>, StoreError> {
    rows.map(|r| r.map_err(backend)?).collect()
}

impl SagaStore for SqliteStore {
    fn create<'a>(
        &'a self,
        saga: NewSaga,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.writer.create(saga, lease))
    }

    fn record_decision<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.writer.decision(id, lease, decision, progress))
    }

    fn finish<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.writer.finish(id, lease, status, progress))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<Renewed>, StoreError>> {
        let lease = lease.clone();
        let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        Box::pin(self.read(move |conn| {
            let now = to_millis(SystemTime::now());
            let tx = conn.transaction().map_err(backend)?;
            let mut renewed = Vec::new();
            for id in ids {
                let request: Option<Option<String>> = tx
                    .query_row(
                        "SELECT request FROM maas_saga WHERE id = ?1 AND owner = ?2 AND incarnation = ?3
                           AND status IN ('running', 'compensating', 'committing')",
                        params![id, lease.owner, lease.incarnation],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(backend)?;
                let Some(request) = request else { continue };
                tx.execute(
                    "UPDATE maas_saga SET lease_until = ?2,
                        request = CASE WHEN request = 'retry' THEN NULL ELSE request END
                     WHERE id = ?1",
                    params![id, now.saturating_add(millis(lease.duration))],
                )
                .map_err(backend)?;
                renewed.push(Renewed {
                    id: SagaId::from(id),
                    request: request.as_deref().and_then(AdminRequest::parse),
                });
            }
            tx.commit().map_err(backend)?;
            Ok(renewed)
        }))
    }

    fn claim<'a>(
        &'a self,
        lease: &'a Lease,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        let lease = lease.clone();
        Box::pin(self.read(move |conn| {
            let now = to_millis(SystemTime::now());
            let tx = conn.transaction().map_err(backend)?;
            let claimed = {
                let mut stmt = tx
                    .prepare(&format!(
                        "UPDATE maas_saga SET owner = ?1, incarnation = ?2, lease_until = ?3
                         WHERE id IN (
                            SELECT id FROM maas_saga
                            WHERE status IN ('running', 'compensating', 'committing')
                              AND (lease_until < ?4 OR (owner = ?1 AND incarnation <> ?2))
                            ORDER BY lease_until LIMIT ?5)
                         RETURNING {COLUMNS}"
                    ))
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(
                        params![
                            lease.owner,
                            lease.incarnation,
                            now.saturating_add(millis(lease.duration)),
                            now,
                            i64::try_from(limit).unwrap_or(i64::MAX)
                        ],
                        record,
                    )
                    .map_err(backend)?;
                collect(rows)?
            };
            tx.commit().map_err(backend)?;
            Ok(claimed)
        }))
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        let id = id.as_str().to_owned();
        Box::pin(self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM maas_saga WHERE id = ?1"),
                params![id],
                record,
            )
            .optional()
            .map_err(backend)?
            .transpose()
        }))
    }

    fn list(
        &self,
        status: Status,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM maas_saga WHERE status = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2"
                ))
                .map_err(backend)?;
            let rows = stmt.query_map(params![status.as_str(), i64::try_from(limit).unwrap_or(i64::MAX)], record).map_err(backend)?;
            collect(rows)
        }))
    }

    fn request<'a>(
        &'a self,
        id: &'a SagaId,
        request: AdminRequest,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let id = id.as_str().to_owned();
        Box::pin(self.read(move |conn| {
            conn.execute(
                "UPDATE maas_saga SET request = CASE WHEN request = 'abort' THEN 'abort' ELSE ?2 END
                 WHERE id = ?1 AND status IN ('running', 'compensating', 'committing')",
                params![id, request.as_str()],
            )
            .map(|n| n == 1)
            .map_err(backend)
        }))
    }

    fn gc(&self, retention: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.read(move |conn| {
            let cutoff = to_millis(SystemTime::now()).saturating_sub(millis(retention));
            conn.execute(
                "DELETE FROM maas_saga WHERE status IN ('committed', 'compensated') AND updated_at < ?1",
                params![cutoff],
            )
            .map(|n| n as u64)
            .map_err(backend)
        }))
    }
}
