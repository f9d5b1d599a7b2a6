//! [`Engine`]: the handle callers use to submit, wait for, query and steer transactions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::EngineError;
use super::supervisor::Supervisor;
use super::view::{Outcome, SagaView};
use crate::machine::{Machine, SagaMachine, TccMachine};
use crate::store::{AdminRequest, NewSaga, SagaRecord};
use crate::{SagaId, Status, Transaction};

struct EngineInner {
    supervisor: Arc<Supervisor>,
    background: Vec<JoinHandle<()>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// Runs sagas and TCC transactions against registered participants, durably.
///
/// Clones share one engine; the background work stops when the last clone is dropped.
///
/// ```
/// use maas_saga::{Engine, MemoryStore, Reply, Saga, Status, Step, participant};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ok = participant(service_fn(|_call| async { Ok::<_, std::io::Error>(Reply::Done) }));
/// let engine = Engine::builder(MemoryStore::new())
///     .participant("models", ok.clone())
///     .participant("billing", ok)
///     .start()
///     .await?;
/// let saga = Saga::builder("create-model")
///     .step(Step::new("create", "models"))
///     .step(Step::new("deduct", "billing"))
///     .build()?;
/// let outcome = engine.run(saga).await?;
/// assert_eq!(outcome.status, Status::Committed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runtime = &self.supervisor().runtime;
        f.debug_struct("Engine")
            .field("owner", &runtime.lease.owner)
            .field("participants", &runtime.registry)
            .finish()
    }
}

fn view(r: SagaRecord, live_here: bool) -> SagaView {
    SagaView {
        name: r.transaction.name().to_owned(),
        kind: r.transaction.kind(),
        id: r.id,
        status: r.status,
        branches: r.progress,
        created_at: Some(r.created_at),
        live_here,
    }
}

impl Engine {
    /// An engine around a started supervisor and its background tasks.
    pub(crate) fn from_parts(supervisor: Arc<Supervisor>, background: Vec<JoinHandle<()>>) -> Self {
        Engine {
            inner: Arc::new(EngineInner {
                supervisor,
                background,
            }),
        }
    }

    fn supervisor(&self) -> &Arc<Supervisor> {
        &self.inner.supervisor
    }

    /// This engine's owner name.
    pub fn owner(&self) -> &str {
        &self.supervisor().runtime.lease.owner
    }

    /// Writes the intent (durably) and starts the transaction in the background; returns
    /// its new id.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may still leave the intent written, and then
    /// the transaction runs (here, or after recovery) although its id was never returned.
    /// Use [`submit_with_id`](Engine::submit_with_id) with an id you keep when that matters.
    pub async fn submit(&self, transaction: impl Into<Transaction>) -> Result<SagaId, EngineError> {
        let id = SagaId::new();
        self.submit_with_id(id.clone(), transaction).await?;
        Ok(id)
    }

    /// Like [`submit`](Engine::submit) with a caller-chosen id. Submitting an id that
    /// already exists starts nothing and returns `Ok(false)`: retrying a request is safe.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: if the future is dropped, the intent either
    /// was not written or is written and will be driven (by recovery if this engine did
    /// not start it). Submitting the same id again settles which.
    pub async fn submit_with_id(
        &self,
        id: SagaId,
        transaction: impl Into<Transaction>,
    ) -> Result<bool, EngineError> {
        let mut transaction = transaction.into();
        let runtime = &self.supervisor().runtime;
        for step in transaction.steps() {
            if !runtime.registry.contains(&step.participant) {
                return Err(EngineError::UnknownParticipant {
                    step: step.name.clone(),
                    participant: step.participant.clone(),
                });
            }
        }
        if let Transaction::Xa(x) = &mut transaction {
            x.coordinator = runtime.lease.owner.clone();
            for step in &x.branches {
                if !runtime.is_xa_branch(&step.participant) {
                    return Err(EngineError::NotXaBranch {
                        step: step.name.clone(),
                        participant: step.participant.clone(),
                    });
                }
                if crate::xa::Gid::new(&x.coordinator, &id, &step.name)
                    .encode()
                    .is_none()
                {
                    return Err(EngineError::XaGidTooLong {
                        step: step.name.clone(),
                    });
                }
            }
        }
        let deadline_after = match &transaction {
            Transaction::Saga(s) => s.deadline,
            Transaction::Tcc(t) => Some(t.ttl),
            Transaction::Xa(x) => Some(x.timeout),
        };
        let created = runtime
            .store
            .create(
                NewSaga {
                    id: id.clone(),
                    transaction: transaction.clone(),
                    deadline_after,
                },
                &runtime.lease,
            )
            .await?;
        if !created {
            return Ok(false);
        }
        let machine = match &transaction {
            Transaction::Saga(s) => Machine::Saga(SagaMachine::new(s.deps.clone())),
            Transaction::Tcc(t) => Machine::Tcc(TccMachine::new(t.branches.len())),
            Transaction::Xa(x) => Machine::Tcc(TccMachine::new(x.branches.len())),
        };
        let deadline = deadline_after.map(|d| crate::duration::system_after(SystemTime::now(), d));
        self.supervisor().spawn(
            id,
            Arc::new(transaction),
            machine,
            false,
            deadline,
            tracing::Span::current(),
        );
        Ok(true)
    }

