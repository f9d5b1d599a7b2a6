//! Extreme and hostile settings: every builder refuses what cannot work with a typed
//! `ConfigError`, and what it accepts works — no panic in a background task, no silent
//! wrap-around. Run in debug and in release (`scripts/test` does both).

mod support;

use std::time::Duration;

use maas_queue::{
    ConfigError, FailurePolicy, GroupConsumer, MemoryBroker, Message, Producer, Record,
};
use proptest::prelude::*;
use tower::service_fn;

fn consumer(topic: &str) -> maas_queue::GroupConsumerBuilder {
    GroupConsumer::builder(["127.0.0.1:9092"], "g").topics([topic])
}

#[test]
fn contradictory_consumer_settings_are_config_errors() {
    // Before: each of these built.
    assert_eq!(
        consumer("t")
            .rebalance_timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::Zero("rebalance_timeout")
    );
    assert!(matches!(
        consumer("t")
            .session_timeout(Duration::from_secs(5))
            .heartbeat_interval(Duration::from_secs(5))
            .build()
            .unwrap_err(),
        ConfigError::HeartbeatNotBelowSession { .. }
    ));
    // 249 characters is a valid topic, but its dead-letter topic (253) is not.
    let long = "t".repeat(249);
    assert_eq!(
        consumer(&long).build().unwrap_err(),
        ConfigError::DerivedTopicName {
            topic: long.clone(),
            derived: format!("{long}.dlq"),
        }
    );
    // Without a DLQ or retry topics, nothing is derived: it builds.
    assert!(
        consumer(&long)
            .failure_policy(FailurePolicy::default().dead_letter(false))
            .build()
            .is_ok()
    );
    let retrying = FailurePolicy::default().retry_topics([Duration::from_secs(1)]);
    assert!(matches!(
        consumer(&"r".repeat(243))
            .failure_policy(retrying)
            .build()
            .unwrap_err(),
        ConfigError::DerivedTopicName { .. }
    ));
    assert!(matches!(
        consumer("t")
            .session_timeout(Duration::MAX)
            .build()
            .unwrap_err(),
        ConfigError::TooLong {
            name: "session_timeout",
            ..
        }
    ));
}

#[test]
fn a_linger_beyond_fifteen_minutes_is_a_config_error() {
    // Before: linger(Duration::MAX) built, then the batching task panicked and sends hung.
    assert!(matches!(
        Producer::builder(["127.0.0.1:9092"])
            .linger(Duration::MAX)
            .build()
            .unwrap_err(),
        ConfigError::TooLong { name: "linger", .. }
    ));
    assert!(matches!(
        Producer::builder(["127.0.0.1:9092"])
            .request_timeout(Duration::MAX)
            .build()
            .unwrap_err(),
        ConfigError::TooLong {
            name: "request_timeout",
            ..
        }
    ));
}

/// `delivery_timeout(Duration::MAX)` and an enormous retry backoff mean "keep trying": a send
/// to the real broker is delivered (before: the background task panicked and the send hung).
#[tokio::test]
async fn delivery_timeout_max_sends_to_the_broker() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("extreme");
    let producer = Producer::builder([addr.as_str()])
        .delivery_timeout(Duration::MAX)
        .retry_backoff(Duration::MAX)
        .linger(Duration::from_millis(5))
        .build()
        .unwrap();
    producer.create_topic(&topic, 1).await.unwrap();
    let sent = tokio::time::timeout(
        Duration::from_secs(30),
        producer.send(Record::new(&topic, "v").key("k")),
    )
    .await
    .expect("the send hung");
    assert!(sent.is_ok(), "{sent:?}");
    producer.shutdown().await;
}

/// A failing handler with an enormous in-place backoff and retry delays: the record moves
/// on (to the retry topic) instead of panicking the worker.
#[tokio::test]
async fn huge_failure_backoffs_do_not_panic_the_consumer() {
    let broker = MemoryBroker::new();
    let producer = Producer::builder(&broker).build().unwrap();
    producer.create_topic("tasks", 1).await.unwrap();
    producer.send(Record::new("tasks", "v")).await.unwrap();
    let policy = FailurePolicy::default()
        .retries(0, Duration::MAX)
        .retry_topics([Duration::MAX]);
    let handle = GroupConsumer::builder(&broker, "g")
        .topics(["tasks"])
        .failure_policy(policy)
        // The moved record then waits (up to a year) on its retry topic: shutdown abandons
        // it after the rebalance timeout.
        .rebalance_timeout(Duration::from_millis(500))
        .session_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .start(service_fn(|_m: Message| async {
            Err::<(), _>("always fails")
        }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handle.stats().retried == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record never moved on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await;
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_millis(i32::MAX as u64)),
        Just(Duration::from_millis(i32::MAX as u64 + 1)),
        any::<u64>().prop_map(Duration::from_millis),
        (1u64..60_000).prop_map(Duration::from_millis),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any durations and sizes: `build()` answers (Ok or a ConfigError), never panics, and
    /// what it accepts is consistent.
    #[test]
    fn builders_answer_every_setting(
        session in duration(), heartbeat in duration(), rebalance in duration(),
        commit in duration(), wait in duration(), request in duration(),
        backoff in duration(), delay in duration(),
        topic_len in prop_oneof![Just(0usize), Just(1), Just(243), Just(244), Just(249), Just(250), 1usize..60],
        parallelism in prop_oneof![Just(0usize), Just(1), Just(usize::MAX)],
        fetch in prop_oneof![Just(0i32), Just(-1), Just(i32::MAX), Just(i32::MIN)],
        linger in duration(), delivery in duration(), buffered in prop_oneof![Just(0usize), Just(usize::MAX)],
    ) {
        let topic = "t".repeat(topic_len);
        let built = GroupConsumer::builder(["127.0.0.1:9092"], "g")
            .topics([topic.as_str()])
            .session_timeout(session)
            .heartbeat_interval(heartbeat)
            .rebalance_timeout(rebalance)
            .commit_interval(commit)
            .fetch_max_wait(wait)
            .partition_parallelism(parallelism)
            .key_parallelism(parallelism)
            .fetch_max_bytes(fetch)
            .failure_policy(FailurePolicy::default().retries(3, backoff).retry_topics([delay]))
            .build();
        if built.is_ok() {
            prop_assert!(heartbeat < session && !rebalance.is_zero());
            prop_assert!(session <= Duration::from_millis(i32::MAX as u64));
            prop_assert!(topic_len + ".retry.1".len() <= 249);
        }
        let _ = Producer::builder(["127.0.0.1:9092"])
            .linger(linger)
            .delivery_timeout(delivery)
            .request_timeout(request)
            .retry_backoff(backoff)
            .max_buffered_records(buffered)
            .build();
    }
}
