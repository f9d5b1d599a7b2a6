//! HTTP helpers shared by the platform's tests.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

pub mod load;
pub mod own_broker;
pub mod own_postgres;
pub mod process;
pub mod service_proxy;

use serde_json::Value;

/// The admin token the tests configure.
pub const ADMIN_TOKEN: &str = "test-admin-token-7f3a9c1e5b";

/// Settings for a test platform: both listeners on free ports, the test admin token, and a
/// data directory of its own (`<temp>/maas-platform-<name>-<pid>-<random>`).
pub fn config(name: &str) -> maas_platform::Config {
    let dir = std::env::temp_dir().join(format!(
        "maas-platform-{name}-{}-{:016x}",
        std::process::id(),
        random()
    ));
    maas_platform::Config {
        addr: "127.0.0.1:0".parse().unwrap(),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        data_dir: Some(dir),
        ..maas_platform::Config::default()
    }
}

/// A random number (for names that must not clash between runs).
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Creates an API key for `tenant` through the admin API at `admin` (`http://host:port`).
pub async fn create_key(http: &reqwest::Client, admin: &str, tenant: &str) -> String {
    let r = http
        .post(format!("{admin}/admin/tenants/{tenant}/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "creating a key for {tenant}");
    let body: Value = r.json().await.unwrap();
    body["key"].as_str().unwrap().to_owned()
}

/// A log writer that keeps everything written, for tests that read the logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

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
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `GET url` with the API key, the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET url`, the body as text (a `/metrics` scrape).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// `POST url` with a JSON body (and the API key when given): the status and the JSON answer.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = http.post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The Kafka-API broker's address (`MAAS_TEST_KAFKA`, default 127.0.0.1:9092), after checking
/// that it answers — a failure says how to start one.
pub fn require_kafka() -> String {
    let broker = std::env::var("MAAS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(broker.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "no Kafka-API broker on {broker}; start one with `scripts/dev-services up`, or point \
         MAAS_TEST_KAFKA at a running broker"
    );
    broker
}

/// A tiny valid safetensors model file (two tensors, 40 parameters); `seed` names a tensor,
/// so files of different seeds differ (and are stored apart).
pub fn model_file(seed: &str) -> Vec<u8> {
    maas_platform::artifacts::samples::safetensors(&[
        (&format!("embed-{seed}"), "F32", &[4, 8]),
        ("norm", "BF16", &[8]),
    ])
}

/// A model file the builder refuses: valid, then cut short in its tensor data.
pub fn broken_file(seed: &str) -> Vec<u8> {
    let mut file = model_file(seed);
    file.truncate(file.len() - 10);
    file
}

/// Uploads `file` as the model `name`: `POST /v1/models?name=<name>`.
pub async fn upload(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    name: &str,
    file: Vec<u8>,
) -> (u16, Value) {
    let mut req = http
        .post(format!("{base}/v1/models"))
        .query(&[("name", name)])
        .body(file);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `GET {base}/health/ready`: the status (0 when nothing answered within 5 s) and the body.
pub async fn readiness(http: &reqwest::Client, base: &str) -> (u16, String) {
    match http
        .get(format!("{base}/health/ready"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Waits (up to `within`) until `/health/ready` answers `status` — a 503 naming `failing`,
/// when given; the seconds it took.
pub async fn await_readiness(
    http: &reqwest::Client,
    base: &str,
    status: u16,
    failing: Option<&str>,
    within: std::time::Duration,
) -> f64 {
    let started = std::time::Instant::now();
    loop {
        let (code, body) = readiness(http, base).await;
        if code == status {
            if let Some(f) = failing {
                assert!(body.contains(f), "/health/ready does not name {f}: {body}");
            }
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < within,
            "/health/ready answered {code}, not {status}, for {within:?}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
