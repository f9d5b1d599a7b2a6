//! The five operations a participant is asked to perform.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the engine asks of a participant for one step or branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A saga step's forward action.
    Action,
    /// Undo a saga step's action.
    Compensate,
    /// Reserve (freeze) resources for a TCC branch.
    Try,
    /// Apply a TCC branch's reservation.
    Confirm,
    /// Release a TCC branch's reservation.
    Cancel,
}

impl Operation {
    /// The lower-case name used in headers and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Action => "action",
            Operation::Compensate => "compensate",
            Operation::Try => "try",
            Operation::Confirm => "confirm",
            Operation::Cancel => "cancel",
        }
    }

    /// Whether the engine may give up on this operation (actions and tries) or must retry
    /// it until it succeeds (compensations, confirms, cancels).
    pub fn is_forward(self) -> bool {
        matches!(self, Operation::Action | Operation::Try)
    }

    /// The forward operation this one undoes (for barriers): compensate → action,
    /// cancel → try.
    pub fn undoes(self) -> Option<Operation> {
        match self {
            Operation::Compensate => Some(Operation::Action),
            Operation::Cancel => Some(Operation::Try),
            _ => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown operation name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown saga operation `{0}`")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "action" => Operation::Action,
            "compensate" => Operation::Compensate,
            "try" => Operation::Try,
            "confirm" => Operation::Confirm,
            "cancel" => Operation::Cancel,
            other => return Err(UnknownOperation(other.to_owned())),
        })
    }
}
