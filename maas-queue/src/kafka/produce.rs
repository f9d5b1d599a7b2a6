//! The Kafka side of the producer: per-partition queues, one batch in flight per partition
//! (so retries keep order), pipelined requests on one connection per broker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use super::batch::{self, Compression};
use super::{Brokers, TopicLayout, name, versions};
use crate::delivery::Delivery;
use crate::partitioner::{Sticky, partition_for_key};
use crate::{QueueError, Record};

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub(crate) struct ProducerConfig {
    pub(crate) brokers: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) linger: Duration,
    pub(crate) max_batch_bytes: usize,
    pub(crate) compression: Compression,
    pub(crate) delivery_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_buffered: usize,
}

type Reply = oneshot::Sender<Result<Delivery, QueueError>>;

struct Queued {
    record: Record,
    reply: Reply,
    /// When `send` was called: the delivery timeout counts from here.
    enqueued: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Queued {
    fn new(record: Record, reply: Reply, enqueued: Instant, permit: OwnedSemaphorePermit) -> Self {
        Queued {
            record,
            reply,
            enqueued,
            _permit: permit,
        }
    }
}

/// Records that could not be queued at once, in `send` order.
#[derive(Default)]
struct Backlog {
    items: VecDeque<(Record, Reply, Instant)>,
    running: bool,
}

#[derive(Default)]
struct PartitionQueue {
    records: VecDeque<Queued>,
    bytes: usize,
    draining: bool,
}

pub(crate) struct KafkaProducer {
    shared: Arc<Shared>,
}

struct Shared {
    config: ProducerConfig,
    cluster: Brokers,
    /// Per topic, per partition: looked up by `&str`, so a send allocates no key.
    queues: std::sync::Mutex<HashMap<String, HashMap<i32, PartitionQueue>>>,
    sticky: Sticky,
    room: Arc<Semaphore>,
    outstanding: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
    backlog: std::sync::Mutex<Backlog>,
    /// Records in the backlog or being moved out of it; a send takes the direct way only
    /// when this is zero, so that it cannot overtake them.
    backlog_len: AtomicUsize,
}

impl KafkaProducer {
    pub(crate) fn new(config: ProducerConfig) -> Self {
        let cluster = Brokers::new(
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
                backlog: Default::default(),
                backlog_len: AtomicUsize::new(0),
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

    /// Queues `record` now and returns the receiver of its acknowledgement.
    ///
    /// The common case — room in the buffer, the topic's layout known, nothing waiting
    /// before it — puts the record straight into its partition's queue. Otherwise the record
    /// joins the backlog, which one background task moves into the partition queues in
    /// arrival order as room and layouts allow; records are therefore queued in the order
    /// of the `send` calls, whichever way each one takes.
    pub(crate) fn send(
        &self,
        record: Record,
    ) -> Result<oneshot::Receiver<Result<Delivery, QueueError>>, QueueError> {
        let s = &self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(QueueError::NoRuntime);
        }
        let (reply, rx) = oneshot::channel();
        s.outstanding.fetch_add(1, Ordering::AcqRel);
        let at = Instant::now();
        if s.backlog_len.load(Ordering::Acquire) == 0 {
            let partition = match record.partition {
                Some(p) => Some(p),
                None => s
                    .cluster
                    .cached(&record.topic)
                    .map(|layout| choose_partition(s, &record, &layout)),
            };
            if let Some(partition) = partition
                && let Ok(permit) = s.room.clone().try_acquire_owned()
            {
                enqueue(s, partition, Queued::new(record, reply, at, permit));
                return Ok(rx);
            }
        }
        let start = {
            let mut backlog = s.backlog.lock().unwrap_or_else(|e| e.into_inner());
            backlog.items.push_back((record, reply, at));
            s.backlog_len.fetch_add(1, Ordering::AcqRel);
            !std::mem::replace(&mut backlog.running, true)
        };
        if start {
            tokio::spawn(drain_backlog(self.shared.clone()));
        }
        Ok(rx)
    }
}

/// Moves backlog records into their partition queues, in order, waiting for room in the
/// buffer and for topic layouts as needed.
async fn drain_backlog(s: Arc<Shared>) {
    loop {
        let next = {
            let mut backlog = s.backlog.lock().unwrap_or_else(|e| e.into_inner());
            match backlog.items.pop_front() {
                Some(item) => item,
                None => {
                    backlog.running = false;
                    return;
                }
            }
        };
        let (record, reply, at) = next;
        let placed = async {
            let permit = s
                .room
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| QueueError::Closed)?;
            let partition = match record.partition {
                Some(p) => p,
                None => {
                    let layout = layout_within_timeout(&s, &record.topic).await?;
                    choose_partition(&s, &record, &layout)
                }
            };
            Ok::<_, QueueError>((partition, permit))
        }
        .await;
        match placed {
            Ok((partition, permit)) => {
                enqueue(&s, partition, Queued::new(record, reply, at, permit));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                finished(&s, 1);
            }
        }
        // Only now: a send that sees an empty backlog must find this record queued.
        s.backlog_len.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records that are done (acknowledged or failed) leave the count `flush` waits on.
fn finished(s: &Shared, n: usize) {
    if s.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
        s.idle.notify_waiters();
    }
}

/// Appends to the partition's queue; starts its drain task when none runs.
fn enqueue(s: &Arc<Shared>, partition: i32, queued: Queued) {
    let record = &queued.record;
    let start = {
        let mut queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
        let partitions = match queues.get_mut(record.topic.as_str()) {
            Some(p) => p,
            None => queues.entry(record.topic.clone()).or_default(),
        };
        let q = partitions.entry(partition).or_default();
        q.bytes += record.approx_size();
        let start = !std::mem::replace(&mut q.draining, true);
        let topic = start.then(|| Arc::<str>::from(record.topic.as_str()));
        q.records.push_back(queued);
        topic
    };
    if let Some(topic) = start {
        tokio::spawn(drain(s.clone(), topic, partition));
    }
}

/// The partition of a record without a fixed one: murmur2 of the key, or the sticky
/// partition for keyless records.
fn choose_partition(s: &Shared, record: &Record, layout: &TopicLayout) -> i32 {
    let count = layout.leaders.len() as i32;
    match &record.key {
        Some(k) => partition_for_key(k, count),
        None => s.sticky.pick(count),
    }
}

/// The topic's layout, retrying retriable failures (a broker restarting, a metadata request
/// stuck behind large produce requests) until the delivery timeout.
async fn layout_within_timeout(s: &Shared, topic: &str) -> Result<Arc<TopicLayout>, QueueError> {
    if let Some(l) = s.cluster.cached(topic) {
        return Ok(l);
    }
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
        pause = pause.saturating_mul(2).min(Duration::from_secs(2));
    }
}

fn queue<'a>(
    queues: &'a mut HashMap<String, HashMap<i32, PartitionQueue>>,
    topic: &str,
    partition: i32,
) -> Option<&'a mut PartitionQueue> {
    queues.get_mut(topic)?.get_mut(&partition)
}

/// Sends the queue of one partition, a batch at a time, until it is empty.
async fn drain(s: Arc<Shared>, topic: Arc<str>, partition: i32) {
    loop {
        if !s.config.linger.is_zero() {
            let first = {
                let mut queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
                queue(&mut queues, &topic, partition)
                    .and_then(|q| q.records.front().map(|r| (r.enqueued, q.bytes)))
            };
            if let Some((at, bytes)) = first
                && bytes < s.config.max_batch_bytes
            {
                tokio::time::sleep_until(at + s.config.linger).await;
            }
        }
        let batch: Vec<Queued> = {
            let mut queues = s.queues.lock().unwrap_or_else(|e| e.into_inner());
            let Some(q) = queue(&mut queues, &topic, partition) else {
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
        finished(&s, n);
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
        pause = pause.saturating_mul(2).min(Duration::from_secs(2));
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
