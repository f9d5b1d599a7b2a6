//! The PostgreSQL outbox through crashes: 3,000 committed records, a relay process SIGKILLed
//! mid-publish three times and restarted, and the broker (its own tansu on SQLite storage)
//! killed and restarted under the relay. Afterwards every record is on the topic — 0 lost —
//! and the repeats the crashes caused are counted and dropped by event id.
//!
//! The test re-runs its own binary as the relay process (`harness = false`).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use maas_queue::outbox::Deduplicator;
use maas_queue::outbox::pg::{self, PgRelay};
use maas_queue::{Producer, Record};

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const RECORDS: usize = 3_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--relay") {
        relay(&args[i + 1], &args[i + 2]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("an_outbox_relay_survives_sigkills_and_a_broker_restart: test");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(parent());
    println!("test an_outbox_relay_survives_sigkills_and_a_broker_restart ... ok");
}

/// The relay process: publishes `table` to the broker at `addr` until it is killed.
fn relay(addr: &str, table: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let producer = Producer::builder([addr])
            .delivery_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let _relay = PgRelay::builder(DATABASE, producer)
            .table(table)
            .batch(10)
            .lock_key(7_465_999)
            .poll_every(Duration::from_millis(20))
            .start();
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
}

fn spawn_relay(addr: &str, table: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--relay", addr, table])
        .spawn()
        .expect("the test binary runs as the relay")
}

fn kill(mut c: Child) {
    let _ = c.kill(); // SIGKILL
    let _ = c.wait();
}

async fn left(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn parent() {
    let (db, conn) = tokio_postgres::connect(DATABASE, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at 127.0.0.1:5432 ({e}); start it with `scripts/dev-services up`")
        });
    tokio::spawn(conn);
    let mut broker = support::OwnBroker::start();
    let topic = support::unique_topic("outbox-crash");
    support::producer_with_topic(&broker.addr, &topic, 1).await;
    let table = format!("outbox_crash_{}", std::process::id());
    pg::install(&db, &table).await.unwrap();
    let mut ids = Vec::with_capacity(RECORDS);
    for chunk in 0..RECORDS / 10 {
        db.batch_execute("BEGIN").await.unwrap();
        for i in 0..10 {
            let r = Record::new(&topic, format!("v{}", chunk * 10 + i)).key(format!("k{i}"));
            ids.push(pg::enqueue(&db, &table, &r).await.unwrap());
        }
        db.batch_execute("COMMIT").await.unwrap();
    }

    // Three relays killed mid-publish; under the second, the broker is killed and restarted.
    for round in 0..3 {
        let relay = spawn_relay(&broker.addr, &table);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(40..120))).await;
        if round == 1 {
            broker.kill_and_restart(Duration::from_millis(500));
            tokio::time::sleep(Duration::from_millis(fastrand::u64(40..120))).await;
        }
        kill(relay);
        eprintln!(
            "round {round}: {} records left in the outbox",
            left(&db, &table).await
        );
    }
    let last = spawn_relay(&broker.addr, &table);
    let deadline = Instant::now() + Duration::from_secs(90);
    while left(&db, &table).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the relay did not empty the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill(last);

    // Everything on the topic, repeats included.
    let seen_ids: Vec<String> = support::outbox_records(&broker.addr, &topic, RECORDS)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let dedup = Deduplicator::new(10_000);
    let unique: Vec<&String> = seen_ids.iter().filter(|id| dedup.first_time(id)).collect();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in &seen_ids {
        *count.entry(id).or_default() += 1;
    }
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !count.contains_key(id.as_str()))
        .collect();
    eprintln!(
        "{} records enqueued, {} on the topic, {} unique, {} repeats dropped by event id, {} lost",
        ids.len(),
        seen_ids.len(),
        unique.len(),
        dedup.repeats(),
        lost.len()
    );
    assert!(lost.is_empty(), "{} records lost", lost.len());
    assert_eq!(unique.len(), RECORDS);
    assert_eq!(dedup.repeats() as usize, seen_ids.len() - RECORDS);
    let _ = db.batch_execute(&format!("DROP TABLE {table}")).await;
}
