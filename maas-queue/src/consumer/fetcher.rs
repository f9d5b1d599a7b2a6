//! Reading one partition: from Kafka (`kafka/fetch.rs`) or from the in-memory broker.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;

use super::config::StartFrom;
use crate::kafka::fetch::PartitionReader;
use crate::memory::MemoryBroker;
use crate::{Message, QueueError};

pub(crate) use crate::kafka::fetch::OFFSET_OUT_OF_RANGE;

/// A partition being read.
pub(crate) enum Fetcher {
    Kafka(PartitionReader),
    Memory {
        broker: MemoryBroker,
        topic: String,
        partition: i32,
    },
}

/// What partitions are read from: a Kafka client, or the in-memory broker.
#[derive(Clone)]
pub(crate) enum Source {
    Kafka(Arc<Client>),
    Memory(MemoryBroker),
}

impl Fetcher {
    /// A reader of `topic`'s `partition` in `source`.
    pub(crate) async fn new(
        source: &Source,
        topic: &str,
        partition: i32,
    ) -> Result<Self, QueueError> {
        match source {
            Source::Kafka(client) => PartitionReader::new(client, topic, partition)
                .await
                .map(Fetcher::Kafka),
            Source::Memory(broker) => Ok(Fetcher::Memory {
                broker: broker.clone(),
                topic: topic.to_owned(),
                partition,
            }),
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
            Fetcher::Kafka(reader) => reader.fetch(offset, max_bytes, wait).await,
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
            Fetcher::Kafka(reader) => reader.offset(from == StartFrom::Earliest).await,
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
