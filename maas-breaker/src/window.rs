//! Sliding windows of call outcomes, with O(1) record and snapshot.
//!
//! * [`Window::Count`]`(n)`: the last `n` calls. A ring of `n` one-byte slots; recording
//!   claims the next slot and swaps its outcome in, and running totals are adjusted by the
//!   difference between the new outcome and the one it replaced — so an old outcome leaves
//!   the window exactly when the n-th newer one arrives.
//! * [`Window::Time`]: the last `length`, in `buckets` slices. Each slice counts calls,
//!   failures and slow calls in three 64-bit counters stamped with its slice number (no
//!   realistic rate fills one: 10^9 calls a slice is far inside their range); a slice whose
//!   stamp is a whole window old is emptied (and subtracted from the totals) before reuse.
//!
//! Either way a snapshot is three atomic loads, and nothing old lingers: a long run of
//! successes cannot hide a later run of failures.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::classify::Outcome;

/// Which recent calls the failure and slow-call rates are computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `length`, counted in `buckets` slices (the window slides one
    /// slice at a time).
    Time {
        /// How far back the window reaches.
        length: Duration,
        /// Slices the length is cut into.
        buckets: u32,
    },
}

/// Totals over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Calls recorded (successes and failures; ignored outcomes are not recorded).
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls slower than the slow-call threshold (failed or not).
    pub slow: u64,
}

impl Snapshot {
    /// Failures as a percentage of calls (0 with no calls).
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow calls as a percentage of calls (0 with no calls).
    pub fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

// One recorded outcome in a count window slot.
const EMPTY: u8 = 0;
const CALL: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

fn slot_value(outcome: Outcome, slow: bool) -> u8 {
    CALL | if outcome == Outcome::Failure {
        FAILED
    } else {
        0
    } | if slow { SLOW } else { 0 }
}

/// Running totals; signed so that a subtraction racing ahead of its addition is a transient
/// negative, read as zero, rather than a wrap-around.
#[derive(Debug, Default)]
struct Totals {
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

impl Totals {
    /// Adds the deltas; when the number of calls changed, returns the new total (read as
    /// zero when negative).
    fn add(&self, calls: i64, failures: i64, slow: i64) -> Option<u64> {
        let total = (calls != 0).then(|| {
            let after = self
                .calls
                .fetch_add(calls, Ordering::AcqRel)
                .saturating_add(calls);
            after.max(0) as u64
        });
        if failures != 0 {
            self.failures.fetch_add(failures, Ordering::AcqRel);
        }
        if slow != 0 {
            self.slow.fetch_add(slow, Ordering::AcqRel);
        }
        total
    }

    fn snapshot(&self, cap: u64) -> Snapshot {
        let read = |a: &AtomicI64| (a.load(Ordering::Acquire).max(0) as u64).min(cap);
        let calls = read(&self.calls);
        Snapshot {
            calls,
            failures: read(&self.failures).min(calls),
            slow: read(&self.slow).min(calls),
        }
    }

    fn reset(&self) {
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

/// The last `n` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    head: AtomicU32,
    /// `⌊2^64 / n⌋ + 1`: turns `head % n` into two multiplications (Lemire's fastmod),
    /// since a division would cost more than the rest of a record.
    magic: u64,
    slots: Box<[AtomicU8]>,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(n: u32) -> Self {
        CountWindow {
            head: AtomicU32::new(0),
            magic: (u64::MAX / u64::from(n)).wrapping_add(1),
            slots: (0..n).map(|_| AtomicU8::new(EMPTY)).collect(),
            totals: Totals::default(),
        }
    }

    /// `head % n`, exactly, for every 32-bit `head`. (When the counter wraps after 2^32
    /// calls the ring restarts at slot 0 — once every four billion calls, a handful of
    /// outcomes are replaced a little out of turn.)
    #[inline]
    fn slot_of(&self, head: u32) -> usize {
        let low = self.magic.wrapping_mul(u64::from(head));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    /// Records one call; returns the window's calls afterwards when that number changed
    /// (the window was still filling), `None` otherwise.
    #[inline]
    pub(crate) fn record(&self, outcome: Outcome, slow: bool) -> Option<u64> {
        let index = self.slot_of(self.head.fetch_add(1, Ordering::AcqRel));
        let new = slot_value(outcome, slow);
        let old = self.slots[index].swap(new, Ordering::AcqRel);
        if old == new {
            return None;
        }
        let bit = |v: u8, b: u8| i64::from(v & b != 0);
        self.totals.add(
            bit(new, CALL) - bit(old, CALL),
            bit(new, FAILED) - bit(old, FAILED),
            bit(new, SLOW) - bit(old, SLOW),
        )
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.totals.snapshot(self.slots.len() as u64)
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            slot.store(EMPTY, Ordering::Release);
        }
        self.totals.reset();
    }
}

/// The counts of one time slice. Each is a full 64-bit counter (room for 1.8 × 10^19 calls in
/// one slice), so no realistic rate can overflow it. A record racing with the slice being
/// emptied may land half in the old slice and half in the new one; the totals stay the sum of
/// the slices either way, and a snapshot never reports more failures than calls.
#[derive(Debug, Default)]
struct SliceCounts {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl SliceCounts {
    fn is_empty(&self) -> bool {
        self.calls.load(Ordering::Acquire) == 0
            && self.failures.load(Ordering::Acquire) == 0
            && self.slow.load(Ordering::Acquire) == 0
    }

