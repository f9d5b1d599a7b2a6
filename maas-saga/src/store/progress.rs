//! One branch's progress as the engine writes it and the query API shows it.

use serde::{Deserialize, Serialize};

use crate::machine::{BranchState, StepState};

/// One branch's progress, as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchProgress {
    /// The step or branch name.
    pub name: String,
    /// Its state.
    pub state: BranchStatus,
    /// Attempts of its operations so far.
    pub attempts: u32,
}

/// The state of a saga step or a TCC branch, in one type for the query API and the stores.
///
/// The names (serde and [`as_str`](BranchStatus::as_str)) are those of [`StepState`] and
/// [`BranchState`], which share `pending`, `failed`, `uncertain` and `skipped`; stored rows
/// written before this type existed read back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BranchStatus {
    /// Not started (a step waiting for its dependencies, a branch not yet tried).
    Pending,
    /// A saga step's action is running.
    Running,
    /// A saga step's action applied.
    Done,
    /// The action or try failed for a business reason: it did not apply.
    Failed,
    /// The action's or try's outcome stayed unknown: it may have applied.
    Uncertain,
    /// A saga step's compensation is running.
    Compensating,
    /// A saga step's compensation applied.
    Compensated,
    /// Never started: the transaction went backward first.
    Skipped,
    /// A TCC branch's try is running.
    Trying,
    /// A TCC branch's try reserved the resources.
    Tried,
    /// A TCC branch's confirm is running.
    Confirming,
    /// A TCC branch is confirmed.
    Confirmed,
    /// A TCC branch's cancel is running.
    Cancelling,
    /// A TCC branch is cancelled.
    Cancelled,
}

impl BranchStatus {
    /// The lower-case name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchStatus::Pending => "pending",
            BranchStatus::Running => "running",
            BranchStatus::Done => "done",
            BranchStatus::Failed => "failed",
            BranchStatus::Uncertain => "uncertain",
            BranchStatus::Compensating => "compensating",
            BranchStatus::Compensated => "compensated",
            BranchStatus::Skipped => "skipped",
            BranchStatus::Trying => "trying",
            BranchStatus::Tried => "tried",
            BranchStatus::Confirming => "confirming",
            BranchStatus::Confirmed => "confirmed",
            BranchStatus::Cancelling => "cancelling",
            BranchStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for BranchStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<StepState> for BranchStatus {
    fn from(s: StepState) -> Self {
        match s {
            StepState::Pending => BranchStatus::Pending,
            StepState::Running => BranchStatus::Running,
            StepState::Done => BranchStatus::Done,
            StepState::Failed => BranchStatus::Failed,
            StepState::Uncertain => BranchStatus::Uncertain,
            StepState::Compensating => BranchStatus::Compensating,
            StepState::Compensated => BranchStatus::Compensated,
            StepState::Skipped => BranchStatus::Skipped,
        }
    }
}

impl From<BranchState> for BranchStatus {
    fn from(s: BranchState) -> Self {
        match s {
            BranchState::Pending => BranchStatus::Pending,
            BranchState::Trying => BranchStatus::Trying,
            BranchState::Tried => BranchStatus::Tried,
            BranchState::Failed => BranchStatus::Failed,
            BranchState::Uncertain => BranchStatus::Uncertain,
            BranchState::Confirming => BranchStatus::Confirming,
            BranchState::Confirmed => BranchStatus::Confirmed,
            BranchState::Cancelling => BranchStatus::Cancelling,
            BranchState::Cancelled => BranchStatus::Cancelled,
            BranchState::Skipped => BranchStatus::Skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_machines_and_storage() {
        for s in [
            StepState::Pending,
            StepState::Running,
            StepState::Done,
            StepState::Failed,
            StepState::Uncertain,
            StepState::Compensating,
            StepState::Compensated,
            StepState::Skipped,
        ] {
            let b = BranchStatus::from(s);
            assert_eq!(b.as_str(), s.as_str());
            assert_eq!(
                serde_json::to_string(&b).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in [
            BranchState::Pending,
            BranchState::Trying,
            BranchState::Tried,
            BranchState::Failed,
            BranchState::Uncertain,
            BranchState::Confirming,
            BranchState::Confirmed,
            BranchState::Cancelling,
            BranchState::Cancelled,
            BranchState::Skipped,
        ] {
            let b = BranchStatus::from(s);
            assert_eq!(b.as_str(), s.as_str());
            let back: BranchStatus = serde_json::from_str(&format!("\"{}\"", s.as_str())).unwrap();
            assert_eq!(back, b);
        }
        // A row written with the old string field reads back.
        let old = r#"[{"name":"deduct","state":"compensated","attempts":2}]"#;
        let read: Vec<BranchProgress> = serde_json::from_str(old).unwrap();
        assert_eq!(read[0].state, BranchStatus::Compensated);
    }
}
