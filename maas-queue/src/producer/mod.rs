//! The producer: Kafka's partitioner, per-partition batching, acknowledged sends.

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::Delivery;
use crate::error::{LONGEST, check_protocol, check_topic};
pub use crate::kafka::batch::Compression;
use crate::kafka::produce::{KafkaProducer, ProducerConfig};
use crate::memory::MemoryBroker;
use crate::{Cluster, ConfigError, QueueError, Record};

/// The outcome of one [`Producer::send`]: resolves to where the record landed once it is
/// acknowledged. The record is on its way whether or not this is awaited.
#[must_use = "the record is sent either way; await this to learn whether it was acknowledged"]
#[derive(Debug)]
pub struct SendFuture(SendState);

#[derive(Debug)]
enum SendState {
    Ready(Option<Result<Delivery, QueueError>>),
    Waiting(tokio::sync::oneshot::Receiver<Result<Delivery, QueueError>>),
}

impl SendFuture {
    fn ready(result: Result<Delivery, QueueError>) -> Self {
        SendFuture(SendState::Ready(Some(result)))
    }
}

impl std::future::Future for SendFuture {
    type Output = Result<Delivery, QueueError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            SendState::Ready(result) => {
                std::task::Poll::Ready(result.take().unwrap_or(Err(QueueError::Closed)))
            }
            SendState::Waiting(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(QueueError::Closed))),
        }
    }
}

/// The longest linger accepted (librdkafka's bound for `linger.ms`).
const MAX_LINGER: Duration = Duration::from_secs(15 * 60);

/// Builds a [`Producer`]; invalid settings fail at [`build`](ProducerBuilder::build).
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    cluster: Cluster,
    config: ProducerConfig,
}

impl ProducerBuilder {
    /// The client id the broker sees (default `maas-queue`).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// How long a partition's first record may wait for others to join its batch (default
    /// 0: send at once; records arriving while a batch is in flight still batch together).
    /// At most 15 minutes (librdkafka's bound for `linger.ms`); longer is a
    /// [`ConfigError::TooLong`].
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }

    /// Largest batch per partition, in bytes (default 1 MiB).
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// Batch compression (default none).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.config.compression = compression;
        self
    }

    /// How long a record may take, retries included, before its send fails (default 30 s;
    /// longer than a year, e.g. `Duration::MAX` for "keep trying", counts as a year).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.config.delivery_timeout = timeout;
        self
    }

    /// Time limit of each request to a broker (default 10 s; at most `i32::MAX` ms, what the
    /// protocol carries — longer is a [`ConfigError::TooLong`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Pause between retries (default 100 ms, doubling up to 2 s).
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// Records accepted but not yet acknowledged, at most (default 100,000); `send` waits
    /// for room beyond that (backpressure).
    pub fn max_buffered_records(mut self, n: usize) -> Self {
        self.config.max_buffered = n;
        self
    }

    /// Validates the settings and builds the producer. Connections are opened on first use.
    pub fn build(mut self) -> Result<Producer, ConfigError> {
        check_protocol("request_timeout", self.config.request_timeout)?;
        if self.config.linger > MAX_LINGER {
            return Err(ConfigError::TooLong {
                name: "linger",
                max: MAX_LINGER,
            });
        }
        // Longer than a year is as good as never; clamped so deadlines cannot overflow.
        // A bound of "everything" is as many permits as a semaphore holds.
        self.config.max_buffered = self
            .config
            .max_buffered
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        for d in [
            &mut self.config.delivery_timeout,
            &mut self.config.retry_backoff,
        ] {
            *d = (*d).min(LONGEST);
        }
        self.cluster.check()?;
        let c = &self.config;
        for (name, zero) in [
            ("max_batch_bytes", c.max_batch_bytes == 0),
            ("delivery_timeout", c.delivery_timeout.is_zero()),
            ("request_timeout", c.request_timeout.is_zero()),
            ("max_buffered_records", c.max_buffered == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        let backend = match (self.cluster.memory(), self.cluster.bootstrap()) {
            (Some(m), _) => Backend::Memory(m.clone()),
            (None, bootstrap) => {
                self.config.brokers = bootstrap.unwrap_or_default().to_vec();
                Backend::Kafka(KafkaProducer::new(self.config))
            }
        };
        Ok(Producer {
            backend: Arc::new(backend),
        })
    }
}

enum Backend {
    Kafka(KafkaProducer),
    Memory(MemoryBroker),
}

/// Sends records to Kafka and resolves each send once the broker acknowledged it
/// (`acks=all`). Cheap to clone; clones share batches and connections.
///
/// Keyed records go to the partition Kafka's default partitioner picks (murmur2, the same
/// as the Java client and librdkafka's `murmur2_random`), so records with one key stay in
/// order on one partition; keyless ones stick to a partition per batch. Sends are retried
/// with backoff until the delivery timeout; a retried send may be stored twice if the first
/// attempt's answer was lost (at-least-once).
///
/// ```
/// use maas_queue::{MemoryBroker, Producer, Record};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = MemoryBroker::new();
/// let producer = Producer::builder(&broker).build()?;
/// producer.create_topic("model-build-tasks", 3).await?;
/// let delivered = producer.send(Record::new("model-build-tasks", "build m-1").key("m-1")).await?;
/// assert_eq!(delivered.offset, 0);
/// producer.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Producer {
    backend: Arc<Backend>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &*self.backend {
            Backend::Kafka(_) => "Producer(kafka)",
            Backend::Memory(_) => "Producer(memory)",
        })
    }
}

