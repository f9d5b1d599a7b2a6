//! What a distributed transaction is made of: a [`Saga`] of steps, or a [`Tcc`] of branches.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::retry::{RetryPolicy, millis};

/// A definition that cannot run. Returned by `build()`; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A transaction needs a name.
    #[error("the transaction has no name")]
    EmptyName,
    /// A transaction needs at least one step or branch.
    #[error("`{0}` has no steps")]
    NoSteps(String),
    /// Step names must be unique within a transaction.
    #[error("step name `{0}` is used twice")]
    DuplicateStep(String),
    /// A step or branch needs a name and a participant.
    #[error("a step has an empty name or participant")]
    EmptyStep,
    /// A step depends on a step that does not exist.
    #[error("step `{step}` depends on unknown step `{missing}`")]
    UnknownDependency {
        /// The step.
        step: String,
        /// The missing dependency.
        missing: String,
    },
    /// The step dependencies form a cycle.
    #[error("the step dependencies form a cycle through `{0}`")]
    Cycle(String),
    /// A `traceparent` that is not a W3C version-00 one (`00-<32 hex>-<16 hex>-<2 hex>`).
    #[error("`{0}` is not a W3C traceparent")]
    InvalidTraceparent(String),
    /// A zero timeout, TTL or deadline.
    #[error("{0} must be longer than zero")]
    ZeroDuration(String),
    /// A retry policy with no attempts.
    #[error("step `{0}` allows zero attempts")]
    ZeroAttempts(String),
}

/// One step of a saga (action and compensation) or one branch of a TCC (try, confirm,
/// cancel), sent to a registered participant.
///
/// ```
/// use std::time::Duration;
/// use maas_saga::{RetryPolicy, Step};
/// let step = Step::new("deduct-quota", "billing")
///     .payload(serde_json::json!({ "tenant": "acme", "amount": 10 }))
///     .timeout(Duration::from_secs(2))
///     .retry(RetryPolicy::new(3));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) participant: String,
    #[serde(default)]
    pub(crate) payload: Value,
    #[serde(with = "millis")]
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    #[serde(default)]
    pub(crate) after: Option<Vec<String>>,
}

impl Step {
    /// A step named `name`, performed by the participant registered as `participant`.
    /// Defaults: no payload, 10 s timeout per attempt, [`RetryPolicy::default`], and (in a
    /// saga) running after the previous step.
    pub fn new(name: impl Into<String>, participant: impl Into<String>) -> Self {
        Step {
            name: name.into(),
            participant: participant.into(),
            payload: Value::Null,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            after: None,
        }
    }

    /// The JSON the participant receives with every operation of this step.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// The limit on each attempt; an attempt that takes longer has an unknown outcome.
    /// Longer than [`MAX_DURATION`](crate::MAX_DURATION) counts as exactly that.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = crate::duration::clamp(timeout);
        self
    }

    /// How unknown outcomes are retried.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Runs after exactly these steps (instead of after the previous one). An empty list
    /// makes the step start with the saga, in parallel with other such steps.
    pub fn after<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.after = Some(steps.into_iter().map(Into::into).collect());
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The participant's registered name.
    pub fn participant(&self) -> &str {
        &self.participant
    }
}

/// A saga: steps whose actions run in dependency order (by default one after another), and
/// whose compensations run in reverse order when a step fails.
///
/// ```
/// use maas_saga::{Saga, Step};
/// let saga = Saga::builder("create-model")
///     .step(Step::new("create-model", "models").payload(serde_json::json!({ "id": "m-1" })))
///     .step(Step::new("deduct-quota", "billing").payload(serde_json::json!({ "tenant": "acme" })))
///     .build()?;
/// assert_eq!(saga.steps().len(), 2);
/// # Ok::<(), maas_saga::DefinitionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub(crate) name: String,
    pub(crate) steps: Vec<Step>,
    #[serde(default, with = "opt_millis")]
    pub(crate) deadline: Option<Duration>,
    /// The caller's trace, continued by the saga's participant calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
    /// Dependencies by index, resolved at build.
    #[serde(skip)]
    pub(crate) deps: Vec<Vec<usize>>,
}

