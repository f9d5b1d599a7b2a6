//! Where transactions are recorded: the [`SagaStore`] trait and its three implementations.
//!
//! | store | durable | for |
//! |---|---|---|
//! | [`MemoryStore`] | no | unit tests, demos |
//! | `SqliteStore` (feature `sqlite`) | yes, one file | a single engine process (the reference platform's default) |
//! | `PgStore` (feature `postgres`) | yes | several engine processes sharing one database |
//!
//! What the engine writes, and when:
//!
//! 1. **the intent** — the whole definition with payloads, before the first side effect
//!    (the one durable write a transaction cannot do without);
//! 2. **the decision**, when one is needed: to roll back, before the first compensation or
//!    cancel; for a TCC, to commit, before the first confirm — so a recovered transaction
//!    cannot change its mind;
//! 3. **the final status**, with each branch's state and attempts.
//!
//! The SQL stores batch concurrent writes of all three kinds into one transaction, so under
//! load a transaction costs well under one commit. Unfinished transactions carry a lease
//! (owner, incarnation, expiry); the engine renews the leases of what it runs, and claims
//! unfinished transactions whose lease expired — or that belonged to an earlier incarnation
//! of itself — to recover them. Finished transactions are deleted after a retention period.

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod batch;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod progress;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
pub use progress::{BranchProgress, BranchStatus};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use crate::{SagaId, Status, Transaction};

/// A boxed future, so that stores can be used as `dyn SagaStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error, or could not be reached.
    #[error("saga store: {0}")]
    Backend(String),
    /// A stored record could not be read back.
    #[error("saga store: corrupt record {id}: {reason}")]
    Corrupt {
        /// The record.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The store's writer has stopped (the engine is shutting down).
    #[error("saga store: closed")]
    Closed,
}

/// Who holds a transaction, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The engine's name (stable across restarts, unique among live engines).
    pub owner: String,
    /// This run of the engine: a restarted engine claims what its previous incarnation held
    /// at once, without waiting for the lease to expire.
    pub incarnation: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

/// An operator's request on a transaction another engine may be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRequest {
    /// Stop going forward and roll back.
    Abort,
    /// Retry waiting operations now instead of after their backoff.
    Retry,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl AdminRequest {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AdminRequest::Abort => "abort",
            AdminRequest::Retry => "retry",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "abort" => Some(AdminRequest::Abort),
            "retry" => Some(AdminRequest::Retry),
            _ => None,
        }
    }
}

/// A new transaction: its intent.
#[derive(Debug, Clone)]
pub struct NewSaga {
    /// Its id.
    pub id: SagaId,
    /// Its definition.
    pub transaction: Transaction,
    /// When unknown outcomes stop being retried (saga deadline, TCC TTL), from creation.
    pub deadline_after: Option<Duration>,
}

/// A transaction as stored.
#[derive(Debug, Clone)]
pub struct SagaRecord {
    /// Its id.
    pub id: SagaId,
    /// Its definition.
    pub transaction: Transaction,
    /// Its status.
    pub status: Status,
    /// When its intent was written.
    pub created_at: SystemTime,
    /// When it was last written.
    pub updated_at: SystemTime,
    /// When unknown outcomes stop being retried.
    pub deadline: Option<SystemTime>,
    /// Branch states and attempts at the last write (none before the first progress write).
    pub progress: Vec<BranchProgress>,
    /// The engine holding it, while unfinished.
    pub owner: Option<String>,
    /// A pending operator request.
    pub request: Option<AdminRequest>,
}

/// A still-owned transaction, with a request an operator left for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// The transaction.
    pub id: SagaId,
    /// The request, if any (retry requests are consumed by reading them).
    pub request: Option<AdminRequest>,
}

/// Durable storage for transactions. Implementations must make `create`,
/// `record_decision` and `finish` durable before their futures resolve, and must never
/// let two live leases cover one unfinished transaction.
pub trait SagaStore: Send + Sync + 'static {
    /// Writes the intent, leased to `lease`. `Ok(false)` when the id already exists.
    fn create<'a>(
        &'a self,
        saga: NewSaga,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records a running transaction's decision — [`Status::Compensating`] or
    /// [`Status::Committing`] — if `lease` still holds it. Recording the decision it already
    /// has is a no-op that succeeds.
    fn record_decision<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records the final status and releases the lease, if `lease` still holds it.
    fn finish<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Extends the lease of `ids`; returns those `lease` still holds, with pending requests.
    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<Renewed>, StoreError>>;

    /// Takes up to `limit` unfinished transactions whose lease expired or belonged to an
    /// earlier incarnation of `lease.owner`.
    fn claim<'a>(
        &'a self,
        lease: &'a Lease,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>>;

    /// One transaction.
    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>>;

    /// Transactions with `status`, newest first.
    fn list(
        &self,
        status: Status,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>>;

    /// Leaves an operator request on an unfinished transaction; `Ok(false)` if there is no
    /// such unfinished transaction.
    fn request<'a>(
        &'a self,
        id: &'a SagaId,
        request: AdminRequest,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes transactions that finished more than `retention` ago; returns how many.
    fn gc(&self, retention: Duration) -> BoxFuture<'_, Result<u64, StoreError>>;
}

/// Unix milliseconds of a time (0 before the epoch).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time of unix milliseconds.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Decodes a stored definition.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn decode_transaction(id: &str, json: &str) -> Result<Transaction, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.to_owned(),
        reason,
    };
    serde_json::from_str::<Transaction>(json)
        .map_err(|e| corrupt(e.to_string()))?
        .resolve()
        .map_err(|e| corrupt(e.to_string()))
}

/// Decodes stored progress (empty when absent).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn decode_progress(
    id: &str,
    json: Option<&str>,
) -> Result<Vec<BranchProgress>, StoreError> {
    match json {
        None => Ok(Vec::new()),
        Some(j) => serde_json::from_str(j).map_err(|e| StoreError::Corrupt {
            id: id.to_owned(),
            reason: e.to_string(),
        }),
    }
}
