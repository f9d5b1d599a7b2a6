//! Where the engine reports what it does: Prometheus metrics with the `prometheus` feature
//! and [`EngineBuilder::metrics`](crate::EngineBuilder::metrics), nothing otherwise — so call
//! sites carry no `cfg`.

use crate::{Operation, Status};

/// The engine's metrics sink; a no-op without metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observer {
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::SagaMetrics>,
}

impl Observer {
    /// Reports into `metrics`.
    #[cfg(feature = "prometheus")]
    pub(crate) fn new(metrics: Option<crate::metrics::SagaMetrics>) -> Self {
        Observer { metrics }
    }

    /// A participant call ended with `outcome` (`success`, `rejected`, `unknown`).
    pub(crate) fn call(&self, op: Operation, outcome: &'static str) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.call(op, outcome);
        }
        let _ = (op, outcome);
    }

    /// A call is retried after an unknown outcome.
    pub(crate) fn retry(&self, op: Operation) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.retry(op);
        }
        let _ = op;
    }

    /// An undo operation passed the alert threshold of attempts.
    pub(crate) fn stuck(&self, op: Operation) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.stuck(op);
        }
        let _ = op;
    }

    /// A transaction started (`1`) or stopped (`-1`) being driven here.
    pub(crate) fn in_flight(&self, delta: i64) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.in_flight(delta);
        }
        let _ = delta;
    }

    /// A transaction finished with `status`.
    pub(crate) fn finished(&self, status: Status) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.finished(status);
        }
        let _ = status;
    }

    /// A recovery pass claimed `n` transactions.
    pub(crate) fn claimed(&self, n: usize) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.claimed(n);
        }
        let _ = n;
    }

    /// The oldest prepared transaction left in XA branch `branch` is `seconds` old (0:
    /// none).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn xa_oldest_prepared(&self, branch: &str, seconds: f64) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.xa_oldest_prepared(branch, seconds);
        }
        let _ = (branch, seconds);
    }
}
