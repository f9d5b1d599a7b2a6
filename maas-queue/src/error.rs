//! Errors: invalid configuration, broker failures, and what a handler may answer.

use std::time::Duration;

/// A configuration that cannot work. Returned by every `build()`; never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No broker address, or one that is not `host:port`.
    #[error("bad broker address `{0}`: expected host:port")]
    BadBrokerAddress(String),
    /// A group needs an id.
    #[error("the consumer group id is empty")]
    EmptyGroupId,
    /// A consumer needs at least one topic.
    #[error("the consumer subscribes to no topic")]
    NoTopics,
    /// A topic name Kafka would refuse.
    #[error("invalid topic name `{0}`: 1–249 characters of [a-zA-Z0-9._-]")]
    BadTopicName(String),
    /// A topic needs at least one partition.
    #[error("a topic needs at least one partition")]
    ZeroPartitions,
    /// A time that is neither RFC 3339 nor Unix milliseconds.
    #[error("invalid time `{0}`: expected RFC 3339 (2026-11-25T10:00:00Z) or Unix milliseconds")]
    BadTime(String),
    /// A zero where a positive number or duration is needed.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A duration longer than the Kafka protocol (32-bit milliseconds) can carry.
    #[error("{name} must be at most {max:?}")]
    TooLong {
        /// Which setting.
        name: &'static str,
        /// The longest accepted.
        max: Duration,
    },
    /// A heartbeat interval that does not fit in the session timeout: the member would be
    /// removed from its group between two heartbeats.
    #[error(
        "heartbeat_interval ({heartbeat:?}) must be shorter than session_timeout ({session:?})"
    )]
    HeartbeatNotBelowSession {
        /// The heartbeat interval given.
        heartbeat: Duration,
        /// The session timeout given.
        session: Duration,
    },
    /// A topic whose retry or dead-letter topic would have a name Kafka refuses.
    #[error(
        "topic `{topic}` needs the topic `{derived}`, whose name Kafka would refuse (1–249 characters of [a-zA-Z0-9._-])"
    )]
    DerivedTopicName {
        /// The topic consumed.
        topic: String,
        /// The retry or dead-letter topic derived from it.
        derived: String,
    },
}

/// The longest duration carried in a Kafka request field (`i32` milliseconds, ~24.8 days).
pub(crate) const PROTOCOL_MAX: Duration = Duration::from_millis(i32::MAX as u64);

/// The longest delay, linger, timeout or backoff kept internally: one year, as good as
/// never. Longer settings are clamped to it, so time arithmetic cannot overflow.
pub(crate) const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Refuses `d` for `name` when it does not fit a Kafka request field.
pub(crate) fn check_protocol(name: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > PROTOCOL_MAX {
        Err(ConfigError::TooLong {
            name,
            max: PROTOCOL_MAX,
        })
    } else {
        Ok(())
    }
}

/// Checks a topic name the way Kafka does.
pub(crate) fn check_topic(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadTopicName(name.to_owned()))
    }
}

/// Checks broker addresses (`host:port`).
pub(crate) fn check_brokers(brokers: &[String]) -> Result<(), ConfigError> {
    if brokers.is_empty() {
        return Err(ConfigError::BadBrokerAddress(String::new()));
    }
    for b in brokers {
        let Some((host, port)) = b.rsplit_once(':') else {
            return Err(ConfigError::BadBrokerAddress(b.clone()));
        };
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(ConfigError::BadBrokerAddress(b.clone()));
        }
    }
    Ok(())
}

/// Something went wrong talking to the broker.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker could not be reached or the connection broke.
    #[error("broker {broker}: {reason}")]
    Connection {
        /// The broker address.
        broker: String,
        /// What failed.
        reason: String,
    },
    /// The broker answered with a Kafka error code.
    #[error("broker error {code} ({name}) {context}")]
    Broker {
        /// The Kafka error code.
        code: i16,
        /// Its name (`NotLeaderOrFollower`, `RebalanceInProgress`, ...).
        name: String,
        /// What was being done.
        context: String,
    },
    /// No answer in time.
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
    /// A record could not be delivered before its delivery timeout.
    #[error("record not delivered within {timeout:?}: {last_error}")]
    DeliveryTimeout {
        /// The delivery timeout.
        timeout: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// The broker answered something this client could not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The topic does not exist (topics are not created automatically).
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The producer or consumer has been shut down.
    #[error("shut down")]
    Closed,
    /// Called outside a tokio runtime; the Kafka backend runs its I/O as tokio tasks.
    #[error("no tokio runtime: call this from within a tokio runtime")]
    NoRuntime,
}

impl QueueError {
    /// The error for a Kafka error code, or `None` for 0 (no error).
    pub(crate) fn from_code(code: i16, context: impl Into<String>) -> Option<Self> {
        kafka_protocol::error::ResponseError::try_from_code(code).map(|e| QueueError::Broker {
            code,
            name: e.to_string(),
            context: context.into(),
        })
    }

    /// Whether trying again (after refreshing metadata, or reconnecting) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            QueueError::Broker { code, .. } => {
                kafka_protocol::error::ResponseError::try_from_code(*code)
                    .is_some_and(|e| e.is_retriable())
            }
            QueueError::Connection { .. }
            | QueueError::Timeout(_)
            | QueueError::UnknownTopic(_) => true,
            _ => false,
        }
    }

    /// The Kafka error code, if the broker sent one.
    pub fn code(&self) -> Option<i16> {
        match self {
            QueueError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// A handler's error meaning "this record can never be processed": it skips the retries
/// and goes straight to the dead-letter queue.
///
/// ```
/// use maas_queue::Poison;
/// let err: maas_queue::BoxError = Box::new(Poison::new("not JSON: expected `{`"));
/// assert!(err.is::<Poison>());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("poison record: {0}")]
pub struct Poison(pub String);

impl Poison {
    /// A poison error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Poison(reason.into())
    }
}

/// The error type handlers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_broker_checks() {
        assert!(check_topic("model-build-tasks.dlq").is_ok());
        assert!(check_topic("").is_err());
        assert!(check_topic("bad topic").is_err());
        assert!(check_topic(&"x".repeat(250)).is_err());
        assert!(check_brokers(&["127.0.0.1:9092".into()]).is_ok());
        assert!(check_brokers(&[]).is_err());
        assert!(check_brokers(&["localhost".into()]).is_err());
        assert!(check_brokers(&["host:notaport".into()]).is_err());
    }
}
