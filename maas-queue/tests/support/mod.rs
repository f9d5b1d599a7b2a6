//! What the integration tests of this crate share: where the broker is, and a clear failure
//! when it is not there.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

/// Address of the Kafka-API broker started by `scripts/dev-services` (override: `MAAS_TEST_KAFKA`).
fn kafka_addr() -> String {
    std::env::var("MAAS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The broker's address, after checking that something listens there.
///
/// Panics with instructions when the broker is not running: a missing service fails the
/// test, it never skips it.
pub fn require_kafka() -> String {
    let addr = kafka_addr();
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no Kafka-API broker at {addr}: start one with `scripts/dev-services` \
         (tansu in memory mode on 127.0.0.1:9092), or point MAAS_TEST_KAFKA at a running broker"
    );
    addr
}

/// A topic name no earlier run used, so tests never see each other's records.
pub fn unique_topic(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An rskafka client for the broker at `addr`, retrying for at most 20 s.
pub async fn rskafka_client(addr: &str) -> Client {
    ClientBuilder::new(vec![addr.to_owned()])
        .backoff_config(BackoffConfig {
            deadline: Some(Duration::from_secs(20)),
            ..BackoffConfig::default()
        })
        .build()
        .await
        .unwrap_or_else(|e| panic!("connect rskafka to the broker at {addr}: {e}"))
}

/// Runs `scripts/dev-services <command>` (e.g. `durable`, `kill-durable`), failing the test
/// with the script's output when it fails.
pub fn dev_services(command: &str) {
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-services");
    let out = std::process::Command::new(&script)
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`scripts/dev-services {command}` failed (`durable` starts tansu on SQLite on 127.0.0.1:9094):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A durable broker (tansu on SQLite, in a tmpfs directory) that belongs to one test: its own
/// port and an empty store. Killed, and its data removed, when dropped.
///
/// Consumer tests need SQLite storage: tansu's in-memory engine mis-serves fetches that start
/// in the middle of a batch (docs/architecture.md), which is exactly what resuming from a
/// committed offset does.
///
/// tansu's SQLite engine slows down as its store grows (a fetch of 5,000 records: ~2 s on an
/// empty store, ~20 s after some 50,000 records of earlier tests), so tests that move many
/// records each start from an empty one rather than share `scripts/dev-services durable`.
pub struct OwnBroker {
    pub addr: String,
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl OwnBroker {
    /// Starts a broker on a free port (installing tansu through `scripts/dev-services` if it
    /// is missing) and waits until it answers.
    pub fn start() -> OwnBroker {
        dev_services("durable"); // installs tansu when missing
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(unique_topic("maas-test-broker"));
        std::fs::create_dir_all(&dir).expect("broker directory");
        let mut b = OwnBroker {
            addr: format!("127.0.0.1:{port}"),
            port,
            dir,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let home = std::env::var("CARGO_HOME")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo")
            });
        let tansu = home.join("bin/tansu");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .expect("broker log");
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run `scripts/dev-services`",
                    tansu.display()
                )
            });
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.listening() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tansu on {} exited ({status}) before it listened; see {}",
                    self.addr,
                    self.dir.join("tansu.log").display()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tansu on {} did not start; see {}",
                self.addr,
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the broker accepts connections on its port.
    ///
    /// A connection whose local address equals its peer's is not the broker: with nothing
    /// listening on a port of the ephemeral range, Linux can pick that very port as the
    /// source and connect the socket to itself (TCP simultaneous open). Taking that for a
    /// started broker sent the first request to a port nobody listened on yet.
    fn listening(&self) -> bool {
        TcpStream::connect(&self.addr).is_ok_and(|s| match (s.local_addr(), s.peer_addr()) {
            (Ok(local), Ok(peer)) => local != peer,
            _ => false,
        })
    }

    /// `kill -9` the broker and start it again on the same store and port.
    pub fn kill_and_restart(&mut self, down_for: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
        std::thread::sleep(down_for);
        self.spawn();
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "the test failed: the broker's log is {}",
                self.dir.join("tansu.log").display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A producer for the broker at `addr`, and `topic` created on it with `partitions`.
pub async fn producer_with_topic(addr: &str, topic: &str, partitions: i32) -> maas_queue::Producer {
    let producer = maas_queue::Producer::builder([addr])
        .build()
        .expect("producer");
    producer
        .create_topic(topic, partitions)
        .await
        .expect("create the topic");
    producer
}

/// `(event id, value, traceparent)` of every record on partition 0 of `topic`, read from the
/// start, once there are at least `want` (or after 30 s): what an outbox relay published.
pub async fn outbox_records(
    addr: &str,
    topic: &str,
    want: usize,
) -> Vec<(String, String, Option<String>)> {
    use rskafka::client::partition::UnknownTopicHandling;
    let client = rskafka_client(addr).await;
    let pc = client
        .partition_client(topic.to_owned(), 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let (records, high) = pc
            .fetch_records(offset, 1..10_000_000, 1_000)
            .await
            .expect("fetch");
        for r in records {
            offset = r.offset + 1;
            let header = |n: &str| {
                r.record
                    .headers
                    .get(n)
                    .map(|v| String::from_utf8(v.clone()).unwrap())
            };
            got.push((
                header(maas_queue::outbox::EVENT_ID).expect("every outbox record has an event id"),
                String::from_utf8(r.record.value.clone().unwrap_or_default()).unwrap(),
                header("traceparent"),
            ));
        }
        if (got.len() >= want && offset >= high) || std::time::Instant::now() > deadline {
            return got;
        }
        if offset >= high {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
