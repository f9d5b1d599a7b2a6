//! Proves the test harness is real: topics, keyed records with headers and offsets make a
//! round trip through the Kafka-API broker with `rskafka`, the client `maas-queue` builds on.

mod support;

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::record::Record;

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 5;

fn record(partition: i32, n: i64) -> Record {
    Record {
        key: Some(format!("model-{partition}-{n}").into_bytes()),
        value: Some(format!("build task {n} for partition {partition}").into_bytes()),
        headers: BTreeMap::from([
            ("attempt".to_owned(), n.to_string().into_bytes()),
            ("source".to_owned(), b"smoke-test".to_vec()),
        ]),
        timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + n).unwrap(),
    }
}

#[tokio::test]
async fn rskafka_round_trip_on_three_partitions() {
    let addr = support::require_kafka();
    let client = support::rskafka_client(&addr).await;

    let topic = support::unique_topic("smoke");
    client
        .controller_client()
        .expect("controller client")
        .create_topic(&topic, PARTITIONS, 1, 5_000)
        .await
        .expect("create topic");
    let listed = client.list_topics().await.expect("list topics");
    let ours = listed
        .iter()
        .find(|t| t.name == topic)
        .expect("new topic listed");
    assert_eq!(ours.partitions.len(), PARTITIONS as usize);

    for partition in 0..PARTITIONS {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let records: Vec<_> = (0..PER_PARTITION).map(|n| record(partition, n)).collect();
        let offsets = pc
            .produce(records, Compression::NoCompression)
            .await
            .expect("produce");
        assert_eq!(offsets, (0..PER_PARTITION).collect::<Vec<_>>());
        let (fetched, high_watermark) = pc
            .fetch_records(0, 1..1_000_000, 1_000)
            .await
            .expect("fetch");
        assert_eq!(high_watermark, PER_PARTITION);
        assert_eq!(
            pc.get_offset(OffsetAt::Earliest).await.expect("low mark"),
            0
        );
        assert_eq!(fetched.len(), PER_PARTITION as usize);
        for (n, got) in fetched.iter().enumerate() {
            let want = record(partition, n as i64);
            assert_eq!(got.offset, n as i64);
            assert_eq!(got.record.key, want.key);
            assert_eq!(got.record.value, want.value);
            assert_eq!(got.record.headers, want.headers);
            assert_eq!(got.record.timestamp, want.timestamp);
        }
    }
}
