//! A request to an axum server produces an exported server span (received by an in-process
//! OTLP/gRPC collector) whose trace id equals the one in the JSON log line and the one
//! continued from the incoming `traceparent`. Installs the global subscriber, so it is the
//! only test in this binary.

mod support;

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use maas_telemetry::{HttpTraceLayer, LogFormat, OtlpProtocol, Telemetry};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn model(Path(id): Path<String>) -> String {
    tracing::info!(model = %id, "serving model");
    // The trace context a handler would pass on to Kafka records or saga calls.
    maas_telemetry::propagation::current_traceparent().unwrap_or_default()
}

#[test]
fn exported_spans_logs_and_incoming_traceparent_share_the_trace_id() {
    let (mut collector, collector_rt) = support::collector();
    let logs = support::Captured::default();
    let telemetry = Telemetry::builder()
        .service_name("otlp-test")
        .otlp_endpoint(collector.endpoint())
        .otlp_protocol(OtlpProtocol::Grpc)
        .filter("info")
        .log_format(LogFormat::Json)
        .log_writer(logs.clone())
        .build()
        .expect("telemetry");
    assert_eq!(telemetry.endpoint(), Some(collector.endpoint().as_str()));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (continued, fresh) = rt.block_on(async {
        let app = Router::new()
            .route("/models/{id}", get(model))
            .layer(HttpTraceLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        let text = |req: reqwest::RequestBuilder| async move {
            req.send().await.unwrap().text().await.unwrap()
        };
        let caller = format!("00-{TRACE}-{CALLER_SPAN}-01");
        let continued = text(
            http.get(format!("{base}/models/llama"))
                .header("traceparent", caller),
        )
        .await;
        let fresh = text(http.get(format!("{base}/models/mistral"))).await;
        (continued, fresh)
    });
    telemetry.flush().expect("flush to the collector");
    let spans = collector_rt.block_on(collector.exported_spans(2, Duration::from_secs(20)));
    assert_eq!(spans.len(), 2, "{spans:#?}");

    // 1. Continued from the caller: same trace, the caller's span as parent.
    let line = logs.line("serving model");
    let span = spans
        .iter()
        .find(|s| s.trace_id == TRACE)
        .unwrap_or_else(|| panic!("no span in the caller's trace: {spans:#?}"));
    assert_eq!(span.parent_span_id, CALLER_SPAN);
    assert_eq!(span.name, "GET /models/{id}");
    assert!(span.kind.contains("SERVER"), "{}", span.kind);
    // (The receiver renders attribute values with `Debug`.)
    assert!(
        span.attributes["http.route"].contains("\"/models/{id}\""),
        "{span:#?}"
    );
    assert!(
        span.attributes["http.response.status_code"].contains("IntValue(200)"),
        "{span:#?}"
    );
    let llama = logs
        .lines()
        .into_iter()
        .find(|l| l["model"] == "llama")
        .expect("log line of the first request");
    assert_eq!(llama["trace_id"], TRACE, "{line}");
    assert_eq!(llama["span_id"], span.span_id.as_str());
    assert_eq!(llama["level"], "INFO");
    assert_eq!(llama["span"], "http_request");
    // What the handler would hand on: the same trace, its own span as the parent.
    assert_eq!(continued, format!("00-{TRACE}-{}-01", span.span_id));

    // 2. A request without traceparent starts a trace; its log line carries that trace.
    let other = spans.iter().find(|s| s.trace_id != TRACE).unwrap();
    assert!(other.parent_span_id.is_empty(), "a root span: {other:#?}");
    let mistral = logs
        .lines()
        .into_iter()
        .find(|l| l["model"] == "mistral")
        .expect("log line of the second request");
    assert_eq!(mistral["trace_id"], other.trace_id.as_str());
    assert_eq!(mistral["span_id"], other.span_id.as_str());
    assert!(fresh.contains(&other.trace_id));

    // Shutting down inside the application's runtime returns promptly.
    let started = std::time::Instant::now();
    rt.block_on(async move { drop(telemetry) });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
