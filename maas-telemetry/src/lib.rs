//! One-call process telemetry: metrics, traces and logs linked to traces.
//!
//! `maas-telemetry` wires the three pillars of observability into a tower/axum service:
//!
//! * **traces**: [`Telemetry::builder`] installs a `tracing` subscriber and an OpenTelemetry
//!   tracer exporting over OTLP, gRPC or HTTP (Jaeger ingests it directly), configured in
//!   code or by the standard `OTEL_*` variables; [`HttpTraceLayer`] gives each request a
//!   server span that continues the caller's W3C `traceparent`; [`propagation`] carries the
//!   context over HTTP headers and plain key–value headers (Kafka records, saga calls);
//! * **logs**: JSON lines that carry the `trace_id` and `span_id` of the current span, so a
//!   log search and a trace view lead to each other;
//! * **metrics**: [`HttpMetricsLayer`] records `http_requests_total`,
//!   `http_request_duration_seconds` (a real histogram with explicit buckets) and
//!   `http_requests_in_flight`, labelled by route template, never raw path;
//!   [`metrics_router`] serves a Prometheus registry at `/metrics` in the text format;
//!   [`GrpcMetricsLayer`] records gRPC calls by method and `grpc-status` (headers or
//!   trailers), which the HTTP layer would count as `200`.
//!
//! The exporter runs on a small runtime of its own, so the [`Telemetry`] guard flushes and
//! shuts down on drop without hanging, whatever runtime the application uses; an unreachable
//! collector is reported once and never takes the service down.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use maas_telemetry::{HttpMetricsLayer, HttpTraceLayer, LogFormat, Telemetry, metrics_router};
//! use prometheus::Registry;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let _telemetry = Telemetry::builder()
//!         .service_name("model-api")
//!         .otlp_endpoint("http://localhost:4317")
//!         .log_format(LogFormat::Json)
//!         .build()?;
//!     let registry = Registry::new();
//!     let app = Router::new()
//!         .route("/models/{id}", get(|| async { "ok" }))
//!         .merge(metrics_router(registry.clone()))
//!         .layer(HttpMetricsLayer::builder().exclude("/metrics").build(&registry)?)
//!         .layer(HttpTraceLayer::new());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! The sibling crates (`maas-queue`, `maas-saga`) write and read `traceparent` strings without
//! depending on this crate; [`propagation::current_traceparent`] and
//! [`propagation::extract_pairs`] connect them to the current span.

mod error;
mod exporter;
pub mod grpc_metrics;
mod http_metrics;
mod json_log;
mod metrics_route;
mod panic_log;
pub mod propagation;
mod telemetry;
mod trace_layer;

pub use error::TelemetryError;
pub use grpc_metrics::{GrpcMetrics, GrpcMetricsLayer};
pub use http_metrics::{
    DEFAULT_BUCKETS, HttpMetrics, HttpMetricsBuilder, HttpMetricsLayer, MetricsResponse,
    RouteTemplate, UNMATCHED,
};
pub use metrics_route::{CONTENT_TYPE, render};
#[cfg(feature = "axum")]
pub use metrics_route::{metrics_handler, metrics_router};
pub use telemetry::{LogFormat, OtlpProtocol, Telemetry, TelemetryBuilder};
pub use trace_layer::{HttpTrace, HttpTraceLayer, TracedResponse};

/// Re-exported so that users name the same `prometheus` version as this crate.
pub use prometheus;

/// The README's and the guide's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
#[doc = include_str!("../../docs/telemetry.md")]
pub struct ReadmeDoctests;
