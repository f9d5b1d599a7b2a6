//! A transaction's [`Status`], shared by both machines and the stores.

use serde::{Deserialize, Serialize};

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