/// Builds a [`Saga`].
#[derive(Debug, Clone)]
pub struct SagaBuilder {
    name: String,
    steps: Vec<Step>,
    deadline: Option<Duration>,
    traceparent: Option<String>,
}

impl Saga {
    /// Starts a saga named `name`.
    pub fn builder(name: impl Into<String>) -> SagaBuilder {
        SagaBuilder {
            name: name.into(),
            steps: Vec::new(),
            deadline: None,
            traceparent: None,
        }
    }

    /// The saga's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its steps, in declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Resolves dependencies after loading a stored definition.
    pub(crate) fn resolve(mut self) -> Result<Self, DefinitionError> {
        self.deps = resolve_deps(&self.steps)?;
        Ok(self)
    }
}

impl SagaBuilder {
    /// Adds a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Stops retrying unknown outcomes of actions once the saga is this old, and
    /// compensates instead. Longer than [`MAX_DURATION`](crate::MAX_DURATION) (100 years)
    /// counts as exactly that.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Continues the caller's trace (a W3C `traceparent`, e.g. `maas-telemetry`'s
    /// `propagation::current_traceparent()`): every participant call carries a
    /// `traceparent` in that trace, also after a crash and recovery — the trace is stored
    /// with the intent. Without it the trace id is derived from the saga id.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Validates the saga: a name, at least one step, unique step names, known and acyclic
    /// dependencies, non-zero timeouts and attempts, a well-formed `traceparent`.
    pub fn build(self) -> Result<Saga, DefinitionError> {
        if self.name.trim().is_empty() {
            return Err(DefinitionError::EmptyName);
        }
        if self.steps.is_empty() {
            return Err(DefinitionError::NoSteps(self.name));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(DefinitionError::ZeroDuration(format!(
                "the deadline of `{}`",
                self.name
            )));
        }
        check_steps(&self.steps)?;
        check_traceparent(self.traceparent.as_deref())?;
        Saga {
            name: self.name,
            steps: self.steps,
            deadline: self.deadline.map(crate::duration::clamp),
            traceparent: self.traceparent,
            deps: Vec::new(),
        }
        .resolve()
    }
}

/// A version-00 W3C `traceparent`: `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`.
pub(crate) fn is_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [v, t, s, f]
        if *v == "00" && hex(t, 32) && nonzero(t) && hex(s, 16) && nonzero(s) && hex(f, 2))
}

