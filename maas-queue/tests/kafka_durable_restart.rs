//! Proves the durable broker of `scripts/dev-services durable` (tansu on SQLite storage)
//! keeps acknowledged records across `kill -9` and a restart: the harness the queue's
//! no-message-lost tests rely on.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use chrono::{TimeZone, Utc};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

const DURABLE: &str = "127.0.0.1:9094";

fn dev_services(command: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-services");
    let out = Command::new(&script)
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`scripts/dev-services {command}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn durable_broker_keeps_records_across_kill_9() {
    // The durable broker is this test's subject, so the test starts it (idempotent) and
    // kills it itself; it needs tansu, which `scripts/dev-services` installs.
    dev_services("durable");
    let topic = support::unique_topic("durable");
    let records: Vec<Record> = (0..20)
        .map(|n| Record {
            key: Some(format!("model-{n}").into_bytes()),
            value: Some(vec![n as u8; 100]),
            headers: BTreeMap::from([("n".to_owned(), n.to_string().into_bytes())]),
            timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + n).unwrap(),
        })
        .collect();
    {
        let client = support::rskafka_client(DURABLE).await;
        client
            .controller_client()
            .expect("controller")
            .create_topic(&topic, 2, 1, 5_000)
            .await
            .expect("create topic");
        let pc = client
            .partition_client(topic.clone(), 1, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let offsets = pc
            .produce(records.clone(), Compression::NoCompression)
            .await
            .expect("produce");
        assert_eq!(offsets, (0..20).collect::<Vec<i64>>());
    }

    dev_services("kill-durable");
    dev_services("durable");

    let pc = support::rskafka_client(DURABLE)
        .await
        .partition_client(topic.clone(), 1, UnknownTopicHandling::Retry)
        .await
        .expect("partition client after restart");
    let (fetched, high_watermark) = pc
        .fetch_records(0, 1..10_000_000, 1_000)
        .await
        .expect("fetch after restart");
    assert_eq!(high_watermark, 20);
    let got: Vec<Record> = fetched.into_iter().map(|r| r.record).collect();
    assert_eq!(got, records, "records changed or were lost across kill -9");
}
