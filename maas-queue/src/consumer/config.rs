//! The consumer's settings, as [`GroupConsumerBuilder`](super::GroupConsumerBuilder)
//! collects and validates them.

use std::time::Duration;

use super::assignor::Assignor;
use crate::FailurePolicy;

/// Where a partition with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From its first record (the default: nothing is missed).
    #[default]
    Earliest,
    /// From the records produced after the consumer joined.
    Latest,
}

/// Settings of a [`GroupConsumer`].
#[derive(Debug, Clone)]
pub(crate) struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) assignor: Assignor,
    pub(crate) start_from: StartFrom,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) partition_parallelism: usize,
    pub(crate) key_parallelism: usize,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) failure: FailurePolicy,
}
