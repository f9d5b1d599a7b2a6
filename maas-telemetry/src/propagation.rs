//! W3C trace context (`traceparent`, `tracestate`) in and out of headers.
//!
//! Two carriers: HTTP headers ([`http::HeaderMap`]) and plain key–value pairs, the shape of
//! Kafka record headers and of the headers the saga crate sends. The sibling crates do not
//! depend on this one; they read and write `traceparent` as a string, which is exactly what
//! [`inject_pairs`] produces and [`extract_pairs`] reads.
//!
//! ```
//! use maas_telemetry::propagation;
//!
//! let incoming = [(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//! )];
//! let cx = propagation::extract_pairs(incoming);
//! let out = propagation::inject_pairs(&cx);
//! assert_eq!(out[0].0, "traceparent");
//! assert!(out[0].1.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
//! ```

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` header name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header name.
pub const TRACESTATE: &str = "tracestate";

/// Writes the trace context of `cx` into `headers` (nothing when `cx` has no valid span).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Writes the trace context of the current `tracing` span into `headers`: use it on outgoing
/// HTTP requests so the callee continues this trace.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current().context(), headers);
}

/// Reads the trace context carried by `headers`; an empty context when there is none or it
/// is malformed.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The trace context of `cx` as key–value pairs (`traceparent`, and `tracestate` when set).
pub fn inject_pairs(cx: &Context) -> Vec<(String, String)> {
    let mut pairs = Pairs(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(cx, &mut pairs);
    pairs.0
}

/// The trace context of the current `tracing` span as key–value pairs.
pub fn current_pairs() -> Vec<(String, String)> {
    inject_pairs(&tracing::Span::current().context())
}

/// The `traceparent` of the current `tracing` span, if it belongs to a trace.
pub fn current_traceparent() -> Option<String> {
    current_pairs()
        .into_iter()
        .find_map(|(k, v)| (k == TRACEPARENT).then_some(v))
}

/// Reads a trace context from key–value pairs (keys compared case-insensitively).
pub fn extract_pairs<'a, I>(pairs: I) -> Context
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let found: Vec<(&str, &str)> = pairs
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT) || k.eq_ignore_ascii_case(TRACESTATE))
        .collect();
    TraceContextPropagator::new().extract(&PairsExtractor(&found))
}

/// Makes `span` a child of the trace in `cx`. Call it right after creating the span, before
/// anything is logged in it; returns `false` when that is no longer possible or the span is
/// disabled (the span then starts a trace of its own).
pub fn continue_trace(span: &tracing::Span, cx: Context) -> bool {
    span.set_parent(cx).is_ok()
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` when there is none; leave it out.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

struct PairsExtractor<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for PairsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn headers_round_trip_with_tracestate() {
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", PARENT.parse().unwrap());
        incoming.insert("tracestate", "vendor=abc".parse().unwrap());
        let cx = extract(&incoming);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out["traceparent"], PARENT);
        assert_eq!(out["tracestate"], "vendor=abc");
    }

    #[test]
    fn malformed_or_missing_context_is_empty() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let cx = extract_pairs([("traceparent", bad)]);
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
            assert!(inject_pairs(&cx).is_empty(), "{bad:?}");
        }
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn pair_keys_are_case_insensitive() {
        let cx = extract_pairs([("TraceParent", PARENT), ("other", "x")]);
        assert_eq!(
            inject_pairs(&cx),
            vec![("traceparent".to_owned(), PARENT.to_owned())]
        );
    }
}
