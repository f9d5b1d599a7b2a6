//! Fair waiting: requests over the limit queue per key, in arrival order, up to a deadline.
//!
//! Each key with waiters has a lane: a fair (FIFO) async mutex. The request at the head of a
//! lane checks the limiter, sleeps for the `retry_after` it is told, and checks again; the
//! others wait their turn. A request whose deadline would pass before it can go leaves at
//! once with a rejection. Lanes exist only while someone waits in them.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::Decision;

type Lane = Arc<tokio::sync::Mutex<()>>;

/// The longest wait the queue represents: a wait of `Duration::MAX` means "as long as it
/// takes", which is this far off (about 30 years).
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + by`, saturating at [`FOREVER`] from `from` (an `Instant` cannot hold more).
fn far_as(from: Instant, by: Duration) -> Instant {
    from + by.min(FOREVER)
}

#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    waiting: AtomicUsize,
    lanes: Mutex<HashMap<u64, Lane>>,
    hasher: foldhash::fast::FixedState,
}

/// Counts a waiter and releases its lane when it leaves, however it leaves (served,
/// rejected, or its future dropped).
struct Waiter<'a> {
    queue: &'a WaitQueue,
    lane_key: u64,
    lane: Lane,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut lanes = self
            .queue
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map and this waiter hold the last two references: nobody else is in the lane.
        if Arc::strong_count(&self.lane) == 2 {
            lanes.remove(&self.lane_key);
        }
        drop(lanes);
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WaitQueue {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    fn join(&self, key: u64) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        Waiter {
            queue: self,
            lane_key: key,
            lane,
        }
    }

    /// Waits for `check` to allow the request, for at most `max`.
    pub(crate) async fn wait<K: Hash>(
        &self,
        key: &K,
        max: Duration,
        mut check: impl FnMut() -> Decision,
        peek: impl Fn() -> Decision,
    ) -> Result<Decision, Decision> {
        let deadline = far_as(Instant::now(), max);
        let waiter = self.join(self.hasher.hash_one(key));
        let Ok(_turn) = tokio::time::timeout_at(deadline, waiter.lane.lock()).await else {
            return Err(peek());
        };
        loop {
            let d = check();
            if d.is_allowed() {
                return Ok(d);
            }
            match d.retry_after() {
                Some(wait) if far_as(Instant::now(), wait) <= deadline => {
                    tokio::time::sleep(wait).await
                }
                _ => return Err(d),
            }
        }
    }
}
