//! Prometheus metrics of the saga engine, read back from the registry.

mod support;

use std::time::Duration;

use maas_saga::metrics::SagaMetrics;
use maas_saga::{Engine, MemoryStore, Operation, RetryPolicy, Saga, Status, Step};
use prometheus::{Encoder, Registry, TextEncoder};
use support::{Act, Scripted};

#[tokio::test]
async fn finished_calls_retries_and_stuck_undo_are_counted() {
    let registry = Registry::new();
    let metrics = SagaMetrics::register(&registry).unwrap();
    let p = Scripted::new();
    p.plan("a", Operation::Action, &[Act::Err]);
    p.plan("b", Operation::Action, &[Act::Reject]);
    p.plan("a", Operation::Compensate, &[Act::Err, Act::Err]);
    let engine = Engine::builder(MemoryStore::new())
        .participant("p", p.participant())
        .metrics(&metrics)
        .alert_after(2)
        .start()
        .await
        .unwrap();
    let quick = RetryPolicy::new(3).backoff(Duration::from_millis(1), Duration::from_millis(2));
    let saga = Saga::builder("s")
        .step(Step::new("a", "p").retry(quick))
        .step(Step::new("b", "p").retry(quick))
        .build()
        .unwrap();
    assert_eq!(engine.run(saga).await.unwrap().status, Status::Compensated);

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    for line in [
        r#"maas_saga_finished_total{status="compensated"} 1"#,
        r#"maas_saga_step_calls_total{op="action",outcome="success"} 1"#,
        r#"maas_saga_step_calls_total{op="action",outcome="unknown"} 1"#,
        r#"maas_saga_step_calls_total{op="action",outcome="rejected"} 1"#,
        r#"maas_saga_step_calls_total{op="compensate",outcome="unknown"} 2"#,
        r#"maas_saga_retries_total{op="compensate"} 2"#,
        r#"maas_saga_stuck_undo_total{op="compensate"} 1"#,
        "maas_saga_in_flight 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
