//! What the integration tests of this crate share: where the broker is, and a clear failure
//! when it is not there.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};

/// Address of the Kafka-API broker started by `scripts/dev-services` (override: `MAAS_KAFKA`).
fn kafka_addr() -> String {
    std::env::var("MAAS_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
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
         (tansu in memory mode on 127.0.0.1:9092), or point MAAS_KAFKA at a running broker"
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

/// The durable broker (tansu on SQLite storage, 127.0.0.1:9094), started if needed.
///
/// Consumer tests use it: tansu's in-memory engine mis-serves fetches that start in the
/// middle of a batch (docs/architecture.md), which is exactly what resuming from a
/// committed offset does.
pub fn require_durable_kafka() -> String {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev-services");
    let out = std::process::Command::new(&script)
        .arg("durable")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`scripts/dev-services durable` failed (it starts tansu on SQLite on 127.0.0.1:9094):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    "127.0.0.1:9094".to_owned()
}
