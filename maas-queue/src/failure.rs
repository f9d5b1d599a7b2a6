//! What happens to a record its handler keeps failing on: retries in place, retry topics,
//! then the dead-letter queue — without ever blocking its partition for long.
//!
//! | header (on retry-topic and DLQ records) | value |
//! |---|---|
//! | `dlq-original-topic` | the topic the record was first produced to |
//! | `dlq-original-partition` | its partition there |
//! | `dlq-original-offset` | its offset there |
//! | `dlq-original-key` | its key (also kept as the record key) |
//! | `dlq-error` | the handler's last error |
//! | `dlq-attempts` | handler calls so far, over all topics |
//! | `dlq-first-failure-ms`, `dlq-last-failure-ms` | Unix milliseconds |
//! | `dlq-group` | the consumer group |
//! | `retry-due-ms` | (retry topics) not to be handled before this time |

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::time::millis;
use crate::{Message, Record};

/// Header names (see the module docs).
pub mod headers {
    /// The topic the record was first produced to.
    pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
    /// Its partition there.
    pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
    /// Its offset there.
    pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
    /// Its key.
    pub const ORIGINAL_KEY: &str = "dlq-original-key";
    /// The handler's last error.
    pub const ERROR: &str = "dlq-error";
    /// Handler calls so far.
    pub const ATTEMPTS: &str = "dlq-attempts";
    /// First failure, Unix milliseconds.
    pub const FIRST_FAILURE: &str = "dlq-first-failure-ms";
    /// Last failure, Unix milliseconds.
    pub const LAST_FAILURE: &str = "dlq-last-failure-ms";
    /// The consumer group.
    pub const GROUP: &str = "dlq-group";
    /// Retry topics: not to be handled before this time (Unix milliseconds).
    pub const DUE: &str = "retry-due-ms";
    /// Set by redrive: the DLQ topic the record came back from.
    pub const REDRIVEN_FROM: &str = "redriven-from";

    /// Whether a header is one of the failure-tracking headers (dropped on redrive).
    pub fn is_tracking(name: &str) -> bool {
        name.starts_with("dlq-") || name == DUE
    }
}

/// How a consumer treats records its handler fails on.
///
/// ```
/// use std::time::Duration;
/// use maas_queue::FailurePolicy;
/// // 3 quick retries in place, then a retry topic after 10 s and one after 1 min, then the DLQ.
/// let policy = FailurePolicy::default()
///     .retries(3, Duration::from_millis(100))
///     .retry_topics([Duration::from_secs(10), Duration::from_secs(60)]);
/// assert_eq!(policy.retry_topic("tasks", 1), "tasks.retry.1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) retry_topics: Vec<Duration>,
    pub(crate) dlq: bool,
}

impl Default for FailurePolicy {
    /// 3 retries in place (200 ms, doubling), no retry topics, then the DLQ.
    fn default() -> Self {
        FailurePolicy {
            retries: 3,
            backoff: Duration::from_millis(200),
            retry_topics: Vec::new(),
            dlq: true,
        }
    }
}

impl FailurePolicy {
    /// Retries in place: `retries` more calls, the first after `backoff`, doubling.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// After the in-place retries, moves the record to `<topic>.retry.1`, `.retry.2`, ...
    /// to be handled again after each delay; after the last, to the DLQ.
    pub fn retry_topics(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.retry_topics = delays.into_iter().collect();
        self
    }

    /// Without a DLQ a record that exhausts its retries is logged and skipped (default: DLQ).
    pub fn dead_letter(mut self, dlq: bool) -> Self {
        self.dlq = dlq;
        self
    }

    /// The name of retry topic `level` (from 1) of `topic`.
    pub fn retry_topic(&self, topic: &str, level: usize) -> String {
        format!("{topic}.retry.{level}")
    }

    /// The dead-letter topic of `topic`.
    pub fn dlq_topic(&self, topic: &str) -> String {
        format!("{topic}.dlq")
    }

    /// The policy with its backoff and delays clamped to a year (as good as never), so
    /// that due times cannot overflow.
    pub(crate) fn clamped(mut self) -> Self {
        self.backoff = self.backoff.min(crate::error::LONGEST);
        for d in &mut self.retry_topics {
            *d = (*d).min(crate::error::LONGEST);
        }
        self
    }

    /// The topics a consumer of `topic` also reads: its retry topics.
    pub(crate) fn retry_topics_of(&self, topic: &str) -> Vec<String> {
        (1..=self.retry_topics.len())
            .map(|l| self.retry_topic(topic, l))
            .collect()
    }
}

/// Where a message stands in its failure history.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub(crate) original_topic: String,
    pub(crate) original_partition: i32,
    pub(crate) original_offset: i64,
    pub(crate) attempts: u32,
    pub(crate) first_failure: Option<i64>,
    /// 0 on the original topic, n on `.retry.n`.
    pub(crate) level: usize,
    pub(crate) due: Option<i64>,
}

impl History {
    pub(crate) fn of(m: &Message) -> Self {
        let num = |h: &str| m.header_str(h).and_then(|v| v.parse::<i64>().ok());
        let original_topic = m
            .header_str(headers::ORIGINAL_TOPIC)
            .map(str::to_owned)
            .unwrap_or_else(|| m.topic.clone());
        let level = m
            .topic
            .strip_prefix(&format!("{original_topic}.retry."))
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        History {
            original_partition: num(headers::ORIGINAL_PARTITION).map_or(m.partition, |p| p as i32),
            original_offset: num(headers::ORIGINAL_OFFSET).unwrap_or(m.offset),
            attempts: num(headers::ATTEMPTS).map_or(0, |a| a as u32),
            first_failure: num(headers::FIRST_FAILURE),
            due: num(headers::DUE),
            level,
            original_topic,
        }
    }

    /// The record to produce to `topic` after the handler failed with `error`.
    pub(crate) fn forward(
        &self,
        m: &Message,
        topic: String,
        error: &str,
        group: &str,
        due: Option<i64>,
    ) -> Record {
        let now = millis(SystemTime::now());
        let mut r = Record {
            topic,
            key: m.key.clone(),
            value: m.value.clone(),
            headers: m
                .headers
                .iter()
                .filter(|(n, _)| !headers::is_tracking(n))
                .cloned()
                .collect(),
            partition: None,
            timestamp: None,
        };
        let mut put = |n: &str, v: String| r.headers.push((n.to_owned(), Bytes::from(v)));
        put(headers::ORIGINAL_TOPIC, self.original_topic.clone());
        put(
            headers::ORIGINAL_PARTITION,
            self.original_partition.to_string(),
        );
        put(headers::ORIGINAL_OFFSET, self.original_offset.to_string());
        put(headers::ERROR, error.to_owned());
        put(headers::ATTEMPTS, self.attempts.to_string());
        put(
            headers::FIRST_FAILURE,
            self.first_failure.unwrap_or(now).to_string(),
        );
        put(headers::LAST_FAILURE, now.to_string());
        put(headers::GROUP, group.to_owned());
        if let Some(d) = due {
            put(headers::DUE, d.to_string());
        }
        if let Some(k) = &m.key {
            r.headers
                .push((headers::ORIGINAL_KEY.to_owned(), k.clone()));
        }
        r
    }
}
