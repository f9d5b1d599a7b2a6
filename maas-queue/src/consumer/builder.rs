//! [`GroupConsumerBuilder`] and [`GroupConsumer`]: settings, validated; `start` runs it.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use super::assignor::Assignor;
use super::config::{ConsumerConfig, StartFrom};
use super::coordinator;
use super::handle::ConsumerHandle;
use super::shared::{Handler, Observer, Shared};
use crate::error::{LONGEST, check_protocol, check_topic};
use crate::{BoxError, Cluster, ConfigError, FailurePolicy, Message, Producer};

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
/// let producer = Producer::builder(&broker).build()?;
/// producer.create_topic("model-build-tasks", 2).await?;
/// producer.send(Record::new("model-build-tasks", "build m-1").key("m-1")).await?;
///
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let consumer = GroupConsumer::builder(&broker, "model-builders")
///     .topics(["model-build-tasks"])
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
    cluster: Cluster,
    config: ConsumerConfig,
    trace_context: Option<crate::trace::TraceContext>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::QueueMetrics>,
}

/// Builds a [`GroupConsumer`]; invalid settings fail at [`build`](GroupConsumerBuilder::build).
#[derive(Debug, Clone)]
pub struct GroupConsumerBuilder {
    cluster: Cluster,
    config: ConsumerConfig,
    trace_context: Option<crate::trace::TraceContext>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::QueueMetrics>,
}

impl GroupConsumer {
    /// Starts configuring a member of group `group` on `cluster`: Kafka bootstrap
    /// addresses (`["host:port", ..]`) or a [`MemoryBroker`](crate::MemoryBroker) — see
    /// [`Cluster`].
    pub fn builder(cluster: impl Into<Cluster>, group: impl Into<String>) -> GroupConsumerBuilder {
        GroupConsumerBuilder {
            cluster: cluster.into(),
            trace_context: None,
            config: ConsumerConfig {
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
            #[cfg(feature = "prometheus")]
            metrics: None,
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

    /// How to continue a `tracing` span in a W3C trace: called with each record's
    /// `queue_message` span and its `traceparent` header, before the handler runs, so the
    /// handler's spans and the consumer's retry and dead-letter events land in the
    /// producer's trace. Without it the span only records the `traceparent` as a field.
    /// With `maas-telemetry`:
    /// `|span, tp| { propagation::continue_trace(span, propagation::extract_pairs([("traceparent", tp)])); }`.
    pub fn trace_context(
        mut self,
        f: impl Fn(&tracing::Span, &str) + Send + Sync + 'static,
    ) -> Self {
        self.trace_context = Some(crate::trace::TraceContext(Arc::new(f)));
        self
    }

    /// What happens to records the handler fails on.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.config.failure = policy;
        self
    }

    /// Reports lag and handling counts into `metrics` (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::QueueMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<GroupConsumer, ConfigError> {
        self.cluster.check()?;
        let c = &self.config;
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
            cluster: self.cluster,
            trace_context: self.trace_context,
            config,
            #[cfg(feature = "prometheus")]
            metrics: self.metrics,
        })
    }
}

impl GroupConsumer {
    /// Joins the group and starts handling records with `handler` in the background.
    /// Needs a tokio runtime. Errors talking to the broker are retried and logged; stop
    /// with [`ConsumerHandle::shutdown`].
    pub fn start<S, E>(self, handler: S) -> ConsumerHandle
    where
        S: Service<Message, Response = (), Error = E> + Clone + Send + 'static,
        S::Future: Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let handler: Handler = BoxCloneService::new(handler.map_err(Into::into));
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            for t in &self.config.topics {
                m.touch(&self.config.group, t);
                for retry in self.config.failure.retry_topics_of(t) {
                    m.touch(&self.config.group, &retry);
                }
            }
        }
        let dead_letters = Producer::builder(self.cluster.clone())
            .client_id(self.config.client_id.clone())
            .build()
            .expect("the consumer's settings were validated");
        let shared = Arc::new(Shared {
            partitions_at_once: Semaphore::new(self.config.partition_parallelism),
            #[cfg(feature = "prometheus")]
            observer: Observer::new(self.config.group.clone(), self.metrics),
            #[cfg(not(feature = "prometheus"))]
            observer: Observer::default(),
            config: self.config,
            cluster: self.cluster,
            trace_context: self.trace_context,
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
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(coordinator::run(shared.clone(), stopped));
        ConsumerHandle::new(shared, stop, task)
    }
}
