//! What goes in ([`Record`]) and what comes out ([`Message`]).

use std::time::SystemTime;

use bytes::Bytes;

/// Record headers: ordered (name, value) pairs; names may repeat, as in Kafka.
pub type Headers = Vec<(String, Bytes)>;

/// A record to produce.
///
/// ```
/// use maas_queue::Record;
/// let r = Record::new("model-build-tasks", r#"{"model":"m-1"}"#)
///     .key("m-1")
///     .header("content-type", "application/json");
/// assert_eq!(r.key.as_deref(), Some(&b"m-1"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic.
    pub topic: String,
    /// The key: records with the same key land on the same partition, in order.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// A fixed partition instead of the partitioner's choice.
    pub partition: Option<i32>,
    /// Creation time (default: when it is sent).
    pub timestamp: Option<SystemTime>,
}

impl Record {
    /// A record with a value for `topic`.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Record {
            topic: topic.into(),
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            partition: None,
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The first value of header `name`.
    pub fn header_value(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// About the bytes this record takes in a batch, counting the `traceparent` the
    /// producer adds when the record has none.
    pub(crate) fn approx_size(&self) -> usize {
        let mut trace = crate::trace::TRACEPARENT.len() + crate::trace::TRACEPARENT_LEN + 4;
        let mut h = 0;
        for (n, v) in &self.headers {
            if n == crate::trace::TRACEPARENT {
                trace = 0;
            }
            h += n.len() + v.len() + 4;
        }
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + h
            + trace
            + 24
    }
}

/// A record as consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Headers,
    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Message {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The first value of header `name`, as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The W3C `traceparent` the producer attached, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.header_str(crate::trace::TRACEPARENT)
    }

    /// The value as UTF-8, if it is.
    pub fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}
