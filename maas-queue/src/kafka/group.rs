//! Kafka's group protocol, spoken on the coordinator's connection (never shared with
//! fetches, so heartbeats never queue behind a long poll).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{Brokers, Connection, name, versions};
use crate::QueueError;
use crate::consumer::assignor::Assignor;

/// Error codes the group loop reacts to.
pub(crate) mod codes {
    pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub(crate) const NOT_COORDINATOR: i16 = 16;
    pub(crate) const COORDINATOR_LOADING: i16 = 14;
    pub(crate) const ILLEGAL_GENERATION: i16 = 22;
    pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
    pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
    pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn encode_versioned<T: Encodable>(value: &T, version: i16) -> Result<Bytes, QueueError> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    value
        .encode(&mut buf, version)
        .map_err(|e| QueueError::Protocol(e.to_string()))?;
    Ok(buf.freeze())
}

fn decode_versioned<T: Decodable + Default>(mut bytes: Bytes) -> Result<T, QueueError> {
    if bytes.len() < 2 {
        return Ok(T::default());
    }
    let version = bytes.get_i16().min(3);
    T::decode(&mut bytes, version).map_err(|e| QueueError::Protocol(e.to_string()))
}

/// What a successful join gives.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) generation: i32,
    pub(crate) member_id: String,
    pub(crate) partitions: Vec<(String, i32)>,
}

/// A member of one group, talking to its coordinator.
pub(crate) struct KafkaGroup {
    pub(crate) cluster: Arc<Brokers>,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) assignor: Assignor,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) member_id: String,
    coordinator: Option<Arc<Connection>>,
    /// As a follower: the leader whose assignment this member has been waiting for, since.
    waiting_for: Option<(String, std::time::Instant)>,
}

