//! Kafka messaging with consumer groups, retries and a dead-letter queue.
//!
//! `maas-queue` decouples work through Kafka. It builds on the pure-Rust `rskafka` client
//! and adds what that client leaves out:
//!
//! * a [`Producer`] with Kafka's default (murmur2) partitioner, per-partition batching,
//!   compression, `acks=all` and retries bounded by a delivery timeout, on its own
//!   `TCP_NODELAY` connection so that single-record sends take well under a millisecond;
//! * [`GroupConsumer`]: a member of a Kafka consumer group, speaking the group protocol
//!   (join, sync with the `range` or `roundrobin` assignor, heartbeat, commit, leave) so
//!   other Kafka clients in the same group share partitions with it; records are handled
//!   by a `tower::Service`, in order per partition (or per key), and an offset is committed
//!   only once it and everything before it was handled;
//! * a [`FailurePolicy`]: retries in place, retry topics with delays, then a dead-letter
//!   topic whose [headers](failure::headers) say where each record came from and why it
//!   failed, and [`Redrive`] (also the `maas-queue redrive` command) to put records back;
//! * lag per partition ([`ConsumerHandle::lag`], and the `metrics` module with feature
//!   `prometheus`);
//! * a [`MemoryBroker`] behind the same API, for unit tests and demos: every builder takes
//!   a [`Cluster`] — Kafka bootstrap addresses or an in-memory broker;
//! * a `traceparent` header on every produced record ([`trace`]).
//!
//! ```
//! use maas_queue::{FailurePolicy, GroupConsumer, MemoryBroker, Message, Poison, Producer, Record};
//! use tower::service_fn;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = MemoryBroker::new(); // or `["kafka:9092"]` to talk to Kafka: a `Cluster`
//! let producer = Producer::builder(&broker).build()?;
//! producer.create_topic("model-build-tasks", 3).await?;
//! producer.send(Record::new("model-build-tasks", "not json").key("m-7")).await?;
//!
//! let workers = GroupConsumer::builder(&broker, "model-builders")
//!     .topics(["model-build-tasks"])
//!     .failure_policy(FailurePolicy::default())
//!     .build()?
//!     .start(service_fn(|m: Message| async move {
//!         match m.value_str() {
//!             Some(v) if v.starts_with('{') => Ok(()),
//!             _ => Err(Poison::new("not JSON")),
//!         }
//!     }));
//! while broker.messages("model-build-tasks.dlq").is_empty() {
//!     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
//! }
//! let dead = &broker.messages("model-build-tasks.dlq")[0];
//! assert_eq!(dead.header_str("dlq-error"), Some("poison record: not JSON"));
//! workers.shutdown().await;
//! # Ok(()) }
//! ```

mod cluster;
mod consumer;
mod delivery;
mod error;
pub mod failure;
mod kafka;
mod memory;
mod message;
#[cfg(feature = "prometheus")]
pub mod metrics;
pub mod outbox;
mod partitioner;
mod producer;
mod redrive;
mod time;
pub mod trace;

pub use cluster::Cluster;
pub use consumer::{
    Assignor, ConsumerHandle, ConsumerStats, GroupConsumer, GroupConsumerBuilder, PartitionLag,
    StartFrom,
};
pub use delivery::Delivery;
pub use error::{BoxError, ConfigError, Poison, QueueError};
pub use failure::FailurePolicy;
pub use memory::MemoryBroker;
pub use message::{Headers, Message, Record};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::{Compression, Producer, ProducerBuilder, SendFuture};
pub use redrive::{Redrive, RedriveReport, parse_since};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
