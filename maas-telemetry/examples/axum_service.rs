//! A model-serving API with the three pillars wired in:
//!
//! ```text
//! cargo run -p maas-telemetry --example axum_service
//! curl localhost:3000/models/llama-3          # JSON log line with trace_id and span_id
//! curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!      localhost:3000/models/llama-3          # continues the caller's trace
//! curl localhost:3000/metrics                 # Prometheus text format
//! ```
//!
//! Spans are exported when an OTLP endpoint is configured, e.g. to a local Jaeger:
//!
//! ```text
//! docker run --rm -p 16686:16686 -p 4317:4317 jaegertracing/jaeger:2.5.0
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 cargo run -p maas-telemetry --example axum_service
//! ```
//!
//! `MAAS_EXAMPLE_ADDR` changes the listen address (default 127.0.0.1:3000); Ctrl-C stops the
//! server, and dropping the telemetry guard flushes the last spans.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use maas_telemetry::{HttpMetricsLayer, HttpTraceLayer, LogFormat, Telemetry, metrics_router};
use prometheus::Registry;

async fn get_model(Path(id): Path<String>) -> Result<String, StatusCode> {
    if id.is_empty() || id.len() > 64 {
        tracing::warn!(model = %id, "refused a model id");
        return Err(StatusCode::BAD_REQUEST);
    }
    tracing::info!(model = %id, "model looked up");
    Ok(format!("{{\"id\":\"{id}\",\"status\":\"ready\"}}"))
}

async fn build_model(Path(id): Path<String>) -> (StatusCode, String) {
    // What the handler would put on a Kafka record or a saga call to keep the trace going.
    let traceparent = maas_telemetry::propagation::current_traceparent().unwrap_or_default();
    tracing::info!(model = %id, %traceparent, "build requested");
    (StatusCode::ACCEPTED, format!("{{\"build\":\"{id}\"}}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = Telemetry::builder()
        .service_name("model-api")
        .log_format(LogFormat::Json)
        .build()?;
    match telemetry.endpoint() {
        Some(e) => tracing::info!(endpoint = e, "exporting spans over OTLP"),
        None => tracing::info!("no OTLP endpoint set: spans are not exported"),
    }

    let registry = Registry::new();
    let app = Router::new()
        .route("/models/{id}", get(get_model))
        .route("/models/{id}/builds", post(build_model))
        .merge(metrics_router(registry.clone()))
        .layer(
            HttpMetricsLayer::builder()
                .exclude("/metrics")
                .build(&registry)?,
        )
        .layer(HttpTraceLayer::new());

    let addr = std::env::var("MAAS_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    tracing::info!("stopped");
    drop(telemetry);
    Ok(())
}