pub(crate) fn check_traceparent(tp: Option<&str>) -> Result<(), DefinitionError> {
    match tp {
        Some(tp) if !is_traceparent(tp) => Err(DefinitionError::InvalidTraceparent(
            tp.chars().take(64).collect(),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_steps(steps: &[Step]) -> Result<(), DefinitionError> {
    let mut seen = HashSet::new();
    for s in steps {
        if s.name.trim().is_empty() || s.participant.trim().is_empty() {
            return Err(DefinitionError::EmptyStep);
        }
        if !seen.insert(s.name.as_str()) {
            return Err(DefinitionError::DuplicateStep(s.name.clone()));
        }
        if s.timeout.is_zero() {
            return Err(DefinitionError::ZeroDuration(format!(
                "the timeout of `{}`",
                s.name
            )));
        }
        if s.retry.max_attempts == 0 {
            return Err(DefinitionError::ZeroAttempts(s.name.clone()));
        }
    }
    Ok(())
}

/// Each step's dependencies by index; an error for unknown names or cycles.
fn resolve_deps(steps: &[Step]) -> Result<Vec<Vec<usize>>, DefinitionError> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut deps = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let d = match &s.after {
            None => {
                if i == 0 {
                    vec![]
                } else {
                    vec![i - 1]
                }
            }
            Some(names) => names
                .iter()
                .map(|n| {
                    index.get(n.as_str()).copied().ok_or_else(|| {
                        DefinitionError::UnknownDependency {
                            step: s.name.clone(),
                            missing: n.clone(),
                        }
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        deps.push(d);
    }
    // Kahn's algorithm: a cycle leaves steps that never become ready.
    let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for (j, d) in deps.iter().enumerate() {
            if d.contains(&i) {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    if done < steps.len() {
        let stuck = (0..steps.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
        return Err(DefinitionError::Cycle(steps[stuck].name.clone()));
    }
    Ok(deps)
}

/// A TCC transaction: every branch *tries* (reserves) in parallel; if all succeed they are
/// all *confirmed*, otherwise all *cancelled*. A try not confirmed within the TTL is
/// cancelled.
///
/// ```
/// use std::time::Duration;
/// use maas_saga::{Step, Tcc};
/// let tcc = Tcc::builder("reserve-gpu-and-quota")
///     .branch(Step::new("quota", "billing").payload(serde_json::json!({ "tenant": "acme", "amount": 5 })))
///     .branch(Step::new("gpu", "scheduler"))
///     .ttl(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(tcc.branches().len(), 2);
/// # Ok::<(), maas_saga::DefinitionError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tcc {
    pub(crate) name: String,
    pub(crate) branches: Vec<Step>,
    #[serde(with = "millis")]
    pub(crate) ttl: Duration,
    /// The caller's trace, continued by the transaction's participant calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) traceparent: Option<String>,
}

/// Builds a [`Tcc`].
#[derive(Debug, Clone)]
pub struct TccBuilder {
    name: String,
    branches: Vec<Step>,
    ttl: Duration,
    traceparent: Option<String>,
}

impl Tcc {
    /// Starts a TCC transaction named `name` (default TTL 30 s).
    pub fn builder(name: impl Into<String>) -> TccBuilder {
        TccBuilder {
            name: name.into(),
            branches: Vec::new(),
            ttl: Duration::from_secs(30),
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

    /// How long reservations may stay unconfirmed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

impl TccBuilder {
    /// Adds a branch (its `after` setting is ignored: tries run in parallel).
    pub fn branch(mut self, branch: Step) -> Self {
        self.branches.push(branch);
        self
    }

    /// How long a try may stay unconfirmed before every branch is cancelled. Longer than
    /// [`MAX_DURATION`](crate::MAX_DURATION) (100 years) counts as exactly that.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Continues the caller's trace; see [`SagaBuilder::traceparent`].
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Validates the transaction.
    pub fn build(self) -> Result<Tcc, DefinitionError> {
        if self.name.trim().is_empty() {
            return Err(DefinitionError::EmptyName);
        }
        if self.branches.is_empty() {
            return Err(DefinitionError::NoSteps(self.name));
        }
        if self.ttl.is_zero() {
            return Err(DefinitionError::ZeroDuration(format!(
                "the TTL of `{}`",
                self.name
            )));
        }
        check_steps(&self.branches)?;
        check_traceparent(self.traceparent.as_deref())?;
        Ok(Tcc {
            name: self.name,
            branches: self.branches,
            ttl: crate::duration::clamp(self.ttl),
            traceparent: self.traceparent,
        })
    }
}

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

/// The kind of a [`Transaction`]; its name is the `kind` column of the SQL stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransactionKind {
    /// A [`Saga`].
    Saga,
    /// A [`Tcc`] transaction.
    Tcc,
    /// An [`Xa`] (two-phase commit) transaction.
    Xa,
}

impl TransactionKind {
    /// `saga`, `tcc` or `xa`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Saga => "saga",
            TransactionKind::Tcc => "tcc",
            TransactionKind::Xa => "xa",
        }
    }
}

impl std::fmt::Display for TransactionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A saga, a TCC or an XA transaction: what the engine stores as the intent and drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transaction {
    /// A saga.
    Saga(Saga),
    /// A TCC transaction.
    Tcc(Tcc),
    /// An XA (two-phase commit) transaction.
    Xa(Xa),
}

impl Transaction {
    /// The transaction's name.
    pub fn name(&self) -> &str {
        match self {
            Transaction::Saga(s) => &s.name,
            Transaction::Tcc(t) => &t.name,
            Transaction::Xa(x) => &x.name,
        }
    }

    /// Its steps or branches.
    pub fn steps(&self) -> &[Step] {
        match self {
            Transaction::Saga(s) => &s.steps,
            Transaction::Tcc(t) => &t.branches,
            Transaction::Xa(x) => &x.branches,
        }
    }

    /// The caller's `traceparent` it continues, if one was given.
    pub fn traceparent(&self) -> Option<&str> {
        match self {
            Transaction::Saga(s) => s.traceparent.as_deref(),
            Transaction::Tcc(t) => t.traceparent.as_deref(),
            Transaction::Xa(x) => x.traceparent.as_deref(),
        }
    }

    /// Whether it is a saga, a TCC or an XA transaction.
    pub fn kind(&self) -> TransactionKind {
        match self {
            Transaction::Saga(_) => TransactionKind::Saga,
            Transaction::Tcc(_) => TransactionKind::Tcc,
            Transaction::Xa(_) => TransactionKind::Xa,
        }
    }

    /// Re-validates a definition read back from a store.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "sqlite", test)),
        allow(dead_code)
    )]
    pub(crate) fn resolve(self) -> Result<Self, DefinitionError> {
        match self {
            Transaction::Saga(s) => s.resolve().map(Transaction::Saga),
            t @ (Transaction::Tcc(_) | Transaction::Xa(_)) => Ok(t),
        }
    }
}

impl From<Saga> for Transaction {
    fn from(s: Saga) -> Self {
        Transaction::Saga(s)
    }
}

impl From<Tcc> for Transaction {
    fn from(t: Tcc) -> Self {
        Transaction::Tcc(t)
    }
}

impl From<Xa> for Transaction {
    fn from(x: Xa) -> Self {
        Transaction::Xa(x)
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str) -> Step {
        Step::new(name, "p")
    }

    #[test]
    fn bad_definitions_fail_at_build() {
        assert_eq!(
            Saga::builder("").step(step("a")).build(),
            Err(DefinitionError::EmptyName)
        );
        assert_eq!(
            Saga::builder("s").build(),
            Err(DefinitionError::NoSteps("s".into()))
        );
        assert_eq!(
            Saga::builder("s").step(step("a")).step(step("a")).build(),
            Err(DefinitionError::DuplicateStep("a".into()))
        );
        assert_eq!(
            Saga::builder("s")
                .step(step("a").after(["b"]))
                .step(step("b").after(["a"]))
                .build(),
            Err(DefinitionError::Cycle("a".into()))
        );
        assert_eq!(
            Saga::builder("s").step(step("a").after(["zzz"])).build(),
            Err(DefinitionError::UnknownDependency {
                step: "a".into(),
                missing: "zzz".into()
            })
        );
        assert!(matches!(
            Saga::builder("s")
                .step(step("a").timeout(Duration::ZERO))
                .build(),
            Err(DefinitionError::ZeroDuration(_))
        ));
        assert_eq!(
            Saga::builder("s")
                .step(step("a").retry(RetryPolicy::new(0)))
                .build(),
            Err(DefinitionError::ZeroAttempts("a".into()))
        );
        assert!(matches!(
            Tcc::builder("t")
                .branch(step("a"))
                .ttl(Duration::ZERO)
                .build(),
            Err(DefinitionError::ZeroDuration(_))
        ));
        assert_eq!(
            Tcc::builder("t").build(),
            Err(DefinitionError::NoSteps("t".into()))
        );
        assert_eq!(
            Saga::builder("s").step(Step::new("a", "")).build(),
            Err(DefinitionError::EmptyStep)
        );
    }

    #[test]
    fn default_order_is_sequential_and_after_builds_a_dag() {
        let s = Saga::builder("s")
            .step(step("a"))
            .step(step("b"))
            .step(step("c"))
            .build()
            .unwrap();
        assert_eq!(s.deps, vec![vec![], vec![0], vec![1]]);
        let s = Saga::builder("s")
            .step(step("a"))
            .step(step("b").after(Vec::<String>::new()))
            .step(step("c").after(["a", "b"]))
            .build()
            .unwrap();
        assert_eq!(s.deps, vec![vec![], vec![], vec![0, 1]]);
    }

    #[test]
    fn definitions_round_trip_through_json() {
        let t: Transaction = Saga::builder("s")
            .step(step("a").payload(serde_json::json!({"x": 1})))
            .step(step("b"))
            .deadline(Duration::from_secs(60))
            .build()
            .unwrap()
            .into();
        let back: Transaction = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.resolve().unwrap(), t);
    }

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
