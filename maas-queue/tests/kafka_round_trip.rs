//! Records produced by maas-queue come back — through librdkafka and through our own group
//! consumer — with their keys, values and headers, on the partition Kafka's default
//! partitioner picks, whatever the compression.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use maas_queue::{Compression, GroupConsumer, Message, Producer, Record, partition_for_key};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::timeout;
use tower::service_fn;

const PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(30);

type Seen = BTreeMap<String, (i32, String, Vec<(String, Vec<u8>)>)>;

async fn produce(
    addr: &str,
    topic: &str,
    compression: Compression,
    n: usize,
) -> BTreeMap<String, (i32, i64)> {
    let producer = Producer::builder([addr])
        .compression(compression)
        .build()
        .expect("producer");
    producer
        .create_topic(topic, PARTITIONS)
        .await
        .expect("create topic");
    // Creating twice is fine.
    producer
        .create_topic(topic, PARTITIONS)
        .await
        .expect("create topic again");
    assert_eq!(
        producer.partitions(topic).await.expect("partitions"),
        PARTITIONS
    );
    let sends = (0..n).map(|i| {
        let record = Record::new(topic, format!("value-{i}"))
            .key(format!("model-{i}"))
            .header("model", "llama")
            .header("n", i.to_string());
        let producer = producer.clone();
        async move {
            (
                format!("model-{i}"),
                producer.send(record).await.expect("send"),
            )
        }
    });
    let delivered: BTreeMap<String, (i32, i64)> = futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|(k, d)| (k, (d.partition, d.offset)))
        .collect();
    producer.shutdown().await;
    for (key, (partition, _)) in &delivered {
        assert_eq!(
            *partition,
            partition_for_key(key.as_bytes(), PARTITIONS),
            "{key} not on its murmur2 partition"
        );
    }
    delivered
}

fn check(seen: &Seen, n: usize) {
    assert_eq!(seen.len(), n);
    for (key, (partition, value, headers)) in seen {
        let i: usize = key.trim_start_matches("model-").parse().expect("key");
        assert_eq!(*partition, partition_for_key(key.as_bytes(), PARTITIONS));
        assert_eq!(value, &format!("value-{i}"));
        let get = |h: &str| headers.iter().find(|(n, _)| n == h).map(|(_, v)| v.clone());
        assert_eq!(get("model").as_deref(), Some(&b"llama"[..]));
        assert_eq!(get("n"), Some(i.to_string().into_bytes()));
        let tp = String::from_utf8(get("traceparent").expect("traceparent header")).expect("utf-8");
        assert!(
            maas_queue::trace::trace_id(&tp).is_some(),
            "bad traceparent {tp}"
        );
    }
}

async fn read_with_rdkafka(addr: &str, topic: &str, n: usize) -> Seen {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", support::unique_topic("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut seen = Seen::new();
    while seen.len() < n {
        let m = timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("rdkafka read only {} of {n}", seen.len()))
            .unwrap_or_else(|e| panic!("rdkafka read of {topic}: {e}"));
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf-8 key");
        let value = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf-8");
        assert!(
            seen.insert(key, (m.partition(), value, headers)).is_none(),
            "read twice"
        );
    }
    seen
}

async fn read_with_maas(addr: &str, topic: &str, n: usize) -> Seen {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let consumer = GroupConsumer::builder([addr], support::unique_topic("maas-reader"))
        .topics([topic])
        .build()
        .expect("consumer")
        .start(service_fn(move |m: Message| {
            let tx = tx.clone();
            async move { tx.send(m).map_err(|e| e.to_string()) }
        }));
    let mut seen = Seen::new();
    while seen.len() < n {
        let m = timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("maas read only {} of {n}", seen.len()))
            .expect("consumer alive");
        let headers = m
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.to_vec()))
            .collect();
        let key = String::from_utf8(m.key.clone().expect("key").to_vec()).expect("utf-8 key");
        let value = m.value_str().expect("utf-8").to_owned();
        assert!(
            seen.insert(key, (m.partition, value, headers)).is_none(),
            "read twice"
        );
    }
    consumer.shutdown().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_compression_round_trips_through_rdkafka_and_maas() {
    let broker = support::OwnBroker::start();
    let addr = broker.addr.clone();
    // Not Snappy: tansu 0.6 fails fetches of Snappy batches, librdkafka's included (its log:
    // `UnexpectedType("Snappy")`); the encoding is checked by a unit test instead.
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = support::unique_topic(&format!("round-trip-{compression:?}").to_lowercase());
        produce(&addr, &topic, compression, 200).await;
        check(&read_with_rdkafka(&addr, &topic, 200).await, 200);
        check(&read_with_maas(&addr, &topic, 200).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_land_where_librdkafka_puts_them() {
    let broker = support::OwnBroker::start();
    let addr = broker.addr.clone();
    let ours = support::unique_topic("partitioner-ours");
    let theirs = support::unique_topic("partitioner-theirs");
    let delivered = produce(&addr, &ours, Compression::None, 300).await;
    Producer::builder([addr.as_str()])
        .build()
        .expect("producer")
        .create_topic(&theirs, PARTITIONS)
        .await
        .expect("topic");
    let rd: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("rdkafka producer");
    for key in delivered.keys() {
        let partition = rd
            .send(FutureRecord::to(&theirs).key(key).payload("x"), WAIT)
            .await
            .expect("rdkafka send")
            .partition;
        assert_eq!(
            partition, delivered[key].0,
            "key {key}: librdkafka chose {partition}"
        );
    }
}
