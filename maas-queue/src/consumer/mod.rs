//! The group consumer: a member of a Kafka consumer group, handling records with a tower
//! service and committing only what it handled.

mod assignor;
mod coordinator;
pub(crate) mod fetcher;
mod kafka_group;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use assignor::Assignor;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use crate::error::{LONGEST, check_brokers, check_protocol, check_topic};
use crate::memory::MemoryBroker;
use crate::{BoxError, ConfigError, FailurePolicy, Message, Producer};

/// Where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From its first record (the default: nothing is missed).
    #[default]
    Earliest,
    /// From the records produced after the consumer joined.
    Latest,
}

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) brokers: Vec<String>,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) assignor: Assignor,
    pub(crate) start_from: StartFrom,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) partition_parallelism: usize,
    pub(crate) key_parallelism: usize,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) failure: FailurePolicy,
}

/// A consumer group member, configured. Start it with a handler:
/// [`start`](GroupConsumer::start).
///
/// * Records of one partition are handled in order; partitions in parallel, up to a limit.
///   With [`key_parallelism`](GroupConsumerBuilder::key_parallelism), records of one
///   partition with different keys run concurrently, each key still in order.
/// * An offset is committed only once it and everything before it in its partition was
///   handled — at-least-once: after a crash or a rebalance some records may be handled
///   again, none is skipped.
/// * A failing record is retried in place, then moved to retry topics and finally the
///   dead-letter queue ([`FailurePolicy`]); it never holds its partition longer than its
///   in-place retries. A handler returning [`Poison`](crate::Poison) sends it straight to
///   the DLQ.
///
/// ```
/// use maas_queue::{GroupConsumer, MemoryBroker, Message, Producer, Record};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = MemoryBroker::new();
/// let producer = Producer::builder(["kafka:9092"]).memory(&broker).build()?;
/// producer.create_topic("model-build-tasks", 2).await?;
/// producer.send(Record::new("model-build-tasks", "build m-1").key("m-1")).await?;
///
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let consumer = GroupConsumer::builder(["kafka:9092"], "model-builders")
///     .topics(["model-build-tasks"])
///     .memory(&broker)
///     .build()?
///     .start(service_fn(move |m: Message| {
///         let tx = tx.clone();
///         async move { tx.send(m.value_str().unwrap_or_default().to_owned()).map_err(|e| e.to_string()) }
///     }));
/// assert_eq!(rx.recv().await.as_deref(), Some("build m-1"));
/// consumer.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    config: ConsumerConfig,
    memory: Option<MemoryBroker>,
}

/// Builds a [`GroupConsumer`]; invalid settings fail at [`build`](GroupConsumerBuilder::build).
#[derive(Debug, Clone)]
pub struct GroupConsumerBuilder {
    config: ConsumerConfig,
    memory: Option<MemoryBroker>,
}

impl GroupConsumer {
    /// Starts configuring a member of group `group` on the brokers at `brokers`.
    pub fn builder<I, S>(brokers: I, group: impl Into<String>) -> GroupConsumerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GroupConsumerBuilder {
            config: ConsumerConfig {
                brokers: brokers.into_iter().map(Into::into).collect(),
                group: group.into(),
                topics: Vec::new(),
                client_id: "maas-queue".to_owned(),
                assignor: Assignor::Range,
                start_from: StartFrom::Earliest,
                session_timeout: Duration::from_secs(10),
                heartbeat_interval: Duration::from_secs(1),
                rebalance_timeout: Duration::from_secs(10),
                commit_interval: Duration::from_millis(500),
                partition_parallelism: 64,
                key_parallelism: 1,
                fetch_max_bytes: 1 << 20,
                fetch_max_wait: Duration::from_millis(200),
                request_timeout: Duration::from_secs(10),
                failure: FailurePolicy::default(),
            },
            memory: None,
        }
    }
}

impl GroupConsumerBuilder {
    /// The topics to consume.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// The client id the broker sees (default `maas-queue`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// How partitions are shared among members (default [`Assignor::Range`]).
    pub fn assignor(mut self, assignor: Assignor) -> Self {
        self.config.assignor = assignor;
        self
    }

