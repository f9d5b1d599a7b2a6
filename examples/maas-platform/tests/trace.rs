//! Logs linked to traces across the queue: the upload's log line and the build's log line
//! (written by a builder, after the task crossed the broker) carry the same trace id.
//! Installs the global subscriber, so it is the only test in this binary.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use maas_telemetry::{LogFormat, Telemetry};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    /// The trace id of the first line with `message` about `model`.
    fn trace_of(&self, message: &str, model: &str) -> Option<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["message"] == message && l["model"] == model)
            .and_then(|l| l["trace_id"].as_str().map(str::to_owned))
    }
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
    let dir = std::env::temp_dir().join(format!("maas-platform-trace-{}", std::process::id()));
    let platform = Platform::start(
        Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.clone(),
            build_time: Duration::from_millis(10),
            ..Config::default()
        },
        prometheus::Registry::new(),
    )
    .await
    .unwrap();
    let (_, r) = support::post_json(
        &reqwest::Client::new(),
        &format!("http://{}/v1/models", platform.addr()),
        None,
        &serde_json::json!({ "name": "traced-model" }),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let built = loop {
        if let Some(t) = logs.trace_of("model built", &id) {
            break t;
        }
        assert!(Instant::now() < deadline, "no `model built` line for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let uploaded = logs
        .trace_of("model registered; build queued", &id)
        .expect("the upload's log line");
    assert_eq!(built, uploaded, "one trace from upload to build");
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
