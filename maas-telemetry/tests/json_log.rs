//! The JSON log line: field order, reserved names, and trace ids only inside spans.

mod support;

use maas_telemetry::{LogFormat, Telemetry};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[test]
fn lines_carry_fields_in_order_and_trace_ids_inside_spans() {
    let logs = support::Captured::default();
    let (_telemetry, subscriber) = Telemetry::builder()
        .service_name("json-log-test")
        .log_format(LogFormat::Json)
        .filter("info")
        .log_writer(logs.clone())
        .build_subscriber()
        .unwrap();
    let trace = tracing::subscriber::with_default(subscriber, || {
        tracing::info!(n = 3, level = "custom", ok = true, "outside");
        let span = tracing::info_span!("job", id = 7);
        span.in_scope(|| tracing::warn!(error = "boom", "inside"));
        tracing::debug!("filtered out");
        span.context().span().span_context().trace_id().to_string()
    });

    let raw = logs.raw();
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines.len(), 2, "{raw}");
    assert!(
        lines[0].starts_with(r#"{"timestamp":""#)
            && lines[0].contains(r#""level":"INFO","target":"json_log","message":"outside","n":3,"fields.level":"custom","ok":true}"#),
        "{}",
        lines[0]
    );
    let outside = logs.line("outside");
    assert!(outside.get("trace_id").is_none() && outside.get("span").is_none());

    let inside = logs.line("inside");
    assert_eq!(inside["level"], "WARN");
    assert_eq!(inside["error"], "boom");
    assert_eq!(inside["span"], "job");
    assert_eq!(inside["trace_id"], trace.as_str());
    assert_eq!(inside["span_id"].as_str().map(str::len), Some(16));
}
