//! maas-queue against rdkafka (librdkafka 2.12.1) on the same Kafka-API broker, in one run.
//!
//! * `queue/produce_100b`, `queue/produce_1k`: 200,000 records of 100 B / 1 KiB, keyed over
//!   4 partitions, sent concurrently and awaited until acknowledged (`acks=all`); `maas` is
//!   [`maas_queue::Producer`], `rdkafka` is `FutureProducer`.
//! * `queue/consume_1k`: a new consumer-group member reads the same 200,000 records of 1 KiB
//!   from the start; `maas` is [`maas_queue::GroupConsumer`] with a no-op handler, `rdkafka`
//!   is `StreamConsumer`.
//! * `queue/send_latency_single`: one record sent and awaited at a time, while a background
//!   task keeps the topic's other partitions busy.
//! * `queue/broker_fetch_1k`: rskafka reading the same records with raw fetches, no group:
//!   what the broker itself serves.
//!
//! Needs a broker: `scripts/dev-services` (tansu in memory on 127.0.0.1:9092; override with
//! `MAAS_TEST_KAFKA`). `MAAS_QUEUE_BENCH_RECORDS` changes the 200,000.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use maas_queue::{GroupConsumer, Message, Producer, Record};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::runtime::Runtime;
use tower::service_fn;

const PARTITIONS: i32 = 4;

fn broker() -> String {
    let addr = std::env::var("MAAS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    if std::net::TcpStream::connect(&addr).is_err() {
        panic!(
            "no Kafka-API broker at {addr}: start one with `scripts/dev-services`, or set MAAS_TEST_KAFKA"
        );
    }
    addr
}

fn records() -> usize {
    std::env::var("MAAS_QUEUE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{prefix}-{nanos}")
}

fn rd_producer(addr: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("rdkafka producer")
}

async fn topic(producer: &Producer, prefix: &str) -> String {
    let t = unique(prefix);
    producer
        .create_topic(&t, PARTITIONS)
        .await
        .expect("create topic");
    t
}

async fn produce_maas(producer: &Producer, topic: &str, n: usize, value: &[u8]) {
    let value = bytes::Bytes::copy_from_slice(value);
    let sends = (0..n).map(|i| {
        producer.send(Record::new(topic, value.clone()).key(format!("model-{}", i % 1000)))
    });
    for d in futures::future::join_all(sends).await {
        d.expect("maas send");
    }
}

async fn produce_rdkafka(producer: &FutureProducer, topic: &str, n: usize, value: &[u8]) {
    let keys: Vec<String> = (0..1000).map(|i| format!("model-{i}")).collect();
    let sends = (0..n).map(|i| {
        producer.send(
            FutureRecord::to(topic).key(&keys[i % 1000]).payload(value),
            Timeout::Never,
        )
    });
    for d in futures::future::join_all(sends).await {
        d.map_err(|(e, _)| e).expect("rdkafka send");
    }
}

fn produce(c: &mut Criterion, rt: &Runtime, addr: &str, name: &str, size: usize) {
    let n = records();
    let value = vec![b'x'; size];
    // Both producers may buffer a million records (rdkafka: `queue.buffering.max.messages`).
    let maas = Producer::builder([addr])
        .max_buffered_records(1_000_000)
        .build()
        .expect("maas producer");
    let rd = rd_producer(addr);
    let mut g = c.benchmark_group(format!("queue/{name}"));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter("maas"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = topic(&maas, name).await;
                    let start = Instant::now();
                    produce_maas(&maas, &t, n, &value).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.bench_function(BenchmarkId::from_parameter("rdkafka"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = topic(&maas, name).await;
                    let start = Instant::now();
                    produce_rdkafka(&rd, &t, n, &value).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

async fn consume_maas(addr: &str, topic: &str, n: usize) {
    let count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (c, d) = (count.clone(), done.clone());
    let consumer = GroupConsumer::builder([addr], unique("maas-group"))
        .topics([topic])
        .build()
        .expect("maas consumer")
        .start(service_fn(move |_m: Message| {
            if c.fetch_add(1, Ordering::Relaxed) + 1 == n {
                d.notify_one();
            }
            async { Ok::<_, std::convert::Infallible>(()) }
        }));
    tokio::time::timeout(Duration::from_secs(300), done.notified())
        .await
        .expect("maas consumed everything");
    consumer.shutdown().await;
}

async fn consume_rdkafka(addr: &str, topic: &str, n: usize) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", unique("rdkafka-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()
        .expect("rdkafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(300), consumer.recv())
            .await
            .expect("rdkafka consumed everything")
            .expect("rdkafka message");
    }
}

async fn fetch_rskafka(addr: &str, topic: &str, n: usize) {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = rskafka::client::ClientBuilder::new(vec![addr.to_owned()])
        .build()
        .await
        .expect("rskafka client");
    let mut read = 0;
    for p in 0..PARTITIONS {
        let pc = client
            .partition_client(topic.to_owned(), p, UnknownTopicHandling::Retry)
            .await
            .expect("partition");
        let mut offset = 0;
        loop {
            let (recs, high) = pc
                .fetch_records(offset, 1..(1 << 20), 100)
                .await
                .expect("fetch");
            read += recs.len();
            offset = recs.last().map_or(offset, |r| r.offset + 1);
            if offset >= high {
                break;
            }
        }
    }
    assert_eq!(read, n, "raw fetch read a different number of records");
}

fn consume(c: &mut Criterion, rt: &Runtime, addr: &str) {
    let n = records();
    let t = rt.block_on(async {
        let p = Producer::builder([addr]).build().expect("producer");
        let t = topic(&p, "consume-1k").await;
        produce_maas(&p, &t, n, &[b'x'; 1024]).await;
        p.shutdown().await;
        t
    });
    let mut g = c.benchmark_group("queue/consume_1k");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(n as u64));
    let mut run = |id: &str, which: u8| {
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        match which {
                            0 => consume_maas(addr, &t, n).await,
                            1 => consume_rdkafka(addr, &t, n).await,
                            _ => fetch_rskafka(addr, &t, n).await,
                        }
                    }
                    start.elapsed()
                })
            })
        });
    };
    run("maas", 0);
    run("rdkafka", 1);
    run("broker_fetch", 2);
    g.finish();
}

