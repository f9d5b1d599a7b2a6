//! Prometheus metrics (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_breaker_state` | gauge: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled | `breaker` |
//! | `maas_breaker_calls_total` | counter | `breaker`, `outcome` (`success`, `failure`, `ignored`) |
//! | `maas_breaker_slow_calls_total` | counter | `breaker` |
//! | `maas_breaker_rejections_total` | counter | `breaker` |
//! | `maas_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//!
//! ```
//! use maas_breaker::CircuitBreaker;
//! use maas_breaker::metrics::BreakerMetrics;
//!
//! let registry = prometheus::Registry::new();
//! let metrics = BreakerMetrics::register(&registry)?;
//! let breaker = CircuitBreaker::builder().name("billing").metrics(&metrics).build()?;
//! let _ = breaker.call(|| Ok::<_, ()>(()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::{BreakerState, Outcome};

/// The breaker metric families, registered in a `prometheus::Registry`.
#[derive(Debug, Clone)]
pub struct BreakerMetrics {
    state: IntGaugeVec,
    calls: IntCounterVec,
    slow: IntCounterVec,
    rejections: IntCounterVec,
    transitions: IntCounterVec,
}

/// One breaker's resolved metric handles.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    name: String,
    state: IntGauge,
    success: IntCounter,
    failure: IntCounter,
    ignored: IntCounter,
    slow: IntCounter,
    rejections: IntCounter,
    transitions: IntCounterVec,
}

impl BreakerMetrics {
    /// Creates the families and registers them in `registry` (an error if they already are).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = BreakerMetrics {
            state: IntGaugeVec::new(
                Opts::new(
                    "maas_breaker_state",
                    "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled.",
                ),
                &["breaker"],
            )?,
            calls: IntCounterVec::new(
                Opts::new(
                    "maas_breaker_calls_total",
                    "Calls through the circuit breaker, by recorded outcome.",
                ),
                &["breaker", "outcome"],
            )?,
            slow: IntCounterVec::new(
                Opts::new(
                    "maas_breaker_slow_calls_total",
                    "Calls slower than the breaker's slow-call threshold.",
                ),
                &["breaker"],
            )?,
            rejections: IntCounterVec::new(
                Opts::new(
                    "maas_breaker_rejections_total",
                    "Calls the circuit breaker refused without calling the service.",
                ),
                &["breaker"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "maas_breaker_transitions_total",
                    "Circuit breaker state transitions.",
                ),
                &["breaker", "from", "to"],
            )?,
        };
        registry.register(Box::new(m.state.clone()))?;
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.slow.clone()))?;
        registry.register(Box::new(m.rejections.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        Ok(m)
    }

    pub(crate) fn handles(&self, name: &str) -> Handles {
        Handles {
            name: name.to_owned(),
            state: self.state.with_label_values(&[name]),
            success: self.calls.with_label_values(&[name, "success"]),
            failure: self.calls.with_label_values(&[name, "failure"]),
            ignored: self.calls.with_label_values(&[name, "ignored"]),
            slow: self.slow.with_label_values(&[name]),
            rejections: self.rejections.with_label_values(&[name]),
            transitions: self.transitions.clone(),
        }
    }
}

impl Handles {
    #[inline]
    pub(crate) fn call(&self, outcome: Outcome, slow: bool) {
        match outcome {
            Outcome::Success => self.success.inc(),
            Outcome::Failure => self.failure.inc(),
            Outcome::Ignored => self.ignored.inc(),
        }
        if slow {
            self.slow.inc();
        }
    }

    pub(crate) fn rejected(&self) {
        self.rejections.inc();
    }

    pub(crate) fn set_state(&self, state: BreakerState) {
        self.state.set(i64::from(state.code()));
    }

    pub(crate) fn transition(&self, from: BreakerState, to: BreakerState) {
        self.set_state(to);
        self.transitions
            .with_label_values(&[&self.name, from.as_str(), to.as_str()])
            .inc();
    }
}
