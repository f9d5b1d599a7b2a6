//! W3C trace context on records: written on produce, continued on consume.
//!
//! The producer adds a `traceparent` header to every record that has none — a fresh trace,
//! or the one the caller set with [`Record::header`](crate::Record::header) (for instance
//! from the incoming HTTP request, with `maas-telemetry`'s propagation helpers). The
//! consumer runs each handler call inside a `queue_message` span that records that
//! `traceparent`; with
//! [`GroupConsumerBuilder::trace_context`](crate::GroupConsumerBuilder::trace_context) the
//! span *continues* the record's trace, so the handler's spans, the retries and the move to a
//! retry topic or the dead-letter queue belong to the producer's trace. (`maas-queue` does
//! not depend on OpenTelemetry; the hook is where an application plugs it in.)

/// A function that continues a span in the trace of a `traceparent`.
type ContinueFn = dyn Fn(&tracing::Span, &str) + Send + Sync;

/// Continues a span in the trace of a `traceparent`; see
/// [`GroupConsumerBuilder::trace_context`](crate::GroupConsumerBuilder::trace_context).
#[derive(Clone)]
pub(crate) struct TraceContext(pub(crate) std::sync::Arc<ContinueFn>);

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceContext(..)")
    }
}

/// The header name.
pub const TRACEPARENT: &str = "traceparent";

/// A new `traceparent` (version 00, sampled) with random trace and span ids.
pub fn new_traceparent() -> String {
    let mut out = Vec::with_capacity(TRACEPARENT_LEN);
    put_new_traceparent(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The length of a version-00 `traceparent`.
pub(crate) const TRACEPARENT_LEN: usize = 55;

/// Appends a new `traceparent` to `out` without allocating: the producer writes one into
/// the batch for every record that has none.
pub(crate) fn put_new_traceparent(out: &mut impl bytes::BufMut) {
    out.put_slice(b"00-");
    put_hex(out, fastrand::u64(1..));
    put_hex(out, fastrand::u64(..));
    out.put_u8(b'-');
    put_hex(out, fastrand::u64(1..));
    out.put_slice(b"-01");
}

/// Appends `v` as 16 lowercase hex digits.
fn put_hex(out: &mut impl bytes::BufMut, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = DIGITS[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out.put_slice(&digits);
}

/// The trace id of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace, span, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    (hex(trace, 32) && hex(span, 16) && trace.chars().any(|c| c != '0')).then_some(trace)
}

/// A child `traceparent`: same trace, new span id.
pub fn child_of(traceparent: &str) -> Option<String> {
    trace_id(traceparent).map(|t| format!("00-{t}-{:016x}-01", fastrand::u64(1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_well_formed_and_continue() {
        let tp = new_traceparent();
        assert_eq!(tp.len(), 55, "{tp}");
        assert!(tp.starts_with("00-") && tp.ends_with("-01"), "{tp}");
        let trace = trace_id(&tp).unwrap().to_owned();
        let child = child_of(&tp).unwrap();
        assert_eq!(trace_id(&child), Some(trace.as_str()));
        assert_ne!(child, tp);
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-0000000000000001-01"),
            None
        );
    }
}
