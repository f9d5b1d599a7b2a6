//! The platform on a real Kafka-API broker (tansu on 127.0.0.1:9092, from
//! `scripts/dev-services up`): an upload's build task crosses the broker and the
//! model-builders group builds it; a failing build lands in `<topic>.dlq`.

mod support;

use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_cross_a_real_broker() {
    let broker = support::require_kafka();
    let run = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let topic = format!("platform-builds-{run}");
    let config = support::config("kafka");
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(
        Config {
            kafka_brokers: Some(vec![broker]),
            build_topic: topic.clone(),
            build_group: format!("platform-builders-{run}"),
            build_time: Duration::from_millis(10),
            builders: 2,
            ..config
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts on Kafka");
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key =
        support::create_key(&http, &format!("http://{}", platform.admin_addr()), "kafka").await;
    let mut ids = Vec::new();
    for (name, file) in [
        ("kafka-model", support::model_file("kafka")),
        ("broken-on-kafka", support::broken_file("kafka")),
    ] {
        let (code, body) = support::upload(&http, &base, Some(&key), name, file).await;
        assert_eq!(code, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Joining a fresh group and the first fetches take a few seconds on tansu.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut statuses = Vec::new();
    loop {
        statuses.clear();
        for id in &ids {
            let m: Value = http
                .get(format!("{base}/v1/models/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            statuses.push(m["status"].as_str().unwrap().to_owned());
        }
        if statuses == ["ready", "failed"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 60 s: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The failing build's task reaches the dead-letter topic after its retries.
    let dead = format!(
        "maas_queue_records_total{{group=\"platform-builders-{run}\",outcome=\"dead_lettered\",topic=\"{topic}\"}} 1"
    );
    loop {
        let text = support::get_text(&http, &format!("{base}/metrics")).await;
        if text.contains(&dead) {
            break;
        }
        assert!(Instant::now() < deadline, "{dead} missing:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
