//! Clocks that drive the limiters.
//!
//! A limiter never reads the system time itself: it asks a [`Clock`] for the number of
//! nanoseconds elapsed since the clock's epoch. Three clocks are provided:
//!
//! | clock | cost of `now` | resolution | use |
//! |---|---|---|---|
//! | [`MonotonicClock`] | one `Instant::now()` (~25–30 ns) | 1 ns | the default: exact at any rate |
//! | [`CoarseClock`] | one atomic load (~1 ns) | its tick (1 ms by default) | hot paths where a check must cost as little as possible |
//! | [`ManualClock`] | one atomic load | 1 ns | tests: time moves only when the test says so |
//!
//! The limiters validate at build time that their quota can be enforced at the clock's
//! resolution (see [`Clock::resolution`]), so a coarse clock never silently lowers a rate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A source of monotonic time, in nanoseconds since the clock's own epoch.
///
/// Implementations must never go backwards for a given clock value and its clones.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds elapsed since this clock's epoch.
    fn now_nanos(&self) -> u64;

    /// The smallest step by which [`now_nanos`](Clock::now_nanos) advances.
    ///
    /// Limiters use it to reject, at build time, windows shorter than the clock can measure
    /// and token buckets whose burst cannot absorb one tick of refill.
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
}

/// The process-wide epoch shared by [`MonotonicClock`] and [`CoarseClock`].
fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The system's monotonic clock (`std::time::Instant`), exact to the nanosecond.
///
/// All `MonotonicClock`s share one epoch (the first time any of them is read), so their
/// readings are comparable with each other and with [`CoarseClock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl MonotonicClock {
    /// A monotonic clock.
    pub fn new() -> Self {
        MonotonicClock
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        nanos_since(process_epoch())
    }
}

/// A cached clock: a background thread stores the time every tick, and reading it is a
/// single atomic load.
///
/// Use it where the ~25 ns of `Instant::now()` would dominate a limiter check. Its readings
/// lag real time by at most one tick (plus scheduling delay of the updater thread). The first
/// `CoarseClock` created with a given tick starts one updater thread for that tick, which then
/// runs for the life of the process; clocks with the same tick share it.
///
/// ```
/// use maas_ratelimit::clock::{Clock, CoarseClock};
/// let clock = CoarseClock::new();
/// let a = clock.now_nanos();
/// std::thread::sleep(std::time::Duration::from_millis(5));
/// assert!(clock.now_nanos() > a);
/// ```
#[derive(Debug, Clone)]
pub struct CoarseClock {
    cell: &'static CoarseCell,
}

#[derive(Debug)]
struct CoarseCell {
    tick: Duration,
    nanos: AtomicU64,
    started: AtomicBool,
}

impl CoarseClock {
    /// The default tick: 1 ms.
    pub const DEFAULT_TICK: Duration = Duration::from_millis(1);

    /// A coarse clock with a 1 ms tick.
    pub fn new() -> Self {
        Self::with_tick(Self::DEFAULT_TICK)
    }

    /// A coarse clock with the given tick, clamped to between 100 µs and 1 s.
    pub fn with_tick(tick: Duration) -> Self {
        let tick = tick.clamp(Duration::from_micros(100), Duration::from_secs(1));
        let cell = coarse_cell(tick);
        if !cell.started.swap(true, Ordering::AcqRel) {
            cell.nanos
                .store(nanos_since(process_epoch()), Ordering::Release);
            std::thread::Builder::new()
                .name("maas-coarse-clock".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(cell.tick);
                        cell.nanos
                            .fetch_max(nanos_since(process_epoch()), Ordering::Release);
                    }
                })
                .expect("spawn the coarse clock's updater thread");
        }
        CoarseClock { cell }
    }

    /// The tick this clock advances by.
    pub fn tick(&self) -> Duration {
        self.cell.tick
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

/// One leaked cell per distinct tick; a process uses very few ticks.
fn coarse_cell(tick: Duration) -> &'static CoarseCell {
    static CELLS: std::sync::Mutex<Vec<&'static CoarseCell>> = std::sync::Mutex::new(Vec::new());
    let mut cells = CELLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(cell) = cells.iter().find(|c| c.tick == tick) {
        return cell;
    }
    let cell: &'static CoarseCell = Box::leak(Box::new(CoarseCell {
        tick,
        nanos: AtomicU64::new(0),
        started: AtomicBool::new(false),
    }));
    cells.push(cell);
    cell
}

impl Clock for CoarseClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.cell.nanos.load(Ordering::Acquire)
    }

    fn resolution(&self) -> Duration {
        self.cell.tick
    }
}

/// A clock that moves only when told to: for deterministic tests.
///
/// Clones share the same time, so a test keeps one handle and gives a clone to the limiter.
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::clock::{Clock, ManualClock};
/// let clock = ManualClock::new();
/// let limiter_side = clock.clone();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(limiter_side.now_nanos(), 250_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Saturates at u64::MAX nanoseconds (584 years): the clock never wraps back.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(by))
            });
    }

    /// Sets the time, in nanoseconds since the epoch. Moving backwards is ignored, so the
    /// clock stays monotonic.
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new();
        clock.advance(Duration::from_nanos(10));
        clock.set_nanos(5);
        assert_eq!(clock.now_nanos(), 10);
        clock.set_nanos(40);
        assert_eq!(clock.now_nanos(), 40);
    }

    #[test]
    fn monotonic_clock_advances() {
        let clock = MonotonicClock::new();
        let a = clock.now_nanos();
        std::thread::sleep(Duration::from_millis(1));
        assert!(clock.now_nanos() >= a + 1_000_000);
    }

    #[test]
    fn coarse_clock_tracks_monotonic_within_a_few_ticks() {
        let coarse = CoarseClock::with_tick(Duration::from_millis(2));
        assert_eq!(coarse.resolution(), Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(20));
        let lag = MonotonicClock
            .now_nanos()
            .saturating_sub(coarse.now_nanos());
        // Generous bound: the updater thread may be descheduled on a busy machine.
        assert!(lag < 200_000_000, "coarse clock lags by {lag} ns");
    }
}
