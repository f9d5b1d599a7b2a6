//! Trace context on consume: the `trace_context` hook gets each record's `queue_message`
//! span with the producer's `traceparent` before the handler runs, the handler runs inside
//! that span, and a record that fails for good marks it as an error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_queue::{FailurePolicy, GroupConsumer, MemoryBroker, Message, Poison, Producer, Record};
use tower::service_fn;
use tracing::field::{Field, Visit};
use tracing::span::{Id, Record as SpanRecord};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Spans marked `otel.status_code = "error"`, by name.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

struct StatusVisitor(Option<String>);

impl Visit for StatusVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "otel.status_code" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Errors {
    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let mut v = StatusVisitor(None);
        values.record(&mut v);
        if v.0.as_deref() == Some("error")
            && let Some(span) = ctx.span(id)
        {
            self.0.lock().unwrap().push(span.name().to_owned());
        }
    }
}

#[tokio::test]
async fn records_continue_the_producers_trace_and_failures_are_marked() {
    let errors = Errors::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    let broker = MemoryBroker::new();
    let producer = Producer::builder(&broker).build().unwrap();
    producer.create_topic("jobs", 1).await.unwrap();
    producer
        .send(Record::new("jobs", "good").header("traceparent", CALLER))
        .await
        .unwrap();
    producer
        .send(Record::new("jobs", "bad").header("traceparent", CALLER))
        .await
        .unwrap();

    let continued = Arc::new(Mutex::new(Vec::new()));
    let in_span = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (continued.clone(), in_span.clone());
    let consumer = GroupConsumer::builder(&broker, "g")
        .topics(["jobs"])
        .failure_policy(FailurePolicy::default().retries(0, Duration::ZERO))
        .trace_context(move |span, tp| {
            c.lock()
                .unwrap()
                .push((span.metadata().map(|m| m.name()), tp.to_owned()))
        })
        .build()
        .unwrap()
        .start(service_fn(move |m: Message| {
            // The handler runs inside the record's span.
            s.lock().unwrap().push(
                tracing::Span::current()
                    .metadata()
                    .map(|m| m.name().to_owned()),
            );
            async move {
                if m.value_str() == Some("bad") {
                    Err(Poison::new("bad"))
                } else {
                    Ok(())
                }
            }
        }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while broker.messages("jobs.dlq").is_empty() || consumer.stats().handled < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            consumer.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.shutdown().await;

    let continued = continued.lock().unwrap().clone();
    assert_eq!(
        continued,
        vec![
            (Some("queue_message"), CALLER.to_owned()),
            (Some("queue_message"), CALLER.to_owned())
        ]
    );
    assert_eq!(
        in_span.lock().unwrap().as_slice(),
        [
            Some("queue_message".to_owned()),
            Some("queue_message".to_owned())
        ]
    );
    assert_eq!(
        errors.0.lock().unwrap().as_slice(),
        ["queue_message".to_owned()]
    );
    // The dead-lettered record keeps the trace.
    assert_eq!(
        broker.messages("jobs.dlq")[0].header_str("traceparent"),
        Some(CALLER)
    );
}
