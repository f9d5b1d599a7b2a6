//! A panic is one JSON `ERROR` event — message, location, thread, backtrace — carrying the
//! trace id of the span it happened in; dropping the telemetry puts the previous hook back.
//! Installs the global subscriber and the panic hook, so it is the only test in this binary.

mod support;

use maas_telemetry::{LogFormat, Telemetry};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[test]
fn a_panic_is_one_error_event_with_its_backtrace_and_trace_id() {
    let logs = support::Captured::default();
    let telemetry = Telemetry::builder()
        .service_name("panic-log-test")
        .log_format(LogFormat::Json)
        .filter("info")
        .log_writer(logs.clone())
        .build()
        .unwrap();

    let span = tracing::info_span!("request");
    let trace = span.context().span().span_context().trace_id().to_string();
    let caught = span.in_scope(|| {
        std::panic::catch_unwind(|| {
            let n: Vec<u8> = Vec::new();
            panic!("index {} of an empty list", n.len() + 3);
        })
    });
    assert!(caught.is_err());
    let raw = logs.raw();
    assert_eq!(raw.lines().count(), 1, "one event: {raw}");
    let event = logs.line("panicked");
    assert_eq!(event["level"], "ERROR");
    assert_eq!(event["target"], "panic");
    assert_eq!(event["panic"], "index 3 of an empty list");
    assert!(
        event["location"]
            .as_str()
            .unwrap()
            .starts_with("maas-telemetry/tests/panic_log.rs:"),
        "{event}"
    );
    assert_eq!(event["trace_id"], trace.as_str());
    assert_eq!(event["span"], "request");
    let backtrace = event["backtrace"].as_str().unwrap();
    assert!(
        backtrace.contains("panic_log::a_panic_is_one_error_event"),
        "the backtrace names the panicking function: {backtrace}"
    );

    // A panic on another thread, outside any span: logged too, without a trace id.
    let joined = std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(|| panic!("static message"))
        .unwrap()
        .join();
    assert!(joined.is_err());
    let events = logs.lines();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["panic"], "static message");
    assert_eq!(events[1]["thread"], "worker-7");
    assert!(events[1].get("trace_id").is_none());

    // Dropped, the telemetry gives the hook back: panics no longer reach the log.
    drop(telemetry);
    let _ = std::panic::catch_unwind(|| panic!("after the telemetry is gone"));
    assert_eq!(logs.raw().lines().count(), 2, "{}", logs.raw());
}
