//! What the engine shows of a transaction: [`Outcome`] when it ends, [`SagaView`] on query.

use std::time::SystemTime;

use crate::store::BranchProgress;
use crate::{SagaId, Status, TransactionKind};

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The transaction.
    pub id: SagaId,
    /// `Committed` or `Compensated`.
    pub status: Status,
    /// Each branch's final state and attempts.
    pub branches: Vec<BranchProgress>,
}

/// A transaction as the query API shows it.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// Its id.
    pub id: SagaId,
    /// Its name.
    pub name: String,
    /// Saga, TCC or XA.
    pub kind: TransactionKind,
    /// Its status.
    pub status: Status,
    /// Each branch's state and attempts: live when this engine runs it, else as last
    /// written.
    pub branches: Vec<BranchProgress>,
    /// When it was created, if known.
    pub created_at: Option<SystemTime>,
    /// Whether this engine is running it right now.
    pub live_here: bool,
}