    /// Empties the slice, returning what it held.
    fn take(&self) -> (u64, u64, u64) {
        (
            self.calls.swap(0, Ordering::AcqRel),
            self.failures.swap(0, Ordering::AcqRel),
            self.slow.swap(0, Ordering::AcqRel),
        )
    }
}

/// A stamp whose bucket is being emptied.
const ROTATING: u64 = u64::MAX;

/// The slice number of `now`; never [`ROTATING`] (a 1 ns slice at the clock's very end).
#[inline]
fn slice_number(now: u64, slice: u64) -> u64 {
    (now / slice).min(ROTATING - 1)
}

/// A count as a signed delta for the totals (a slice never holds 2^63 calls).
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The last `length`, in `buckets` slices.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    slice: u64,
    /// The slice number up to which stale buckets were last emptied: while it is current,
    /// the totals are exact and a snapshot is three loads.
    expired: AtomicU64,
    stamps: Box<[AtomicU64]>,
    counts: Box<[SliceCounts]>,
    totals: Totals,
}

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        let slice = crate::clock::nanos(length)
            .div_ceil(u64::from(buckets))
            .max(1);
        TimeWindow {
            slice,
            expired: AtomicU64::new(0),
            stamps: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            counts: (0..buckets).map(|_| SliceCounts::default()).collect(),
            totals: Totals::default(),
        }
    }

    /// Makes the bucket of slice `number` current, emptying what it held from an older slice.
    #[inline]
    fn claim(&self, index: usize, number: u64) {
        let stamp = &self.stamps[index];
        loop {
            let seen = stamp.load(Ordering::Acquire);
            if seen == number || (seen != ROTATING && seen > number) {
                return;
            }
            if seen == ROTATING {
                std::hint::spin_loop();
                continue;
            }
            if stamp
                .compare_exchange(seen, ROTATING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let (calls, failures, slow) = self.counts[index].take();
                self.totals
                    .add(-signed(calls), -signed(failures), -signed(slow));
                stamp.store(number, Ordering::Release);
                return;
            }
        }
    }

    /// Empties every bucket a whole window old, so the totals cover exactly the window.
    /// Looks at each bucket once; only stale, non-empty ones are written.
    fn expire(&self, number: u64) {
        let buckets = self.stamps.len() as u64;
        for (index, stamp) in self.stamps.iter().enumerate() {
            let seen = stamp.load(Ordering::Acquire);
            let stale = seen != ROTATING && seen.saturating_add(buckets) <= number;
            if stale && !self.counts[index].is_empty() {
                // The latest slice at or before `number` that lives in this bucket.
                let latest = number - (number % buckets + buckets - index as u64) % buckets;
                self.claim(index, latest);
            }
        }
    }

    /// Records one call at `now`.
    #[inline]
    pub(crate) fn record(&self, outcome: Outcome, slow: bool, now: u64) {
        let number = slice_number(now, self.slice);
        let index = (number % self.stamps.len() as u64) as usize;
        self.claim(index, number);
        let counts = &self.counts[index];
        counts.calls.fetch_add(1, Ordering::AcqRel);
        let failed = outcome == Outcome::Failure;
        if failed {
            counts.failures.fetch_add(1, Ordering::AcqRel);
        }
        if slow {
            counts.slow.fetch_add(1, Ordering::AcqRel);
        }
        self.totals.add(1, i64::from(failed), i64::from(slow));
    }

    /// The totals at `now`. Empties stale slices once per slice; otherwise three loads.
    #[inline]
    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let number = slice_number(now, self.slice);
        if self.expired.load(Ordering::Acquire) != number {
            self.expire(number);
            self.expired.store(number, Ordering::Release);
        }
        self.totals.snapshot(u64::MAX)
    }

    pub(crate) fn reset(&self) {
        for (stamp, count) in self.stamps.iter().zip(self.counts.iter()) {
            count.take();
            stamp.store(0, Ordering::Release);
        }
        self.totals.reset();
    }

