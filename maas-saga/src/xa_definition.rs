//! An [`Xa`] transaction: branches that are databases, committed by two-phase commit.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::definition::{DefinitionError, Step, check_steps, check_traceparent, millis};

/// A two-phase-commit transaction: every branch is an XA branch database (registered with
/// `EngineBuilder::xa_branch`, feature `postgres`) that runs its SQL and prepares; then all
/// commit, or all roll back. Unlike a saga, no other transaction sees a half-applied state;
/// the price is that each branch holds its locks from its SQL until phase 2.
///
/// ```
/// use std::time::Duration;
/// use maas_saga::{Step, Xa};
/// let xa = Xa::builder("create-model")
///     .branch(Step::new("model", "models-db").payload(serde_json::json!({ "model": "m-1" })))
///     .branch(Step::new("quota", "billing-db").payload(serde_json::json!({ "tenant": "acme" })))
///     .timeout(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(xa.branches().len(), 2);
/// # Ok::<(), maas_saga::DefinitionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Xa {
    pub(crate) name: String,
    pub(crate) branches: Vec<Step>,
    /// How long phase 1 may take before the transaction rolls back.
    #[serde(with = "millis")]
    pub(crate) timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
    /// The engine that submitted it: part of every branch's global transaction id, so an
    /// engine recovering it finds the same prepared transactions.
    #[serde(default)]
    pub(crate) coordinator: String,
}

/// Builds an [`Xa`].
#[derive(Debug, Clone)]
pub struct XaBuilder {
    name: String,
    branches: Vec<Step>,
    timeout: Duration,
    traceparent: Option<String>,
}

impl Xa {
    /// Starts an XA transaction named `name` (phase 1 timeout 30 s).
    pub fn builder(name: impl Into<String>) -> XaBuilder {
        XaBuilder {
            name: name.into(),
            branches: Vec::new(),
            timeout: Duration::from_secs(30),
            traceparent: None,
        }
    }

    /// The transaction's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its branches.
    pub fn branches(&self) -> &[Step] {
        &self.branches
    }

    /// How long phase 1 may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl XaBuilder {
    /// Adds a branch: a step whose participant is an XA branch (its `after` setting is
    /// ignored: every branch runs and prepares at once).
    pub fn branch(mut self, branch: Step) -> Self {
        self.branches.push(branch);
        self
    }

    /// How long phase 1 may take, from submission, before every branch is rolled back.
    /// Longer than [`MAX_DURATION`](crate::MAX_DURATION) counts as exactly that.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Continues the caller's trace; see [`SagaBuilder::traceparent`](crate::SagaBuilder::traceparent).
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Validates the transaction.
    pub fn build(self) -> Result<Xa, DefinitionError> {
        if self.name.trim().is_empty() {
            return Err(DefinitionError::EmptyName);
        }
        if self.branches.is_empty() {
            return Err(DefinitionError::NoSteps(self.name));
        }
        if self.timeout.is_zero() {
            return Err(DefinitionError::ZeroDuration(format!(
                "the timeout of `{}`",
                self.name
            )));
        }
        check_steps(&self.branches)?;
        check_traceparent(self.traceparent.as_deref())?;
        Ok(Xa {
            name: self.name,
            branches: self.branches,
            timeout: crate::duration::clamp(self.timeout),
            traceparent: self.traceparent,
            coordinator: String::new(),
        })
    }
}

/// The global transaction id of `branch` of XA transaction `saga` submitted by
/// `coordinator`; `None` when PostgreSQL would refuse it as too long.
pub(crate) fn gid(coordinator: &str, saga: &crate::SagaId, branch: &str) -> Option<String> {
    crate::xa::Gid::new(coordinator, saga, branch).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transaction;

    #[test]
    fn bad_definitions_fail_at_build_and_good_ones_round_trip() {
        assert_eq!(
            Xa::builder("x").build(),
            Err(DefinitionError::NoSteps("x".into()))
        );
        assert!(matches!(
            Xa::builder("x")
                .branch(Step::new("a", "db"))
                .timeout(Duration::ZERO)
                .build(),
            Err(DefinitionError::ZeroDuration(_))
        ));
        let t: Transaction = Xa::builder("x")
            .branch(Step::new("a", "db").payload(serde_json::json!({"n": 1})))
            .branch(Step::new("b", "db"))
            .build()
            .unwrap()
            .into();
        let back: Transaction = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.resolve().unwrap(), t);
    }
}
