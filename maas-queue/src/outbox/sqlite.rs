//! The outbox on SQLite (feature `sqlite`), for a service that keeps its data in one SQLite
//! file (the platform's embedded mode).
//!
//! **No late commits to skip**: SQLite runs one write transaction at a time, and a row's id is
//! taken inside it, so a row with a lower id is always committed before any row with a higher
//! one is written. The relay reads committed rows in id order and deletes what the broker
//! acknowledged.
//!
//! **One relay at a time**: relays of one file share a lease row (`<table>_lease`), taken for
//! 5 s and renewed every round; a relay that stops hands it over at once, and when its holder
//! dies another relay takes it once it runs out.
//! **Waking up**: [`SqliteRelay::waker`] after the commit, and a poll as the backstop.
//!
//! ```no_run
//! # async fn f(producer: maas_queue::Producer) -> Result<(), Box<dyn std::error::Error>> {
//! use maas_queue::Record;
//! use maas_queue::outbox::sqlite::{self, SqliteRelay};
//!
//! let mut db = rusqlite::Connection::open("app.db")?;
//! sqlite::install(&db, "outbox")?;
//! let relay = SqliteRelay::builder("app.db", producer).table("outbox").start();
//! let tx = db.transaction()?;
//! tx.execute("UPDATE models SET status = 'queued' WHERE id = ?1", ["m-1"])?;
//! sqlite::enqueue(&tx, "outbox", &Record::new("model-build-tasks", "m-1").key("m-1"))?;
//! tx.commit()?;
//! relay.waker().notify_one();
//! # relay.shutdown().await; Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::relay::{self, Report};
use super::{Stats, checked_table, encoding, new_event_id};
use crate::{Producer, Record};

/// Why an outbox call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteOutboxError {
    /// The table name is not a plain SQL identifier.
    #[error("invalid outbox table name {0:?}")]
    Table(String),
    /// SQLite failed.
    #[error("outbox database")]
    Db(#[from] rusqlite::Error),
}

fn table_of(table: &str) -> Result<&str, SqliteOutboxError> {
    checked_table(table).ok_or_else(|| SqliteOutboxError::Table(table.to_owned()))
}

/// Creates the outbox `table` (and its lease row's table) if they do not exist.
pub fn install(db: &Connection, table: &str) -> Result<(), SqliteOutboxError> {
    let t = table_of(table)?;
    db.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            key BLOB,
            value BLOB,
            headers BLOB NOT NULL,
            created_ms INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS {t}_lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            holder TEXT NOT NULL,
            until_ms INTEGER NOT NULL
        );"
    ))?;
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Writes `record` into `table` within the caller's transaction (`db` is normally a
/// [`rusqlite::Transaction`], which derefs to a connection): published if and only if it
/// commits. Returns its event id. As [`pg::enqueue`](super::pg::enqueue) otherwise.
pub fn enqueue(db: &Connection, table: &str, record: &Record) -> Result<String, SqliteOutboxError> {
    let t = table_of(table)?;
    let id = new_event_id();
    db.execute(
        &format!(
            "INSERT INTO {t} (event_id, topic, key, value, headers, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        params![
            id,
            record.topic,
            record.key.as_deref(),
            record.value.as_deref(),
            encoding::encode(&record.headers),
            now_ms()
        ],
    )?;
    Ok(id)
}

/// Configures a [`SqliteRelay`].
#[derive(Debug, Clone)]
pub struct SqliteRelayBuilder {
    path: PathBuf,
    producer: Producer,
    table: String,
    batch: u32,
    poll_every: Duration,
    metrics: relay::Metrics,
}

/// Publishes an SQLite outbox table's committed records through a producer, deleting each
/// once the broker acknowledged it.
#[derive(Debug)]
pub struct SqliteRelay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
}

impl SqliteRelay {
    /// A relay of table `maas_outbox` in the SQLite file at `path`.
    pub fn builder(path: impl Into<PathBuf>, producer: Producer) -> SqliteRelayBuilder {
        SqliteRelayBuilder {
            path: path.into(),
            producer,
            table: "maas_outbox".to_owned(),
            batch: 500,
            poll_every: Duration::from_secs(1),
            metrics: Default::default(),
        }
    }

    /// Wakes the relay: call `notify_one()` after a transaction that enqueued commits.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The relay's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops after the batch in progress.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the relay is told to stop either way.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl SqliteRelayBuilder {
    /// The outbox table (default `maas_outbox`).
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Records read and published per round (default 500).
    pub fn batch(mut self, rows: u32) -> Self {
        self.batch = rows.max(1);
        self
    }

    /// The poll interval (default 1 s).
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every.max(Duration::from_millis(1));
        self
    }

    /// Reports backlog, oldest record age and published records (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &super::OutboxMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Starts the relay on the current Tokio runtime (database work on the blocking pool).
    pub fn start(self) -> SqliteRelay {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(self, stopped, stats.clone(), wake.clone()));
        SqliteRelay {
            stop,
            task,
            stats,
            wake,
        }
    }
}

