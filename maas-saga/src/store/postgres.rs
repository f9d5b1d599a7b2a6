//! A PostgreSQL store: for several engine processes sharing one database.
//!
//! Writes from concurrent transactions are batched into one database transaction per
//! batch (`UNNEST` of arrays, one statement per kind of write), on a dedicated connection.
//! Claims use `FOR UPDATE SKIP LOCKED`, so engines never block on, or take, each other's
//! rows; unfinished transactions are found through a partial index; times come from the
//! database clock, so engines on hosts with skewed clocks still agree on lease expiry.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, NoTls, Row};

use super::batch::{Batcher, Write, first_creates};
use super::sql::{self, backend, json};
use super::{
    AdminRequest, BoxFuture, BranchProgress, Lease, NewSaga, Renewed, SagaRecord, SagaStore,
    StoreError,
};
use crate::duration::millis;
use crate::{SagaId, Status};

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE IF NOT EXISTS maas_saga (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        definition JSONB NOT NULL,
        status TEXT NOT NULL,
        owner TEXT,
        incarnation TEXT,
        lease_until TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        deadline TIMESTAMPTZ,
        progress JSONB,
        request TEXT
    );
    CREATE INDEX IF NOT EXISTS maas_saga_unfinished ON maas_saga (lease_until)
        WHERE status IN ('running', 'compensating', 'committing');
    CREATE INDEX IF NOT EXISTS maas_saga_finished ON maas_saga (updated_at)
        WHERE status IN ('committed', 'compensated');",
];

/// How long opening a connection may take before the call that needs it fails: while the
/// database is unreachable, calls fail within this instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a free pooled connection.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool for `config` (libpq style) without TLS, of at most `size` connections.
///
/// Connections are checked when they are handed out (a connection the server closed — a
/// restart, a failover — is dropped and a new one opened), so the store recovers on its
/// own once the database is back.
fn pool(config: &str, size: usize) -> Result<Pool, StoreError> {
    let config: tokio_postgres::Config = config.parse().map_err(backend)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(WAIT_TIMEOUT))
        .build()
        .map_err(backend)
}

/// A [`SagaStore`] in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
    writer: Batcher,
}

impl PgStore {
    /// Connects with a libpq-style configuration string (e.g.
    /// `host=127.0.0.1 user=postgres dbname=app`) and migrates the schema. Uses a pool of up
    /// to six connections: four committing batched writes in parallel, the rest for claims,
    /// renewals and queries (see [`connect_with`](PgStore::connect_with) for another number).
    /// The connection is plain TCP; for TLS build a pool with a TLS connector and use
    /// [`from_pool`](PgStore::from_pool).
    ///
    /// A connection lost later (the server restarted) is replaced when next needed: calls
    /// fail with [`StoreError::Backend`] while the database is unreachable — within five
    /// seconds, not hanging — and work again once it is back, without a new store.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future closes the connections opened so far; a migration runs
    /// in a transaction of its own.
    pub async fn connect(config: &str) -> Result<Self, StoreError> {
        Self::connect_with(config, 4).await
    }

    /// Like [`connect`](PgStore::connect), with `writers` connections committing batches in
    /// parallel (plus two for claims, renewals and queries).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`connect`](PgStore::connect).
    pub async fn connect_with(config: &str, writers: usize) -> Result<Self, StoreError> {
        let writers = writers.max(1);
        Self::from_pool_with(pool(config, writers + 2)?, writers).await
    }

    /// A store on connections from `pool` (which the caller configured: TLS, sizes, timeouts)
    /// with four batch writers; migrates the schema. Each writer holds a connection only
    /// while it commits a batch, so the pool needs at least five connections to commit four
    /// batches while a claim runs.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use maas_saga::store::PgStore;
    /// use maas_saga::deadpool_postgres::{Manager, Pool};
    ///
    /// let config: tokio_postgres::Config = "host=db user=maas dbname=maas".parse()?;
    /// let manager = Manager::new(config, tokio_postgres::NoTls); // or a TLS connector
    /// let pool = Pool::builder(manager).max_size(8).build()?;
    /// let store = PgStore::from_pool(pool).await?;
    /// # drop(store); Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the migration runs in a transaction of its own.
    pub async fn from_pool(pool: Pool) -> Result<Self, StoreError> {
        Self::from_pool_with(pool, 4).await
    }

