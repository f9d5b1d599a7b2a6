//! Participants: the services that perform steps. Any `tower::Service` is one.
//!
//! The engine calls a participant with a [`BranchCall`] — which transaction, which step,
//! which [`Operation`], the step's payload — and reads the answer as:
//!
//! | answer | meaning | engine |
//! |---|---|---|
//! | `Ok(Reply::Done)` | the operation applied (or had already) | moves on |
//! | `Ok(Reply::Rejected(reason))` | business failure: the action/try did **not** apply | compensates / cancels |
//! | `Err(_)`, a timeout | unknown: it may or may not have applied | retries with backoff |
//!
//! A participant must be **idempotent** (the same operation may arrive twice) and must
//! tolerate a compensation arriving before — or instead of — its action. The
//! [`barrier`](crate::barrier) module does both inside the participant's own database
//! transaction.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::{Operation, SagaId};

/// One operation asked of a participant.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchCall {
    /// The transaction.
    pub saga_id: SagaId,
    /// The step or branch name (unique within the transaction).
    pub branch: String,
    /// What to do.
    pub op: Operation,
    /// The step's payload.
    pub payload: Value,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// A W3C `traceparent` for the call, when the engine runs inside a trace.
    pub traceparent: Option<String>,
    /// For TCC tries: how long the reservation may stay unconfirmed.
    pub ttl: Option<Duration>,
    /// For branches of an XA transaction: the branch's global transaction id (the name of
    /// its prepared transaction).
    pub xa_gid: Option<String>,
}

/// A participant's definite answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied (or already applied).
    Done,
    /// A business failure: the action or try did not apply, and will not.
    Rejected(String),
}

/// The error type of participants: any error means "outcome unknown".
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A participant as the engine stores it.
pub type Participant = BoxCloneSyncService<BranchCall, Reply, BoxError>;

/// Boxes any suitable tower service into a [`Participant`].
pub fn participant<S>(service: S) -> Participant
where
    S: Service<BranchCall, Response = Reply> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service.map_err(Into::into))
}

/// Participants by the name steps refer to them with.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    by_name: Arc<std::collections::HashMap<String, Participant>>,
}

impl Registry {
    pub(crate) fn new(by_name: std::collections::HashMap<String, Participant>) -> Self {
        Registry {
            by_name: Arc::new(by_name),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Participant> {
        self.by_name.get(name).cloned()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}
