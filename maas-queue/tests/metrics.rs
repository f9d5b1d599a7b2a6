//! The consumer's Prometheus metrics move as records are handled, fail and are committed.

use std::time::Duration;

use maas_queue::metrics::QueueMetrics;
use maas_queue::{FailurePolicy, GroupConsumer, MemoryBroker, Message, Poison, Producer, Record};
use tower::service_fn;

/// The value of the first sample of `name` carrying all `labels`, from the text exposition.
fn value(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let matches = series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| v.parse().ok()).flatten()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_dead_lettered_commits_and_lag_are_reported() {
    let registry = prometheus::Registry::new();
    let metrics = QueueMetrics::register(&registry).expect("register");
    let broker = MemoryBroker::new();
    let producer = Producer::builder(&broker).build().expect("producer");
    producer.create_topic("jobs", 2).await.expect("topic");
    for i in 0..10 {
        producer
            .send(Record::new("jobs", format!("ok {i}")).key(format!("k{i}")))
            .await
            .expect("send");
    }
    producer
        .send(Record::new("jobs", "bad").key("k0"))
        .await
        .expect("send");

    let consumer = GroupConsumer::builder(&broker, "g")
        .topics(["jobs"])
        .commit_interval(Duration::from_millis(20))
        .failure_policy(FailurePolicy::default().retries(0, Duration::ZERO))
        .metrics(&metrics)
        .build()
        .expect("consumer")
        .start(service_fn(|m: Message| async move {
            if m.value_str() == Some("bad") {
                Err(Poison::new("bad"))
            } else {
                Ok(())
            }
        }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let handled = value(
            &registry,
            "maas_queue_records_total",
            &[("outcome", "handled")],
        )
        .unwrap_or(0.0);
        let dead = value(
            &registry,
            "maas_queue_records_total",
            &[("outcome", "dead_lettered")],
        )
        .unwrap_or(0.0);
        let lag0 = value(&registry, "maas_queue_lag", &[("partition", "0")]);
        let lag1 = value(&registry, "maas_queue_lag", &[("partition", "1")]);
        if handled == 10.0 && dead == 1.0 && lag0 == Some(0.0) && lag1 == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "handled {handled}, dead {dead}, lag {lag0:?} {lag1:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(value(&registry, "maas_queue_commits_total", &[("group", "g")]).unwrap_or(0.0) >= 1.0);
    assert!(
        value(
            &registry,
            "maas_queue_last_commit_timestamp_seconds",
            &[("group", "g")]
        )
        .unwrap_or(0.0)
            > 1.7e9
    );
    assert_eq!(
        value(&registry, "maas_queue_generations_total", &[("group", "g")]),
        Some(1.0)
    );
    consumer.shutdown().await;
    // Revoked partitions leave no stale lag behind.
    assert_eq!(
        value(&registry, "maas_queue_lag", &[("partition", "0")]),
        None
    );
}

/// Every outcome's series exists, at 0, from the consumer's start: `increase()` sees a
/// series' first appearance as no change, so a counter born at its first dead letter would
/// never alert on it.
#[tokio::test]
async fn record_counters_start_at_zero() {
    let registry = prometheus::Registry::new();
    let metrics = QueueMetrics::register(&registry).expect("register");
    let broker = MemoryBroker::new();
    let consumer = GroupConsumer::builder(&broker, "quiet")
        .topics(["jobs"])
        .failure_policy(FailurePolicy::default().retry_topics([Duration::from_secs(1)]))
        .metrics(&metrics)
        .build()
        .expect("consumer")
        .start(service_fn(|_m: Message| async move { Ok::<_, Poison>(()) }));
    for topic in ["jobs", "jobs.retry.1"] {
        for outcome in ["handled", "retried", "dead_lettered"] {
            assert_eq!(
                value(
                    &registry,
                    "maas_queue_records_total",
                    &[("group", "quiet"), ("topic", topic), ("outcome", outcome)],
                ),
                Some(0.0),
                "{topic} {outcome}"
            );
        }
    }
    consumer.shutdown().await;
}
