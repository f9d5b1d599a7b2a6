//! Trace context: a saga's span is a child of the span that submitted it, its participant
//! calls carry the caller's trace, and a recovered transaction continues the trace stored
//! with its intent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_saga::store::{Lease, NewSaga, SagaStore};
use maas_saga::{
    BranchCall, DefinitionError, Engine, MemoryStore, Reply, Saga, SagaId, Status, Step,
    participant,
};
use tower::service_fn;
use tracing::Instrument;
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A span's name and its parent's.
type Edge = (String, Option<String>);

/// Records (span name, parent span name) of every span.
#[derive(Clone, Default)]
struct Parents(Arc<Mutex<Vec<Edge>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Parents {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the new span");
        let parent = span.parent().map(|p| p.name().to_owned());
        let _ = attrs;
        self.0
            .lock()
            .unwrap()
            .push((span.name().to_owned(), parent));
    }
}

fn recording(seen: &Arc<Mutex<Vec<Option<String>>>>) -> maas_saga::Participant {
    let seen = seen.clone();
    participant(service_fn(move |call: BranchCall| {
        seen.lock().unwrap().push(call.traceparent.clone());
        async { Ok::<_, std::io::Error>(Reply::Done) }
    }))
}

#[tokio::test]
async fn a_saga_runs_in_the_callers_span_and_trace() {
    let parents = Parents::default();
    let subscriber = tracing_subscriber::registry().with(parents.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::builder(MemoryStore::new())
        .participant("p", recording(&seen))
        .start()
        .await
        .unwrap();
    let saga = Saga::builder("s")
        .step(Step::new("a", "p"))
        .step(Step::new("b", "p").after(["a"]))
        .traceparent(CALLER)
        .build()
        .unwrap();
    let outcome = engine
        .run(saga)
        .instrument(tracing::info_span!("http_request"))
        .await
        .unwrap();
    assert_eq!(outcome.status, Status::Committed);

    let spans = parents.0.lock().unwrap().clone();
    assert!(
        spans.contains(&("saga".to_owned(), Some("http_request".to_owned()))),
        "the saga span is not the caller's child: {spans:?}"
    );
    assert!(
        spans.contains(&("saga_step".to_owned(), Some("saga".to_owned()))),
        "{spans:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for tp in seen {
        let tp = tp.expect("a traceparent on every call");
        assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
        assert_ne!(tp, CALLER, "each call gets a span id of its own");
    }
}

#[tokio::test]
async fn a_recovered_saga_continues_the_stored_trace() {
    let store = Arc::new(MemoryStore::new());
    // An intent written by an engine that then died (its lease has expired).
    let saga = Saga::builder("s")
        .step(Step::new("a", "p"))
        .traceparent(CALLER)
        .build()
        .unwrap();
    let dead = Lease {
        owner: "dead".into(),
        incarnation: "1".into(),
        duration: Duration::from_millis(1),
    };
    let id = SagaId::new();
    assert!(
        store
            .create(
                NewSaga {
                    id: id.clone(),
                    transaction: saga.into(),
                    deadline_after: None,
                },
                &dead,
            )
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;

    let continued = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let c = continued.clone();
    let engine = Engine::builder_arc(store)
        .participant("p", recording(&seen))
        .trace_context(move |_span, tp| c.lock().unwrap().push(tp.to_owned()))
        .start()
        .await
        .unwrap();
    let outcome = engine.wait(&id).await.unwrap();
    assert_eq!(outcome.status, Status::Committed);
    assert_eq!(continued.lock().unwrap().as_slice(), [CALLER.to_owned()]);
    let tp = seen.lock().unwrap()[0].clone().unwrap();
    assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
}

#[test]
fn a_malformed_traceparent_is_a_definition_error() {
    for bad in [
        "",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    ] {
        let built = Saga::builder("s")
            .step(Step::new("a", "p"))
            .traceparent(bad)
            .build();
        assert!(
            matches!(built, Err(DefinitionError::InvalidTraceparent(_))),
            "{bad:?}: {built:?}"
        );
    }
}
