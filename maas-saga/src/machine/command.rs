//! What a machine is told ([`Event`]) and what it asks for ([`Command`]).

use crate::Operation;

/// Run `op` on branch `branch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// The operation.
    pub op: Operation,
    /// Index of the step or branch.
    pub branch: usize,
}

/// What happened to a running operation, or to the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The running operation of this branch succeeded.
    Succeeded(usize),
    /// Its action or try failed for a business reason: it did not apply.
    Failed(usize),
    /// Its action or try gave unknown outcomes until attempts or the deadline ran out:
    /// it may have applied.
    Exhausted(usize),
    /// Stop going forward: an operator abort, a passed deadline or an expired TTL.
    Abort,
}

/// An event that does not fit the current state: a bug in the caller, reported instead of
/// acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event:?} does not apply to branch state {state}")]
pub struct InvalidTransition {
    /// The event.
    pub event: Event,
    /// The state it met.
    pub state: String,
}