/// How long a relay's lease lasts without renewal.
const LEASE_MS: i64 = 5_000;

/// A batch read under the lease: `(id, record)` in id order, and the backlog (rows, oldest
/// age in s) when it was asked for.
type Batch = (Vec<(i64, Record)>, Option<(i64, f64)>);

fn read_batch(
    db: &Connection,
    t: &str,
    me: &str,
    batch: u32,
    with_backlog: bool,
) -> rusqlite::Result<Option<Batch>> {
    let now = now_ms();
    // Take or renew the lease in one statement: ours if free, expired, or already ours.
    let taken = db.execute(
        &format!(
            "INSERT INTO {t}_lease (id, holder, until_ms) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET holder = ?1, until_ms = ?2
             WHERE {t}_lease.holder = ?1 OR {t}_lease.until_ms < ?3"
        ),
        params![me, now + LEASE_MS, now],
    )?;
    if taken == 0 {
        return Ok(None);
    }
    let mut stmt = db.prepare_cached(&format!(
        "SELECT id, event_id, topic, key, value, headers FROM {t} ORDER BY id LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map([batch], |r| {
            let headers: Vec<u8> = r.get(5)?;
            Ok((
                r.get::<_, i64>(0)?,
                relay::record(r.get(2)?, r.get(3)?, r.get(4)?, &headers, r.get(1)?),
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let backlog = if with_backlog {
        let (n, oldest) = db.query_row(
            &format!("SELECT count(*), min(created_ms) FROM {t}"),
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)),
        )?;
        Some((n, oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0)))
    } else {
        None
    };
    Ok(Some((rows, backlog)))
}

/// Runs `work` on the relay's connection, on the blocking pool.
async fn on_db<T: Send + 'static>(
    db: &Arc<Mutex<Connection>>,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> rusqlite::Result<T> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&db.lock().unwrap_or_else(|p| p.into_inner())))
        .await
        .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery))
}

async fn run(
    cfg: SqliteRelayBuilder,
    mut stopped: watch::Receiver<bool>,
    stats: Arc<Stats>,
    wake: Arc<Notify>,
) {
    let Some(t) = checked_table(&cfg.table).map(str::to_owned) else {
        tracing::error!(target: "maas_queue::outbox", table = %cfg.table, "invalid outbox table name; the relay cannot start");
        return;
    };
    let mut report = Report::new(&cfg.metrics, &t);
    let me = new_event_id();
    let path = cfg.path.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(5))?;
        Ok::<_, rusqlite::Error>(db)
    })
    .await;
    let db = match opened {
        Ok(Ok(db)) => Arc::new(Mutex::new(db)),
        Ok(Err(e)) => {
            tracing::error!(target: "maas_queue::outbox", error = %e, "cannot open the outbox database");
            return;
        }
        Err(_) => return,
    };
    while !*stopped.borrow() {
        let (tt, me2, batch, with_backlog) =
            (t.clone(), me.clone(), cfg.batch, report.backlog_due());
        let read = on_db(&db, move |db| {
            read_batch(db, &tt, &me2, batch, with_backlog)
        })
        .await;
        let rows = match read {
            Ok(Some((rows, backlog))) => {
                stats
                    .leader
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                if let Some((n, oldest)) = backlog {
                    report.backlog(n, oldest);
                }
                rows
            }
            Ok(None) => {
                stats
                    .leader
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(target: "maas_queue::outbox", table = %t, error = %e, "outbox relay failed; retrying");
                Vec::new()
            }
        };
        if rows.is_empty() {
            relay::pause(cfg.poll_every, Some(&wake), &mut stopped).await;
            continue;
        }
        let (acknowledged, failed) = relay::publish(&cfg.producer, rows).await;
        let n = acknowledged.len() as u64;
        if n > 0 {
            let tt = t.clone();
            let deleted = on_db(&db, move |db| {
                let tx = db.unchecked_transaction()?;
                {
                    let mut del = tx.prepare_cached(&format!("DELETE FROM {tt} WHERE id = ?1"))?;
                    for id in &acknowledged {
                        del.execute([id])?;
                    }
                }
                tx.commit()
            })
            .await;
            match deleted {
                Ok(()) => report.published(&stats, n),
                Err(e) => {
                    tracing::warn!(target: "maas_queue::outbox", table = %t, error = %e, "published outbox rows could not be deleted; they will be published again");
                }
            }
        }
        if let Some(e) = failed {
            tracing::warn!(target: "maas_queue::outbox", table = %t, error = %e, "an outbox record was not acknowledged; retrying");
            relay::pause(cfg.poll_every, None, &mut stopped).await;
        }
    }
    // Stopping: hand the lease over at once rather than after it runs out.
    let released = on_db(&db, move |db| {
        db.execute(&format!("DELETE FROM {t}_lease WHERE holder = ?1"), [&me])
    })
    .await;
    if let Err(e) = released {
        tracing::debug!(target: "maas_queue::outbox", error = %e, "the outbox lease was not released; it runs out");
    }
}
