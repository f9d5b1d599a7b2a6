//! A consumer process is SIGKILLed twice while handling 20,000 records and restarted each
//! time: every record is handled at least once (0 lost); the duplicates — records handled
//! but not yet committed when the process died — are counted and reported.
//!
//! `harness = false`: the same binary is the test (parent) and the consumer (child, when
//! `MAAS_QUEUE_KILL_CHILD` is set).

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use maas_queue::{GroupConsumer, Message, Record};
use tower::service_fn;

const RECORDS: usize = 20_000;
const PARTITIONS: i32 = 6;
const SESSION: Duration = Duration::from_secs(25);

/// The child: a group member that appends `partition offset` for each handled record.
async fn child(addr: String, topic: String, group: String, out: PathBuf) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("open log");
    let file = std::sync::Arc::new(std::sync::Mutex::new(file));
    let _consumer = GroupConsumer::builder([addr], group)
        .topics([topic])
        // tansu's SQLite store serves one request at a time: while fetches keep it busy a
        // commit can take ~10 s, and so can the heartbeat behind it. A session timeout well
        // above that keeps the member from being expired (and the group from rebalancing)
        // merely because the broker is slow.
        .session_timeout(SESSION)
        .heartbeat_interval(Duration::from_secs(1))
        .commit_interval(Duration::from_secs(1))
        .fetch_max_bytes(32 * 1024)
        .build()
        .expect("consumer")
        .start(service_fn(move |m: Message| {
            let file = file.clone();
            async move {
                // One write per record: a SIGKILL cannot leave half a line.
                let line = format!("{} {}\n", m.partition, m.offset);
                file.lock()
                    .unwrap()
                    .write_all(line.as_bytes())
                    .map_err(|e| e.to_string())?;
                if m.offset % 50 == 0 {
                    // Some work, so that the kill lands mid-batch.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<_, String>(())
            }
        }));
    std::future::pending::<()>().await;
}

fn handled(out: &Path) -> Vec<(i32, i64)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, o) = l.split_once(' ')?;
            Some((p.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// A consumer process, killed when dropped (so a failing test leaves none behind).
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(addr: &str, topic: &str, group: &str, out: &Path) -> Consumer {
    let child = Command::new(std::env::current_exe().expect("current exe"))
        .env("MAAS_QUEUE_KILL_CHILD", "1")
        .env("ADDR", addr)
        .env("TOPIC", topic)
        .env("GROUP", group)
        .env("OUT", out)
        .spawn()
        .expect("spawn the consumer process");
    Consumer(child)
}

fn wait_until(out: &Path, what: &str, done: impl Fn(&[(i32, i64)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let h = handled(out);
        if done(&h) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} lines",
            h.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("MAAS_QUEUE_KILL_CHILD").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
        let var = |k: &str| std::env::var(k).expect(k);
        rt.block_on(child(
            var("ADDR"),
            var("TOPIC"),
            var("GROUP"),
            var("OUT").into(),
        ));
        return;
    }
    let broker = support::OwnBroker::start();
    let addr = broker.addr.clone();
    let topic = support::unique_topic("kill-consumer");
    let group = support::unique_topic("kill-consumer");
    let out = std::env::temp_dir().join(format!("{topic}.log"));

    let produced: BTreeSet<(i32, i64)> = rt.block_on(async {
        let producer = support::producer_with_topic(&addr, &topic, PARTITIONS).await;
        let sends = (0..RECORDS)
            .map(|i| producer.send(Record::new(&topic, vec![b'x'; 100]).key(format!("model-{i}"))));
        let delivered = futures::future::join_all(sends).await;
        producer.shutdown().await;
        delivered
            .into_iter()
            .map(|d| d.expect("send"))
            .map(|d| (d.partition, d.offset))
            .collect()
    });
    assert_eq!(produced.len(), RECORDS);

    // Kill at about 15% and 55%, mid-batch; the third process finishes.
    for (round, at) in [(1, RECORDS * 15 / 100), (2, RECORDS * 55 / 100)] {
        let c = spawn(&addr, &topic, &group, &out);
        wait_until(&out, &format!("round {round}"), |h| h.len() >= at);
        drop(c); // SIGKILL
        // Restart once the killed member's session has expired: tansu 0.6 completes a
        // generation with no assignment when its leader expires between join and sync
        // (docs/architecture.md).
        std::thread::sleep(SESSION + Duration::from_secs(1));
        println!(
            "round {round}: killed after {} handled records",
            handled(&out).len()
        );
    }
    let last = spawn(&addr, &topic, &group, &out);
    wait_until(&out, "every record", |h| {
        produced.is_subset(&h.iter().copied().collect())
    });
    drop(last);

    let h = handled(&out);
    let unique: BTreeSet<(i32, i64)> = h.iter().copied().collect();
    let lost = produced.difference(&unique).count();
    let duplicates = h.len() - unique.len();
    println!(
        "kafka_consumer_kill: {RECORDS} records, 2 SIGKILLs: lost {lost}, handled {} times ({duplicates} duplicates, {:.2}%)",
        h.len(),
        duplicates as f64 * 100.0 / RECORDS as f64
    );
    let _ = std::fs::remove_file(&out);
    assert_eq!(lost, 0, "records lost");
    assert!(
        unique.is_subset(&produced),
        "handled records that were never produced"
    );
    println!("test kafka_consumer_kill ... ok");
}
