//! The state every service made by one layer shares: limiter, extractors, mode, waiters.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use super::wait::WaitQueue;
use crate::{Decision, Limiter};

/// What the layer does with a request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail at once with a [`RateLimited`](crate::RateLimited) error carrying `retry_after`.
    Reject,
    /// Wait, in arrival order per key, until the request passes — unless that would take
    /// longer than the given maximum, in which case reject at once.
    Wait(Duration),
}

/// What a request gets on arrival.
pub(crate) enum Admission {
    /// Passes now (the decision feeds the HTTP adapter's headers).
    Pass(#[cfg_attr(not(feature = "http"), expect(dead_code))] Decision),
    /// Rejected now.
    Reject(Decision),
    /// Must queue behind other waiters or wait for quota.
    Wait,
}

#[derive(Debug)]
pub(crate) struct Shared<L, KF, CF> {
    pub(crate) limiter: L,
    pub(crate) key: KF,
    pub(crate) cost: CF,
    pub(crate) mode: Mode,
    pub(crate) queue: WaitQueue,
    #[cfg(feature = "prometheus")]
    pub(crate) counters: Option<Arc<crate::metrics::Counters>>,
}

impl<L, KF, CF> Shared<L, KF, CF> {
    #[inline]
    pub(crate) fn admit<K>(&self, key: &K, cost: u64) -> Admission
    where
        L: Limiter<K>,
        K: ?Sized,
    {
        let admission = match self.mode {
            Mode::Reject => {
                let d = self.limiter.check_key(key, cost);
                if d.is_allowed() {
                    Admission::Pass(d)
                } else {
                    Admission::Reject(d)
                }
            }
            Mode::Wait(max) => {
                if !self.queue.is_empty() {
                    return Admission::Wait;
                }
                let d = self.limiter.check_key(key, cost);
                if d.is_allowed() {
                    Admission::Pass(d)
                } else if d.retry_after().is_some_and(|w| w <= max) {
                    return Admission::Wait;
                } else {
                    Admission::Reject(d)
                }
            }
        };
        self.record(&admission);
        admission
    }

    #[inline]
    pub(crate) fn record(&self, admission: &Admission) {
        if let Admission::Reject(d) = admission {
            tracing::debug!(
                target: "maas_ratelimit",
                limit = d.limit(),
                retry_after_ms = d.retry_after().map(|w| w.as_millis() as u64),
                "request rate limited"
            );
        }
        #[cfg(feature = "prometheus")]
        if let Some(c) = &self.counters {
            match admission {
                Admission::Pass(_) => c.allowed(),
                Admission::Reject(_) => c.rejected(),
                Admission::Wait => {}
            }
        }
    }

    /// Waits in the key's FIFO lane until the request passes or its deadline would be missed.
    pub(crate) async fn wait_turn<K>(
        self: Arc<Self>,
        key: K,
        cost: u64,
    ) -> Result<Decision, Decision>
    where
        L: Limiter<K>,
        K: Hash,
    {
        let Mode::Wait(max) = self.mode else {
            unreachable!("wait_turn is only reached in wait mode")
        };
        let outcome = self
            .queue
            .wait(
                &key,
                max,
                || self.limiter.check_key(&key, cost),
                || self.limiter.peek_key(&key, cost),
            )
            .await;
        self.record(&match outcome {
            Ok(d) => Admission::Pass(d),
            Err(d) => Admission::Reject(d),
        });
        outcome
    }
}
