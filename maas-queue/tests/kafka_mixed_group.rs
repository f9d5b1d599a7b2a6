//! A maas consumer and a librdkafka consumer (the `rdkafka` crate) are members of one Kafka
//! consumer group: they split the partitions between them, and each resumes exactly where the
//! other committed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_queue::{ConsumerHandle, GroupConsumer, Message, Producer, Record};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use tokio::time::{Instant, sleep, timeout};
use tower::service_fn;

const PARTITIONS: i32 = 4;
const PER_ROUND: usize = 40;
const WAIT: Duration = Duration::from_secs(60);

/// (partition, offset) of each handled record, per consumer.
type Log = Arc<Mutex<Vec<(i32, i64)>>>;

fn maas_member(addr: &str, group: &str, topic: &str, log: &Log) -> ConsumerHandle {
    let log = log.clone();
    GroupConsumer::builder([addr], group)
        .topics([topic])
        .heartbeat_interval(Duration::from_millis(200))
        .session_timeout(Duration::from_secs(6))
        .commit_interval(Duration::from_millis(100))
        .build()
        .expect("maas consumer")
        .start(service_fn(move |m: Message| {
            log.lock().unwrap().push((m.partition, m.offset));
            async { Ok::<_, std::convert::Infallible>(()) }
        }))
}

/// An rdkafka member that commits each record synchronously after handling it.
fn rdkafka_member(
    addr: &str,
    group: &str,
    topic: &str,
    log: &Log,
) -> (Arc<StreamConsumer>, tokio::task::JoinHandle<()>) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("client.id", "rdkafka-member")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "200")
        .set("partition.assignment.strategy", "range,roundrobin")
        .create()
        .expect("rdkafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let consumer = Arc::new(consumer);
    let (c, log) = (consumer.clone(), log.clone());
    let task = tokio::spawn(async move {
        loop {
            match c.recv().await {
                Ok(m) => {
                    log.lock().unwrap().push((m.partition(), m.offset()));
                    c.commit_message(&m, CommitMode::Sync)
                        .expect("rdkafka commit");
                }
                // librdkafka reports transient conditions (a connection the broker closed:
                // `AllBrokersDown`) through the same channel and recovers by itself; a member
                // that stays broken shows up as the test's timeout.
                Err(e) => eprintln!("rdkafka consumer: {e}"),
            }
        }
    });
    (consumer, task)
}

fn rdkafka_partitions(c: &StreamConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

async fn produce(producer: &Producer, topic: &str, round: usize) -> BTreeSet<(i32, i64)> {
    let sends = (0..PER_ROUND).map(|i| {
        producer
            .send(Record::new(topic, format!("round {round} task {i}")).key(format!("model-{i}")))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|d| d.expect("send"))
        .map(|d| (d.partition, d.offset))
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn set(log: &Log) -> BTreeSet<(i32, i64)> {
    log.lock().unwrap().iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maas_and_rdkafka_share_a_group_and_resume_each_other() {
    let broker = support::OwnBroker::start();
    let addr = broker.addr.clone();
    let topic = support::unique_topic("mixed");
    let group = support::unique_topic("mixed-group");
    let producer = support::producer_with_topic(&addr, &topic, PARTITIONS).await;

    // Round 1: both members in the group split the partitions.
    let (ours, theirs): (Log, Log) = Default::default();
    let maas = maas_member(&addr, &group, &topic, &ours);
    let (rd, rd_task) = rdkafka_member(&addr, &group, &topic, &theirs);
    let deadline = Instant::now() + WAIT;
    let (mine, its) = loop {
        let mine: BTreeSet<i32> = maas.assignment().into_iter().map(|(_, p)| p).collect();
        let its = rdkafka_partitions(&rd);
        if !mine.is_empty()
            && !its.is_empty()
            && mine.is_disjoint(&its)
            && mine.len() + its.len() == PARTITIONS as usize
        {
            break (mine, its);
        }
        assert!(
            Instant::now() < deadline,
            "partitions never split: maas {mine:?}, rdkafka {its:?}"
        );
        sleep(Duration::from_millis(50)).await;
    };
    println!("maas has {mine:?}, rdkafka has {its:?}");
    let round1 = produce(&producer, &topic, 1).await;
    wait_for("round 1", || {
        set(&ours).len() + set(&theirs).len() >= PER_ROUND
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    let (o, t) = (ours.lock().unwrap().clone(), theirs.lock().unwrap().clone());
    assert!(
        o.iter().all(|(p, _)| mine.contains(p)),
        "maas handled a partition it does not own: {o:?}"
    );
    assert!(
        t.iter().all(|(p, _)| its.contains(p)),
        "rdkafka handled a partition it does not own: {t:?}"
    );
    assert!(
        !o.is_empty() && !t.is_empty(),
        "one member handled nothing: maas {o:?}, rdkafka {t:?}"
    );
    assert_eq!(o.len() + t.len(), PER_ROUND, "a record was handled twice");
    assert_eq!(
        set(&ours)
            .union(&set(&theirs))
            .copied()
            .collect::<BTreeSet<_>>(),
        round1
    );

    // Both leave (maas commits on shutdown; rdkafka committed each record).
    maas.shutdown().await;
    rd_task.abort();
    let _ = rd_task.await;
    drop(rd); // closes the consumer: it leaves the group
    let round2 = produce(&producer, &topic, 2).await;

    // Round 2: a maas member alone resumes from both members' commits. (maas first: when
    // the group's leader leaves last, tansu 0.6 keeps it as a leader that is no longer a
    // member, and a librdkafka member then waits for its assignment forever; a maas member
    // takes over the orphaned leader's id — docs/architecture.md.)
    let after_both: Log = Log::default();
    let maas = maas_member(&addr, &group, &topic, &after_both);
    wait_for("round 2 through maas", || {
        set(&after_both).len() >= PER_ROUND
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    maas.shutdown().await;
    assert_eq!(
        after_both.lock().unwrap().len(),
        PER_ROUND,
        "maas re-read committed records"
    );
    assert_eq!(
        set(&after_both),
        round2,
        "maas did not resume at the committed offsets"
    );
    let round3 = produce(&producer, &topic, 3).await;

    // Round 3: an rdkafka member alone resumes from maas's commits.
    let after_maas: Log = Log::default();
    let (rd, rd_task) = rdkafka_member(&addr, &group, &topic, &after_maas);
    wait_for("round 3 through rdkafka", || {
        set(&after_maas).len() >= PER_ROUND
    })
    .await;
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        after_maas.lock().unwrap().len(),
        PER_ROUND,
        "rdkafka re-read committed records"
    );
    assert_eq!(
        set(&after_maas),
        round3,
        "rdkafka did not resume at maas's committed offsets"
    );
    rd_task.abort();
    let _ = rd_task.await;
    drop(rd);

    let per_partition: BTreeMap<i32, usize> =
        round3.iter().fold(BTreeMap::new(), |mut m, (p, _)| {
            *m.entry(*p).or_default() += 1;
            m
        });
    println!("round 3 per partition: {per_partition:?}");
    let _ = timeout(Duration::from_secs(5), producer.shutdown()).await;
}
