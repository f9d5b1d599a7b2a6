//! The TCC transaction's transition table.
//!
//! | branch state | event | next state | notes |
//! |---|---|---|---|
//! | `Pending` | start | `Trying` | command: try (all branches at once) |
//! | `Trying` | `Succeeded` | `Tried` | reserved |
//! | `Trying` | `Failed` | `Failed` | rejected; the transaction cancels |
//! | `Trying` | `Exhausted` | `Uncertain` | may have reserved; the transaction cancels |
//! | `Tried` | every branch `Tried` | `Confirming` | command: confirm |
//! | `Tried`, `Uncertain`, `Failed` | cancelling | `Cancelling` | command: cancel (for a rejected try, a no-op behind the barrier that blocks any late duplicate) |
//! | `Pending` | cancelling | `Skipped` | (`Uncertain` → cancel, when re-driven after a crash) |
//! | `Confirming` | `Succeeded` | `Confirmed` | |
//! | `Cancelling` | `Succeeded` | `Cancelled` | |
//!
//! `Abort` (an operator, or the TTL passing) turns a transaction that is still trying into
//! a cancelling one; once every try succeeded the decision to confirm is final.

use serde::{Deserialize, Serialize};

use super::command::{Command, Event, InvalidTransition};
use super::status::Status;
use crate::Operation;

/// The state of one TCC branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchState {
    /// Not started.
    Pending,
    /// Its try is running.
    Trying,
    /// Its try reserved the resources.
    Tried,
    /// Its try failed: nothing reserved.
    Failed,
    /// Its try's outcome stayed unknown: something may be reserved.
    Uncertain,
    /// Its confirm is running.
    Confirming,
    /// Confirmed.
    Confirmed,
    /// Its cancel is running.
    Cancelling,
    /// Cancelled.
    Cancelled,
    /// Never tried.
    Skipped,
}

impl BranchState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchState::Pending => "pending",
            BranchState::Trying => "trying",
            BranchState::Tried => "tried",
            BranchState::Failed => "failed",
            BranchState::Uncertain => "uncertain",
            BranchState::Confirming => "confirming",
            BranchState::Confirmed => "confirmed",
            BranchState::Cancelling => "cancelling",
            BranchState::Cancelled => "cancelled",
            BranchState::Skipped => "skipped",
        }
    }
}

/// Where a TCC transaction stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TccPhase {
    /// Trying every branch; no decision yet.
    Trying,
    /// Decided to commit: confirming every branch.
    Confirming,
    /// Decided to roll back: cancelling every branch.
    Cancelling,
}

impl TccPhase {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TccPhase::Trying => "trying",
            TccPhase::Confirming => "confirming",
            TccPhase::Cancelling => "cancelling",
        }
    }
}

/// A TCC transaction's branches and phase.
#[derive(Debug, Clone)]
pub struct TccMachine {
    branches: Vec<BranchState>,
    phase: TccPhase,
    /// Re-driven after a crash: a branch not tried in this run may have been tried in an
    /// earlier one, so cancelling cancels it instead of skipping it.
    recovered: bool,
}

impl TccMachine {
    /// A transaction about to try `n` branches.
    pub fn new(n: usize) -> Self {
        TccMachine {
            branches: vec![BranchState::Pending; n],
            phase: TccPhase::Trying,
            recovered: false,
        }
    }

    /// A transaction re-driven from its intent after a crash, before any decision was
    /// recorded: it tries again (repeated tries are no-ops behind a barrier), and if it
    /// cancels, branches it did not try are cancelled too.
    pub fn recovered(n: usize) -> Self {
        TccMachine {
            recovered: true,
            ..Self::new(n)
        }
    }

    /// A transaction recovered after the decision to cancel was recorded: every branch is
    /// cancelled (null cancels for those never tried).
    pub fn cancelling(n: usize) -> Self {
        TccMachine {
            branches: vec![BranchState::Uncertain; n],
            phase: TccPhase::Cancelling,
            recovered: true,
        }
    }

    /// A transaction recovered after the decision to confirm was recorded: every branch is
    /// confirmed (each try succeeded before the decision).
    pub fn confirming(n: usize) -> Self {
        TccMachine {
            branches: vec![BranchState::Tried; n],
            phase: TccPhase::Confirming,
            recovered: true,
        }
    }

