//! The supervisor: the table of transactions live on this engine, and the background work
//! around them — recovery, lease renewal and garbage collection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::driver::{Drive, LiveView};
use super::error::EngineError;
use super::runtime::Runtime;
use super::settings::Settings;
use super::view::Outcome;
use crate::machine::{Machine, SagaMachine, TccMachine};
use crate::store::{AdminRequest, BranchProgress, SagaRecord, StoreError};
use crate::{SagaId, Status, Transaction};

/// A transaction being driven here.
struct Live {
    control: mpsc::UnboundedSender<AdminRequest>,
    view: Arc<Mutex<LiveView>>,
    task: JoinHandle<()>,
    waiters: Vec<oneshot::Sender<Result<Outcome, EngineError>>>,
}

impl Live {
    /// The driver is done, or writing the final status right now.
    fn finishing(&self) -> bool {
        self.task.is_finished()
            || self
                .view
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .status
                .is_final()
    }
}

/// The live table and the background loops.
pub(crate) struct Supervisor {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) settings: Settings,
    live: Mutex<HashMap<SagaId, Live>>,
}

impl Supervisor {
    pub(crate) fn new(runtime: Arc<Runtime>, settings: Settings) -> Self {
        Supervisor {
            runtime,
            settings,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<SagaId, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of transactions driven here.
    pub(crate) fn in_flight(&self) -> usize {
        self.live().len()
    }

    /// Whether `id` is driven here.
    pub(crate) fn is_live(&self, id: &SagaId) -> bool {
        self.live().contains_key(id)
    }

    /// A receiver for the outcome of `id`, if it is driven here.
    pub(crate) fn waiter(
        &self,
        id: &SagaId,
    ) -> Option<oneshot::Receiver<Result<Outcome, EngineError>>> {
        self.live().get_mut(id).map(|l| {
            let (tx, rx) = oneshot::channel();
            l.waiters.push(tx);
            rx
        })
    }

    /// The live status and branches of `id`, if it is driven here.
    pub(crate) fn snapshot(&self, id: &SagaId) -> Option<(Status, Vec<BranchProgress>)> {
        self.live().get(id).map(|l| {
            l.view
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot()
        })
    }

    /// Hands an operator request to the driver of `id`; `false` if it is not driven here.
    pub(crate) fn send(&self, id: &SagaId, request: AdminRequest) -> bool {
        match self.live().get(id) {
            Some(l) => {
                let _ = l.control.send(request);
                true
            }
            None => false,
        }
    }

    /// Stops every driver; what they were driving is left to recovery.
    pub(crate) fn abort_all(&self) {
        for (_, l) in self.live().drain() {
            l.task.abort();
        }
    }

    /// Starts driving a transaction whose intent is durable and whose lease we hold.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        id: SagaId,
        transaction: Arc<Transaction>,
        machine: Machine,
        marked: bool,
        deadline: Option<SystemTime>,
        parent: tracing::Span,
    ) {
        let (control, rx) = mpsc::unbounded_channel();
        let view = Arc::new(Mutex::new(LiveView {
            status: machine.status(),
            branches: Vec::new(),
            attempts: None,
        }));
        let deadline = deadline.map(|d| {
            let left = d
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            crate::duration::instant_after(Instant::now(), left)
        });
        let drive = Drive {
            id: id.clone(),
            transaction,
            machine,
            marked,
            deadline,
            control: rx,
            view: view.clone(),
            parent,
        };
        let supervisor = self.clone();
        let mut live = self.live();
        self.runtime.observer.in_flight(1);
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let runtime = &supervisor.runtime;
            let result = match drive.run(runtime.clone()).await {
                Some((status, progress)) => {
                    if runtime.finish(&task_id, status, progress.clone()).await {
                        Ok(Outcome {
                            id: task_id.clone(),
                            status,
                            branches: progress,
                        })
                    } else {
                        Err(EngineError::HandedOver(task_id.clone()))
                    }
                }
                None => Err(EngineError::HandedOver(task_id.clone())),
            };
            runtime.observer.in_flight(-1);
            if let Ok(o) = &result {
                runtime.observer.finished(o.status);
                tracing::info!(saga.id = %o.id, status = %o.status, "transaction finished");
            }
            let waiters = supervisor
                .live()
                .remove(&task_id)
                .map(|l| l.waiters)
                .unwrap_or_default();
            for w in waiters {
                let _ = w.send(result.clone());
            }
        });
        live.insert(
            id,
            Live {
                control,
                view,
                task,
                waiters: Vec::new(),
            },
        );
    }

    /// One recovery pass: claims transactions and drives them.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let claimed = self
            .runtime
            .store
            .claim(&self.runtime.lease, self.settings.recovery_batch)
            .await?;
        let count = claimed.len();
        for record in claimed {
            self.resume(record);
        }
        self.runtime.observer.claimed(count);
        #[cfg(feature = "postgres")]
        self.resolve_prepared().await?;
        Ok(count)
    }

    fn resume(self: &Arc<Self>, record: SagaRecord) {
        if self.is_live(&record.id) {
            return;
        }
        let rolling_back = record.status == Status::Compensating
            || (record.status == Status::Running && record.request == Some(AdminRequest::Abort));
        let machine = match &record.transaction {
            Transaction::Saga(s) if rolling_back => {
                Machine::Saga(SagaMachine::compensating(s.deps.clone()))
            }
            Transaction::Saga(s) => Machine::Saga(SagaMachine::recovered(s.deps.clone())),
            Transaction::Tcc(t) if rolling_back => {
                Machine::Tcc(TccMachine::cancelling(t.branches.len()))
            }
            Transaction::Tcc(t) if record.status == Status::Committing => {
                Machine::Tcc(TccMachine::confirming(t.branches.len()))
            }
            Transaction::Tcc(t) => Machine::Tcc(TccMachine::recovered(t.branches.len())),
            // Two-phase commit presumes abort: without a durable decision to commit, every
            // branch is rolled back (a branch never prepared is a no-op).
            Transaction::Xa(x) if record.status == Status::Committing => {
                Machine::Tcc(TccMachine::confirming(x.branches.len()))
            }
            Transaction::Xa(x) => Machine::Tcc(TccMachine::cancelling(x.branches.len())),
        };
        tracing::info!(saga.id = %record.id, status = %record.status, "recovering transaction");
        self.spawn(
            record.id,
            Arc::new(record.transaction),
            machine,
            record.status != Status::Running,
            record.deadline,
            tracing::Span::none(),
        );
    }

    /// Renews the leases of everything live here; stops drivers whose lease was lost and
    /// forwards operator requests.
    async fn renew(&self) -> Result<(), StoreError> {
        let ids: Vec<SagaId> = self.live().keys().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let renewed = self.runtime.store.renew(&self.runtime.lease, &ids).await?;
        let kept: HashMap<&SagaId, Option<AdminRequest>> =
            renewed.iter().map(|r| (&r.id, r.request)).collect();
        let mut live = self.live();
        for id in &ids {
            match kept.get(id) {
                None => {
                    // Not renewed: either the driver is writing the final status right now
                    // (nothing to do), or someone else holds it: stop, they will finish it.
                    if live.get(id).is_some_and(|l| !l.finishing()) {
                        tracing::warn!(saga.id = %id, "lease lost; stopping this engine's driver");
                        if let Some(l) = live.remove(id) {
                            l.task.abort();
                            for w in l.waiters {
                                let _ = w.send(Err(EngineError::HandedOver(id.clone())));
                            }
                        }
                    }
                }
                Some(Some(request)) => {
                    if let Some(l) = live.get(id) {
                        let _ = l.control.send(*request);
                    }
                }
                Some(None) => {}
            }
        }
        Ok(())
    }

    /// Deletes finished transactions past the retention.
    async fn gc(&self) -> Result<(), StoreError> {
        #[cfg(feature = "postgres")]
        self.delete_old_markers().await;
        let n = self.runtime.store.gc(self.settings.retention).await?;
        if n > 0 {
            tracing::info!(deleted = n, "deleted old finished transactions");
        }
        Ok(())
    }

    /// Starts the three background loops; they stop when the supervisor is dropped.
    pub(crate) fn start_background(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let s = &self.settings;
        vec![
            every(self, s.recovery_interval, "recovery pass", |s| async move {
                s.recover().await.map(|_| ())
            }),
            every(self, s.renew_interval(), "lease renewal", |s| async move {
                s.renew().await
            }),
            every(self, s.gc_interval, "garbage collection", |s| async move {
                s.gc().await
            }),
        ]
    }
}

/// Runs `work` every `interval` while the supervisor lives, logging its failures. The task
/// holds only a weak reference between runs, so dropping the engine ends it.
fn every<F, Fut>(
    supervisor: &Arc<Supervisor>,
    interval: Duration,
    what: &'static str,
    work: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Supervisor>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send,
{
    let weak: Weak<Supervisor> = Arc::downgrade(supervisor);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(s) = weak.upgrade() else { return };
            if let Err(e) = work(s).await {
                tracing::warn!(error = %e, "{what} failed");
            }
        }
    })
}
