//! The Kafka side of the producer: per-partition queues, one batch in flight per partition
//! (so retries keep order), pipelined requests on one connection per broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use super::{Delivery, ProducerConfig, batch};
use crate::partitioner::{Sticky, partition_for_key};
use crate::wire::{Cluster, TopicLayout, name, versions};
use crate::{QueueError, Record};

type Reply = oneshot::Sender<Result<Delivery, QueueError>>;

struct Queued {
    record: Record,
    reply: Reply,
    enqueued: Instant,
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct PartitionQueue {
    records: Vec<Queued>,
    bytes: usize,
    draining: bool,
}

pub(crate) struct KafkaProducer {
    shared: Arc<Shared>,
}

struct Shared {
    config: ProducerConfig,
    cluster: Cluster,
    queues: std::sync::Mutex<HashMap<(String, i32), PartitionQueue>>,
    sticky: Sticky,
    room: Arc<Semaphore>,
    outstanding: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
}

impl KafkaProducer {
    pub(crate) fn new(config: ProducerConfig) -> Self {
        let cluster = Cluster::new(
            config.brokers.clone(),
            &config.client_id,
            config.request_timeout,
        );
        KafkaProducer {
            shared: Arc::new(Shared {
                room: Arc::new(Semaphore::new(config.max_buffered)),
                cluster,
                config,
                queues: Default::default(),
                sticky: Sticky::default(),
                outstanding: AtomicUsize::new(0),
                idle: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) async fn partitions(&self, topic: &str) -> Result<i32, QueueError> {
        Ok(self.shared.cluster.layout(topic).await?.leaders.len() as i32)
    }

    pub(crate) async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
    ) -> Result<(), QueueError> {
        let mut req = kafka_protocol::messages::CreateTopicsRequest::default();
        let mut t = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
        t.name = name(topic);
        t.num_partitions = partitions;
        t.replication_factor = -1;
        req.topics = vec![t];
        req.timeout_ms = self.shared.config.request_timeout.as_millis() as i32;
        let resp = self.shared.cluster.any().await?.send(&req, 5).await?;
        for t in &resp.topics {
            // 36: TopicAlreadyExists — creating is idempotent.
            if t.error_code != 36
                && let Some(e) =
                    QueueError::from_code(t.error_code, format!("creating topic `{topic}`"))
            {
                return Err(e);
            }
        }
        self.shared.cluster.invalidate(topic).await;
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
    }

    pub(crate) async fn flush(&self) {
        loop {
            let idle = self.shared.idle.notified();
            if self.shared.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    pub(crate) async fn send(&self, record: Record) -> Result<Delivery, QueueError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let permit = s
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Closed)?;
        let partition = match record.partition {
            Some(p) => p,
            None => {
                let count = layout_within_timeout(s, &record.topic).await?.leaders.len() as i32;
                match &record.key {
                    Some(k) => partition_for_key(k, count),
                    None => s.sticky.pick(count),
                }
            }
        };
        let (reply, rx) = oneshot::channel();
        let topic = record.topic.clone();
        s.outstanding.fetch_add(1, Ordering::AcqRel);
        let start = {
            let mut queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
            let q = queues.entry((topic.clone(), partition)).or_default();
            q.bytes += record.approx_size();
            q.records.push(Queued {
                record,
                reply,
                enqueued: Instant::now(),
                _permit: permit,
            });
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            tokio::spawn(drain(self.shared.clone(), topic, partition));
        }
        rx.await.unwrap_or(Err(QueueError::Closed))
    }
}

/// The topic's layout, retrying retriable failures (a broker restarting, a metadata request
/// stuck behind large produce requests) until the delivery timeout.
async fn layout_within_timeout(s: &Shared, topic: &str) -> Result<TopicLayout, QueueError> {
    let deadline = Instant::now() + s.config.delivery_timeout;
    let mut pause = s.config.retry_backoff;
    loop {
        let err = match s.cluster.layout(topic).await {
            Ok(l) => return Ok(l),
            Err(e) => e,
        };
        if !err.is_retriable() || Instant::now() + pause >= deadline {
            return Err(err);
        }
        tracing::debug!(target: "maas_queue", %topic, error = %err, "metadata lookup failed; retrying");
        s.cluster.invalidate(topic).await;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Sends the queue of one partition, a batch at a time, until it is empty.
async fn drain(s: Arc<Shared>, topic: String, partition: i32) {
    let key = (topic.clone(), partition);
    loop {
        if !s.config.linger.is_zero() {
            let first = {
                let queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
                queues
                    .get(&key)
                    .and_then(|q| q.records.first().map(|r| (r.enqueued, q.bytes)))
            };
            if let Some((at, bytes)) = first
                && bytes < s.config.max_batch_bytes
            {
                tokio::time::sleep_until(at + s.config.linger).await;
            }
        }
        let batch: Vec<Queued> = {
            let mut queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
            let Some(q) = queues.get_mut(&key) else {
                return;
            };
            if q.records.is_empty() {
                q.draining = false;
                return;
            }
            let mut bytes = 0;
            let mut n = 0;
            for r in &q.records {
                let size = r.record.approx_size();
                if n > 0 && bytes + size > s.config.max_batch_bytes {
                    break;
                }
                bytes += size;
                n += 1;
            }
            q.bytes -= bytes;
            q.records.drain(..n).collect()
        };
        s.sticky.advance();
        let n = batch.len();
        tracing::trace!(target: "maas_queue", %topic, partition, records = n, "producing a batch");
        let result = send_batch(&s, &topic, partition, &batch).await;
        for (i, q) in batch.into_iter().enumerate() {
            let _ = q.reply.send(result.clone().map(|base| Delivery {
                partition,
                offset: base + i as i64,
            }));
        }
        if s.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            s.idle.notify_waiters();
        }
    }
}

/// Produces one batch, retrying retriable errors until the oldest record's delivery
/// timeout. Returns the batch's base offset.
async fn send_batch(
    s: &Shared,
    topic: &str,
    partition: i32,
    batch: &[Queued],
) -> Result<i64, QueueError> {
    let records: Vec<&Record> = batch.iter().map(|q| &q.record).collect();
    let encoded = batch::encode(&records, s.config.compression)?;
    let deadline = batch
        .iter()
        .map(|q| q.enqueued)
        .min()
        .unwrap_or_else(Instant::now)
        + s.config.delivery_timeout;
    let mut pause = s.config.retry_backoff;
    loop {
        let err = match produce(s, topic, partition, encoded.clone()).await {
            Ok(base) => return Ok(base),
            Err(e) => e,
        };
        if !err.is_retriable() {
            return Err(err);
        }
        s.cluster.invalidate(topic).await;
        if Instant::now() + pause >= deadline {
            return Err(QueueError::DeliveryTimeout {
                timeout: s.config.delivery_timeout,
                last_error: err.to_string(),
            });
        }
        tracing::debug!(target: "maas_queue", %topic, partition, error = %err, "produce failed; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn produce(
    s: &Shared,
    topic: &str,
    partition: i32,
    records: bytes::Bytes,
) -> Result<i64, QueueError> {
    let conn = s.cluster.leader(topic, partition).await?;
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![data];
    let mut req = ProduceRequest::default();
    req.acks = -1;
    req.timeout_ms = s.config.request_timeout.as_millis() as i32;
    req.topic_data = vec![t];
    let resp = conn.send(&req, versions::PRODUCE).await?;
    let p = resp
        .responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .find(|p| p.index == partition)
        .ok_or_else(|| QueueError::Protocol(format!("no answer for {topic}/{partition}")))?;
    match QueueError::from_code(p.error_code, format!("producing to {topic}/{partition}")) {
        Some(e) => Err(e),
        None => Ok(p.base_offset),
    }
}
