//! Where a Redis limiter reports: its metrics with the `prometheus` feature and
//! `RedisLimiterBuilder::metrics`, nothing otherwise — so call sites carry no `cfg`.

use std::time::Duration;

/// How one script call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Ok,
    Error,
    Timeout,
}

/// The limiter's metrics sink; a no-op without metrics.
#[derive(Debug, Default)]
pub(crate) struct Observer {
    #[cfg(feature = "prometheus")]
    pub(crate) handles: Option<super::metrics::Handles>,
}

impl Observer {
    pub(crate) fn call(&self, outcome: CallOutcome, took: Duration) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.call(
                outcome == CallOutcome::Ok,
                outcome == CallOutcome::Timeout,
                took,
            );
        }
        let _ = (outcome, took);
    }

    pub(crate) fn policy_answer(&self) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.policy_answer();
        }
    }

    /// A check was answered from a lease.
    pub(crate) fn lease_answer(&self) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.lease_answer();
        }
    }

    /// A lease was taken or topped up with `granted` units.
    pub(crate) fn refill(&self, granted: u64) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.refill(granted);
        }
        let _ = granted;
    }

    /// A lease was given back; Redis took `units` back.
    pub(crate) fn returned(&self, units: u64) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.returned(units);
        }
        let _ = units;
    }

    pub(crate) fn degraded(&self, down: bool) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.degraded(down);
        }
        let _ = down;
    }
}
