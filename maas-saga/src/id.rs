//! Transaction ids.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A transaction's id: a UUIDv7 by default (time-ordered, so recent transactions sort
/// together in storage), or any string the caller chooses — e.g. a request id, which makes
/// submitting the same business request twice idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(Arc<str>);

impl SagaId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        SagaId(uuid::Uuid::now_v7().to_string().into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for SagaId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SagaId {
    fn from(s: &str) -> Self {
        SagaId(s.into())
    }
}

impl From<String> for SagaId {
    fn from(s: String) -> Self {
        SagaId(s.into())
    }
}