/// Keeps partitions 1–3 of `topic` busy with batches of 300 records until `busy` clears.
fn background<F, Fut>(
    rt: &Runtime,
    busy: &Arc<AtomicBool>,
    send_300: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    busy.store(true, Ordering::Relaxed);
    let busy = busy.clone();
    rt.spawn(async move {
        while busy.load(Ordering::Relaxed) {
            send_300().await;
        }
    })
}

/// One record at a time to partition 0 while the same client keeps partitions 1–3 busy.
fn send_latency(c: &mut Criterion, rt: &Runtime, addr: &str) {
    let maas = Producer::builder([addr]).build().expect("maas producer");
    let t = rt.block_on(topic(&maas, "latency"));
    // librdkafka waits `linger.ms` (5 ms by default) for more records; a latency-minded
    // user sets it to 0, so the anchor does too.
    let rd = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("acks", "all")
            .set("linger.ms", "0")
            .create::<FutureProducer>()
            .expect("rdkafka producer"),
    );
    let busy = Arc::new(AtomicBool::new(false));
    let mut g = c.benchmark_group("queue/send_latency_single");

    let load = {
        let (maas, t) = (maas.clone(), t.clone());
        background(rt, &busy, move || {
            let (maas, t) = (maas.clone(), t.clone());
            async move {
                let sends = (0..300)
                    .map(|i| maas.send(Record::new(&t, vec![b'y'; 100]).partition(1 + i % 3)));
                for d in futures::future::join_all(sends).await {
                    d.expect("background send");
                }
            }
        })
    };
    let mut samples = Vec::new();
    g.bench_function(BenchmarkId::from_parameter("maas"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let one = Instant::now();
                    maas.send(Record::new(&t, vec![b'z'; 100]).partition(0))
                        .await
                        .expect("send");
                    samples.push(one.elapsed());
                }
                start.elapsed()
            })
        })
    });
    busy.store(false, Ordering::Relaxed);
    rt.block_on(load).expect("background producer");
    print_percentiles("maas", &mut samples);

    let load = {
        let (rd, t) = (rd.clone(), t.clone());
        background(rt, &busy, move || {
            let (rd, t) = (rd.clone(), t.clone());
            async move {
                let value = [b'y'; 100];
                let sends = (0..300).map(|i| {
                    rd.send(
                        FutureRecord::<(), _>::to(&t)
                            .partition(1 + i % 3)
                            .payload(&value[..]),
                        Timeout::Never,
                    )
                });
                for d in futures::future::join_all(sends).await {
                    d.map_err(|(e, _)| e).expect("background send");
                }
            }
        })
    };
    g.bench_function(BenchmarkId::from_parameter("rdkafka"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let one = Instant::now();
                    rd.send(
                        FutureRecord::<(), _>::to(&t)
                            .partition(0)
                            .payload(&[b'z'; 100][..]),
                        Timeout::Never,
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("send");
                    samples.push(one.elapsed());
                }
                start.elapsed()
            })
        })
    });
    busy.store(false, Ordering::Relaxed);
    rt.block_on(load).expect("background producer");
    print_percentiles("rdkafka", &mut samples);
    g.finish();
}

/// Criterion reports means; the latency target is on the tail, so print p50 and p99 of
/// every send timed above (warm-up included).
fn print_percentiles(id: &str, samples: &mut Vec<Duration>) {
    if samples.is_empty() {
        return; // filtered out on the command line
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "queue/send_latency_single/{id}: {} sends, p50 {:?}, p99 {:?}",
        samples.len(),
        at(0.5),
        at(0.99)
    );
    samples.clear();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = broker();
    send_latency(c, &rt, &addr);
    produce(c, &rt, &addr, "produce_100b", 100);
    produce(c, &rt, &addr, "produce_1k", 1024);
    consume(c, &rt, &addr);
}

criterion_group!(queue, benches);
criterion_main!(queue);