    /// Where partitions with no committed offset start (default earliest).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.config.start_from = start;
        self
    }

    /// The session timeout: a member silent this long is removed from the group (10 s).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = timeout;
        self
    }

    /// How often to heartbeat (1 s); also how fast a rebalance is noticed.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// How long a rebalance may take; also how long revoked partitions may finish their
    /// in-flight records before they are abandoned (10 s).
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.config.rebalance_timeout = timeout;
        self
    }

    /// How often handled offsets are committed (500 ms), besides on rebalance and shutdown.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.config.commit_interval = interval;
        self
    }

    /// Partitions handled at once, at most (64): backpressure on a slow handler.
    pub fn partition_parallelism(mut self, n: usize) -> Self {
        self.config.partition_parallelism = n;
        self
    }

    /// Records of one partition handled at once (1: strictly in order). Above 1, records
    /// with different keys run concurrently; records with the same key stay in order.
    pub fn key_parallelism(mut self, n: usize) -> Self {
        self.config.key_parallelism = n;
        self
    }

    /// Most bytes per fetch of one partition (1 MiB).
    pub fn fetch_max_bytes(mut self, bytes: i32) -> Self {
        self.config.fetch_max_bytes = bytes;
        self
    }

    /// Longest a fetch waits for new records (200 ms).
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.config.fetch_max_wait = wait;
        self
    }

    /// What happens to records the handler fails on.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.config.failure = policy;
        self
    }

    /// Consumes from an in-memory broker instead of Kafka (tests, demos).
    pub fn memory(mut self, broker: &MemoryBroker) -> Self {
        self.memory = Some(broker.clone());
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<GroupConsumer, ConfigError> {
        let c = &self.config;
        if self.memory.is_none() {
            check_brokers(&c.brokers)?;
        }
        if c.group.trim().is_empty() {
            return Err(ConfigError::EmptyGroupId);
        }
        if c.topics.is_empty() {
            return Err(ConfigError::NoTopics);
        }
        for t in &c.topics {
            check_topic(t)?;
        }
        for (name, zero) in [
            ("session_timeout", c.session_timeout.is_zero()),
            ("heartbeat_interval", c.heartbeat_interval.is_zero()),
            ("rebalance_timeout", c.rebalance_timeout.is_zero()),
            ("commit_interval", c.commit_interval.is_zero()),
            ("partition_parallelism", c.partition_parallelism == 0),
            ("key_parallelism", c.key_parallelism == 0),
            ("fetch_max_bytes", c.fetch_max_bytes <= 0),
            ("request_timeout", c.request_timeout.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("session_timeout", c.session_timeout),
            ("rebalance_timeout", c.rebalance_timeout),
            ("fetch_max_wait", c.fetch_max_wait),
            ("request_timeout", c.request_timeout),
        ] {
            check_protocol(name, d)?;
        }
        if c.heartbeat_interval >= c.session_timeout {
            return Err(ConfigError::HeartbeatNotBelowSession {
                heartbeat: c.heartbeat_interval,
                session: c.session_timeout,
            });
        }
        for t in &c.topics {
            let dlq = c.failure.dlq.then(|| c.failure.dlq_topic(t));
            for derived in c.failure.retry_topics_of(t).into_iter().chain(dlq) {
                if check_topic(&derived).is_err() {
                    return Err(ConfigError::DerivedTopicName {
                        topic: t.clone(),
                        derived,
                    });
                }
            }
        }
        let mut config = self.config;
        config.commit_interval = config.commit_interval.min(LONGEST);
        // A bound of "everything" is as many permits as a semaphore holds.
        let most = tokio::sync::Semaphore::MAX_PERMITS;
        config.partition_parallelism = config.partition_parallelism.min(most);
        config.key_parallelism = config.key_parallelism.min(most);
        config.failure = config.failure.clamped();
        Ok(GroupConsumer {
            config,
            memory: self.memory,
        })
    }
}

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
    fn new(start: i64) -> Self {
        PartitionState {
            high_watermark: AtomicI64::new(start),
            handled_up_to: AtomicI64::new(start),
            committed: AtomicI64::new(start),
            handled: AtomicU64::new(0),
        }
    }
}

/// Counts of what the consumer did with records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records the handler succeeded on.
    pub handled: u64,
    /// Handler calls that failed and were retried (in place or via a retry topic).
    pub retried: u64,
    /// Records sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Commits made.
    pub commits: u64,
    /// Generations joined (1 + rebalances).
    pub generations: u64,
}

/// One partition's lag, as the consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The partition's high watermark at the last fetch.
    pub high_watermark: i64,
    /// The group's committed offset.
    pub committed: i64,
    /// `high_watermark − committed`: records not yet handled and committed.
    pub lag: i64,
    /// Records handled per second, over the interval since the previous `lag()` call.
    pub records_per_second: f64,
}

/// What the running consumer shares with its handle.
pub(crate) struct Shared {
    pub(crate) config: ConsumerConfig,
    pub(crate) memory: Option<MemoryBroker>,
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
    rates: Mutex<HashMap<(String, i32), (Instant, u64)>>,
    #[cfg(feature = "prometheus")]
    pub(crate) metrics: Option<crate::metrics::QueueMetrics>,
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
    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))]
    pub(crate) fn observe(&self, topic: &str, outcome: &str) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.record(&self.config.group, topic, outcome);
        }
    }

    pub(crate) fn observe_commit(&self) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.committed(&self.config.group);
        }
    }

    pub(crate) fn observe_join(&self) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.joined(&self.config.group);
        }
    }

    /// Publishes the lag of the assigned partitions; `revoked` ones are removed.
    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))]
    pub(crate) fn observe_lag(&self, revoked: bool) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            for ((topic, partition), st) in Self::lock(&self.assignment).iter() {
                if revoked {
                    m.forget_lag(&self.config.group, topic, *partition);
                } else {
                    let lag = st.high_watermark.load(Ordering::Relaxed)
                        - st.committed.load(Ordering::Relaxed);
                    m.lag(&self.config.group, topic, *partition, lag.max(0));
                }
            }
        }
    }
}

