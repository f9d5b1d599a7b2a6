//! The PostgreSQL outbox against the real PostgreSQL (127.0.0.1:5432, database `test`) and
//! the local Kafka-API broker: records are published once their transaction commits and never
//! when it rolls back, in insertion order, with their event id and the enqueuing trace; a row
//! whose transaction commits late is published (where a naive `id > last` poller skips it);
//! one relay publishes at a time and another takes over when it goes; the backlog metrics.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use maas_queue::Record;
use maas_queue::outbox::pg::{self, PgRelay};
use maas_queue::outbox::{Deduplicator, OutboxMetrics};
use prometheus::Registry;

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

async fn db() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(DATABASE, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at 127.0.0.1:5432 ({e}); start it with \
                 `scripts/dev-services up`"
            )
        });
    tokio::spawn(conn);
    client
}

fn table(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "outbox_{tag}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

async fn relay_for(addr: &str, topic: &str, table: &str) -> (maas_queue::Producer, PgRelay) {
    let producer = support::producer_with_topic(addr, topic, 1).await;
    let relay = PgRelay::builder(DATABASE, producer.clone())
        .table(table)
        .lock_key(fastrand::i64(..))
        .poll_every(Duration::from_millis(100))
        .start();
    (producer, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_records_are_published_in_order_and_rolled_back_ones_never() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("outbox-order");
    let t = table("order");
    let mut client = db().await;
    pg::install(&client, &t).await.unwrap();
    let (_producer, relay) = relay_for(&addr, &topic, &t).await;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut ids = Vec::new();
    for i in 0..20 {
        let tx = client.transaction().await.unwrap();
        let mut r = Record::new(&topic, format!("v{i}")).key("k");
        if i == 0 {
            r = r.header("traceparent", trace);
        }
        let id = pg::enqueue(&tx, &t, &r).await.unwrap();
        if i % 5 == 4 {
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
            ids.push((id, format!("v{i}")));
        }
    }
    pg::notify(&client, &t).await.unwrap();
    let got = support::outbox_records(&addr, &topic, ids.len()).await;
    let got_ids: Vec<_> = got
        .iter()
        .map(|(id, v, _)| (id.clone(), v.clone()))
        .collect();
    assert_eq!(
        got_ids, ids,
        "committed records, in order, once each; none rolled back"
    );
    assert_eq!(
        got[0].2.as_deref(),
        Some(trace),
        "the enqueuing trace travels"
    );
    assert!(got[1].2.is_some(), "the others get a fresh traceparent");
    let left: i64 = client
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "published rows are deleted");
    assert_eq!(relay.stats().published(), 16);
    relay.shutdown().await;
    assert!(matches!(
        pg::install(&client, "bad name; drop table x").await,
        Err(pg::OutboxError::Table(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_published_where_a_naive_poller_skips_it() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("outbox-late");
    let t = table("late");
    let (mut early, mut late) = (db().await, db().await);
    pg::install(&early, &t).await.unwrap();
    // The late transaction takes the lower id, the early one commits first.
    let late_tx = late.transaction().await.unwrap();
    let late_id = pg::enqueue(&late_tx, &t, &Record::new(&topic, "late"))
        .await
        .unwrap();
    let early_tx = early.transaction().await.unwrap();
    pg::enqueue(&early_tx, &t, &Record::new(&topic, "early"))
        .await
        .unwrap();
    early_tx.commit().await.unwrap();

    // A naive poller: remembers the last id it read, reads above it.
    let naive = db().await;
    let read_above = |last: i64| {
        let (naive, t) = (&naive, t.clone());
        async move {
            naive
                .query(
                    &format!("SELECT id FROM {t} WHERE id > $1 ORDER BY id"),
                    &[&last],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect::<Vec<i64>>()
        }
    };
    let first = read_above(0).await;
    assert_eq!(
        first.len(),
        1,
        "only the early commit is visible: {first:?}"
    );
    let last = first[0];

    // Our relay meanwhile publishes nothing: the late transaction holds xmin.
    let (_producer, relay) = relay_for(&addr, &topic, &t).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        relay.stats().published(),
        0,
        "nothing published past an open transaction"
    );
    late_tx.commit().await.unwrap();
    assert!(
        read_above(last).await.is_empty(),
        "the naive poller never sees the late row (its id is below the last it read)"
    );
    let got = support::outbox_records(&addr, &topic, 2).await;
    let values: Vec<_> = got.iter().map(|(_, v, _)| v.as_str()).collect();
    assert_eq!(values, ["late", "early"], "both published, in id order");
    assert_eq!(got[0].0, late_id);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_publishes_and_another_takes_over_when_it_goes() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("outbox-takeover");
    let t = table("takeover");
    let client = db().await;
    pg::install(&client, &t).await.unwrap();
    let producer = support::producer_with_topic(&addr, &topic, 1).await;
    let registry = Registry::new();
    let metrics = OutboxMetrics::register(&registry).unwrap();
    let key = fastrand::i64(..);
    let start = |p: &maas_queue::Producer| {
        PgRelay::builder(DATABASE, p.clone())
            .table(&t)
            .lock_key(key)
            .poll_every(Duration::from_millis(100))
            .metrics(&metrics)
            .start()
    };
    let (a, b) = (start(&producer), start(&producer));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(a.stats().is_leader() || b.stats().is_leader()) {
        assert!(Instant::now() < deadline, "no relay took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !(a.stats().is_leader() && b.stats().is_leader()),
        "two leaders"
    );
    let (leader, follower) = if a.stats().is_leader() {
        (a, b)
    } else {
        (b, a)
    };
    for i in 0..10 {
        pg::enqueue(&client, &t, &Record::new(&topic, format!("a{i}")))
            .await
            .unwrap();
    }
    assert_eq!(support::outbox_records(&addr, &topic, 10).await.len(), 10);
    assert_eq!(
        follower.stats().published(),
        0,
        "the follower published nothing"
    );
    // The leader goes; its session ends and the follower takes over within a poll or two.
    leader.shutdown().await;
    for i in 0..10 {
        pg::enqueue(&client, &t, &Record::new(&topic, format!("b{i}")))
            .await
            .unwrap();
    }
    let took_over = Instant::now();
    let got = support::outbox_records(&addr, &topic, 20).await;
    assert_eq!(got.len(), 20, "the second relay published the rest");
    assert!(
        took_over.elapsed() < Duration::from_secs(5),
        "{:?}",
        took_over.elapsed()
    );
    assert_eq!(follower.stats().published(), 10);
    // Consumers drop repeats by event id.
    let seen = Deduplicator::new(100);
    assert!(got.iter().all(|(id, _, _)| seen.first_time(id)));
    assert!(!seen.first_time(&got[3].0));
    let text = {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(
        text.contains(&format!("maas_outbox_published_total{{outbox=\"{t}\"}} 20")),
        "{text}"
    );
    assert!(text.contains("maas_outbox_oldest_seconds"), "{text}");
    follower.shutdown().await;
}
