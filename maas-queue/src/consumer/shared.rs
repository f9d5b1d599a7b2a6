//! What the running consumer's tasks share with its handle, and where it reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Semaphore;
use tower::util::BoxCloneService;

use super::config::ConsumerConfig;
use crate::{BoxError, Cluster, Message, Producer};

/// The handler as the consumer stores it.
pub(crate) type Handler = BoxCloneService<Message, (), BoxError>;

/// One assigned partition's live numbers.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) high_watermark: AtomicI64,
    /// The next offset to commit (everything before it was handled).
    pub(crate) handled_up_to: AtomicI64,
    pub(crate) committed: AtomicI64,
    pub(crate) handled: AtomicU64,
}

impl PartitionState {
    pub(crate) fn new(start: i64) -> Self {
        PartitionState {
            high_watermark: AtomicI64::new(start),
            handled_up_to: AtomicI64::new(start),
            committed: AtomicI64::new(start),
            handled: AtomicU64::new(0),
        }
    }
}

/// What the running consumer shares with its handle.
pub(crate) struct Shared {
    pub(crate) config: ConsumerConfig,
    pub(crate) cluster: Cluster,
    /// Behind a mutex only to be `Sync` without asking handlers to be; locked just to clone.
    pub(crate) handler: Mutex<Handler>,
    pub(crate) dead_letters: Producer,
    pub(crate) partitions_at_once: Semaphore,
    pub(crate) assignment: Mutex<BTreeMap<(String, i32), Arc<PartitionState>>>,
    pub(crate) member_id: Mutex<String>,
    pub(crate) handled: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) generations: AtomicU64,
    pub(crate) last_commit: Mutex<Option<Instant>>,
    pub(crate) rates: Mutex<HashMap<(String, i32), (Instant, u64)>>,
    pub(crate) observer: Observer,
    pub(crate) trace_context: Option<crate::trace::TraceContext>,
}

impl Shared {
    /// A clone of the handler, ready to be called.
    pub(crate) fn handler(&self) -> Handler {
        Self::lock(&self.handler).clone()
    }

    pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a record outcome in the metrics, if any.
    pub(crate) fn observe(&self, topic: &str, outcome: &'static str) {
        self.observer.record(topic, outcome);
    }

    pub(crate) fn observe_commit(&self) {
        self.observer.committed();
    }

    pub(crate) fn observe_join(&self) {
        self.observer.joined();
    }

    /// Publishes the lag of the assigned partitions; `revoked` ones are removed.
    pub(crate) fn observe_lag(&self, revoked: bool) {
        self.observer.lag(&Self::lock(&self.assignment), revoked);
    }
}

/// The consumer's metrics sink: Prometheus with the `prometheus` feature and
/// [`GroupConsumerBuilder::metrics`](super::GroupConsumerBuilder::metrics), a no-op
/// otherwise — so call sites carry no `cfg`.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    #[cfg(feature = "prometheus")]
    metrics: Option<(String, crate::metrics::QueueMetrics)>,
}

impl Observer {
    /// Reports group `group` into `metrics`.
    #[cfg(feature = "prometheus")]
    pub(crate) fn new(group: String, metrics: Option<crate::metrics::QueueMetrics>) -> Self {
        Observer {
            metrics: metrics.map(|m| (group, m)),
        }
    }

    fn record(&self, topic: &str, outcome: &'static str) {
        #[cfg(feature = "prometheus")]
        if let Some((group, m)) = &self.metrics {
            m.record(group, topic, outcome);
        }
        let _ = (topic, outcome);
    }

    fn committed(&self) {
        #[cfg(feature = "prometheus")]
        if let Some((group, m)) = &self.metrics {
            m.committed(group);
        }
    }

    fn joined(&self) {
        #[cfg(feature = "prometheus")]
        if let Some((group, m)) = &self.metrics {
            m.joined(group);
        }
    }

    fn lag(&self, assignment: &BTreeMap<(String, i32), Arc<PartitionState>>, revoked: bool) {
        #[cfg(feature = "prometheus")]
        if let Some((group, m)) = &self.metrics {
            use std::sync::atomic::Ordering;
            for ((topic, partition), st) in assignment {
                if revoked {
                    m.forget_lag(group, topic, *partition);
                } else {
                    let lag = st.high_watermark.load(Ordering::Relaxed)
                        - st.committed.load(Ordering::Relaxed);
                    m.lag(group, topic, *partition, lag.max(0));
                }
            }
        }
        let _ = (assignment, revoked);
    }
}
