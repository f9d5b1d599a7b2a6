//! The state every service made by one layer shares: limiter, extractors, mode, waiters.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::wait::WaitQueue;
use crate::{Answer, AsyncLimiter, Decision, Limiter};

/// What the layer does with a request over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fail at once with a [`RateLimited`](crate::RateLimited) error carrying `retry_after`.
    Reject,
    /// Wait, in arrival order per key, until the request passes — unless that would take
    /// longer than the given maximum (projected behind the requests already waiting for the
    /// key), or the layer already holds its maximum number of waiters: then reject at once.
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
    /// The limiter's answer is on its way (an asynchronous limiter in reject mode).
    Pending(Pin<Box<dyn Future<Output = Decision> + Send + 'static>>),
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
        L: AsyncLimiter<K>,
        K: Hash + 'static,
    {
        let admission = match self.mode {
            Mode::Reject => match self.limiter.check_async(key, cost) {
                Answer::Ready(d) => Self::verdict(d),
                Answer::Pending(f) => return Admission::Pending(f),
            },
            Mode::Wait(max) => match self.limiter.as_sync() {
                Some(sync) => self.admit_or_queue(sync, key, cost, max),
                // Asked again in `wait_turn` until it passes or the wait is too long.
                None if !self.queue.is_full() => return Admission::Wait,
                None => match self.limiter.check_async(key, cost) {
                    Answer::Ready(d) => Self::verdict(d),
                    Answer::Pending(f) => return Admission::Pending(f),
                },
            },
        };
        self.record(&admission);
        admission
    }

    /// Pass or reject by `d`.
    pub(crate) fn verdict(d: Decision) -> Admission {
        if d.is_allowed() {
            Admission::Pass(d)
        } else {
            Admission::Reject(d)
        }
    }

    fn admit_or_queue<K>(
        &self,
        limiter: &dyn Limiter<K>,
        key: &K,
        cost: u64,
        max: Duration,
    ) -> Admission
    where
        K: Hash + 'static,
    {
        // With others waiting for this key, project this request's wait behind theirs;
        // otherwise simply check.
        let ahead = self.queue.queued_for(key);
        let d = if ahead == 0 {
            limiter.check_key(key, cost)
        } else {
            project(limiter, key, ahead, cost)
        };
        let wait = if d.is_allowed() {
            Some(Duration::ZERO)
        } else {
            d.retry_after()
        };
        if ahead == 0 && d.is_allowed() {
            Admission::Pass(d)
        } else if wait.is_some_and(|w| w <= max) && !self.queue.is_full() {
            Admission::Wait
        } else if d.is_allowed() {
            // Only the bound on waiters stands in the way: come back at once.
            Admission::Reject(Decision::rejected(
                d.limit(),
                d.remaining(),
                d.reset_after(),
                Some(Duration::ZERO),
            ))
        } else {
            Admission::Reject(d)
        }
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
                Admission::Wait | Admission::Pending(_) => {}
            }
        }
    }

    /// Waits in the key's FIFO lane until the request passes or its deadline would be missed
    /// (for a limiter without a synchronous form: asks again after each `retry_after`).
    pub(crate) async fn wait_turn<K>(
        self: Arc<Self>,
        key: K,
        cost: u64,
    ) -> Result<Decision, Decision>
    where
        L: AsyncLimiter<K>,
        K: Hash + 'static,
    {
        let max = match self.mode {
            Mode::Wait(max) => max,
            Mode::Reject => Duration::ZERO,
        };
        let outcome = match self.limiter.as_sync() {
            Some(sync) => {
                self.queue
                    .wait(
                        &key,
                        cost,
                        max,
                        || sync.check_key(&key, cost),
                        || sync.peek_key(&key, cost),
                    )
                    .await
            }
            None => self.ask_until(&key, cost, max).await,
        };
        self.record(&match outcome {
            Ok(d) => Admission::Pass(d),
            Err(d) => Admission::Reject(d),
        });
        outcome
    }

    /// Asks an asynchronous limiter until it lets the request pass, sleeping its
    /// `retry_after` in between, as long as the whole wait stays within `max`.
    async fn ask_until<K>(&self, key: &K, cost: u64, max: Duration) -> Result<Decision, Decision>
    where
        L: AsyncLimiter<K>,
    {
        let start = tokio::time::Instant::now();
        loop {
            let d = match self.limiter.check_async(key, cost) {
                Answer::Ready(d) => d,
                Answer::Pending(f) => f.await,
            };
            if d.is_allowed() {
                return Ok(d);
            }
            match d.retry_after() {
                Some(r) if start.elapsed().saturating_add(r) <= max => {
                    tokio::time::sleep(r.max(Duration::from_millis(1))).await;
                }
                _ => return Err(d),
            }
        }
    }
}

/// What the limiter says of `ahead + cost` units for `key` — the wait of a request behind
/// `ahead` units already queued. When that is more than the whole limit, it is estimated
/// as one wait for a whole limit per limit's worth of queued cost (exact for a token
/// bucket that the queue keeps empty; lenient for windows, whose later rounds take a
/// whole window each — the head of the line still rejects at once when it sees it
/// cannot make it).
fn project<K: ?Sized + 'static>(
    limiter: &dyn Limiter<K>,
    key: &K,
    ahead: u64,
    cost: u64,
) -> Decision {
    let total = ahead.saturating_add(cost);
    let d = limiter.peek_key(key, total);
    if !d.can_never_pass() || cost > d.limit() || d.limit() == 0 {
        return d;
    }
    let whole = limiter.peek_key(key, d.limit());
    let one_round = whole.retry_after().unwrap_or(whole.reset_after());
    let rounds = total.div_ceil(d.limit());
    let wait = one_round.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX));
    Decision::rejected(d.limit(), d.remaining(), d.reset_after(), Some(wait))
}
