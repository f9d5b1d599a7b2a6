//! The SQLite outbox against a real SQLite file and the local Kafka-API broker: committed
//! records are published in order with their event ids, rolled-back ones never; one relay
//! of the file publishes at a time and another takes over when it stops.

mod support;

use std::time::Duration;

use maas_queue::Record;
use maas_queue::outbox::sqlite::{self, SqliteRelay};

/// The values on the topic with their event ids, once there are `want`.
async fn read(addr: &str, topic: &str, want: usize) -> Vec<(String, String)> {
    support::outbox_records(addr, topic, want)
        .await
        .into_iter()
        .map(|(id, value, _)| (id, value))
        .collect()
}

fn file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "maas-outbox-{tag}-{}-{}.db",
        std::process::id(),
        fastrand::u64(..)
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_are_published_in_order_and_a_second_relay_takes_over() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("outbox-sqlite");
    let path = file("order");
    let mut db = rusqlite::Connection::open(&path).unwrap();
    sqlite::install(&db, "outbox").unwrap();
    let producer = support::producer_with_topic(&addr, &topic, 1).await;
    let start = || {
        SqliteRelay::builder(&path, producer.clone())
            .table("outbox")
            .poll_every(Duration::from_millis(50))
            .start()
    };
    let (a, b) = (start(), start());
    let mut want = Vec::new();
    for i in 0..20 {
        let tx = db.transaction().unwrap();
        let id = sqlite::enqueue(
            &tx,
            "outbox",
            &Record::new(&topic, format!("v{i}")).key("k"),
        )
        .unwrap();
        if i % 4 == 3 {
            tx.rollback().unwrap();
        } else {
            tx.commit().unwrap();
            want.push((id, format!("v{i}")));
        }
    }
    a.waker().notify_one();
    b.waker().notify_one();
    assert_eq!(
        read(&addr, &topic, want.len()).await,
        want,
        "in order, once, none rolled back"
    );
    let published = a.stats().published() + b.stats().published();
    assert_eq!(published, 15);
    assert!(
        a.stats().published() == 0 || b.stats().published() == 0,
        "one relay published: {} and {}",
        a.stats().published(),
        b.stats().published()
    );
    let (leader, follower) = if a.stats().published() > 0 {
        (a, b)
    } else {
        (b, a)
    };
    leader.shutdown().await;
    for i in 0..5 {
        sqlite::enqueue(&db, "outbox", &Record::new(&topic, format!("w{i}"))).unwrap();
    }
    follower.waker().notify_one();
    let got = read(&addr, &topic, 20).await;
    assert_eq!(
        got.len(),
        20,
        "the second relay published the rest: {got:?}"
    );
    assert_eq!(follower.stats().published(), 5);
    let left: i64 = db
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    follower.shutdown().await;
    assert!(matches!(
        sqlite::install(&db, "1bad"),
        Err(sqlite::SqliteOutboxError::Table(_))
    ));
    let _ = std::fs::remove_file(&path);
}
