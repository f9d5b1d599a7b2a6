//! Dropping [`Telemetry`] exports what is buffered and returns promptly on a current-thread
//! runtime, a multi-thread runtime and outside any runtime; OTLP over HTTP works as well as
//! gRPC. (Subscribers are installed per thread here; the global one is tested elsewhere.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maas_telemetry::{OtlpProtocol, Telemetry};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Records one span under `subscriber` on this thread; returns its trace id.
fn one_span(subscriber: impl tracing::Subscriber + Send + Sync + 'static) -> String {
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("unit_of_work");
        let id = span.context().span().span_context().trace_id().to_string();
        span.in_scope(|| tracing::info!("working"));
        id
    })
}

fn grpc_telemetry(endpoint: String) -> (Telemetry, impl tracing::Subscriber + Send + Sync) {
    Telemetry::builder()
        .service_name("shutdown-test")
        .otlp_endpoint(endpoint)
        .otlp_protocol(OtlpProtocol::Grpc)
        .log_writer(support::Captured::default())
        .build_subscriber()
        .expect("telemetry")
}

/// Builds telemetry, records a span, and drops the telemetry inside `rt` without flushing:
/// the drop must deliver the span, quickly.
fn drop_delivers_the_span(rt: tokio::runtime::Runtime) {
    let (mut collector, collector_rt) = support::collector();
    let (telemetry, subscriber) = grpc_telemetry(collector.endpoint());
    let trace = one_span(subscriber);
    let started = Instant::now();
    rt.block_on(async move { drop(telemetry) });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let spans = collector_rt.block_on(collector.exported_spans(1, Duration::from_secs(10)));
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].trace_id, trace);
    assert_eq!(spans[0].name, "unit_of_work");
}

#[test]
fn shutdown_on_a_current_thread_runtime() {
    drop_delivers_the_span(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    );
}

#[test]
fn shutdown_on_a_multi_thread_runtime() {
    drop_delivers_the_span(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
}

#[test]
fn shutdown_outside_any_runtime() {
    let (mut collector, collector_rt) = support::collector();
    let (telemetry, subscriber) = grpc_telemetry(collector.endpoint());
    let trace = one_span(subscriber);
    telemetry.shutdown();
    let spans = collector_rt.block_on(collector.exported_spans(1, Duration::from_secs(10)));
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].trace_id, trace);
}

#[test]
fn an_unreachable_collector_bounds_shutdown() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (telemetry, subscriber) = Telemetry::builder()
        .otlp_endpoint(format!("http://127.0.0.1:{port}"))
        .export_timeout(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_secs(2))
        .log_writer(support::Captured::default())
        .build_subscriber()
        .unwrap();
    one_span(subscriber);
    assert!(telemetry.flush().is_err(), "flushing to nowhere must fail");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    rt.block_on(async move { drop(telemetry) });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}

/// OTLP/HTTP: a minimal receiver keeps what is POSTed to `/v1/traces`.
#[test]
fn http_protobuf_export_reaches_v1_traces() {
    type Posts = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;
    let posts: Posts = Arc::default();
    let receiver_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let kept = posts.clone();
    let base = receiver_rt.block_on(async move {
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    kept.lock()
                        .unwrap()
                        .push((uri.path().to_owned(), content_type, body.to_vec()));
                    "" // an empty ExportTraceServiceResponse
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    });
    let (telemetry, subscriber) = Telemetry::builder()
        .service_name("http-export-test")
        .otlp_endpoint(base)
        .otlp_protocol(OtlpProtocol::HttpProtobuf)
        .log_writer(support::Captured::default())
        .build_subscriber()
        .unwrap();
    let trace = one_span(subscriber);
    telemetry.flush().expect("flush over HTTP");
    drop(telemetry);
    let posts = posts.lock().unwrap();
    assert_eq!(posts.len(), 1, "one batch");
    let (path, content_type, body) = &posts[0];
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    // The protobuf body holds the trace id as 16 raw bytes, and the service name.
    let raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    assert!(
        body.windows(16).any(|w| w == raw.as_slice()),
        "trace id in body"
    );
    assert!(
        body.windows(16).any(|w| w == b"http-export-test"),
        "service name in body"
    );
}
