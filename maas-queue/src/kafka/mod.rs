//! The Kafka edge: everything that speaks the Kafka protocol, beside the in-memory
//! backend (`memory.rs`).
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`Brokers`]: the cluster's metadata (brokers, topics, leaders) and connections |
//! | `connection.rs` | one pipelined connection to one broker |
//! | `batch.rs` | record batches as Kafka stores them, compression |
//! | `produce.rs` | the Kafka side of the producer |
//! | `group.rs` | the group protocol: join, sync, heartbeat, commit, leave |
//! | `fetch.rs` | reading a partition through rskafka |

pub(crate) mod batch;
mod connection;
pub(crate) mod fetch;
pub(crate) mod group;
pub(crate) mod produce;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{BrokerId, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

pub(crate) use connection::Connection;

use crate::QueueError;

/// API versions this client speaks (all supported by Kafka 3.x/4.x and by tansu 0.6).
pub(crate) mod versions {
    pub(crate) const METADATA: i16 = 9;
    pub(crate) const PRODUCE: i16 = 9;
    pub(crate) const FIND_COORDINATOR: i16 = 3;
    pub(crate) const JOIN_GROUP: i16 = 7;
    pub(crate) const SYNC_GROUP: i16 = 5;
    pub(crate) const HEARTBEAT: i16 = 4;
    pub(crate) const LEAVE_GROUP: i16 = 4;
    pub(crate) const OFFSET_COMMIT: i16 = 8;
    pub(crate) const OFFSET_FETCH: i16 = 7;
}

/// A topic's partitions and their leaders.
#[derive(Debug, Clone)]
pub(crate) struct TopicLayout {
    pub(crate) leaders: Vec<i32>,
}

/// The cluster as this client knows it: brokers, topic layouts, and a connection per broker.
#[derive(Debug)]
pub(crate) struct Brokers {
    bootstrap: Vec<String>,
    client_id: String,
    timeout: Duration,
    brokers: Mutex<HashMap<i32, String>>,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// A plain mutex, never held across an await: every keyless or keyed send looks here.
    topics: std::sync::Mutex<HashMap<String, Arc<TopicLayout>>>,
    /// Held while looking up a missing layout, so that a burst of sends to a new topic asks
    /// for its metadata once rather than once per record.
    lookup: Mutex<()>,
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

impl Brokers {
    pub(crate) fn new(bootstrap: Vec<String>, client_id: &str, timeout: Duration) -> Self {
        Brokers {
            bootstrap,
            client_id: client_id.to_owned(),
            timeout,
            brokers: Mutex::default(),
            connections: Mutex::default(),
            topics: std::sync::Mutex::default(),
            lookup: Mutex::default(),
        }
    }

    /// A live connection to `addr`, reconnecting if the last one broke.
    pub(crate) async fn connection(&self, addr: &str) -> Result<Arc<Connection>, QueueError> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(addr, &self.client_id, self.timeout).await?;
        conns.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// A connection to any broker (the bootstrap ones first).
    pub(crate) async fn any(&self) -> Result<Arc<Connection>, QueueError> {
        let mut last = None;
        let known: Vec<String> = self.brokers.lock().await.values().cloned().collect();
        for addr in self.bootstrap.iter().chain(known.iter()) {
            match self.connection(addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(QueueError::Closed))
    }

    /// The address of broker `id`.
    pub(crate) async fn broker(&self, id: i32) -> Option<String> {
        self.brokers.lock().await.get(&id).cloned()
    }

    /// Fetches metadata for `topics` and caches their layouts.
    pub(crate) async fn refresh(&self, topics: &[String]) -> Result<(), QueueError> {
        let mut req = MetadataRequest::default();
        req.topics = Some(
            topics
                .iter()
                .map(|t| {
                    let mut m = MetadataRequestTopic::default();
                    m.name = Some(name(t));
                    m
                })
                .collect(),
        );
        let conn = self.any().await?;
        let resp = conn.send(&req, versions::METADATA).await?;
        {
            let mut brokers = self.brokers.lock().await;
            for b in &resp.brokers {
                brokers.insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
            }
        }
        let mut layouts = self.topics();
        for t in &resp.topics {
            let Some(topic) = t.name.as_ref().map(|n| n.0.as_str().to_owned()) else {
                continue;
            };
            if t.error_code == 3 {
                layouts.remove(&topic);
                continue;
            }
            if let Some(e) = QueueError::from_code(t.error_code, format!("metadata of `{topic}`")) {
                return Err(e);
            }
            let mut leaders = vec![-1; t.partitions.len()];
            for p in &t.partitions {
                if let Some(slot) = leaders.get_mut(p.partition_index as usize) {
                    *slot = p.leader_id.0;
                }
            }
            layouts.insert(topic, Arc::new(TopicLayout { leaders }));
        }
        Ok(())
    }

    /// The layout of `topic`, fetching it if unknown.
    pub(crate) async fn layout(&self, topic: &str) -> Result<Arc<TopicLayout>, QueueError> {
        if let Some(l) = self.cached(topic) {
            return Ok(l);
        }
        let _lookup = self.lookup.lock().await;
        if let Some(l) = self.cached(topic) {
            return Ok(l);
        }
        self.refresh(&[topic.to_owned()]).await?;
        self.cached(topic)
            .ok_or_else(|| QueueError::UnknownTopic(topic.to_owned()))
    }

    /// The cached layout of `topic`, without asking the cluster.
    pub(crate) fn cached(&self, topic: &str) -> Option<Arc<TopicLayout>> {
        self.topics().get(topic).cloned()
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TopicLayout>>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a topic's layout, so the next use fetches it again.
    pub(crate) async fn invalidate(&self, topic: &str) {
        self.topics().remove(topic);
    }

    /// A connection to the leader of `topic`/`partition`.
    pub(crate) async fn leader(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<Connection>, QueueError> {
        let layout = self.layout(topic).await?;
        let leader = layout
            .leaders
            .get(partition as usize)
            .copied()
            .unwrap_or(-1);
        let addr = match self.broker(leader).await {
            Some(a) => a,
            None => {
                self.invalidate(topic).await;
                return Err(
                    QueueError::from_code(5, format!("no leader for {topic}/{partition}"))
                        .unwrap_or(QueueError::Closed),
                );
            }
        };
        self.connection(&addr).await
    }

    /// A connection to the group coordinator of `group`.
    pub(crate) async fn coordinator(
        &self,
        group: &str,
    ) -> Result<(BrokerId, Arc<Connection>), QueueError> {
        let mut req = kafka_protocol::messages::FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(group.to_owned());
        req.key_type = 0;
        let resp = self
            .any()
            .await?
            .send(&req, versions::FIND_COORDINATOR)
            .await?;
        if let Some(e) = QueueError::from_code(
            resp.error_code,
            format!("finding the coordinator of `{group}`"),
        ) {
            return Err(e);
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        Ok((resp.node_id, self.connection(&addr).await?))
    }
}
