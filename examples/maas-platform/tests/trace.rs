//! Logs linked to traces across the queue: the upload's log line and the build's log line
//! (written by a builder, after the task crossed the broker) carry the same trace id.
//! Installs the global subscriber, so it is the only test in this binary.

mod support;

use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use maas_telemetry::{LogFormat, Telemetry};
use support::Captured;

/// The trace id of the first line with `message` about `model`.
fn trace_of(logs: &Captured, message: &str, model: &str) -> Option<String> {
    logs.text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["message"] == message && l["model"] == model)
        .and_then(|l| l["trace_id"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_logs_in_the_trace_of_the_upload() {
    let logs = Captured::default();
    let _telemetry = Telemetry::builder()
        .service_name("maas-platform-test")
        .log_format(LogFormat::Json)
        .filter("info")
        .log_writer(logs.clone())
        .build()
        .unwrap();
    let config = Config {
        build_time: Duration::from_millis(10),
        ..support::config("trace")
    };
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let key = support::create_key(
        &http,
        &format!("http://{}", platform.admin_addr()),
        "traced",
    )
    .await;
    let (_, r) = support::upload(
        &http,
        &format!("http://{}", platform.addr()),
        Some(&key),
        "traced-model",
        support::model_file("traced"),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let built = loop {
        if let Some(t) = trace_of(&logs, "model built", &id) {
            break t;
        }
        assert!(Instant::now() < deadline, "no `model built` line for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let uploaded =
        trace_of(&logs, "model registered; build queued", &id).expect("the upload's log line");
    assert_eq!(built, uploaded, "one trace from upload to build");
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
