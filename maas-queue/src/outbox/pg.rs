//! The outbox on PostgreSQL (feature `postgres`).
//!
//! **The table** (made by [`install`]): `id bigserial` (insertion order), `xid xid8` — the
//! inserting transaction's id, `pg_current_xact_id()` — the event id, topic, key, value,
//! headers, `traceparent`, and the time of insertion.
//!
//! **Never skipping a late commit.** A poller that remembers the last id it read skips a row
//! whose transaction took its id early and committed late: ids are handed out at insert, not
//! at commit. This relay remembers nothing: it deletes what it published, and reads only rows
//! whose transaction id is below the *xmin* of its snapshot (`pg_snapshot_xmin(
//! pg_current_snapshot())`) — below it, every transaction has committed or aborted, so no row
//! below it can still appear. Rows are published in id order among those, hence per key in the
//! order they were inserted. The cost: a long-running transaction anywhere in the database
//! holds xmin back and with it the relay (the backlog metrics show it).
//!
//! **One round trip a round**: the delete of the rows the broker acknowledged last round and
//! the read of the next batch are prepared once per session and sent together (pipelined);
//! the delete commits before the read takes its snapshot. The relay's session commits asynchronously
//! (`synchronous_commit = off`): a delete lost in a database crash publishes its records
//! once more — at least once still holds, and [`Deduplicator`](super::Deduplicator) drops
//! the repeat — and the relay never queues behind the business transactions' WAL flushes.
//!
//! **Waking up**: [`notify`] sends `NOTIFY <table>` — call it *after* the business transaction
//! commits (a `NOTIFY` inside it would take a database-wide lock at commit); the relay
//! `LISTEN`s, and polls every `poll_every` (default 1 s) as the backstop.
//!
//! **One relay at a time**: each replica may run a relay; the one that holds the session-level
//! advisory lock (`pg_try_advisory_lock`) publishes, the others retry every `poll_every`. When
//! the publishing process dies its session ends, the lock is released, and another relay takes
//! over within one poll interval.
//!
//! ```no_run
//! # async fn f(producer: maas_queue::Producer) -> Result<(), Box<dyn std::error::Error>> {
//! use maas_queue::Record;
//! use maas_queue::outbox::pg::{self, PgRelay};
//!
//! let (mut db, conn) = tokio_postgres::connect("host=db user=maas", tokio_postgres::NoTls).await?;
//! tokio::spawn(conn);
//! pg::install(&db, "maas_outbox").await?;
//! let relay = PgRelay::builder("host=db user=maas", producer).start();
//!
//! let tx = db.transaction().await?;
//! tx.execute("UPDATE models SET status = 'queued' WHERE id = $1", &[&"m-1"]).await?;
//! pg::enqueue(&tx, "maas_outbox", &Record::new("model-build-tasks", "m-1").key("m-1")).await?;
//! tx.commit().await?;
//! pg::notify(&db, "maas_outbox").await?;
//! # relay.shutdown().await; Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, GenericClient, NoTls, Socket};

use super::relay::{self, Report};
use super::{Stats, encoding, new_event_id};
use crate::{Producer, Record};

/// Why an outbox call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The table name is not a plain SQL identifier (letters, digits, `_`; not starting
    /// with a digit; at most 63 bytes).
    #[error("invalid outbox table name {0:?}")]
    Table(String),
    /// PostgreSQL failed.
    #[error("outbox database")]
    Db(#[from] tokio_postgres::Error),
}

fn checked(table: &str) -> Result<&str, OutboxError> {
    super::checked_table(table).ok_or_else(|| OutboxError::Table(table.to_owned()))
}

/// Creates the outbox `table` if it does not exist.
///
/// # Cancel safety
///
/// Cancel safe: the statement either ran or did not.
pub async fn install(client: &impl GenericClient, table: &str) -> Result<(), OutboxError> {
    let t = checked(table)?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                id bigserial PRIMARY KEY,
                xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                event_id text NOT NULL UNIQUE,
                topic text NOT NULL,
                key bytea,
                value bytea,
                headers bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )"
        ))
        .await?;
    Ok(())
}