impl GroupConsumer {
    /// Reports lag and handling counts into `metrics` (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn metrics(self, metrics: &crate::metrics::QueueMetrics) -> MeteredConsumer {
        MeteredConsumer {
            consumer: self,
            metrics: metrics.clone(),
        }
    }

    /// Joins the group and starts handling records with `handler` in the background.
    /// Needs a tokio runtime. Errors talking to the broker are retried and logged; stop
    /// with [`ConsumerHandle::shutdown`].
    pub fn start<S, E>(self, handler: S) -> ConsumerHandle
    where
        S: Service<Message, Response = (), Error = E> + Clone + Send + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.start_inner(
            BoxCloneService::new(handler.map_err(Into::into)),
            #[cfg(feature = "prometheus")]
            None,
        )
    }

    fn start_inner(
        self,
        handler: Handler,
        #[cfg(feature = "prometheus")] metrics: Option<crate::metrics::QueueMetrics>,
    ) -> ConsumerHandle {
        let mut producer =
            Producer::builder(self.config.brokers.clone()).client_id(self.config.client_id.clone());
        if let Some(m) = &self.memory {
            producer = producer.memory(m);
        }
        let dead_letters = producer
            .build()
            .expect("the consumer's settings were validated");
        let shared = Arc::new(Shared {
            partitions_at_once: Semaphore::new(self.config.partition_parallelism),
            config: self.config,
            memory: self.memory,
            handler: Mutex::new(handler),
            dead_letters,
            assignment: Mutex::default(),
            member_id: Mutex::default(),
            handled: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            last_commit: Mutex::new(None),
            rates: Mutex::default(),
            #[cfg(feature = "prometheus")]
            metrics,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(coordinator::run(shared.clone(), stopped));
        ConsumerHandle { shared, stop, task }
    }
}

/// A consumer that reports metrics (see [`GroupConsumer::metrics`]).
#[cfg(feature = "prometheus")]
#[derive(Debug, Clone)]
pub struct MeteredConsumer {
    consumer: GroupConsumer,
    metrics: crate::metrics::QueueMetrics,
}

#[cfg(feature = "prometheus")]
impl MeteredConsumer {
    /// Like [`GroupConsumer::start`].
    pub fn start<S, E>(self, handler: S) -> ConsumerHandle
    where
        S: Service<Message, Response = (), Error = E> + Clone + Send + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.consumer.start_inner(
            BoxCloneService::new(handler.map_err(Into::into)),
            Some(self.metrics),
        )
    }
}

/// A running consumer.
pub struct ConsumerHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("group", &self.shared.config.group)
            .field("member_id", &self.member_id())
            .finish()
    }
}

impl ConsumerHandle {
    /// Stops fetching, lets in-flight records finish (up to the rebalance timeout), commits
    /// what was handled, leaves the group (its partitions move to the others at once) and
    /// flushes the dead-letter producer.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.shared.dead_letters.shutdown().await;
    }

    /// Whether the consumer's task has ended (it only ends when shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The partitions this member holds now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        Shared::lock(&self.shared.assignment)
            .keys()
            .cloned()
            .collect()
    }

    /// The member id the coordinator gave this member (empty before the first join).
    pub fn member_id(&self) -> String {
        Shared::lock(&self.shared.member_id).clone()
    }

    /// What the consumer did so far.
    pub fn stats(&self) -> ConsumerStats {
        let s = &self.shared;
        ConsumerStats {
            handled: s.handled.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            generations: s.generations.load(Ordering::Relaxed),
        }
    }

    /// Lag per assigned partition, and the handling rate since the previous call.
    pub fn lag(&self) -> Vec<PartitionLag> {
        lag(&self.shared)
    }

    /// Time since the last successful commit (`None` before the first).
    pub fn last_commit_age(&self) -> Option<Duration> {
        Shared::lock(&self.shared.last_commit).map(|t| t.elapsed())
    }
}

pub(crate) fn lag(shared: &Shared) -> Vec<PartitionLag> {
    let now = Instant::now();
    let assignment = Shared::lock(&shared.assignment);
    let mut rates = Shared::lock(&shared.rates);
    assignment
        .iter()
        .map(|((topic, partition), st)| {
            let handled = st.handled.load(Ordering::Relaxed);
            let (then, before) = rates
                .insert((topic.clone(), *partition), (now, handled))
                .unwrap_or((now, handled));
            let secs = now.duration_since(then).as_secs_f64();
            let hw = st.high_watermark.load(Ordering::Relaxed);
            let committed = st.committed.load(Ordering::Relaxed);
            PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                high_watermark: hw,
                committed,
                lag: (hw - committed).max(0),
                records_per_second: if secs > 0.0 {
                    (handled - before) as f64 / secs
                } else {
                    0.0
                },
            }
        })
        .collect()
}
