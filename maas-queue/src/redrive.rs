//! Redrive: put dead-lettered records back on a topic once the cause is fixed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rskafka::BackoffConfig;
use rskafka::client::ClientBuilder;

use crate::consumer::StartFrom;
use crate::consumer::fetcher::{Fetcher, Source};
use crate::error::check_topic;
use crate::failure::headers;
use crate::time::millis;
use crate::{Cluster, ConfigError, Message, Producer, QueueError, Record};

/// Copies records from a dead-letter topic back to a topic, dropping the failure-tracking
/// headers and adding `redriven-from`. The DLQ itself is left as it is (an audit trail);
/// running a redrive twice publishes the records twice, so narrow it with
/// [`key`](Redrive::key) and [`since`](Redrive::since).
///
/// ```
/// use maas_queue::{MemoryBroker, Record, Redrive};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = MemoryBroker::new();
/// broker.create_topic("tasks", 1);
/// broker.create_topic("tasks.dlq", 1);
/// broker.append(Record::new("tasks.dlq", "job").key("m-1").header("dlq-original-topic", "tasks"))?;
///
/// let report = Redrive::new(&broker, "tasks.dlq").run().await?;
/// assert_eq!((report.scanned, report.redriven), (1, 1));
/// assert_eq!(broker.messages("tasks")[0].header_str("redriven-from"), Some("tasks.dlq"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Redrive {
    cluster: Cluster,
    from: String,
    to: Option<String>,
    key: Option<Bytes>,
    since_ms: Option<i64>,
}

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Records read from the dead-letter topic.
    pub scanned: u64,
    /// Records published again.
    pub redriven: u64,
    /// Records left alone (other key, older than `since`, or no destination).
    pub skipped: u64,
}

impl Redrive {
    /// Redrives the dead-letter topic `from` of `cluster` (Kafka bootstrap addresses or a
    /// [`MemoryBroker`](crate::MemoryBroker) — see [`Cluster`]).
    pub fn new(cluster: impl Into<Cluster>, from: impl Into<String>) -> Self {
        Redrive {
            cluster: cluster.into(),
            from: from.into(),
            to: None,
            key: None,
            since_ms: None,
        }
    }

    /// Where to publish (default: each record's `dlq-original-topic`).
    pub fn to(mut self, topic: impl Into<String>) -> Self {
        self.to = Some(topic.into());
        self
    }

    /// Only records with this key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only records that last failed at or after `t`.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since_ms = Some(millis(t));
        self
    }

    fn wanted(&self, m: &Message) -> Option<Record> {
        if self.key.as_ref().is_some_and(|k| m.key.as_ref() != Some(k)) {
            return None;
        }
        let failed_at = m
            .header_str(headers::LAST_FAILURE)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(m.timestamp_ms);
        if self.since_ms.is_some_and(|since| failed_at < since) {
            return None;
        }
        let topic = self
            .to
            .clone()
            .or_else(|| m.header_str(headers::ORIGINAL_TOPIC).map(str::to_owned))?;
        let mut headers: Vec<(String, Bytes)> = m
            .headers
            .iter()
            .filter(|(n, _)| !headers::is_tracking(n))
            .cloned()
            .collect();
        headers.push((
            headers::REDRIVEN_FROM.to_owned(),
            Bytes::from(m.topic.clone()),
        ));
        Some(Record {
            topic,
            key: m.key.clone(),
            value: m.value.clone(),
            headers,
            partition: None,
            timestamp: None,
        })
    }

    /// Reads the dead-letter topic up to its end as of now and publishes the matching
    /// records; returns once every one is acknowledged.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that matters: records already sent stay published, so a
    /// redrive stopped half-way and run again publishes those twice (narrow it with
    /// [`since`](Redrive::since) or [`key`](Redrive::key)).
    pub async fn run(self) -> Result<RedriveReport, QueueError> {
        check_topic(&self.from)?;
        if let Some(t) = &self.to {
            check_topic(t)?;
        }
        let producer = Producer::builder(self.cluster.clone())
            .client_id("maas-queue-redrive")
            .build()?;
        let partitions = producer.partitions(&self.from).await?;
        let source = match (self.cluster.memory(), self.cluster.bootstrap()) {
            (Some(m), _) => Source::Memory(m.clone()),
            (None, bootstrap) => {
                let bootstrap = bootstrap.unwrap_or_default();
                let build = ClientBuilder::new(bootstrap.to_vec())
                    .client_id("maas-queue-redrive")
                    .backoff_config(BackoffConfig {
                        deadline: Some(Duration::from_secs(10)),
                        ..BackoffConfig::default()
                    })
                    .build();
                let failed = |reason: String| QueueError::Connection {
                    broker: bootstrap.join(","),
                    reason,
                };
                let c = tokio::time::timeout(Duration::from_secs(10), build)
                    .await
                    .map_err(|_| failed("no answer within 10s".to_owned()))?
                    .map_err(|e| failed(e.to_string()))?;
                Source::Kafka(Arc::new(c))
            }
        };
        let mut report = RedriveReport::default();
        let mut sends = Vec::new();
        for partition in 0..partitions {
            let fetcher = Fetcher::new(&source, &self.from, partition).await?;
            let end = fetcher.start_offset(StartFrom::Latest).await?;
            let mut offset = fetcher.start_offset(StartFrom::Earliest).await?;
            while offset < end {
                let (messages, _) = fetcher
                    .fetch(offset, 1 << 20, Duration::from_millis(100))
                    .await?;
                let before = offset;
                let from = offset;
                for m in messages
                    .into_iter()
                    .filter(|m| m.offset >= from && m.offset < end)
                {
                    offset = m.offset + 1;
                    report.scanned += 1;
                    match self.wanted(&m) {
                        Some(r) => sends.push(producer.send(r)),
                        None => report.skipped += 1,
                    }
                }
                if offset == before {
                    break;
                }
            }
        }
        for send in futures::future::join_all(sends).await {
            send?;
            report.redriven += 1;
        }
        producer.shutdown().await;
        Ok(report)
    }
}

/// Parses a `--since` value: RFC 3339 (`2026-11-25T10:00:00Z`) or Unix milliseconds.
pub fn parse_since(s: &str) -> Result<SystemTime, ConfigError> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(SystemTime::from)
        .map_err(|_| ConfigError::BadTime(s.to_owned()))
}