    /// Records `n` identical calls at once (tests: a slice of 10^9 calls without 10^9 loops).
    #[cfg(test)]
    fn record_many(&self, n: u64, outcome: Outcome, now: u64) {
        let number = slice_number(now, self.slice);
        let index = (number % self.stamps.len() as u64) as usize;
        self.claim(index, number);
        let failed = outcome == Outcome::Failure;
        self.counts[index].calls.fetch_add(n, Ordering::AcqRel);
        if failed {
            self.counts[index].failures.fetch_add(n, Ordering::AcqRel);
        }
        self.totals
            .add(signed(n), if failed { signed(n) } else { 0 }, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_forgets_exactly_the_oldest() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(Outcome::Failure, false);
        }
        assert_eq!(
            w.snapshot(),
            Snapshot {
                calls: 4,
                failures: 4,
                slow: 0
            }
        );
        w.record(Outcome::Success, true);
        assert_eq!(
            w.snapshot(),
            Snapshot {
                calls: 4,
                failures: 3,
                slow: 1
            }
        );
        for _ in 0..3 {
            w.record(Outcome::Success, false);
        }
        assert_eq!(
            w.snapshot(),
            Snapshot {
                calls: 4,
                failures: 0,
                slow: 1
            }
        );
        w.record(Outcome::Success, false);
        assert_eq!(w.snapshot().slow, 0);
        w.reset();
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[test]
    fn fast_modulo_is_exact() {
        for n in [1u32, 2, 3, 7, 10, 100, 1000, 65_537, 1 << 24] {
            let w = CountWindow::new(n.min(1 << 20));
            let n = w.slots.len() as u32;
            for head in (0..100_000u32).chain(u32::MAX - 100_000..=u32::MAX) {
                assert_eq!(w.slot_of(head), (head % n) as usize, "{head} % {n}");
            }
        }
    }

    #[test]
    fn long_success_runs_do_not_hide_later_failures() {
        let w = CountWindow::new(10);
        for _ in 0..1_000_000 {
            w.record(Outcome::Success, false);
        }
        for _ in 0..6 {
            w.record(Outcome::Failure, false);
        }
        assert_eq!(w.snapshot().failure_rate(), 60.0);
    }

    #[test]
    fn time_window_slides_by_slices() {
        let sec = 1_000_000_000;
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(Outcome::Failure, false, 0);
        w.record(Outcome::Failure, true, sec / 2);
        w.record(Outcome::Success, false, 5 * sec);
        assert_eq!(
            w.snapshot(5 * sec),
            Snapshot {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // At 10 s the slice [0, 1 s) has left the window.
        assert_eq!(
            w.snapshot(10 * sec),
            Snapshot {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        w.record(Outcome::Failure, false, 12 * sec);
        assert_eq!(
            w.snapshot(12 * sec),
            Snapshot {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        // Long after, everything has left.
        assert_eq!(w.snapshot(100 * sec), Snapshot::default());
        w.record(Outcome::Success, false, 100 * sec);
        assert_eq!(w.snapshot(100 * sec).calls, 1);
    }

    #[test]
    fn a_time_slice_counts_past_two_to_the_22_calls() {
        // Before: calls were packed in 22 bits, so 2^22 calls in one slice wrapped to zero and
        // a later run of failures could not reach the threshold.
        let sec = 1_000_000_000;
        let w = TimeWindow::new(Duration::from_secs(60), 6);
        for _ in 0..(1 << 22) + 10 {
            w.record(Outcome::Success, false, 0);
        }
        assert_eq!(w.snapshot(0).calls, (1 << 22) + 10);
        // After the window has passed, nothing is left.
        assert_eq!(w.snapshot(61 * sec), Snapshot::default());
        for _ in 0..50_000 {
            w.record(Outcome::Failure, false, 61 * sec);
        }
        let s = w.snapshot(61 * sec);
        assert_eq!((s.calls, s.failures), (50_000, 50_000));
    }

    #[test]
    fn a_time_slice_holds_a_billion_calls_exactly() {
        let sec = 1_000_000_000;
        let w = TimeWindow::new(Duration::from_secs(60), 6);
        w.record_many(3_000_000_000, Outcome::Success, 0);
        w.record_many(1_000_000_000, Outcome::Failure, 10 * sec);
        let s = w.snapshot(10 * sec);
        assert_eq!((s.calls, s.failures), (4_000_000_000, 1_000_000_000));
        assert_eq!(s.failure_rate(), 25.0);
        // The first slice [0, 10 s) leaves at 60 s, the second at 70 s.
        assert_eq!(w.snapshot(60 * sec).calls, 1_000_000_000);
        assert_eq!(w.snapshot(70 * sec), Snapshot::default());
    }

    #[test]
    fn time_window_survives_extreme_clock_readings() {
        // Before: a 1 ns slice at u64::MAX had the number of the "being emptied" stamp, and
        // recording spun forever.
        let w = TimeWindow::new(Duration::from_nanos(1), 1);
        w.record(Outcome::Failure, false, u64::MAX);
        assert_eq!(w.snapshot(u64::MAX).calls, 1);
        let w = TimeWindow::new(Duration::from_secs(1), 10);
        for now in [0, 1 << 60, 1 << 63, u64::MAX - 1, u64::MAX] {
            w.record(Outcome::Failure, false, now);
            assert!(w.snapshot(now).calls >= 1);
        }
    }

    #[test]
    fn rates_are_percentages() {
        let s = Snapshot {
            calls: 8,
            failures: 2,
            slow: 4,
        };
        assert_eq!(s.failure_rate(), 25.0);
        assert_eq!(s.slow_rate(), 50.0);
        assert_eq!(Snapshot::default().failure_rate(), 0.0);
    }
}
