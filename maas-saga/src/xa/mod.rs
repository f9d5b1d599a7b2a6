//! Two-phase commit (XA) over PostgreSQL prepared transactions (the branches: feature
//! `postgres`).
//!
//! An [`Xa`](crate::Xa) transaction's branches are PostgreSQL databases, each an
//! [`XaBranch`]: a pool and the caller's [`XaWork`]. The engine runs it like this:
//!
//! 1. **the intent** is written to the saga store;
//! 2. **phase 1**, every branch at once: `BEGIN`, a row in the branch's marker table, the
//!    caller's SQL, `PREPARE TRANSACTION '<gid>'` — the gid is
//!    `maas:<engine>:<transaction>:<branch>`;
//! 3. **the decision** — commit when every branch prepared, else roll back — is made
//!    durable in the store;
//! 4. **phase 2**: `COMMIT PREPARED` or `ROLLBACK PREPARED` on every branch, retried until it
//!    succeeds.
//!
//! **No ambiguity.** "Prepared transaction does not exist" during phase 2 is not taken for
//! success: the marker row, written in the prepared transaction, commits with it — present
//! means the branch committed, absent that it rolled back (or never prepared). The result
//! opposite to the decision is [`XaError::Contradicted`], retried and reported, never
//! swallowed.
//!
//! **Recovery.** A transaction recovered from the store before its decision is rolled back
//! (presumed abort); after it, phase 2 is finished. On every recovery pass the engine also
//! scans `pg_prepared_xacts` of its branch databases: a prepared transaction of ours whose
//! transaction has finished — a late phase 1 that landed after the rollback — is rolled back
//! (or committed, as the store says); one whose transaction the store does not know is
//! rolled back once it is older than a lease, if this engine made it. So no prepared
//! transaction outlives a crash by more than a lease and a recovery interval. The age of the
//! oldest one is the `maas_saga_xa_oldest_prepared_seconds` gauge.
//!
//! **Needs** `max_prepared_transactions` > 0 on every branch database (PostgreSQL's default
//! is 0); [`EngineBuilder::start`](crate::EngineBuilder::start) refuses with
//! [`EngineError::Xa`](crate::EngineError::Xa) and
//! [`XaError::PreparedTransactionsDisabled`] otherwise.

#[cfg(feature = "postgres")]
mod branch;
mod gid;
#[cfg(feature = "postgres")]
pub(crate) mod recovery;

#[cfg(feature = "postgres")]
pub use branch::{XaBranch, XaWork};
pub(crate) use gid::Gid;

/// The default marker table.
#[cfg(feature = "postgres")]
pub(crate) const MARKER_TABLE: &str = "maas_xa_marker";

/// Why an XA branch could not do what was asked.
#[cfg(feature = "postgres")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XaError {
    /// The branch database has `max_prepared_transactions = 0`.
    #[error(
        "the database of XA branch `{branch}` has max_prepared_transactions = 0: prepared transactions are disabled (set max_prepared_transactions above 0 and restart PostgreSQL)"
    )]
    PreparedTransactionsDisabled {
        /// The branch.
        branch: String,
    },
    /// The marker table's name is not a plain SQL identifier.
    #[error("invalid XA marker table name {0:?}")]
    MarkerTable(String),
    /// Phase 2 found the branch resolved the other way than decided.
    #[error(
        "prepared transaction {gid} is gone and its branch {}, against the decision",
        if *committed { "committed" } else { "rolled back" }
    )]
    Contradicted {
        /// The global transaction id.
        gid: String,
        /// Whether the branch committed.
        committed: bool,
    },
    /// No connection from the branch's pool.
    #[error("XA branch database: no connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// PostgreSQL failed.
    #[error("XA branch database")]
    Db(#[from] tokio_postgres::Error),
}

/// Letters, digits and `_`, not starting with a digit, at most 63 bytes.
#[cfg(feature = "postgres")]
fn plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