    /// A machine in an arbitrary configuration, for exhaustive tests of the table.
    #[doc(hidden)]
    pub fn from_states(branches: Vec<BranchState>, phase: TccPhase) -> Self {
        TccMachine {
            branches,
            phase,
            recovered: false,
        }
    }

    /// The transaction's phase.
    pub fn phase(&self) -> TccPhase {
        self.phase
    }

    /// The branches' states.
    pub fn branches(&self) -> &[BranchState] {
        &self.branches
    }

    /// The transaction's status.
    pub fn status(&self) -> Status {
        let all = |s: &[BranchState]| self.branches.iter().all(|b| s.contains(b));
        match self.phase {
            TccPhase::Trying => Status::Running,
            TccPhase::Confirming if all(&[BranchState::Confirmed]) => Status::Committed,
            TccPhase::Confirming => Status::Committing,
            TccPhase::Cancelling if all(&[BranchState::Cancelled, BranchState::Skipped]) => {
                Status::Compensated
            }
            TccPhase::Cancelling => Status::Compensating,
        }
    }

    /// The first commands: try every branch.
    pub fn start(&mut self) -> Vec<Command> {
        self.next()
    }

    /// Applies `event` and returns the commands it unlocks.
    pub fn apply(&mut self, event: Event) -> Result<Vec<Command>, InvalidTransition> {
        let invalid = |state: BranchState| InvalidTransition {
            event,
            state: state.as_str().to_owned(),
        };
        match event {
            Event::Abort => {
                if self.phase == TccPhase::Trying {
                    self.phase = TccPhase::Cancelling;
                }
            }
            Event::Succeeded(i) | Event::Failed(i) | Event::Exhausted(i) => {
                let state = *self
                    .branches
                    .get(i)
                    .ok_or_else(|| invalid(BranchState::Pending))?;
                self.branches[i] = match (state, event) {
                    (BranchState::Trying, Event::Succeeded(_)) => BranchState::Tried,
                    (BranchState::Trying, Event::Failed(_)) => BranchState::Failed,
                    (BranchState::Trying, Event::Exhausted(_)) => BranchState::Uncertain,
                    (BranchState::Confirming, Event::Succeeded(_)) => BranchState::Confirmed,
                    (BranchState::Cancelling, Event::Succeeded(_)) => BranchState::Cancelled,
                    _ => return Err(invalid(state)),
                };
                if matches!(
                    self.branches[i],
                    BranchState::Failed | BranchState::Uncertain
                ) {
                    self.phase = TccPhase::Cancelling;
                }
            }
        }
        Ok(self.next())
    }

    fn next(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut issue =
            |branches: &mut Vec<BranchState>, from: &[BranchState], to: BranchState, op| {
                for (i, b) in branches.iter_mut().enumerate() {
                    if from.contains(b) {
                        *b = to;
                        commands.push(Command { op, branch: i });
                    }
                }
            };
        match self.phase {
            TccPhase::Trying => {
                issue(
                    &mut self.branches,
                    &[BranchState::Pending],
                    BranchState::Trying,
                    Operation::Try,
                );
                if self.branches.iter().all(|b| *b == BranchState::Tried) {
                    self.phase = TccPhase::Confirming;
                    issue(
                        &mut self.branches,
                        &[BranchState::Tried],
                        BranchState::Confirming,
                        Operation::Confirm,
                    );
                }
            }
            TccPhase::Confirming => {
                issue(
                    &mut self.branches,
                    &[BranchState::Tried],
                    BranchState::Confirming,
                    Operation::Confirm,
                );
            }
            TccPhase::Cancelling => {
                let not_tried = if self.recovered {
                    BranchState::Uncertain
                } else {
                    BranchState::Skipped
                };
                for b in self
                    .branches
                    .iter_mut()
                    .filter(|b| **b == BranchState::Pending)
                {
                    *b = not_tried;
                }
                issue(
                    &mut self.branches,
                    &[
                        BranchState::Tried,
                        BranchState::Uncertain,
                        BranchState::Failed,
                    ],
                    BranchState::Cancelling,
                    Operation::Cancel,
                );
            }
        }
        commands
    }
}
