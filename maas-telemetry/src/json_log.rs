//! JSON log lines that carry the OpenTelemetry trace and span ids of the current span.
//!
//! One object per line: `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`,
//! `message`, the event's other fields, and — inside a span — `span` (its name), `trace_id`
//! and `span_id` (hex, as in a `traceparent` and in Jaeger). A log search for a trace id finds
//! every line of the request it belongs to.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use opentelemetry::trace::TraceContextExt;
use serde_json::Value;
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A `tracing` layer writing JSON lines to `writer`; none when `writer` is `None`. (Not an
/// `Option<JsonLayer>`: `Option`'s layer impl does not pass the dispatch on.)
pub(crate) struct JsonLayer<W> {
    writer: Option<W>,
    dispatch: std::sync::OnceLock<WeakDispatch>,
}

impl<W> JsonLayer<W> {
    pub(crate) fn new(writer: Option<W>) -> Self {
        JsonLayer {
            writer,
            dispatch: std::sync::OnceLock::new(),
        }
    }
}

impl<S, W> tracing_subscriber::Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(writer) = &self.writer else {
            return;
        };
        let meta = event.metadata();
        let mut line: Vec<(Cow<'static, str>, Value)> = Vec::with_capacity(10);
        line.push((
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        ));
        line.push(("level".into(), meta.level().as_str().into()));
        line.push(("target".into(), meta.target().into()));
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        // The message first, then the other fields in the order they were written.
        fields.0.sort_by_key(|(name, _)| *name != "message");
        line.extend(fields.0.into_iter().map(|(name, value)| {
            let name: Cow<'static, str> = if RESERVED.contains(&name) {
                format!("fields.{name}").into()
            } else {
                name.into()
            };
            (name, value)
        }));
        if let Some(span) = ctx.event_span(event) {
            line.push(("span".into(), span.name().into()));
            let otel = self
                .dispatch
                .get()
                .and_then(WeakDispatch::upgrade)
                .and_then(|d| tracing_opentelemetry::get_otel_context(&span.id(), &d));
            if let Some(cx) = otel {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    line.push(("trace_id".into(), sc.trace_id().to_string().into()));
                    line.push(("span_id".into(), sc.span_id().to_string().into()));
                }
            }
        }
        let mut bytes = Vec::with_capacity(256);
        bytes.push(b'{');
        for (i, (name, value)) in line.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            // Writing strings and JSON values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut bytes, name.as_ref());
            bytes.push(b':');
            let _ = serde_json::to_writer(&mut bytes, value);
        }
        bytes.extend_from_slice(b"}\n");
        // A log line that cannot be written is dropped: logging never fails the caller.
        let _ = writer.make_writer_for(meta).write_all(&bytes);
    }
}

/// Keys the line sets itself; an event field of the same name is written as `fields.<name>`.
const RESERVED: &[&str] = &[
    "timestamp",
    "level",
    "target",
    "span",
    "trace_id",
    "span_id",
];

/// Collects an event's fields, in the order they were written.
struct Fields(Vec<(&'static str, Value)>);

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.into()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.push((field.name(), value.to_string().into()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}").into()));
    }
}
