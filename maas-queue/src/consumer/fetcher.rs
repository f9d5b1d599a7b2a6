//! Reading one partition: through rskafka for Kafka, or from the in-memory broker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};

use super::StartFrom;
use crate::memory::MemoryBroker;
use crate::{Message, QueueError};

/// Kafka's `OffsetOutOfRange`.
pub(crate) const OFFSET_OUT_OF_RANGE: i16 = 1;

pub(crate) enum Fetcher {
    Kafka(PartitionClient),
    Memory {
        broker: MemoryBroker,
        topic: String,
        partition: i32,
    },
}

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

impl Fetcher {
    pub(crate) async fn new(
        client: Option<&Arc<Client>>,
        memory: Option<&MemoryBroker>,
        topic: &str,
        partition: i32,
    ) -> Result<Self, QueueError> {
        match (memory, client) {
            (Some(m), _) => Ok(Fetcher::Memory {
                broker: m.clone(),
                topic: topic.to_owned(),
                partition,
            }),
            (None, Some(c)) => c
                .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
                .await
                .map(Fetcher::Kafka)
                .map_err(rskafka_error),
            (None, None) => Err(QueueError::Closed),
        }
    }

    /// Records from `offset` on, and the partition's high watermark.
    pub(crate) async fn fetch(
        &self,
        offset: i64,
        max_bytes: i32,
        wait: Duration,
    ) -> Result<(Vec<Message>, i64), QueueError> {
        match self {
            Fetcher::Kafka(pc) => {
                let (records, hw) = pc
                    .fetch_records(offset, 1..max_bytes, wait.as_millis() as i32)
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
            Fetcher::Memory {
                broker,
                topic,
                partition,
            } => broker.fetch(topic, *partition, offset, 10_000, wait).await,
        }
    }

    /// Where to start when nothing is committed.
    pub(crate) async fn start_offset(&self, from: StartFrom) -> Result<i64, QueueError> {
        match self {
            Fetcher::Kafka(pc) => pc
                .get_offset(match from {
                    StartFrom::Earliest => OffsetAt::Earliest,
                    StartFrom::Latest => OffsetAt::Latest,
                })
                .await
                .map_err(rskafka_error),
            Fetcher::Memory {
                broker,
                topic,
                partition,
            } => Ok(match from {
                StartFrom::Earliest => 0,
                StartFrom::Latest => {
                    broker
                        .fetch(topic, *partition, i64::MAX, 0, Duration::ZERO)
                        .await?
                        .1
                }
            }),
        }
    }
}
