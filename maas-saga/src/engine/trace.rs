//! W3C trace context for the calls a transaction makes.

use crate::SagaId;

/// The W3C trace id a transaction's participant calls carry: the caller's, when the
/// definition has a `traceparent`, else derived from the transaction's id.
pub(crate) fn trace_of(id: &SagaId, traceparent: Option<&str>) -> String {
    match traceparent.and_then(|tp| tp.split('-').nth(1)) {
        Some(trace) if trace.len() == 32 => trace.to_ascii_lowercase(),
        _ => trace_id(id),
    }
}

/// Continues a transaction's span in its stored trace (see
/// [`EngineBuilder::trace_context`](crate::EngineBuilder::trace_context)).
pub(crate) type TraceContext = std::sync::Arc<dyn Fn(&tracing::Span, &str) + Send + Sync>;

/// The W3C trace id of a transaction: its UUID's hex digits, or a hash of its id.
pub(crate) fn trace_id(id: &SagaId) -> String {
    let hex: String = id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect();
    if hex.len() == 32 && hex.chars().any(|c| c != '0') {
        return hex.to_ascii_lowercase();
    }
    let h = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15)
}

/// A `traceparent` header in trace `trace` with a fresh span id.
pub(crate) fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{:016x}-01", fastrand::u64(1..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_32_hex_digits() {
        let uuid = SagaId::new();
        assert_eq!(trace_id(&uuid), uuid.as_str().replace('-', ""));
        let custom = trace_id(&SagaId::from("order-42"));
        assert_eq!(custom.len(), 32);
        assert!(custom.chars().all(|c| c.is_ascii_hexdigit()));
        let tp = traceparent(&custom);
        assert!(tp.starts_with(&format!("00-{custom}-")) && tp.ends_with("-01"));
        assert_eq!(tp.len(), 55);
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_of(&uuid, Some(caller)),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_of(&uuid, None), trace_id(&uuid));
    }
}