/// Writes `record` into `table` within the caller's transaction (`client` is normally a
/// [`tokio_postgres::Transaction`]): it is published if and only if that transaction
/// commits. Returns its event id, also sent as the `maas-event-id` header. The record's
/// `traceparent` header, if any, travels with it (else the relay's producer adds a fresh one).
/// A fixed `partition` or `timestamp` on the record is not kept.
///
/// # Cancel safety
///
/// Cancel safe as the transaction is: a row written by a dropped call is rolled back with
/// the transaction, or committed with it.
pub async fn enqueue(
    client: &impl GenericClient,
    table: &str,
    record: &Record,
) -> Result<String, OutboxError> {
    let t = checked(table)?;
    let id = new_event_id();
    let headers = encoding::encode(&record.headers);
    let key = record.key.as_deref();
    let value = record.value.as_deref();
    client
        .execute(
            &format!(
                "INSERT INTO {t} (event_id, topic, key, value, headers) VALUES ($1, $2, $3, $4, $5)"
            ),
            &[&id, &record.topic, &key, &value, &headers],
        )
        .await?;
    Ok(id)
}

/// Wakes the relays of `table` (`NOTIFY`). Call it after the transaction that enqueued
/// commits; relays also poll, so a lost notification only delays.
///
/// # Cancel safety
///
/// Cancel safe.
pub async fn notify(client: &impl GenericClient, table: &str) -> Result<(), OutboxError> {
    let t = checked(table)?;
    client.batch_execute(&format!("NOTIFY {t}")).await?;
    Ok(())
}

/// The notifications and errors of a relay's connection.
type Messages = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send>,
>;

/// A connection and its messages, or why there is none.
type Connected = futures::future::BoxFuture<
    'static,
    Result<(tokio_postgres::Client, Messages), tokio_postgres::Error>,
>;

/// Opens a relay connection: plain, or through the TLS connector given to
/// [`PgRelayBuilder::tls`].
#[derive(Clone)]
struct Connector(Arc<dyn Fn(String) -> Connected + Send + Sync>);

impl Connector {
    fn new<T>(tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        Connector(Arc::new(move |conninfo: String| {
            let tls = tls.clone();
            Box::pin(async move {
                let (client, mut connection) = tokio_postgres::connect(&conninfo, tls).await?;
                let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                Ok((client, Box::pin(messages) as Messages))
            })
        }))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Configures a [`PgRelay`].
#[derive(Debug, Clone)]
pub struct PgRelayBuilder {
    conninfo: String,
    connector: Connector,
    producer: Producer,
    table: String,
    batch: i64,
    poll_every: Duration,
    lock_key: i64,
    metrics: relay::Metrics,
}

/// Publishes an outbox table's committed records through a producer, deleting each once the
/// broker acknowledged it. Several may run on one table; one publishes at a time.
#[derive(Debug)]
pub struct PgRelay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Stats>,
}

impl PgRelay {
    /// A relay of table `maas_outbox` on the database at `conninfo` (libpq style), publishing
    /// through `producer`.
    pub fn builder(conninfo: impl Into<String>, producer: Producer) -> PgRelayBuilder {
        PgRelayBuilder {
            conninfo: conninfo.into(),
            connector: Connector::new(NoTls),
            producer,
            table: "maas_outbox".to_owned(),
            batch: 2000,
            poll_every: Duration::from_secs(1),
            lock_key: 0x6d61_6173_6f62,
            metrics: Default::default(),
        }
    }

    /// The relay's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops after the batch in progress (published and deleted, or left for the next relay).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the relay is told to stop either way; dropping the future stops waiting.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl PgRelayBuilder {
    /// Connects through `tls` (e.g. `tokio_postgres_rustls::MakeRustlsConnect`) instead of
    /// plain TCP; the connection string's `sslmode` decides whether TLS is required.
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.connector = Connector::new(tls);
        self
    }

    /// The outbox table (default `maas_outbox`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Records read and published per round (default 2000). The larger the rounds while a
    /// backlog lasts, the less each record costs: 500 a round kept up with 0.67 × the
    /// writers' commit rate, 2000 with 0.71–0.93 × (docs/benchmarks.md). At most this many
    /// records are held in memory.
    pub fn batch(mut self, rows: u32) -> Self {
        self.batch = i64::from(rows.max(1));
        self
    }

    /// The poll interval, the backstop to notifications and the retry of a follower
    /// (default 1 s).
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every.max(Duration::from_millis(1));
        self
    }

    /// The advisory lock key the relays of this table share (default: one fixed key; give
    /// each outbox table its own).
    pub fn lock_key(mut self, key: i64) -> Self {
        self.lock_key = key;
        self
    }

    /// Reports backlog, oldest record age and published records (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &super::OutboxMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Starts the relay on the current Tokio runtime. It connects (and reconnects) on its own;
    /// failures are logged (`tracing` target `maas_queue::outbox`) and retried every poll.
    pub fn start(self) -> PgRelay {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(run(self, stopped, stats.clone()));
        PgRelay { stop, task, stats }
    }
}

