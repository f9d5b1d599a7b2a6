//! Prometheus metrics of consumers (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_queue_lag` | gauge: high watermark − committed offset | `group`, `topic`, `partition` |
//! | `maas_queue_records_total` | counter | `group`, `topic`, `outcome` (`handled`, `retried`, `dead_lettered`) |
//! | `maas_queue_commits_total` | counter | `group` |
//! | `maas_queue_last_commit_timestamp_seconds` | gauge: Unix time of the last commit | `group` |
//! | `maas_queue_generations_total` | counter: joins (1 + rebalances) | `group` |
//!
//! The consumption rate is `rate(maas_queue_records_total{outcome="handled"}[1m])`; the
//! last-commit age is `time() - maas_queue_last_commit_timestamp_seconds`.
//!
//! ```
//! use maas_queue::metrics::QueueMetrics;
//! use maas_queue::{GroupConsumer, MemoryBroker, Message};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new();
//! let metrics = QueueMetrics::register(&registry)?;
//! let broker = MemoryBroker::new();
//! broker.create_topic("tasks", 1);
//! let consumer = GroupConsumer::builder(&broker, "workers")
//!     .topics(["tasks"])
//!     .metrics(&metrics)
//!     .build()?
//!     .start(tower::service_fn(|_m: Message| async { Ok::<_, std::convert::Infallible>(()) }));
//! consumer.shutdown().await;
//! # Ok(()) }
//! ```

use std::time::SystemTime;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The consumer metric families, registered in a `prometheus::Registry`.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    lag: IntGaugeVec,
    records: IntCounterVec,
    commits: IntCounterVec,
    last_commit: IntGaugeVec,
    generations: IntCounterVec,
}

impl QueueMetrics {
    /// Creates the families and registers them in `registry` (an error if they already are).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = QueueMetrics {
            lag: IntGaugeVec::new(
                Opts::new(
                    "maas_queue_lag",
                    "Records not yet handled and committed: high watermark minus committed offset.",
                ),
                &["group", "topic", "partition"],
            )?,
            records: IntCounterVec::new(
                Opts::new(
                    "maas_queue_records_total",
                    "Records by what the consumer did with them.",
                ),
                &["group", "topic", "outcome"],
            )?,
            commits: IntCounterVec::new(
                Opts::new("maas_queue_commits_total", "Offset commits made."),
                &["group"],
            )?,
            last_commit: IntGaugeVec::new(
                Opts::new(
                    "maas_queue_last_commit_timestamp_seconds",
                    "Unix time of the group member's last commit.",
                ),
                &["group"],
            )?,
            generations: IntCounterVec::new(
                Opts::new(
                    "maas_queue_generations_total",
                    "Group generations joined (1 + rebalances).",
                ),
                &["group"],
            )?,
        };
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.commits.clone()))?;
        registry.register(Box::new(m.last_commit.clone()))?;
        registry.register(Box::new(m.generations.clone()))?;
        Ok(m)
    }

    /// Creates `group`'s record counters of `topic` at 0, every outcome: a series that
    /// first appears at its first event is invisible to `increase()`, so the first dead
    /// letter after a start would never alert.
    pub(crate) fn touch(&self, group: &str, topic: &str) {
        for outcome in ["handled", "retried", "dead_lettered"] {
            let _ = self.records.with_label_values(&[group, topic, outcome]);
        }
    }

    pub(crate) fn record(&self, group: &str, topic: &str, outcome: &str) {
        self.records
            .with_label_values(&[group, topic, outcome])
            .inc();
    }

    pub(crate) fn committed(&self, group: &str) {
        self.commits.with_label_values(&[group]).inc();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.last_commit.with_label_values(&[group]).set(now);
    }

    pub(crate) fn joined(&self, group: &str) {
        self.generations.with_label_values(&[group]).inc();
    }

    pub(crate) fn lag(&self, group: &str, topic: &str, partition: i32, lag: i64) {
        self.lag
            .with_label_values(&[group, topic, &partition.to_string()])
            .set(lag);
    }

    pub(crate) fn forget_lag(&self, group: &str, topic: &str, partition: i32) {
        let _ = self
            .lag
            .remove_label_values(&[group, topic, &partition.to_string()]);
    }
}
