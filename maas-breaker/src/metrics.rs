//! Prometheus metrics (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_breaker_state` | gauge: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled | `breaker` |
//! | `maas_breaker_calls_total` | counter | `breaker`, `outcome` (`success`, `failure`, `ignored`) |
//! | `maas_breaker_slow_calls_total` | counter | `breaker` |
//! | `maas_breaker_rejections_total` | counter | `breaker` |
//! | `maas_breaker_transitions_total` | counter | `breaker`, `from`, `to` |
//! | `maas_breaker_keys` | gauge: a keyed breaker's keys in each state | `breaker`, `state` |
//! | `maas_breaker_tracked_keys` | gauge: a keyed breaker's keys | `breaker` |
//!
//! A [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker) reports all its keys under its own
//! name: the counters add up over keys, `maas_breaker_keys` counts keys per state (instead
//! of a `maas_breaker_state` series per key), and `maas_breaker_tracked_keys` how many it
//! holds. No label carries a key, so 100,000 keys make no more series than one; an
//! evicted key leaves nothing behind.
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

use std::sync::atomic::{AtomicBool, Ordering};

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
    keys: IntGaugeVec,
    tracked: IntGaugeVec,
}

/// How a breaker reports its state.
#[derive(Debug)]
enum StateReport {
    /// A breaker of its own: `maas_breaker_state{breaker}`.
    Gauge(IntGauge),
    /// One key of a keyed breaker: counted in `maas_breaker_keys{breaker, state}` until
    /// the key is evicted.
    Census {
        keys: IntGaugeVec,
        forgotten: AtomicBool,
    },
}

/// One breaker's resolved metric handles.
#[derive(Debug)]
pub(crate) struct Handles {
    name: String,
    state: StateReport,
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
            keys: IntGaugeVec::new(
                Opts::new(
                    "maas_breaker_keys",
                    "Keys of a keyed circuit breaker in each state.",
                ),
                &["breaker", "state"],
            )?,
            tracked: IntGaugeVec::new(
                Opts::new(
                    "maas_breaker_tracked_keys",
                    "Keys a keyed circuit breaker holds a breaker for.",
                ),
                &["breaker"],
            )?,
        };
        registry.register(Box::new(m.state.clone()))?;
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.slow.clone()))?;
        registry.register(Box::new(m.rejections.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        registry.register(Box::new(m.keys.clone()))?;
        registry.register(Box::new(m.tracked.clone()))?;
        Ok(m)
    }

    pub(crate) fn handles(&self, name: &str) -> Handles {
        self.handles_as(
            name,
            StateReport::Gauge(self.state.with_label_values(&[name])),
        )
    }

    /// Handles for one key of the keyed breaker `base`: everything under `base`.
    pub(crate) fn member_handles(&self, base: &str) -> Handles {
        self.handles_as(
            base,
            StateReport::Census {
                keys: self.keys.clone(),
                forgotten: AtomicBool::new(false),
            },
        )
    }

    /// The gauge of how many keys the keyed breaker `base` holds.
    pub(crate) fn tracked_keys(&self, base: &str) -> IntGauge {
        self.tracked.with_label_values(&[base])
    }

    fn handles_as(&self, name: &str, state: StateReport) -> Handles {
        Handles {
            name: name.to_owned(),
            state,
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

    /// A new breaker starts in `state`.
    pub(crate) fn set_state(&self, state: BreakerState) {
        match &self.state {
            StateReport::Gauge(g) => g.set(i64::from(state.code())),
            StateReport::Census { keys, forgotten } => {
                if !forgotten.load(Ordering::Acquire) {
                    keys.with_label_values(&[&self.name, state.as_str()]).inc();
                }
            }
        }
    }

    /// The key this breaker serves was evicted while in `state`: it counts no more.
    pub(crate) fn forget(&self, state: BreakerState) {
        if let StateReport::Census { keys, forgotten } = &self.state
            && !forgotten.swap(true, Ordering::AcqRel)
        {
            keys.with_label_values(&[&self.name, state.as_str()]).dec();
        }
    }

    pub(crate) fn transition(&self, from: BreakerState, to: BreakerState) {
        match &self.state {
            StateReport::Gauge(g) => g.set(i64::from(to.code())),
            StateReport::Census { keys, forgotten } => {
                if !forgotten.load(Ordering::Acquire) {
                    keys.with_label_values(&[&self.name, from.as_str()]).dec();
                    keys.with_label_values(&[&self.name, to.as_str()]).inc();
                }
            }
        }
        self.transitions
            .with_label_values(&[&self.name, from.as_str(), to.as_str()])
            .inc();
    }
}