    /// Like [`from_pool`](PgStore::from_pool), with `writers` batch writers.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`from_pool`](PgStore::from_pool).
    pub async fn from_pool_with(pool: Pool, writers: usize) -> Result<Self, StoreError> {
        {
            let mut control = pool.get().await.map_err(backend)?;
            migrate(&mut control).await?;
        }
        let commits = (0..writers.max(1))
            .map(|_| {
                let pool = pool.clone();
                move |writes: Vec<Write>| {
                    let pool = pool.clone();
                    async move {
                        let result = match pool.get().await {
                            Ok(client) => match client.prepare_cached(BATCH).await {
                                Ok(statement) => commit_batch(&client, &statement, &writes).await,
                                Err(e) => Err(backend(e)),
                            },
                            Err(e) => Err(backend(e)),
                        };
                        (writes, result)
                    }
                }
            })
            .collect();
        Ok(PgStore {
            pool,
            writer: Batcher::spawn(256, commits),
        })
    }

    async fn control(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(backend)
    }
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    // One migrator at a time across processes.
    tx.execute("SELECT pg_advisory_xact_lock(7301453200042)", &[])
        .await
        .map_err(backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS maas_saga_migrations (version INTEGER PRIMARY KEY)",
    )
    .await
    .map_err(backend)?;
    let done: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM maas_saga_migrations",
            &[],
        )
        .await
        .map_err(backend)?
        .get(0);
    for (i, sql) in SCHEMA.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO maas_saga_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

/// A whole batch in one statement (so one round trip and one commit): the intents, the
/// decisions and the final statuses, each from arrays, as data-modifying CTEs. A write that
/// did not apply (a duplicate id, a lost lease) is simply not returned.
const BATCH: &str = "
WITH created AS (
    INSERT INTO maas_saga (id, kind, name, definition, status, owner, incarnation,
        lease_until, created_at, updated_at, deadline)
    SELECT t.id, t.kind, t.name, t.def::jsonb, 'running', t.owner, t.inc,
        now() + t.lease_ms * interval '1 millisecond', now(), now(),
        now() + t.dl_ms * interval '1 millisecond'
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::bigint[], $8::bigint[])
         AS t(id, kind, name, def, owner, inc, lease_ms, dl_ms)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), decided AS (
    UPDATE maas_saga s SET status = t.status, progress = t.progress::jsonb, updated_at = now()
    FROM UNNEST($9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
         AS t(id, owner, inc, status, progress)
    WHERE s.id = t.id AND s.owner = t.owner AND s.incarnation = t.inc
      AND s.status IN ('running', t.status)
    RETURNING s.id
), finished AS (
    UPDATE maas_saga s SET status = t.status, progress = t.progress::jsonb, updated_at = now(),
        owner = NULL, incarnation = NULL, lease_until = NULL, request = NULL
    FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[], $18::text[])
         AS t(id, owner, inc, status, progress)
    WHERE s.id = t.id AND s.owner = t.owner AND s.incarnation = t.inc
      AND s.status IN ('running', 'compensating', 'committing')
    RETURNING s.id
)
SELECT 'c', id FROM created UNION ALL SELECT 'm', id FROM decided UNION ALL SELECT 'f', id FROM finished";

async fn commit_batch(
    client: &Client,
    statement: &tokio_postgres::Statement,
    writes: &[Write],
) -> Result<Vec<bool>, StoreError> {
    let firsts = first_creates(writes);
    let mut c = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut m = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut f = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (write, first) in writes.iter().zip(&firsts) {
        match write {
            Write::Create(s, lease) if *first => {
                c.0.push(s.id.as_str().to_owned());
                c.1.push(s.transaction.kind().as_str().to_owned());
                c.2.push(s.transaction.name().to_owned());
                c.3.push(serde_json::to_string(&s.transaction).map_err(backend)?);
                c.4.push(lease.owner.clone());
                c.5.push(lease.incarnation.clone());
                c.6.push(millis(lease.duration));
                c.7.push(s.deadline_after.map(millis));
            }
            Write::Create(..) => {}
            Write::Decision {
                id,
                lease,
                status,
                progress,
            } => {
                m.0.push(id.as_str().to_owned());
                m.1.push(lease.owner.clone());
                m.2.push(lease.incarnation.clone());
                m.3.push(status.as_str().to_owned());
                m.4.push(json(progress));
            }
            Write::Finish {
                id,
                lease,
                status,
                progress,
            } => {
                f.0.push(id.as_str().to_owned());
                f.1.push(lease.owner.clone());
                f.2.push(lease.incarnation.clone());
                f.3.push(status.as_str().to_owned());
                f.4.push(json(progress));
            }
        }
    }
    let rows = client
        .query(
            statement,
            &[
                &c.0, &c.1, &c.2, &c.3, &c.4, &c.5, &c.6, &c.7, &m.0, &m.1, &m.2, &m.3, &m.4, &f.0,
                &f.1, &f.2, &f.3, &f.4,
            ],
        )
        .await
        .map_err(backend)?;
    let changed: std::collections::HashSet<(String, String)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let has =
        |kind: &str, id: &SagaId| changed.contains(&(kind.to_owned(), id.as_str().to_owned()));
    Ok(writes
        .iter()
        .zip(firsts)
        .map(|(w, first)| match w {
            Write::Create(s, _) => first && has("c", &s.id),
            Write::Decision { id, .. } => has("m", id),
            Write::Finish { id, .. } => has("f", id),
        })
        .collect())
}

