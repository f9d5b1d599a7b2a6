//! The pure core: what to do next, given what has happened.
//!
//! A machine holds the status of every step or branch and the transaction's phase. It never
//! calls anyone: the executor asks it for [`Command`]s, runs them against participants, and
//! feeds back [`Event`]s. This keeps every decision deterministic and testable — the
//! transition tables are tested exhaustively, and a property test drives machines with
//! random outcomes and crashes against a model.

use serde::{Deserialize, Serialize};

use crate::Operation;
use crate::saga_machine::SagaMachine;
use crate::tcc_machine::TccMachine;

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

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running forward (actions, tries, or confirms once decided).
    Running,
    /// Undoing (compensations or cancels): the decision to roll back is made.
    Compensating,
    /// Applying (a TCC's confirms): the decision to commit is made.
    Committing,
    /// Done: every action (or confirm) applied.
    Committed,
    /// Done: everything that may have applied was undone.
    Compensated,
}

impl Status {
    /// The lower-case name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Compensating => "compensating",
            Status::Committing => "committing",
            Status::Committed => "committed",
            Status::Compensated => "compensated",
        }
    }

    /// Whether the transaction is over.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Committed | Status::Compensated)
    }

    /// Parses [`as_str`](Status::as_str).
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "compensating" => Status::Compensating,
            "committing" => Status::Committing,
            "committed" => Status::Committed,
            "compensated" => Status::Compensated,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga machine or a TCC machine.
#[derive(Debug, Clone)]
pub(crate) enum Machine {
    Saga(SagaMachine),
    Tcc(TccMachine),
}

impl Machine {
    pub(crate) fn start(&mut self) -> Vec<Command> {
        match self {
            Machine::Saga(m) => m.start(),
            Machine::Tcc(m) => m.start(),
        }
    }

    pub(crate) fn apply(&mut self, event: Event) -> Result<Vec<Command>, InvalidTransition> {
        match self {
            Machine::Saga(m) => m.apply(event),
            Machine::Tcc(m) => m.apply(event),
        }
    }

    pub(crate) fn status(&self) -> Status {
        match self {
            Machine::Saga(m) => m.status(),
            Machine::Tcc(m) => m.status(),
        }
    }

    /// Each branch's status, as a lower-case name.
    pub(crate) fn branch_states(&self) -> Vec<&'static str> {
        match self {
            Machine::Saga(m) => m.steps().iter().map(|s| s.as_str()).collect(),
            Machine::Tcc(m) => m.branches().iter().map(|s| s.as_str()).collect(),
        }
    }
}
