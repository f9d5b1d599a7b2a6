//! The participant's side: a barrier that makes operations safe to repeat and to reorder.
//!
//! The engine may deliver an operation twice (a retry after a lost answer, a re-drive after
//! a crash) and may deliver a compensation *before* its action (the action's request was
//! still in flight when the engine gave up on it) — or a late action *after* its
//! compensation. A barrier, entered inside the participant's own database transaction,
//! sorts this out with insert-only writes to one table (`INSERT ... ON CONFLICT DO
//! NOTHING`, no row locks taken):
//!
//! | arrives | barrier says | participant does | answers |
//! |---|---|---|---|
//! | first action / try / confirm | [`Proceed`](Barrier::Proceed) | the work, in the same transaction | success |
//! | a repeat of one that applied | [`Duplicate`](Barrier::Duplicate) | nothing | success |
//! | action / try after its compensation / cancel | [`Refused`](Barrier::Refused) | nothing | rejection (409) |
//! | compensation / cancel, action applied | [`Proceed`](Barrier::Proceed) | the undo | success |
//! | compensation / cancel, no action seen | [`NullCompensation`](Barrier::NullCompensation) | nothing (and the action will be refused) | success |
//! | a repeated compensation / cancel | [`Duplicate`](Barrier::Duplicate) | nothing | success |
//!
//! The barrier row is written in the participant's transaction: if the participant rolls
//! back (a business failure, a crash), the barrier forgets the attempt too, and a retry is
//! judged afresh. Rows are only needed while the engine may still call; delete them after
//! a retention longer than any transaction's life with `cleanup`, or let `spawn_cleanup`
//! run it periodically in the background (it stops when its [`CleanupTask`] is dropped).
//!
//! ```text
//! BEGIN;
//!   barrier::postgres::enter(&tx, &key)  → Proceed?  then do the work
//! COMMIT;   -- or ROLLBACK on a business failure, then answer 409
//! ```

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use crate::{Operation, Reply};

/// A periodic barrier cleanup running in the background, started by
/// `postgres::spawn_cleanup` or `sqlite::spawn_cleanup`. It stops when dropped, or with
/// [`stop`](CleanupTask::stop); a failed pass is logged and the next one runs on schedule.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[derive(Debug)]
pub struct CleanupTask(tokio::task::JoinHandle<()>);

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl CleanupTask {
    /// Starts `pass` now and then every `every` (at least 1 ms; clamped to
    /// [`MAX_DURATION`](crate::MAX_DURATION)).
    pub(crate) fn every<F, Fut>(every: std::time::Duration, mut pass: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let every = crate::duration::clamp(every).max(std::time::Duration::from_millis(1));
        CleanupTask(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                pass().await;
            }
        }))
    }

    /// Stops the cleanup (a pass in progress is abandoned; its transaction rolls back).
    pub fn stop(self) {}
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// HTTP header names the engine's HTTP participants send (see `HttpParticipant`).
pub mod headers {
    /// The transaction id.
    pub const SAGA_ID: &str = "saga-id";
    /// The step or branch name.
    pub const BRANCH: &str = "saga-branch";
    /// The operation: `action`, `compensate`, `try`, `confirm`, `cancel`.
    pub const OPERATION: &str = "saga-operation";
    /// Attempt number, from 1.
    pub const ATTEMPT: &str = "saga-attempt";
    /// For tries: how long the reservation may stay unconfirmed, in milliseconds.
    pub const TTL_MS: &str = "saga-ttl-ms";
}

/// Which operation of which branch of which transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BranchKey {
    /// The transaction id.
    pub saga_id: String,
    /// The step or branch name.
    pub branch: String,
    /// The operation.
    pub op: Operation,
}

/// Why a request cannot be turned into a [`BranchKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a saga branch call: {0}")]
pub struct NotABranchCall(pub String);

impl BranchKey {
    /// The key of an engine call.
    pub fn of(call: &crate::BranchCall) -> Self {
        BranchKey {
            saga_id: call.saga_id.as_str().to_owned(),
            branch: call.branch.clone(),
            op: call.op,
        }
    }

    /// Reads the key from an HTTP participant request's headers.
    #[cfg(feature = "http")]
    pub fn from_headers(h: &http::HeaderMap) -> Result<Self, NotABranchCall> {
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| NotABranchCall(format!("missing header `{name}`")))
        };
        Ok(BranchKey {
            saga_id: get(headers::SAGA_ID)?,
            branch: get(headers::BRANCH)?,
            op: get(headers::OPERATION)?
                .parse()
                .map_err(|e: crate::UnknownOperation| NotABranchCall(e.to_string()))?,
        })
    }
}

/// What the barrier decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// First time: do the work in this transaction.
    Proceed,
    /// Already done: do nothing, answer success.
    Duplicate,
    /// A compensation or cancel for an action never seen: do nothing, answer success (the
    /// action, if it ever arrives, will be refused).
    NullCompensation,
    /// An action or try arriving after its compensation or cancel: do nothing, answer with
    /// a rejection.
    Refused,
}

impl Barrier {
    /// Whether the participant should do its work.
    pub fn should_apply(self) -> bool {
        self == Barrier::Proceed
    }

    /// The answer to give the engine once the transaction committed (for `Proceed`, the
    /// answer of successful work).
    pub fn reply(self) -> Reply {
        match self {
            Barrier::Refused => {
                Reply::Rejected("refused: already compensated or cancelled".to_owned())
            }
            _ => Reply::Done,
        }
    }
}

/// Stored reason of a barrier row: the operation ran, or a placeholder blocks it.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const APPLIED: &str = "applied";
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const BLOCKED: &str = "blocked";
