//! Poison and failing records reach `<topic>.dlq` (through a retry topic for the failing
//! ones) with every failure header, while the records behind them keep flowing; redrive —
//! the API and the `maas-queue` binary — puts them back once the cause is fixed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use maas_queue::failure::headers;
use maas_queue::{FailurePolicy, GroupConsumer, Message, Poison, Record, Redrive};
use tower::service_fn;

const RECORDS: usize = 60;
const PARTITIONS: i32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(1500);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the handler saw: value → (handled at, redriven-from header) for each success.
type Seen = Arc<Mutex<BTreeMap<String, (i64, Option<String>)>>>;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record on `topic`, read by a fresh group from the start.
async fn read_all(addr: &str, topic: &str, expect: usize) -> Vec<Message> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let reader = GroupConsumer::builder([addr], support::unique_topic("reader"))
        .topics([topic])
        .failure_policy(FailurePolicy::default().dead_letter(false))
        .build()
        .expect("reader")
        .start(service_fn(move |m: Message| {
            sink.lock().unwrap().push(m);
            async { Ok::<_, String>(()) }
        }));
    wait_for(&format!("{expect} records on {topic}"), || {
        got.lock().unwrap().len() >= expect
    })
    .await;
    reader.shutdown().await;
    got.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_records_reach_the_dlq_and_redrive_puts_them_back() {
    let broker = support::OwnBroker::start();
    let addr = broker.addr.clone();
    let topic = support::unique_topic("dlq");
    let dlq = format!("{topic}.dlq");
    let group = support::unique_topic("dlq-workers");
    let producer = support::producer_with_topic(&addr, &topic, PARTITIONS).await;

    // Every 10th record is poison (undecodable), every 10th+5 fails until "fixed".
    let kind = |i: usize| match i % 10 {
        0 => "poison",
        5 => "fail",
        _ => "ok",
    };
    let mut deliveries = BTreeMap::new();
    for i in 0..RECORDS {
        let value = format!("{}-{i}", kind(i));
        let d = producer
            .send(
                Record::new(&topic, value.clone())
                    .key(format!("model-{i}"))
                    .header("tenant", "acme"),
            )
            .await
            .expect("send");
        deliveries.insert(value, d);
    }

    let fixed = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (fix, sink) = (fixed.clone(), seen.clone());
    let workers = GroupConsumer::builder([addr.as_str()], group.clone())
        .topics([topic.as_str()])
        .failure_policy(
            FailurePolicy::default()
                .retries(2, Duration::from_millis(10))
                .retry_topics([RETRY_DELAY]),
        )
        .build()
        .expect("consumer")
        .start(service_fn(move |m: Message| {
            let (fix, sink) = (fix.clone(), sink.clone());
            async move {
                let v = m
                    .value_str()
                    .ok_or_else(|| Poison::new("value is not UTF-8"))?
                    .to_owned();
                if v.starts_with("poison") {
                    return Err(Poison::new("not a build task").into());
                }
                if v.starts_with("fail") && !fix.load(Ordering::SeqCst) {
                    return Err::<(), maas_queue::BoxError>("model store unavailable".into());
                }
                let from = m.header_str(headers::REDRIVEN_FROM).map(str::to_owned);
                sink.lock().unwrap().insert(v, (now_ms(), from));
                Ok(())
            }
        }));

    let ok: BTreeSet<String> = deliveries
        .keys()
        .filter(|v| v.starts_with("ok"))
        .cloned()
        .collect();
    let failing: BTreeSet<String> = deliveries
        .keys()
        .filter(|v| !v.starts_with("ok"))
        .cloned()
        .collect();
    wait_for("every good record", || {
        ok.iter().all(|v| seen.lock().unwrap().contains_key(v))
    })
    .await;
    let dead = read_all(&addr, &dlq, failing.len()).await;

    // Every poison and failing record is in the DLQ exactly once, with every header.
    let dead_values: BTreeSet<String> = dead
        .iter()
        .map(|m| m.value_str().unwrap().to_owned())
        .collect();
    assert_eq!(dead_values, failing);
    assert_eq!(
        dead.len(),
        failing.len(),
        "a record was dead-lettered twice"
    );
    let last_good = ok.iter().map(|v| seen.lock().unwrap()[v].0).max().unwrap();
    for m in &dead {
        let v = m.value_str().unwrap();
        let d = &deliveries[v];
        let h = |name: &str| {
            m.header_str(name)
                .unwrap_or_else(|| panic!("{v}: no header {name}"))
                .to_owned()
        };
        let n = v.rsplit('-').next().unwrap();
        assert_eq!(h(headers::ORIGINAL_TOPIC), topic);
        assert_eq!(h(headers::ORIGINAL_PARTITION), d.partition.to_string());
        assert_eq!(h(headers::ORIGINAL_OFFSET), d.offset.to_string());
        assert_eq!(h(headers::ORIGINAL_KEY), format!("model-{n}"));
        assert_eq!(m.key.as_deref(), Some(format!("model-{n}").as_bytes()));
        assert_eq!(h(headers::GROUP), group);
        assert_eq!(
            m.header_str("tenant"),
            Some("acme"),
            "{v}: the record's own headers are kept"
        );
        let first: i64 = h(headers::FIRST_FAILURE).parse().unwrap();
        let last: i64 = h(headers::LAST_FAILURE).parse().unwrap();
        assert!(first <= last);
        if v.starts_with("poison") {
            // Poison goes straight to the DLQ: one call, no retries.
            assert_eq!(h(headers::ERROR), "poison record: not a build task");
            assert_eq!(h(headers::ATTEMPTS), "1");
        } else {
            // 3 calls on the topic, then 3 on `.retry.1` after RETRY_DELAY.
            assert_eq!(h(headers::ERROR), "model store unavailable");
            assert_eq!(h(headers::ATTEMPTS), "6");
            assert!(
                last - first >= RETRY_DELAY.as_millis() as i64,
                "{v}: retry delay not kept"
            );
            // The records behind it were not held up by its retries.
            assert!(
                last_good < last,
                "{v}: later records waited for the failing one"
            );
        }
    }

    // The cause is fixed: redrive one key with the API, the rest with the CLI.
    fixed.store(true, Ordering::SeqCst);
    let report = Redrive::new([addr.as_str()], dlq.as_str())
        .key("model-5")
        .run()
        .await
        .expect("redrive by key");
    assert_eq!(
        (report.scanned, report.redriven, report.skipped),
        (failing.len() as u64, 1, failing.len() as u64 - 1)
    );
    wait_for("fail-5 handled after redrive", || {
        seen.lock().unwrap().contains_key("fail-5")
    })
    .await;

    let since = now_ms() - 600_000;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_maas-queue"))
        .args([
            "redrive",
            "--brokers",
            &addr,
            "--from",
            &dlq,
            "--to",
            &topic,
            "--since",
            &since.to_string(),
        ])
        .output()
        .expect("run maas-queue");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "maas-queue redrive failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("scanned {0} redriven {0} skipped 0", failing.len())
    );

    // Redriven: the failing records are now handled; poison is dead-lettered again.
    let fails: Vec<&String> = failing.iter().filter(|v| v.starts_with("fail")).collect();
    wait_for("every redriven failing record", || {
        fails.iter().all(|v| seen.lock().unwrap().contains_key(*v))
    })
    .await;
    for v in fails {
        assert_eq!(
            seen.lock().unwrap()[v].1.as_deref(),
            Some(dlq.as_str()),
            "{v}: no redriven-from header"
        );
    }
    let poison = failing.iter().filter(|v| v.starts_with("poison")).count();
    let dead_again = read_all(&addr, &dlq, failing.len() + poison).await;
    assert_eq!(dead_again.len(), failing.len() + poison);
    workers.shutdown().await;
    producer.shutdown().await;
}
