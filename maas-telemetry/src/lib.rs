//! One-call process telemetry: metrics, traces and logs linked to traces.
//!
//! `maas-telemetry` wires the three pillars of observability into a tower/axum service:
//!
//! * **metrics**: `http_requests_total` and `http_request_duration_seconds` labelled by
//!   method, route template and status, rendered for Prometheus at `/metrics`;
//! * **traces**: an OpenTelemetry tracer exporting over OTLP (Jaeger ingests it directly),
//!   with W3C `traceparent` propagation;
//! * **logs**: `tracing` output whose JSON lines carry the current trace and span ids.
//!
//! The crate is young: the items described here land one by one, and this page lists the
//! ones that exist.