    /// Submits the transaction and waits for its end.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the waiting, not the transaction: once submitted it runs
    /// to its end in the background.
    pub async fn run(&self, transaction: impl Into<Transaction>) -> Result<Outcome, EngineError> {
        let id = self.submit(transaction).await?;
        self.wait(&id).await
    }

    /// Waits for a transaction this engine is running to end. For one it is not running,
    /// returns its stored outcome if it has finished, else [`EngineError::HandedOver`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn wait(&self, id: &SagaId) -> Result<Outcome, EngineError> {
        match self.supervisor().waiter(id) {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(EngineError::HandedOver(id.clone()))),
            None => match self.supervisor().runtime.store.get(id).await? {
                Some(r) if r.status.is_final() => Ok(Outcome {
                    id: r.id,
                    status: r.status,
                    branches: r.progress,
                }),
                _ => Err(EngineError::HandedOver(id.clone())),
            },
        }
    }

    /// A transaction with its branch states and attempts.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn saga(&self, id: &SagaId) -> Result<Option<SagaView>, EngineError> {
        let live = self.supervisor().snapshot(id);
        let record = self.supervisor().runtime.store.get(id).await?;
        Ok(record.map(|r| match live {
            Some((status, branches)) => SagaView {
                status,
                branches,
                ..view(r, true)
            },
            None => view(r, false),
        }))
    }

    /// Transactions with `status`, newest first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self, status: Status, limit: usize) -> Result<Vec<SagaView>, EngineError> {
        Ok(self
            .supervisor()
            .runtime
            .store
            .list(status, limit)
            .await?
            .into_iter()
            .map(|r| {
                let live = self.supervisor().is_live(&r.id);
                view(r, live)
            })
            .collect())
    }

    /// Stops going forward and rolls the transaction back, wherever it runs. `Ok(false)` if
    /// there is no such unfinished transaction.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not leave the request stored; asking again is
    /// harmless (an abort stays an abort).
    pub async fn abort(&self, id: &SagaId) -> Result<bool, EngineError> {
        self.admin(id, AdminRequest::Abort).await
    }

    /// Retries the transaction's waiting operations now instead of after their backoff.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not leave the request stored; asking again is
    /// harmless.
    pub async fn retry_now(&self, id: &SagaId) -> Result<bool, EngineError> {
        self.admin(id, AdminRequest::Retry).await
    }

    async fn admin(&self, id: &SagaId, request: AdminRequest) -> Result<bool, EngineError> {
        let stored = self.supervisor().runtime.store.request(id, request).await?;
        Ok(self.supervisor().send(id, request) || stored)
    }

    /// Looks for transactions to recover now (the engine also does so periodically).
    ///
    /// # Cancel safety
    ///
    /// Transactions claimed before the future is dropped are driven; the others keep their
    /// lease until it expires and are claimed by a later pass.
    pub async fn recover_now(&self) -> Result<usize, EngineError> {
        Ok(self.supervisor().recover().await?)
    }

    /// Number of transactions this engine is driving.
    pub fn in_flight(&self) -> usize {
        self.supervisor().in_flight()
    }

    /// Stops background work and waits up to `grace` for running transactions to end.
    /// Whatever is still running is left to recovery (here after a restart, or elsewhere).
    ///
    /// # Cancel safety
    ///
    /// Background work is stopped at the first poll; dropping the future later leaves the
    /// running transactions running until the engine is dropped.
    pub async fn shutdown(&self, grace: Duration) {
        for task in &self.inner.background {
            task.abort();
        }
        let deadline = crate::duration::instant_after(Instant::now(), grace);
        while self.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.supervisor().abort_all();
    }
}
