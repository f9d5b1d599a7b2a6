//! The engine: submits transactions, drives them, recovers the ones a crash left behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::executor::{Drive, LiveView};
use crate::machine::Machine;
use crate::participant::{Participant, Registry};
use crate::saga_machine::SagaMachine;
use crate::store::{
    AdminRequest, BranchProgress, Lease, NewSaga, SagaRecord, SagaStore, StoreError,
};
use crate::tcc_machine::TccMachine;
use crate::{Operation, SagaId, Status, Transaction};

/// Why the engine could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A step names a participant that is not registered.
    #[error("step `{step}` names participant `{participant}`, which is not registered")]
    UnknownParticipant {
        /// The step.
        step: String,
        /// The participant name.
        participant: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction could not be finished by this engine (it lost its lease, or was
    /// left for recovery after an internal error); it will be recovered.
    #[error("transaction {0} was handed over to recovery before it finished")]
    HandedOver(SagaId),
    /// The engine is shutting down.
    #[error("the saga engine is shut down")]
    ShutDown,
    /// An [`EngineConfig`] setting that cannot work (a zero lease or interval).
    #[error("invalid engine setting: {0}")]
    InvalidConfig(&'static str),
}

/// How a transaction ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The transaction.
    pub id: SagaId,
    /// `Committed` or `Compensated`.
    pub status: Status,
    /// Each branch's final state and attempts.
    pub branches: Vec<BranchProgress>,
}

/// A transaction as the query API shows it.
#[derive(Debug, Clone)]
pub struct SagaView {
    /// Its id.
    pub id: SagaId,
    /// Its name.
    pub name: String,
    /// `saga` or `tcc`.
    pub kind: &'static str,
    /// Its status.
    pub status: Status,
    /// Each branch's state and attempts: live when this engine runs it, else as last
    /// written.
    pub branches: Vec<BranchProgress>,
    /// When it was created, if known.
    pub created_at: Option<SystemTime>,
    /// Whether this engine is running it right now.
    pub live_here: bool,
}

/// Settings of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a lease lasts without renewal (default 5 s). Leases are renewed every third
    /// of this; a crashed engine's transactions are recovered by others after at most this
    /// long (and by the same engine, restarted under the same owner name, at once).
    pub lease: Duration,
    /// How often to look for transactions to recover (default 1 s).
    pub recovery_interval: Duration,
    /// At most this many transactions claimed per recovery pass (default 64).
    pub recovery_batch: usize,
    /// Keep finished transactions this long before deleting them (default 7 days).
    pub retention: Duration,
    /// How often to delete old finished transactions (default 10 min).
    pub gc_interval: Duration,
    /// After this many failed attempts of a compensation, confirm or cancel, emit a warning
    /// and count it as stuck (it keeps being retried). Default 10.
    pub alert_after: u32,
}

impl EngineConfig {
    /// The settings with every duration clamped to [`MAX_DURATION`](crate::MAX_DURATION);
    /// zero lease, recovery or GC intervals (loops that would spin on the store) refused.
    fn validated(mut self) -> Result<Self, EngineError> {
        for (name, d) in [
            ("the lease must be longer than zero", self.lease),
            (
                "the recovery interval must be longer than zero",
                self.recovery_interval,
            ),
            ("the GC interval must be longer than zero", self.gc_interval),
        ] {
            if d.is_zero() {
                return Err(EngineError::InvalidConfig(name));
            }
        }
        if self.recovery_batch == 0 {
            return Err(EngineError::InvalidConfig(
                "the recovery batch must hold at least one transaction",
            ));
        }
        self.lease = crate::duration::clamp(self.lease);
        self.recovery_interval = crate::duration::clamp(self.recovery_interval);
        self.retention = crate::duration::clamp(self.retention);
        self.gc_interval = crate::duration::clamp(self.gc_interval);
        Ok(self)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(5),
            recovery_interval: Duration::from_secs(1),
            recovery_batch: 64,
            retention: Duration::from_secs(7 * 24 * 3600),
            gc_interval: Duration::from_secs(600),
            alert_after: 10,
        }
    }
}

struct Live {
    control: mpsc::UnboundedSender<AdminRequest>,
    view: Arc<Mutex<LiveView>>,
    task: JoinHandle<()>,
    waiters: Vec<oneshot::Sender<Result<Outcome, EngineError>>>,
}

