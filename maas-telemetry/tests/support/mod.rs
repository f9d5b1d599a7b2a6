//! Shared by the telemetry integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A log writer that keeps every line, for the test to read back.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn raw(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log output is UTF-8")
    }

    /// The JSON lines written so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("log output is UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// The first line whose `message` is `message`.
    pub fn line(&self, message: &str) -> serde_json::Value {
        let lines = self.lines();
        lines
            .iter()
            .find(|l| l["message"] == message)
            .cloned()
            .unwrap_or_else(|| panic!("no log line {message:?} among {lines:#?}"))
    }
}

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

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Starts an OTLP/gRPC receiver on its own runtime (as a real collector is another process),
/// so that a test can block its own runtime without starving the collector.
pub fn collector() -> (
    fake_opentelemetry_collector::FakeCollectorServer,
    tokio::runtime::Runtime,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(fake_opentelemetry_collector::FakeCollectorServer::start())
        .expect("start the in-process OTLP receiver");
    (server, rt)
}
