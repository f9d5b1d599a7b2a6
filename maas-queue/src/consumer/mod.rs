//! The group consumer: a member of a Kafka consumer group, handling records with a tower
//! service and committing only what it handled.
//!
//! | file | holds |
//! |---|---|
//! | `builder.rs` | [`GroupConsumerBuilder`], [`GroupConsumer`] and `start` |
//! | `config.rs` | the validated settings, [`StartFrom`] |
//! | `handle.rs` | [`ConsumerHandle`], [`ConsumerStats`], [`PartitionLag`] |
//! | `shared.rs` | what the consumer's tasks share; the metrics observer |
//! | `coordinator.rs` | the member's life: join, generations, rebalances |
//! | `worker.rs` | one partition: fetch, handle, retry, dead-letter |
//! | `fetcher.rs` | reading a partition from Kafka or the in-memory broker |
//! | `assignor.rs` | range and round-robin assignment |

pub(crate) mod assignor;
mod builder;
mod config;
mod coordinator;
pub(crate) mod fetcher;
mod handle;
mod shared;
mod worker;

pub use assignor::Assignor;
pub use builder::{GroupConsumer, GroupConsumerBuilder};
pub use config::StartFrom;
pub use handle::{ConsumerHandle, ConsumerStats, PartitionLag};
