//! Proves the broker speaks Kafka to an established client: librdkafka (through the `rdkafka`
//! crate) reads what `rskafka` wrote, and an rdkafka consumer group gets partitions assigned
//! and commits offsets that a later member of the group resumes from.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rskafka::client::Client;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;
use tokio::time::timeout;

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 4;
const WAIT: Duration = Duration::from_secs(30);

/// What a test expects to read back: (partition, offset) → (key, value, headers).
type Written = BTreeMap<(i32, i64), (Vec<u8>, Vec<u8>, BTreeMap<String, Vec<u8>>)>;

/// Creates a topic and writes `PER_PARTITION` keyed records with headers to each partition.
async fn write_with_rskafka(client: &Client, topic: &str) -> Written {
    client
        .controller_client()
        .expect("controller client")
        .create_topic(topic, PARTITIONS, 1, 5_000)
        .await
        .expect("create topic");
    let mut written = Written::new();
    for partition in 0..PARTITIONS {
        let pc = client
            .partition_client(topic.to_owned(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let records: Vec<Record> = (0..PER_PARTITION)
            .map(|n| Record {
                key: Some(format!("key-{partition}-{n}").into_bytes()),
                value: Some(format!("value-{partition}-{n}").into_bytes()),
                headers: BTreeMap::from([
                    ("traceparent".to_owned(), format!("tp-{n}").into_bytes()),
                    ("model".to_owned(), b"llama".to_vec()),
                ]),
                timestamp: Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(),
            })
            .collect();
        let offsets = pc
            .produce(records.clone(), Compression::NoCompression)
            .await
            .expect("produce with rskafka");
        for (offset, r) in offsets.into_iter().zip(records) {
            written.insert(
                (partition, offset),
                (r.key.unwrap(), r.value.unwrap(), r.headers),
            );
        }
    }
    written
}

fn rdkafka_consumer(addr: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("create rdkafka consumer")
}

fn check_against(written: &Written, m: &BorrowedMessage<'_>) {
    let (key, value, headers) = written
        .get(&(m.partition(), m.offset()))
        .unwrap_or_else(|| panic!("unexpected record p{} @{}", m.partition(), m.offset()));
    assert_eq!(m.key(), Some(key.as_slice()));
    assert_eq!(m.payload(), Some(value.as_slice()));
    let got: BTreeMap<String, Vec<u8>> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(&got, headers);
}

/// Receives `n` records, checking each against what was written; returns their positions.
async fn receive(consumer: &StreamConsumer, written: &Written, n: usize) -> BTreeSet<(i32, i64)> {
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let m = timeout(WAIT, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived in {WAIT:?}", seen.len()))
            .expect("rdkafka receive");
        check_against(written, &m);
        assert!(
            seen.insert((m.partition(), m.offset())),
            "record received twice"
        );
    }
    seen
}

#[tokio::test]
async fn rdkafka_reads_what_rskafka_wrote() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("interop-read");
    let written = write_with_rskafka(&support::rskafka_client(&addr).await, &topic).await;

    let consumer = rdkafka_consumer(&addr, &support::unique_topic("unused-group"));
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(&topic, partition, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&assignment).expect("assign");

    let seen = receive(&consumer, &written, written.len()).await;
    assert_eq!(seen, written.keys().copied().collect());
}

#[tokio::test]
async fn rdkafka_group_member_gets_partitions_commits_and_a_successor_resumes() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("interop-group");
    let group = support::unique_topic("interop-group");
    let client = support::rskafka_client(&addr).await;
    let mut written = write_with_rskafka(&client, &topic).await;

    // First member: joins the group, is assigned every partition, reads all, commits.
    {
        let consumer = rdkafka_consumer(&addr, &group);
        consumer.subscribe(&[&topic]).expect("subscribe");
        receive(&consumer, &written, written.len()).await;
        let assigned: BTreeSet<i32> = consumer
            .assignment()
            .expect("assignment")
            .elements_for_topic(&topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        assert_eq!(assigned, (0..PARTITIONS).collect());
        consumer
            .commit_consumer_state(CommitMode::Sync)
            .expect("commit offsets");

        let committed = consumer.committed(WAIT).expect("fetch committed offsets");
        for partition in 0..PARTITIONS {
            let elem = committed
                .find_partition(&topic, partition)
                .expect("partition in committed list");
            assert_eq!(elem.offset(), Offset::Offset(PER_PARTITION));
        }
        // Dropping the consumer closes it: it leaves the group.
    }

    // One more record on partition 1, then a successor in the same group must start from
    // the committed offsets and see only that record.
    let pc = client
        .partition_client(topic.clone(), 1, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let extra = Record {
        key: Some(b"key-extra".to_vec()),
        value: Some(b"value-extra".to_vec()),
        headers: BTreeMap::new(),
        timestamp: Utc.timestamp_millis_opt(1_700_000_000_001).unwrap(),
    };
    let offset = pc
        .produce(vec![extra.clone()], Compression::NoCompression)
        .await
        .expect("produce extra")[0];
    assert_eq!(offset, PER_PARTITION);
    written.clear();
    written.insert(
        (1, offset),
        (extra.key.unwrap(), extra.value.unwrap(), BTreeMap::new()),
    );

    let successor = rdkafka_consumer(&addr, &group);
    successor.subscribe(&[&topic]).expect("subscribe successor");
    let seen = receive(&successor, &written, 1).await;
    assert_eq!(seen, BTreeSet::from([(1, PER_PARTITION)]));
    // Nothing else is delivered: everything before was committed by the first member.
    let more = timeout(Duration::from_secs(2), successor.recv()).await;
    assert!(
        more.is_err(),
        "successor re-received a committed record: {:?}",
        more.map(|m| m.map(|m| (m.partition(), m.offset())))
    );
}
