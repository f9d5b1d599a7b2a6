//! An in-memory broker behind the same producer and consumer API: topics, partitions,
//! consumer groups and committed offsets — for users' unit tests and the platform's
//! embedded mode. It keeps Kafka's semantics where they matter to handlers (per-partition
//! order, murmur2 partitioning, at-least-once delivery with committed offsets, partitions
//! shared among a group's members) but nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::delivery::Delivery;
use crate::partitioner::partition_for_key;
use crate::{Message, QueueError, Record};

#[derive(Debug)]
struct Member {
    topics: Vec<String>,
    last_seen: Instant,
    session: Duration,
}

#[derive(Debug, Default)]
struct Group {
    members: BTreeMap<String, Member>,
    generation: i32,
    assignment: HashMap<String, Vec<(String, i32)>>,
    committed: HashMap<(String, i32), i64>,
}

#[derive(Debug, Default)]
struct State {
    topics: HashMap<String, Vec<Vec<Message>>>,
    groups: HashMap<String, Group>,
    next_keyless: u32,
}

/// An in-memory broker. Clones share one broker.
///
/// ```
/// use maas_queue::{MemoryBroker, Record};
/// let broker = MemoryBroker::new();
/// broker.create_topic("events", 2);
/// broker.append(Record::new("events", "hello").key("k")).unwrap();
/// assert_eq!(broker.messages("events").len(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Creates `topic` with `partitions` partitions (no-op if it exists).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        self.with(|s| {
            s.topics
                .entry(topic.to_owned())
                .or_insert_with(|| vec![Vec::new(); partitions.max(1) as usize]);
        });
    }

    /// Partitions of `topic`, if it exists.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.with(|s| s.topics.get(topic).map(|p| p.len() as i32))
    }

    /// Appends a record as a producer would.
    pub fn append(&self, record: Record) -> Result<Delivery, QueueError> {
        let delivery = self.with(|s| {
            let n = s
                .topics
                .get(&record.topic)
                .map(|p| p.len() as i32)
                .ok_or_else(|| QueueError::UnknownTopic(record.topic.clone()))?;
            let partition = match (record.partition, &record.key) {
                (Some(p), _) if (0..n).contains(&p) => p,
                (Some(p), _) => {
                    return Err(QueueError::from_code(3, format!("{}/{p}", record.topic))
                        .unwrap_or(QueueError::Closed));
                }
                (None, Some(k)) => partition_for_key(k, n),
                (None, None) => {
                    s.next_keyless = s.next_keyless.wrapping_add(1);
                    (s.next_keyless % n as u32) as i32
                }
            };
            let log =
                &mut s.topics.get_mut(&record.topic).expect("checked above")[partition as usize];
            let offset = log.len() as i64;
            log.push(Message {
                topic: record.topic,
                partition,
                offset,
                key: record.key,
                value: record.value,
                headers: record.headers,
                timestamp_ms: crate::time::millis(record.timestamp.unwrap_or_else(SystemTime::now)),
            });
            Ok(Delivery { partition, offset })
        })?;
        self.changed.notify_waiters();
        Ok(delivery)
    }

    /// Every message of `topic`, partition by partition.
    pub fn messages(&self, topic: &str) -> Vec<Message> {
        self.with(|s| {
            s.topics
                .get(topic)
                .map(|p| p.iter().flatten().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// The offset `group` committed for `topic`/`partition`.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.with(|s| {
            s.groups
                .get(group)?
                .committed
                .get(&(topic.to_owned(), partition))
                .copied()
        })
    }

    pub(crate) async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Message>, i64), QueueError> {
        let read = || {
            self.with(|s| {
                let log = s
                    .topics
                    .get(topic)
                    .and_then(|p| p.get(partition as usize))
                    .ok_or_else(|| QueueError::UnknownTopic(topic.to_owned()))?;
                let start = (offset.max(0) as usize).min(log.len());
                Ok((
                    log[start..(start + max).min(log.len())].to_vec(),
                    log.len() as i64,
                ))
            })
        };
        let changed = self.changed.notified();
        let (msgs, hw) = read()?;
        if !msgs.is_empty() {
            return Ok((msgs, hw));
        }
        let _ = tokio::time::timeout(wait, changed).await;
        read()
    }

    fn rebalance(group: &mut Group, partitions: &HashMap<String, Vec<Vec<Message>>>) {
        group.generation += 1;
        group.assignment.clear();
        let members: Vec<&String> = group.members.keys().collect();
        if members.is_empty() {
            return;
        }
        let mut all: Vec<(String, i32)> = Vec::new();
        let mut topics: Vec<&String> = group.members.values().flat_map(|m| &m.topics).collect();
        topics.sort();
        topics.dedup();
        for t in topics {
            for p in 0..partitions.get(t).map_or(0, Vec::len) as i32 {
                all.push((t.clone(), p));
            }
        }
        for (i, tp) in all.into_iter().enumerate() {
            let m = members[i % members.len()];
            group.assignment.entry(m.clone()).or_default().push(tp);
        }
    }

    /// Removes members silent for longer than their session timeout (a crashed process).
    fn expire(group: &mut Group, partitions: &HashMap<String, Vec<Vec<Message>>>) {
        let before = group.members.len();
        group
            .members
            .retain(|_, m| m.last_seen.elapsed() <= m.session);
        if group.members.len() != before {
            Self::rebalance(group, partitions);
        }
    }

    pub(crate) fn join(
        &self,
        group: &str,
        member: &str,
        topics: &[String],
        session: Duration,
    ) -> (i32, Vec<(String, i32)>) {
        let out = self.with(|s| {
            let g = s.groups.entry(group.to_owned()).or_default();
            Self::expire(g, &s.topics);
            let me = Member {
                topics: topics.to_vec(),
                last_seen: Instant::now(),
                session,
            };
            if g.members.insert(member.to_owned(), me).is_none() {
                Self::rebalance(g, &s.topics);
            }
            (
                g.generation,
                g.assignment.get(member).cloned().unwrap_or_default(),
            )
        });
        self.changed.notify_waiters();
        out
    }

    /// Kafka's heartbeat answer: 0, 25 (unknown member) or 27 (rebalance in progress).
    pub(crate) fn heartbeat(&self, group: &str, member: &str, generation: i32) -> i16 {
        self.with(|s| {
            let Some(g) = s.groups.get_mut(group) else {
                return 25;
            };
            Self::expire(g, &s.topics);
            match g.members.get_mut(member) {
                None => 25,
                Some(m) => {
                    m.last_seen = Instant::now();
                    if g.generation == generation { 0 } else { 27 }
                }
            }
        })
    }

    pub(crate) fn leave(&self, group: &str, member: &str) {
        self.with(|s| {
            if let Some(g) = s.groups.get_mut(group)
                && g.members.remove(member).is_some()
            {
                Self::rebalance(g, &s.topics);
            }
        });
        self.changed.notify_waiters();
    }

    pub(crate) fn commit(
        &self,
        group: &str,
        generation: i32,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), QueueError> {
        self.with(|s| {
            let g = s.groups.entry(group.to_owned()).or_default();
            if g.generation != generation {
                return Err(
                    QueueError::from_code(22, format!("committing for `{group}`"))
                        .unwrap_or(QueueError::Closed),
                );
            }
            for (t, p, o) in offsets {
                g.committed.insert((t.clone(), *p), *o);
            }
            Ok(())
        })
    }
}
