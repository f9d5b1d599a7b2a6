//! Prometheus metrics (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_saga_finished_total` | counter | `status` (`committed`, `compensated`) |
//! | `maas_saga_step_calls_total` | counter | `op`, `outcome` (`success`, `rejected`, `unknown`) |
//! | `maas_saga_retries_total` | counter | `op` |
//! | `maas_saga_in_flight` | gauge | |
//! | `maas_saga_recovery_claims_total` | counter | |
//! | `maas_saga_stuck_undo_total` | counter | `op`: compensations, confirms, cancels past the alert threshold |
//! | `maas_saga_xa_oldest_prepared_seconds` | gauge | `branch`: age of the oldest prepared transaction left there at the last recovery pass (0: none) |

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::{Operation, Status};

/// The saga engine's metric families.
#[derive(Debug, Clone)]
pub struct SagaMetrics {
    finished: IntCounterVec,
    calls: IntCounterVec,
    retries: IntCounterVec,
    in_flight: IntGauge,
    claims: IntCounter,
    stuck: IntCounterVec,
    xa_oldest: GaugeVec,
}

impl SagaMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = SagaMetrics {
            finished: IntCounterVec::new(
                Opts::new(
                    "maas_saga_finished_total",
                    "Transactions finished, by final status.",
                ),
                &["status"],
            )?,
            calls: IntCounterVec::new(
                Opts::new(
                    "maas_saga_step_calls_total",
                    "Participant calls, by operation and outcome.",
                ),
                &["op", "outcome"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "maas_saga_retries_total",
                    "Participant calls retried after an unknown outcome.",
                ),
                &["op"],
            )?,
            in_flight: IntGauge::new(
                "maas_saga_in_flight",
                "Transactions this engine is driving.",
            )?,
            claims: IntCounter::new(
                "maas_saga_recovery_claims_total",
                "Unfinished transactions claimed for recovery.",
            )?,
            stuck: IntCounterVec::new(
                Opts::new(
                    "maas_saga_stuck_undo_total",
                    "Compensations, confirms and cancels that passed the alert threshold of attempts.",
                ),
                &["op"],
            )?,
            xa_oldest: GaugeVec::new(
                Opts::new(
                    "maas_saga_xa_oldest_prepared_seconds",
                    "Age of the oldest prepared XA transaction left in a branch database at the last recovery pass (0: none).",
                ),
                &["branch"],
            )?,
        };
        registry.register(Box::new(m.finished.clone()))?;
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.claims.clone()))?;
        registry.register(Box::new(m.stuck.clone()))?;
        registry.register(Box::new(m.xa_oldest.clone()))?;
        Ok(m)
    }

    pub(crate) fn finished(&self, status: Status) {
        self.finished.with_label_values(&[status.as_str()]).inc();
    }

    pub(crate) fn call(&self, op: Operation, outcome: &str) {
        self.calls.with_label_values(&[op.as_str(), outcome]).inc();
    }

    pub(crate) fn retry(&self, op: Operation) {
        self.retries.with_label_values(&[op.as_str()]).inc();
    }

    pub(crate) fn in_flight(&self, delta: i64) {
        self.in_flight.add(delta);
    }

    pub(crate) fn claimed(&self, n: usize) {
        self.claims.inc_by(n as u64);
    }

    pub(crate) fn stuck(&self, op: Operation) {
        self.stuck.with_label_values(&[op.as_str()]).inc();
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn xa_oldest_prepared(&self, branch: &str, seconds: f64) {
        self.xa_oldest.with_label_values(&[branch]).set(seconds);
    }
}
