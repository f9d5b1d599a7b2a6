//! Fair waiting: requests over the limit queue per key, in arrival order, up to a deadline.
//!
//! Each key with waiters has a lane: a fair (FIFO) async mutex. The request at the head of a
//! lane checks the limiter, sleeps for the `retry_after` it is told, and checks again; the
//! others wait their turn. A request whose deadline would pass before it can go leaves at
//! once with a rejection: on arrival its wait is projected behind the cost already queued
//! for its key, and once at the head of the line it leaves as soon as the limiter's
//! `retry_after` exceeds what is left of its deadline. At most `max_waiters` requests wait at
//! once; more are rejected on arrival. Lanes exist only while someone waits in them.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::Decision;

/// One key's waiters: a fair mutex whose holder is the head of the line, and the cost of
/// everyone in the line (for projecting a newcomer's wait).
#[derive(Debug, Default)]
struct LaneState {
    turn: tokio::sync::Mutex<()>,
    queued: AtomicU64,
}

type Lane = Arc<LaneState>;

/// Waiters a layer holds at once unless configured otherwise.
pub(crate) const DEFAULT_MAX_WAITERS: usize = 1024;

/// The longest wait the queue represents: a wait of `Duration::MAX` means "as long as it
/// takes", which is this far off (about 30 years).
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + by`, saturating at [`FOREVER`] from `from` (an `Instant` cannot hold more).
fn far_as(from: Instant, by: Duration) -> Instant {
    from + by.min(FOREVER)
}

#[derive(Debug)]
pub(crate) struct WaitQueue {
    waiting: AtomicUsize,
    max_waiters: usize,
    lanes: Mutex<HashMap<u64, Lane>>,
    hasher: foldhash::fast::FixedState,
}

/// Counts a waiter and releases its lane when it leaves, however it leaves (served,
/// rejected, or its future dropped).
struct Waiter<'a> {
    queue: &'a WaitQueue,
    lane_key: u64,
    lane: Lane,
    cost: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut lanes = self
            .queue
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map and this waiter hold the last two references: nobody else is in the lane.
        self.lane.queued.fetch_sub(self.cost, Ordering::AcqRel);
        if Arc::strong_count(&self.lane) == 2 {
            lanes.remove(&self.lane_key);
        }
        drop(lanes);
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WaitQueue {
    /// A queue holding at most `max_waiters` waiters at once.
    pub(crate) fn new(max_waiters: usize) -> Self {
        WaitQueue {
            waiting: AtomicUsize::new(0),
            max_waiters,
            lanes: Mutex::new(HashMap::new()),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    /// Whether another waiter would exceed the bound.
    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Acquire) >= self.max_waiters
    }

    /// The cost of the requests already waiting for `key` (0 when none wait).
    pub(crate) fn queued_for<K: Hash>(&self, key: &K) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let lane_key = self.hasher.hash_one(key);
        self.lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&lane_key)
            .map_or(0, |lane| lane.queued.load(Ordering::Acquire))
    }

    fn join(&self, key: u64, cost: u64) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        lane.queued.fetch_add(cost, Ordering::AcqRel);
        Waiter {
            queue: self,
            lane_key: key,
            lane,
            cost,
        }
    }

    /// Waits for `check` to allow the request, for at most `max`.
    pub(crate) async fn wait<K: Hash>(
        &self,
        key: &K,
        cost: u64,
        max: Duration,
        mut check: impl FnMut() -> Decision,
        peek: impl Fn() -> Decision,
    ) -> Result<Decision, Decision> {
        let deadline = far_as(Instant::now(), max);
        let waiter = self.join(self.hasher.hash_one(key), cost);
        let Ok(_turn) = tokio::time::timeout_at(deadline, waiter.lane.turn.lock()).await else {
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