async fn run(cfg: PgRelayBuilder, mut stopped: watch::Receiver<bool>, stats: Arc<Stats>) {
    let table = match checked(&cfg.table) {
        Ok(t) => t.to_owned(),
        Err(e) => {
            tracing::error!(target: "maas_queue::outbox", error = %e, "the relay cannot start");
            return;
        }
    };
    let mut report = Report::new(&cfg.metrics, &table);
    while !*stopped.borrow() {
        let outcome = session(&cfg, &table, &mut stopped, &stats, &mut report).await;
        stats
            .leader
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = outcome {
            tracing::warn!(target: "maas_queue::outbox", table = %table, error = %e, "outbox relay failed; retrying");
            relay::pause(cfg.poll_every, None, &mut stopped).await;
        }
    }
}

/// One connection's worth of relaying: until the connection fails or the relay stops.
async fn session(
    cfg: &PgRelayBuilder,
    table: &str,
    stopped: &mut watch::Receiver<bool>,
    stats: &Stats,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut messages) = (cfg.connector.0)(cfg.conninfo.clone()).await?;
    let wake = Arc::new(Notify::new());
    let woken = wake.clone();
    let driver = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => woken.notify_one(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The connection ended: wake the relay so it sees the failure.
        woken.notify_one();
    });
    let _driver = AbortOnDrop(driver);
    // The relay's own commits (deletes of published rows) do not wait for the WAL flush: a
    // delete lost in a database crash only publishes its records again (at least once), and
    // the business transactions' flushes are not shared with a relay waiting on its own.
    client
        .batch_execute(&format!("SET synchronous_commit = off; LISTEN {table}"))
        .await?;
    // Prepared once per session: a round sends no Parse and PostgreSQL plans nothing.
    let read = client
        .prepare(&format!(
            "SELECT id, event_id, topic, key, value, headers FROM {table}
             WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY id LIMIT $1"
        ))
        .await?;
    let delete = client
        .prepare(&format!("DELETE FROM {table} WHERE id = ANY($1)"))
        .await?;
    let lock = client.prepare("SELECT pg_try_advisory_lock($1)").await?;
    let backlog = client
        .prepare(&format!(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM {table}"
        ))
        .await?;
    let mut leader = false;
    // Acknowledged by the broker, not yet deleted: deleted at the start of the next round.
    let mut acknowledged: Vec<i64> = Vec::new();
    loop {
        if *stopped.borrow() {
            if !acknowledged.is_empty() {
                client.execute(&delete, &[&acknowledged]).await?;
                report.published(stats, acknowledged.len() as u64);
            }
            return Ok(());
        }
        if !leader {
            leader = client.query_one(&lock, &[&cfg.lock_key]).await?.get(0);
            stats
                .leader
                .store(leader, std::sync::atomic::Ordering::Relaxed);
            if leader {
                tracing::info!(target: "maas_queue::outbox", table, "this relay publishes the outbox");
            }
        }
        if leader && report.backlog_due() {
            let row = client.query_one(&backlog, &[]).await?;
            report.backlog(row.get(0), row.get(1));
        }
        let rows = if !leader {
            Vec::new()
        } else if acknowledged.is_empty() {
            client.query(&read, &[&cfg.batch]).await?
        } else {
            // One round trip: both statements go out before the first answer. Each is its
            // own transaction, so the delete has committed when the read takes its snapshot
            // and the read leaves the published rows out.
            let (ids, limit): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
                (&[&acknowledged], &[&cfg.batch]);
            let (deleted, rows) =
                futures::join!(client.execute(&delete, ids), client.query(&read, limit));
            deleted?;
            report.published(stats, acknowledged.len() as u64);
            acknowledged.clear();
            rows?
        };
        if rows.is_empty() {
            relay::pause(cfg.poll_every, Some(&wake), stopped).await;
            if client.is_closed() {
                return Ok(());
            }
            continue;
        }
        let rows = rows
            .iter()
            .map(|r| {
                let headers: Vec<u8> = r.get(5);
                (
                    r.get::<_, i64>(0),
                    relay::record(r.get(2), r.get(3), r.get(4), &headers, r.get(1)),
                )
            })
            .collect();
        let failed;
        (acknowledged, failed) = relay::publish(&cfg.producer, rows).await;
        if let Some(e) = failed {
            // Left in the table: published again next round (at least once).
            tracing::warn!(target: "maas_queue::outbox", table, error = %e, "an outbox record was not acknowledged; retrying");
            relay::pause(cfg.poll_every, None, stopped).await;
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