impl KafkaGroup {
    pub(crate) fn new(
        cluster: Arc<Brokers>,
        group: String,
        topics: Vec<String>,
        assignor: Assignor,
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Self {
        KafkaGroup {
            cluster,
            group,
            topics,
            assignor,
            session_timeout,
            rebalance_timeout,
            member_id: String::new(),
            coordinator: None,
            waiting_for: None,
        }
    }

    async fn coordinator(&mut self) -> Result<Arc<Connection>, QueueError> {
        if let Some(c) = self.coordinator.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (_, c) = self.cluster.coordinator(&self.group).await?;
        self.coordinator = Some(c.clone());
        Ok(c)
    }

    /// Forgets the coordinator (it moved); the next call finds it again.
    pub(crate) fn forget_coordinator(&mut self) {
        self.coordinator = None;
    }

    /// Forgets the member id (the coordinator no longer knows it).
    pub(crate) fn reset_member(&mut self) {
        self.member_id.clear();
    }

    /// Joins (and, if leader, assigns) until a generation is reached.
    pub(crate) async fn join(&mut self) -> Result<Joined, QueueError> {
        let subscription = {
            let mut sub = ConsumerProtocolSubscription::default();
            sub.topics = self.topics.iter().map(|t| s(t)).collect();
            encode_versioned(&sub, 0)?
        };
        loop {
            let conn = self.coordinator().await?;
            let mut req = JoinGroupRequest::default();
            req.group_id = GroupId(s(&self.group));
            req.session_timeout_ms = self.session_timeout.as_millis() as i32;
            req.rebalance_timeout_ms = self.rebalance_timeout.as_millis() as i32;
            req.member_id = s(&self.member_id);
            req.protocol_type = s("consumer");
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = s(self.assignor.name());
            protocol.metadata = subscription.clone();
            req.protocols = vec![protocol];
            let resp = conn.send(&req, versions::JOIN_GROUP).await?;
            if resp.error_code == codes::MEMBER_ID_REQUIRED {
                // KIP-394: the coordinator gives us an id; join again with it.
                self.member_id = resp.member_id.as_str().to_owned();
                continue;
            }
            if let Some(e) =
                QueueError::from_code(resp.error_code, format!("joining group `{}`", self.group))
            {
                return Err(e);
            }
            self.member_id = resp.member_id.as_str().to_owned();
            let protocol_name = resp
                .protocol_name
                .as_ref()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            let assignments = if resp.leader.as_str() == self.member_id {
                self.assign(&protocol_name, &resp.members).await?
            } else {
                Vec::new()
            };
            let mut sync = SyncGroupRequest::default();
            sync.group_id = GroupId(s(&self.group));
            sync.generation_id = resp.generation_id;
            sync.member_id = s(&self.member_id);
            sync.protocol_type = Some(s("consumer"));
            sync.protocol_name = resp.protocol_name.clone();
            sync.assignments = assignments;
            let synced = conn.send(&sync, versions::SYNC_GROUP).await?;
            if synced.error_code == codes::REBALANCE_IN_PROGRESS {
                let leader = resp.leader.as_str();
                if !leader.is_empty() && leader != self.member_id {
                    match &self.waiting_for {
                        Some((l, since)) if l == leader => {
                            if since.elapsed() > self.session_timeout {
                                // tansu 0.6 can keep a leader that already left the group, and
                                // followers then wait for its assignment forever; joining under
                                // its id makes this member the leader. (A Kafka leader that
                                // stays silent a whole session is expelled, so the id is then
                                // unknown and the coordinator gives us a new one.)
                                tracing::info!(target: "maas_queue", group = %self.group, leader, "the leader has not assigned partitions for a whole session timeout; taking its place");
                                self.leave().await?; // this member's own id goes away
                                self.member_id = leader.to_owned();
                                self.waiting_for = None;
                            }
                        }
                        _ => {
                            self.waiting_for = Some((leader.to_owned(), std::time::Instant::now()))
                        }
                    }
                }
                continue;
            }
            if let Some(e) =
                QueueError::from_code(synced.error_code, format!("syncing group `{}`", self.group))
            {
                return Err(e);
            }
            let assignment: ConsumerProtocolAssignment = decode_versioned(synced.assignment)?;
            let partitions: Vec<(String, i32)> = assignment
                .assigned_partitions
                .iter()
                .flat_map(|tp| {
                    tp.partitions
                        .iter()
                        .map(move |p| (tp.topic.0.as_str().to_owned(), *p))
                })
                .collect();
            self.waiting_for = None;
            return Ok(Joined {
                generation: resp.generation_id,
                member_id: self.member_id.clone(),
                partitions,
            });
        }
    }

    /// The leader's job: share the subscribed topics' partitions among the members.
    async fn assign(
        &self,
        protocol: &str,
        members: &[kafka_protocol::messages::join_group_response::JoinGroupResponseMember],
    ) -> Result<Vec<SyncGroupRequestAssignment>, QueueError> {
        let assignor = Assignor::from_name(protocol).unwrap_or(self.assignor);
        let mut subscriptions = BTreeMap::new();
        for m in members {
            let sub: ConsumerProtocolSubscription = decode_versioned(m.metadata.clone())?;
            let topics: BTreeSet<String> =
                sub.topics.iter().map(|t| t.as_str().to_owned()).collect();
            subscriptions.insert(m.member_id.as_str().to_owned(), topics);
        }
        let all: Vec<String> = subscriptions
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.cluster.refresh(&all).await?;
        let mut counts = BTreeMap::new();
        for t in &all {
            if let Ok(l) = self.cluster.layout(t).await {
                counts.insert(t.clone(), l.leaders.len() as i32);
            }
        }
        let plan = assignor.assign(&subscriptions, &counts);
        plan.into_iter()
            .map(|(member, parts)| {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (t, p) in parts {
                    by_topic.entry(t).or_default().push(p);
                }
                let mut a = ConsumerProtocolAssignment::default();
                a.assigned_partitions = by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut tp = AssignedPartitions::default();
                        tp.topic = name(&t);
                        tp.partitions = ps;
                        tp
                    })
                    .collect();
                let mut out = SyncGroupRequestAssignment::default();
                out.member_id = s(&member);
                out.assignment = encode_versioned(&a, 0)?;
                Ok(out)
            })
            .collect()
    }

    /// One heartbeat: `Ok(0)` when all is well, `Ok(code)` for the group errors the loop
    /// handles, `Err` for anything else.
    pub(crate) async fn heartbeat(&mut self, generation: i32) -> Result<i16, QueueError> {
        let conn = self.coordinator().await?;
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.generation_id = generation;
        req.member_id = s(&self.member_id);
        Ok(conn.send(&req, versions::HEARTBEAT).await?.error_code)
    }

    /// Commits `offsets` (topic, partition, next offset to read) for `generation`.
    pub(crate) async fn commit(
        &mut self,
        generation: i32,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), QueueError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (t, p, o) in offsets {
            let mut part = OffsetCommitRequestPartition::default();
            part.partition_index = *p;
            part.committed_offset = *o;
            part.committed_leader_epoch = -1;
            by_topic.entry(t).or_default().push(part);
        }
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.generation_id_or_member_epoch = generation;
        req.member_id = s(&self.member_id);
        req.topics = by_topic
            .into_iter()
            .map(|(t, parts)| {
                let mut topic = OffsetCommitRequestTopic::default();
                topic.name = name(t);
                topic.partitions = parts;
                topic
            })
            .collect();
        let resp = conn.send(&req, versions::OFFSET_COMMIT).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                if let Some(e) = QueueError::from_code(
                    p.error_code,
                    format!("committing {}/{}", t.name.0.as_str(), p.partition_index),
                ) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The committed offsets of `partitions` (absent: nothing committed).
    pub(crate) async fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>, QueueError> {
        let conn = self.coordinator().await?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(s(&self.group));
        req.topics = Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    let mut topic = OffsetFetchRequestTopic::default();
                    topic.name = name(t);
                    topic.partition_indexes = ps;
                    topic
                })
                .collect(),
        );
        let resp = conn.send(&req, versions::OFFSET_FETCH).await?;
        if let Some(e) = QueueError::from_code(
            resp.error_code,
            format!("fetching offsets of `{}`", self.group),
        ) {
            return Err(e);
        }
        let mut out = BTreeMap::new();
        for t in &resp.topics {
            for p in &t.partitions {
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.as_str().to_owned(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Leaves the group, so its partitions move to the others at once.
    pub(crate) async fn leave(&mut self) -> Result<(), QueueError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let mut req = LeaveGroupRequest::default();
        req.group_id = GroupId(s(&self.group));
        let mut me = MemberIdentity::default();
        me.member_id = s(&self.member_id);
        req.members = vec![me];
        conn.send(&req, versions::LEAVE_GROUP).await?;
        self.member_id.clear();
        Ok(())
    }
}
