//! Circuit breaking and degradation for tower, axum and tonic services.
//!
//! `maas-breaker` stops failures from spreading. A breaker watches the outcomes of calls to
//! a dependency and moves between three states:
//!
//! * **closed**: calls pass; outcomes are recorded in a truly sliding window;
//! * **open**: the failure (or slow-call) rate crossed its threshold, so calls fail fast
//!   without reaching the dependency;
//! * **half-open**: after a wait, exactly N probe calls are let through; success closes the
//!   breaker, failure opens it again.
//!
//! A fallback turns rejections into a degraded answer (a smaller model, a cached reply), so
//! the core of a service stays available while a dependency is down.
//!
//! The crate is young: the items described here land one by one, and this page lists the
//! ones that exist.