/// What drivers and background tasks share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SagaStore>,
    pub(crate) registry: Registry,
    pub(crate) lease: Lease,
    pub(crate) config: EngineConfig,
    live: Mutex<HashMap<SagaId, Live>>,
    #[cfg(feature = "prometheus")]
    pub(crate) metrics: Option<crate::metrics::SagaMetrics>,
}

impl Shared {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<SagaId, Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a decision (roll back, or commit a TCC), retrying transient store errors.
    /// `false` if the lease is gone.
    pub(crate) async fn record_decision(
        &self,
        id: &SagaId,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> bool {
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .store
                .record_decision(id, &self.lease, decision, progress.clone())
                .await
            {
                Ok(held) => return held,
                Err(e) => {
                    tracing::warn!(error = %e, %decision, "could not record the decision; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn finish(&self, id: &SagaId, status: Status, progress: Vec<BranchProgress>) -> bool {
        let mut pause = Duration::from_millis(50);
        loop {
            match self
                .store
                .finish(id, &self.lease, status, progress.clone())
                .await
            {
                Ok(held) => return held,
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the final status; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    pub(crate) fn observe_call(&self, op: Operation, outcome: &'static str) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.call(op, outcome);
        }
        let _ = (op, outcome);
    }

    pub(crate) fn observe_retry(&self, op: Operation) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.retry(op);
        }
        let _ = op;
    }

    pub(crate) fn observe_stuck(&self, op: Operation) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.stuck(op);
        }
        let _ = op;
    }

    /// Starts driving a transaction whose intent is durable and whose lease we hold.
    fn spawn(
        self: &Arc<Self>,
        id: SagaId,
        transaction: Arc<Transaction>,
        machine: Machine,
        marked: bool,
        deadline: Option<SystemTime>,
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
        };
        let shared = self.clone();
        let mut live = self.live();
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.in_flight(1);
        }
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            let result = match drive.run(shared.clone()).await {
                Some((status, progress)) => {
                    if shared.finish(&task_id, status, progress.clone()).await {
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
            #[cfg(feature = "prometheus")]
            if let Some(m) = &shared.metrics {
                m.in_flight(-1);
                if let Ok(o) = &result {
                    m.finished(o.status);
                }
            }
            if let Ok(o) = &result {
                tracing::info!(saga.id = %o.id, status = %o.status, "transaction finished");
            }
            let waiters = shared
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
    async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let claimed = self
            .store
            .claim(&self.lease, self.config.recovery_batch)
            .await?;
        let count = claimed.len();
        for record in claimed {
            self.resume(record);
        }
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.claimed(count);
        }
        Ok(count)
    }

    fn resume(self: &Arc<Self>, record: SagaRecord) {
        if self.live().contains_key(&record.id) {
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
        };
        tracing::info!(saga.id = %record.id, status = %record.status, "recovering transaction");
        self.spawn(
            record.id,
            Arc::new(record.transaction),
            machine,
            record.status != Status::Running,
            record.deadline,
        );
    }

    /// Renews the leases of everything live here; stops drivers whose lease was lost and
    /// forwards operator requests.
    async fn renew(&self) -> Result<(), StoreError> {
        let ids: Vec<SagaId> = self.live().keys().cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let renewed = self.store.renew(&self.lease, &ids).await?;
        let kept: HashMap<&SagaId, Option<AdminRequest>> =
            renewed.iter().map(|r| (&r.id, r.request)).collect();
        let mut live = self.live();
        for id in &ids {
            match kept.get(id) {
                None => {
                    // Not renewed: either the driver is writing the final status right now
                    // (nothing to do), or someone else holds it: stop, they will finish it.
                    let finishing = |l: &Live| {
                        l.task.is_finished()
                            || l.view
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .status
                                .is_final()
                    };
                    if let Some(l) = live.get(id).filter(|l| !finishing(l)) {
                        tracing::warn!(saga.id = %id, "lease lost; stopping this engine's driver");
                        l.task.abort();
                        if let Some(l) = live.remove(id) {
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
}

/// Configures and starts an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn SagaStore>,
    participants: HashMap<String, Participant>,
    owner: Option<String>,
    config: EngineConfig,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::SagaMetrics>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field(
                "participants",
                &self.participants.keys().collect::<Vec<_>>(),
            )
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish()
    }
}

impl EngineBuilder {
    /// Registers a participant under the name steps refer to.
    pub fn participant(mut self, name: impl Into<String>, participant: Participant) -> Self {
        self.participants.insert(name.into(), participant);
        self
    }

    /// The engine's name in leases. Give each live engine its own stable name (a pod or
    /// host name): after a restart under the same name, the engine recovers what it held at
    /// once. Default: a random name, so recovery waits for lease expiry.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Reports metrics into `metrics`.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::SagaMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Starts the engine: an immediate recovery pass, then background recovery, lease
    /// renewal and garbage collection. Needs a tokio runtime. Durations in the
    /// [`EngineConfig`] longer than [`MAX_DURATION`](crate::MAX_DURATION) are clamped to it;
    /// a zero lease or interval is [`EngineError::InvalidConfig`].
    pub async fn start(self) -> Result<Engine, EngineError> {
        let config = self.config.validated()?;
        let owner = self
            .owner
            .unwrap_or_else(|| format!("engine-{}", uuid::Uuid::new_v4().simple()));
        let shared = Arc::new(Shared {
            store: self.store,
            registry: Registry::new(self.participants),
            lease: Lease {
                owner,
                incarnation: uuid::Uuid::new_v4().simple().to_string(),
                duration: config.lease,
            },
            config,
            live: Mutex::new(HashMap::new()),
            #[cfg(feature = "prometheus")]
            metrics: self.metrics,
        });
        shared.recover().await?;
        let background = vec![
            tokio::spawn(recovery_loop(Arc::downgrade(&shared))),
            tokio::spawn(renew_loop(Arc::downgrade(&shared))),
            tokio::spawn(gc_loop(Arc::downgrade(&shared))),
        ];
        Ok(Engine {
            inner: Arc::new(EngineInner { shared, background }),
        })
    }
}

async fn recovery_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(interval) = shared.upgrade().map(|s| s.config.recovery_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.recover().await {
            tracing::warn!(error = %e, "recovery pass failed");
        }
    }
}

async fn renew_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(every) = shared.upgrade().map(|s| s.config.lease / 3) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        if let Err(e) = s.renew().await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
    }
}

async fn gc_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(every) = shared.upgrade().map(|s| s.config.gc_interval) else {
            return;
        };
        tokio::time::sleep(every).await;
        let Some(s) = shared.upgrade() else { return };
        match s.store.gc(s.config.retention).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "deleted old finished transactions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

struct EngineInner {
    shared: Arc<Shared>,
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
        f.debug_struct("Engine")
            .field("owner", &self.inner.shared.lease.owner)
            .field("participants", &self.inner.shared.registry)
            .finish()
    }
}

impl Engine {
    /// Starts configuring an engine on `store`.
    pub fn builder(store: impl SagaStore) -> EngineBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Like [`builder`](Engine::builder), for a store shared with other code.
    pub fn builder_arc(store: Arc<dyn SagaStore>) -> EngineBuilder {
        EngineBuilder {
            store,
            participants: HashMap::new(),
            owner: None,
            config: EngineConfig::default(),
            #[cfg(feature = "prometheus")]
            metrics: None,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// This engine's owner name.
    pub fn owner(&self) -> &str {
        &self.shared().lease.owner
    }

    /// Writes the intent (durably) and starts the transaction in the background; returns
    /// its new id.
    pub async fn submit(&self, transaction: impl Into<Transaction>) -> Result<SagaId, EngineError> {
        let id = SagaId::new();
        self.submit_with_id(id.clone(), transaction).await?;
        Ok(id)
    }

    /// Like [`submit`](Engine::submit) with a caller-chosen id. Submitting an id that
    /// already exists starts nothing and returns `Ok(false)`: retrying a request is safe.
    pub async fn submit_with_id(
        &self,
        id: SagaId,
        transaction: impl Into<Transaction>,
    ) -> Result<bool, EngineError> {
        let transaction = transaction.into();
        for step in transaction.steps() {
            if !self.shared().registry.contains(&step.participant) {
                return Err(EngineError::UnknownParticipant {
                    step: step.name.clone(),
                    participant: step.participant.clone(),
                });
            }
        }
        let deadline_after = match &transaction {
            Transaction::Saga(s) => s.deadline,
            Transaction::Tcc(t) => Some(t.ttl),
        };
        let created = self
            .shared()
            .store
            .create(
                NewSaga {
                    id: id.clone(),
                    transaction: transaction.clone(),
                    deadline_after,
                },
                &self.shared().lease,
            )
            .await?;
        if !created {
            return Ok(false);
        }
        let machine = match &transaction {
            Transaction::Saga(s) => Machine::Saga(SagaMachine::new(s.deps.clone())),
            Transaction::Tcc(t) => Machine::Tcc(TccMachine::new(t.branches.len())),
        };
        let deadline = deadline_after.map(|d| crate::duration::system_after(SystemTime::now(), d));
        self.shared()
            .spawn(id, Arc::new(transaction), machine, false, deadline);
        Ok(true)
    }

    /// Submits the transaction and waits for its end.
    pub async fn run(&self, transaction: impl Into<Transaction>) -> Result<Outcome, EngineError> {
        let id = self.submit(transaction).await?;
        self.wait(&id).await
    }

    /// Waits for a transaction this engine is running to end. For one it is not running,
    /// returns its stored outcome if it has finished, else [`EngineError::HandedOver`].
    pub async fn wait(&self, id: &SagaId) -> Result<Outcome, EngineError> {
        let rx = {
            let mut live = self.shared().live();
            live.get_mut(id).map(|l| {
                let (tx, rx) = oneshot::channel();
                l.waiters.push(tx);
                rx
            })
        };
        match rx {
            Some(rx) => rx
                .await
                .unwrap_or_else(|_| Err(EngineError::HandedOver(id.clone()))),
            None => match self.shared().store.get(id).await? {
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
    pub async fn saga(&self, id: &SagaId) -> Result<Option<SagaView>, EngineError> {
        let live = self.shared().live().get(id).map(|l| {
            l.view
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot()
        });
        let record = self.shared().store.get(id).await?;
        Ok(match (record, live) {
            (Some(r), Some((status, branches))) => Some(SagaView {
                id: r.id,
                name: r.transaction.name().to_owned(),
                kind: r.transaction.kind(),
                status,
                branches,
                created_at: Some(r.created_at),
                live_here: true,
            }),
            (Some(r), None) => Some(SagaView {
                id: r.id,
                name: r.transaction.name().to_owned(),
                kind: r.transaction.kind(),
                status: r.status,
                branches: r.progress,
                created_at: Some(r.created_at),
                live_here: false,
            }),
            (None, _) => None,
        })
    }

    /// Transactions with `status`, newest first.
    pub async fn list(&self, status: Status, limit: usize) -> Result<Vec<SagaView>, EngineError> {
        Ok(self
            .shared()
            .store
            .list(status, limit)
            .await?
            .into_iter()
            .map(|r| SagaView {
                live_here: self.shared().live().contains_key(&r.id),
                id: r.id,
                name: r.transaction.name().to_owned(),
                kind: r.transaction.kind(),
                status: r.status,
                branches: r.progress,
                created_at: Some(r.created_at),
            })
            .collect())
    }

    /// Stops going forward and rolls the transaction back, wherever it runs. `Ok(false)` if
    /// there is no such unfinished transaction.
    pub async fn abort(&self, id: &SagaId) -> Result<bool, EngineError> {
        self.admin(id, AdminRequest::Abort).await
    }

    /// Retries the transaction's waiting operations now instead of after their backoff.
    pub async fn retry_now(&self, id: &SagaId) -> Result<bool, EngineError> {
        self.admin(id, AdminRequest::Retry).await
    }

    async fn admin(&self, id: &SagaId, request: AdminRequest) -> Result<bool, EngineError> {
        let stored = self.shared().store.request(id, request).await?;
        if let Some(l) = self.shared().live().get(id) {
            let _ = l.control.send(request);
            return Ok(true);
        }
        Ok(stored)
    }

    /// Looks for transactions to recover now (the engine also does so periodically).
    pub async fn recover_now(&self) -> Result<usize, EngineError> {
        Ok(self.shared().recover().await?)
    }

    /// Number of transactions this engine is driving.
    pub fn in_flight(&self) -> usize {
        self.shared().live().len()
    }

    /// Stops background work and waits up to `grace` for running transactions to end.
    /// Whatever is still running is left to recovery (here after a restart, or elsewhere).
    pub async fn shutdown(&self, grace: Duration) {
        for task in &self.inner.background {
            task.abort();
        }
        let deadline = crate::duration::instant_after(Instant::now(), grace);
        while self.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (_, l) in self.shared().live().drain() {
            l.task.abort();
        }
    }
}