impl Producer {
    /// Starts configuring a producer for `cluster`: Kafka bootstrap addresses
    /// (`["host:port", ..]`) or a [`MemoryBroker`] — see [`Cluster`].
    pub fn builder(cluster: impl Into<Cluster>) -> ProducerBuilder {
        ProducerBuilder {
            cluster: cluster.into(),
            config: ProducerConfig {
                brokers: Vec::new(),
                client_id: "maas-queue".to_owned(),
                linger: Duration::ZERO,
                max_batch_bytes: 1 << 20,
                compression: Compression::None,
                delivery_timeout: Duration::from_secs(30),
                request_timeout: Duration::from_secs(10),
                retry_backoff: Duration::from_millis(100),
                max_buffered: 100_000,
            },
        }
    }

    /// Sends `record`: it is queued when `send` is called — records are produced in the
    /// order of the calls, and dropping the returned future does not withdraw one — and the
    /// future resolves to its partition and offset once the broker has acknowledged it
    /// (or to the error that ended its delivery). A `traceparent` header is added when the
    /// record has none.
    pub fn send(&self, record: Record) -> SendFuture {
        if let Err(e) = check_topic(&record.topic) {
            return SendFuture::ready(Err(e.into()));
        }
        match &*self.backend {
            // The Kafka producer writes the missing `traceparent` straight into the batch
            // it encodes (on its own task, without allocating).
            Backend::Kafka(k) => match k.send(record) {
                Ok(rx) => SendFuture(SendState::Waiting(rx)),
                Err(e) => SendFuture::ready(Err(e)),
            },
            Backend::Memory(m) => {
                let mut record = record;
                if record.header_value(crate::trace::TRACEPARENT).is_none() {
                    record.headers.push((
                        crate::trace::TRACEPARENT.to_owned(),
                        crate::trace::new_traceparent().into(),
                    ));
                }
                SendFuture::ready(m.append(record))
            }
        }
    }

    /// Waits until every record accepted so far is acknowledged (or has failed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting; the records are still sent.
    pub async fn flush(&self) {
        if let Backend::Kafka(k) = &*self.backend {
            k.flush().await;
        }
    }

    /// Stops accepting records and waits for those accepted to be acknowledged: nothing
    /// accepted is dropped.
    ///
    /// # Cancel safety
    ///
    /// The producer refuses new records from the first poll; dropping the future only stops
    /// waiting for those already accepted, which are still sent.
    pub async fn shutdown(&self) {
        if let Backend::Kafka(k) = &*self.backend {
            k.close();
            k.flush().await;
        }
    }

    /// Creates `topic` with `partitions` partitions; succeeds if it already exists.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, the topic may or may not have been created; calling again is
    /// harmless (an existing topic is success).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), QueueError> {
        check_topic(topic)?;
        if partitions <= 0 {
            return Err(ConfigError::ZeroPartitions.into());
        }
        match &*self.backend {
            Backend::Kafka(k) => k.create_topic(topic, partitions).await,
            Backend::Memory(m) => {
                m.create_topic(topic, partitions);
                Ok(())
            }
        }
    }

    /// The number of partitions of `topic`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn partitions(&self, topic: &str) -> Result<i32, QueueError> {
        match &*self.backend {
            Backend::Kafka(k) => k.partitions(topic).await,
            Backend::Memory(m) => m
                .partition_count(topic)
                .ok_or_else(|| QueueError::UnknownTopic(topic.to_owned())),
        }
    }
}
