//! Circuit breaking and degradation for tower, axum and tonic services.
//!
//! A [`CircuitBreaker`] watches the outcomes of calls to a dependency and stops calling it
//! when it is failing, so failures do not spread and callers fail fast:
//!
//! ```text
//!            failure rate ≥ threshold, slow-call rate ≥ threshold,
//!            or N consecutive failures
//!   Closed ───────────────────────────────────────────► Open
//!     ▲                                                  │ open wait elapsed
//!     │ M probe successes                                ▼ (backoff across trips)
//!     └─────────────────────────────────────────────── HalfOpen ── probe fails / too long ──► Open
//! ```
//!
//! Plus two operator states: `ForcedOpen` (every call fails fast) and `Disabled` (every
//! call passes, nothing recorded).
//!
//! * **Truly sliding windows**, count-based (last N calls) or time-based (last T, in
//!   slices), with O(1) record and snapshot: old outcomes leave the window.
//! * **Exact half-open probes**: at most N at once however many callers race; a cancelled
//!   probe gives its slot back without counting; results from before the last state change
//!   are ignored; a half-open test that takes too long re-opens.
//! * **Classification** as its own trait ([`classify`]): errors are failures by default;
//!   choose which responses fail and which errors to ignore; latency feeds the slow-call rate.
//! * **Tower**: [`CircuitBreakerLayer`] fails fast with a typed [`Rejected`] carrying the
//!   remaining open time — over one breaker, or with a [`key`](CircuitBreakerLayer::key)
//!   extractor over a [`KeyedCircuitBreaker`] (a breaker per endpoint, model or tenant);
//!   [`FallbackLayer`] turns rejections into a degraded answer.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use maas_breaker::{CircuitBreaker, Window};
//!
//! let breaker = CircuitBreaker::builder()
//!     .name("model-upstream")
//!     .window(Window::Time { length: Duration::from_secs(30), buckets: 10 })
//!     .minimum_calls(10)
//!     .failure_rate(50.0)
//!     .slow_calls(Duration::from_secs(5), 80.0)
//!     .open_wait(Duration::from_secs(10))
//!     .backoff(2.0, Duration::from_secs(300))
//!     .build()?;
//! let answer = breaker.call(|| Ok::<_, std::io::Error>("42"));
//! assert_eq!(answer.unwrap(), "42");
//! # Ok::<(), maas_breaker::ConfigError>(())
//! ```
//!
//! Invalid configuration — a rate outside 0–100 %, an empty window, zero probes — is a
//! [`ConfigError`] from `build()`, never a panic.
//!
//! # Feature flags
//!
//! * `http` — [`http`]: classify HTTP responses (5xx fail, honour `Retry-After`) and answer
//!   `503 Service Unavailable` with `Retry-After` and a JSON body when the breaker is open.
//! * `grpc` — [`grpc`]: classify gRPC calls by `grpc-status` (headers or trailers) and
//!   answer `UNAVAILABLE` when the breaker is open (`CircuitBreakerLayer::into_grpc`).
//! * `prometheus` — [`metrics::BreakerMetrics`]: state gauge, calls by outcome, rejections
//!   and transitions, per breaker name (a keyed breaker's keys under one name).
//!
//! Events — transitions and rejections — go to subscribers
//! ([`CircuitBreakerBuilder::on_event`]) and to `tracing` (target `maas_breaker`).
//! `docs/breaker.md` covers states, windows, choosing thresholds and fallbacks.

mod breaker;
pub mod classify;
pub mod clock;
mod config;
mod error;
pub mod events;
pub mod fallback;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
pub mod keyed;
mod layer;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod policy;
mod state;
mod window;

pub use breaker::{CircuitBreaker, Permit};
pub use classify::{Classification, Classify, Outcome};
pub use config::CircuitBreakerBuilder;
pub use error::{BreakerError, ConfigError, Rejected};
pub use fallback::{FallbackLayer, fallback_fn};
pub use keyed::KeyedCircuitBreaker;
pub use layer::{
    BreakerSource, CallRecorder, CircuitBreakerLayer, CircuitBreakerService, KeyExtractor, NoKey,
    ResponseFuture,
};
pub use state::BreakerState;
pub use window::{Snapshot, Window};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
