//! Reading one partition of a Kafka cluster, through rskafka.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};

use crate::{Message, QueueError};

/// Kafka's `OffsetOutOfRange`.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;

fn rskafka_error(e: rskafka::client::error::Error) -> QueueError {
    use rskafka::client::error::{Error, ProtocolError};
    match e {
        Error::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        } => QueueError::from_code(OFFSET_OUT_OF_RANGE, "fetching").unwrap_or(QueueError::Closed),
        other => QueueError::Connection {
            broker: "fetch".to_owned(),
            reason: other.to_string(),
        },
    }
}

fn message(topic: &str, partition: i32, r: rskafka::record::RecordAndOffset) -> Message {
    let headers: BTreeMap<String, Vec<u8>> = r.record.headers;
    Message {
        topic: topic.to_owned(),
        partition,
        offset: r.offset,
        key: r.record.key.map(Bytes::from),
        value: r.record.value.map(Bytes::from),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect(),
        timestamp_ms: r.record.timestamp.timestamp_millis(),
    }
}

/// One partition of a Kafka cluster.
pub(crate) struct PartitionReader(PartitionClient);

impl PartitionReader {
    /// A reader of `topic`'s `partition` (waiting for the topic to exist).
    pub(crate) async fn new(
        client: &Arc<Client>,
        topic: &str,
        partition: i32,
    ) -> Result<Self, QueueError> {
        client
            .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
            .await
            .map(PartitionReader)
            .map_err(rskafka_error)
    }

    /// Records from `offset` on, and the partition's high watermark.
    pub(crate) async fn fetch(
        &self,
        offset: i64,
        max_bytes: i32,
        wait: Duration,
    ) -> Result<(Vec<Message>, i64), QueueError> {
        let pc = &self.0;
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let (records, hw) = pc
            .fetch_records(offset, 1..max_bytes, wait_ms)
            .await
            .map_err(rskafka_error)?;
        let (topic, partition) = (pc.topic().to_owned(), pc.partition());
        Ok((
            records
                .into_iter()
                .map(|r| message(&topic, partition, r))
                .collect(),
            hw,
        ))
    }

    /// The partition's first offset (`earliest`) or its end.
    pub(crate) async fn offset(&self, earliest: bool) -> Result<i64, QueueError> {
        self.0
            .get_offset(if earliest {
                OffsetAt::Earliest
            } else {
                OffsetAt::Latest
            })
            .await
            .map_err(rskafka_error)
    }
}