const COLUMNS: &str = "s.id, s.definition::text, s.status,
    (extract(epoch from s.created_at) * 1000)::bigint,
    (extract(epoch from s.updated_at) * 1000)::bigint,
    (extract(epoch from s.deadline) * 1000)::bigint,
    s.progress::text, s.owner, s.request";

fn record(row: &Row) -> Result<SagaRecord, StoreError> {
    sql::Row {
        id: row.get(0),
        definition: row.get(1),
        status: row.get(2),
        created_ms: row.get(3),
        updated_ms: row.get(4),
        deadline_ms: row.get(5),
        progress: row.get(6),
        owner: row.get(7),
        request: row.get(8),
    }
    .decode()
}

impl SagaStore for PgStore {
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
        Box::pin(async move {
            let ids: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
            let client = self.control().await?;
            let rows = client
                .query(
                    "WITH held AS (
                        SELECT id, request FROM maas_saga
                        WHERE id = ANY($1) AND owner = $2 AND incarnation = $3
                          AND status IN ('running', 'compensating', 'committing')
                        FOR UPDATE)
                     UPDATE maas_saga s SET lease_until = now() + $4::bigint * interval '1 millisecond',
                        request = CASE WHEN s.request = 'retry' THEN NULL ELSE s.request END
                     FROM held WHERE s.id = held.id
                     RETURNING s.id, held.request",
                    &[
                        &ids,
                        &lease.owner,
                        &lease.incarnation,
                        &millis(lease.duration),
                    ],
                )
                .await
                .map_err(backend)?;
            Ok(rows
                .iter()
                .map(|r| Renewed {
                    id: SagaId::from(r.get::<_, String>(0)),
                    request: r
                        .get::<_, Option<String>>(1)
                        .as_deref()
                        .and_then(AdminRequest::parse),
                })
                .collect())
        })
    }

    fn claim<'a>(
        &'a self,
        lease: &'a Lease,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.control().await?;
            let rows = client
                .query(
                    &format!(
                        "UPDATE maas_saga s SET owner = $1, incarnation = $2,
                            lease_until = now() + $3::bigint * interval '1 millisecond'
                         FROM (SELECT id FROM maas_saga
                               WHERE status IN ('running', 'compensating', 'committing')
                                 AND (lease_until < now() OR (owner = $1 AND incarnation <> $2))
                               ORDER BY lease_until
                               LIMIT $4
                               FOR UPDATE SKIP LOCKED) c
                         WHERE s.id = c.id
                         RETURNING {COLUMNS}"
                    ),
                    &[
                        &lease.owner,
                        &lease.incarnation,
                        &millis(lease.duration),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(backend)?;
            rows.iter().map(record).collect()
        })
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.control().await?;
            let row = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM maas_saga s WHERE s.id = $1"),
                    &[&id.as_str()],
                )
                .await
                .map_err(backend)?;
            row.as_ref().map(record).transpose()
        })
    }

    fn list(
        &self,
        status: Status,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.control().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM maas_saga s WHERE s.status = $1
                         ORDER BY s.created_at DESC, s.id DESC LIMIT $2"
                    ),
                    &[&status.as_str(), &i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(backend)?;
            rows.iter().map(record).collect()
        })
    }

    fn request<'a>(
        &'a self,
        id: &'a SagaId,
        request: AdminRequest,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.control().await?;
            let n = client
                .execute(
                    "UPDATE maas_saga SET request = CASE WHEN request = 'abort' THEN 'abort' ELSE $2 END
                     WHERE id = $1 AND status IN ('running', 'compensating', 'committing')",
                    &[&id.as_str(), &request.as_str()],
                )
                .await
                .map_err(backend)?;
            Ok(n == 1)
        })
    }

    fn gc(&self, retention: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let client = self.control().await?;
            client
                .execute(
                    "DELETE FROM maas_saga WHERE status IN ('committed', 'compensated')
                       AND updated_at < now() - $1::bigint * interval '1 millisecond'",
                    &[&millis(retention)],
                )
                .await
                .map_err(backend)
        })
    }
}
