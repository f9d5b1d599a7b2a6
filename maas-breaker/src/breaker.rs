//! The breaker: a pure state machine over atomics, driven by a clock.
//!
//! The closed state's hot path is lock-free: acquiring a permit is one atomic load, and
//! recording an outcome claims a window slot and swaps it. State changes — rare — take a
//! small transition lock so that they happen one at a time and their events arrive in
//! order; every change bumps a generation number, so results of calls permitted before the
//! change are recognised and ignored.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::classify::{Classification, Classify, ErrorsAreFailures, Outcome};
use crate::clock::{Clock, MonotonicClock};
use crate::config::{CircuitBreakerBuilder, Config};
use crate::events::{self, Event, Listener, TransitionCause};
use crate::state::{Word, same_epoch};
use crate::window::{CountWindow, Snapshot, TimeWindow, Window};
use crate::{BreakerError, BreakerState, Rejected};

enum Recorder {
    Count(CountWindow),
    Time(TimeWindow),
}

pub(crate) struct Inner<C> {
    state: AtomicU64,
    open_until: AtomicU64,
    half_open_until: AtomicU64,
    consecutive_failures: AtomicU32,
    trips: AtomicU32,
    requested_pause: AtomicU64,
    window: Recorder,
    config: Config,
    clock: C,
    transitions: Mutex<()>,
    listeners: Box<[Listener]>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::Handles>,
}

/// What a permit remembers: the state word it was issued under and when the call started.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    word: u64,
    started: u64,
}

/// A three-state circuit breaker (plus operator states), cheap to clone: clones share one
/// state.
///
/// ```
/// use std::time::Duration;
/// use maas_breaker::{BreakerState, CircuitBreaker};
/// use maas_breaker::clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder()
///     .name("billing")
///     .consecutive_failures(3)
///     .open_wait(Duration::from_secs(10))
///     .half_open(1, 1)
///     .clock(clock.clone())
///     .build()?;
///
/// for _ in 0..3 {
///     let _ = breaker.call(|| Err::<(), _>("billing is down"));
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// // Fails fast, without calling the closure, and says when to come back.
/// let err = breaker.call(|| Ok::<_, ()>("never runs")).unwrap_err();
/// assert_eq!(err.as_rejected().unwrap().retry_after(), Some(Duration::from_secs(10)));
///
/// clock.advance(Duration::from_secs(10));
/// assert!(breaker.call(|| Ok::<_, ()>("probe")).is_ok()); // half-open probe succeeds
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// # Ok::<(), maas_breaker::ConfigError>(())
/// ```
pub struct CircuitBreaker<C: Clock = MonotonicClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for CircuitBreaker<C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.config.name)
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreaker {
    /// Starts configuring a breaker.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }
}

impl<C: Clock> CircuitBreaker<C> {
    pub(crate) fn from_parts(
        config: Config,
        clock: C,
        listeners: Box<[Listener]>,
        #[cfg(feature = "prometheus")] metrics: Option<crate::metrics::Handles>,
    ) -> Self {
        let window = match config.window {
            Window::Count(n) => Recorder::Count(CountWindow::new(n)),
            Window::Time { length, buckets } => Recorder::Time(TimeWindow::new(length, buckets)),
        };
        #[cfg(feature = "prometheus")]
        if let Some(m) = &metrics {
            m.set_state(BreakerState::Closed);
        }
        CircuitBreaker {
            inner: Arc::new(Inner {
                state: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                half_open_until: AtomicU64::new(u64::MAX),
                consecutive_failures: AtomicU32::new(0),
                trips: AtomicU32::new(0),
                requested_pause: AtomicU64::new(0),
                window,
                config,
                clock,
                transitions: Mutex::new(()),
                listeners,
                #[cfg(feature = "prometheus")]
                metrics,
            }),
        }
    }

    /// Asks to make a call, for callers that record the result themselves later.
    #[inline]
    pub(crate) fn acquire_ticket(&self) -> Result<Ticket, Rejected> {
        self.inner.acquire()
    }

    /// Records the result of a call permitted by `ticket`.
    #[inline]
    pub(crate) fn complete_ticket(&self, ticket: Ticket, classification: Classification) {
        self.inner.complete(ticket, classification);
    }

    /// Gives back a ticket whose call was cancelled.
    pub(crate) fn release_ticket(&self, ticket: Ticket) {
        self.inner.release(ticket);
    }

    /// Whether a keyed breaker holds nothing worth keeping: closed (its window goes with
    /// it — a key that comes back starts with an empty window), open with its wait over, or
    /// half-open with no probe in flight. Operator states are always kept.
    pub(crate) fn is_evictable(&self) -> bool {
        let now = self.inner.now();
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::Open => now >= self.inner.open_until.load(Ordering::Acquire),
            BreakerState::HalfOpen => {
                Word::decode(self.inner.state.load(Ordering::Acquire)).in_flight == 0
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => false,
        }
    }

    /// Stops counting this breaker in its keyed breaker's metrics (its key was evicted).
    pub(crate) fn forget_metrics(&self) {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.inner.metrics {
            m.forget(self.state());
        }
    }

    /// The clock this breaker reads.
    pub(crate) fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The current state. An open breaker whose wait is over reports `Open` until the next
    /// call moves it to `HalfOpen`.
    pub fn state(&self) -> BreakerState {
        Word::decode(self.inner.state.load(Ordering::Acquire)).state
    }

    /// Calls, failures and slow calls in the current window.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot(self.inner.now())
    }

    /// Asks to make a call. The permit must be completed with
    /// [`record`](Permit::record) once the call is done; dropping it instead (the call was
    /// cancelled) gives a half-open probe slot back without counting anything.
    pub fn try_acquire(&self) -> Result<Permit<'_, C>, Rejected> {
        self.inner.acquire().map(|ticket| Permit {
            inner: &self.inner,
            ticket: Some(ticket),
        })
    }

    /// Runs `f` if the breaker permits it and records its result (`Err` is a failure).
    #[inline]
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, BreakerError<E>> {
        self.call_with(&ErrorsAreFailures, f)
    }

    /// Runs `f` if the breaker permits it and records its result as `classify` says.
    #[inline]
    pub fn call_with<T, E, K: Classify<T, E>>(
        &self,
        classify: &K,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        let ticket = self.inner.acquire().map_err(BreakerError::Rejected)?;
        let result = f();
        self.inner.complete(ticket, classify.classify(&result));
        result.map_err(BreakerError::Service)
    }

    /// Awaits `future` if the breaker permits it and records its result (`Err` is a
    /// failure). If this future is dropped before `future` completes, nothing is recorded
    /// and a half-open probe slot is given back.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops `future` too; nothing is recorded and a half-open
    /// probe slot is given back (see above).
    pub async fn call_async<T, E, F>(&self, future: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(BreakerError::Rejected)?;
        let result = future.await;
        permit.record(ErrorsAreFailures.classify(&result));
        result.map_err(BreakerError::Service)
    }

    /// Holds the breaker open until [`reset`](CircuitBreaker::reset): every call fails fast.
    pub fn force_open(&self) {
        self.inner
            .force(BreakerState::ForcedOpen, TransitionCause::ForcedOpen);
    }

    /// Switches the breaker off until [`reset`](CircuitBreaker::reset): every call passes,
    /// nothing is recorded.
    pub fn disable(&self) {
        self.inner
            .force(BreakerState::Disabled, TransitionCause::Disabled);
    }

    /// Back to closed with an empty window, from any state.
    pub fn reset(&self) {
        self.inner
            .force(BreakerState::Closed, TransitionCause::Reset);
    }
}

/// Permission for one call. Complete it with [`record`](Permit::record); dropping it
/// records nothing (a half-open probe slot is returned).
#[must_use = "a permit must be recorded once the call is done"]
pub struct Permit<'a, C: Clock> {
    inner: &'a Inner<C>,
    ticket: Option<Ticket>,
}

impl<C: Clock> Permit<'_, C> {
    /// Records how the call went.
    pub fn record(mut self, classification: impl Into<Classification>) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.complete(ticket, classification.into());
        }
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.release(ticket);
        }
    }
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<C: Clock> Inner<C> {
    /// The clock's reading, one short of `u64::MAX`: deadlines saturate at `u64::MAX`, which
    /// then always lies ahead (an open breaker at the clock's very end stays open rather
    /// than flipping between open and half-open forever).
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now_nanos().min(u64::MAX - 1)
    }

    fn wants_latency(&self) -> bool {
        self.config.slow_call.is_some()
    }

    #[inline]
    fn acquire(&self) -> Result<Ticket, Rejected> {
        let word = self.state.load(Ordering::Acquire);
        match Word::decode(word).state {
            BreakerState::Closed | BreakerState::Disabled => Ok(Ticket {
                word,
                started: if self.wants_latency() { self.now() } else { 0 },
            }),
            _ => self.acquire_slow(word),
        }
    }

    #[cold]
    fn acquire_slow(&self, mut word: u64) -> Result<Ticket, Rejected> {
        loop {
            let w = Word::decode(word);
            let now = self.now();
            match w.state {
                BreakerState::Closed | BreakerState::Disabled => {
                    return Ok(Ticket { word, started: now });
                }
                BreakerState::ForcedOpen => return Err(self.reject(w.state, None)),
                BreakerState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(w.state, Some(Duration::from_nanos(until - now))));
                    }
                    self.transition(
                        word,
                        BreakerState::HalfOpen,
                        TransitionCause::OpenWaitElapsed,
                        now,
                    );
                }
                BreakerState::HalfOpen => {
                    if now >= self.half_open_until.load(Ordering::Acquire) {
                        self.transition(
                            word,
                            BreakerState::Open,
                            TransitionCause::HalfOpenTimeout,
                            now,
                        );
                    } else if w.in_flight >= self.config.probes {
                        return Err(self.reject(w.state, None));
                    } else {
                        let probing = Word {
                            in_flight: w.in_flight + 1,
                            ..w
                        }
                        .encode();
                        if self
                            .state
                            .compare_exchange_weak(
                                word,
                                probing,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                        {
                            return Ok(Ticket {
                                word: probing,
                                started: now,
                            });
                        }
                    }
                }
            }
            word = self.state.load(Ordering::Acquire);
        }
    }

    fn reject(&self, state: BreakerState, remaining: Option<Duration>) -> Rejected {
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.rejected();
        }
        if !self.listeners.is_empty()
            || tracing::enabled!(target: "maas_breaker", tracing::Level::DEBUG)
        {
            self.emit(Event::Rejected {
                breaker: self.config.name.clone(),
                state,
            });
        }
        Rejected {
            breaker: self.config.name.clone(),
            state,
            remaining,
        }
    }

    fn emit(&self, event: Event) {
        events::trace(&event);
        for listener in self.listeners.iter() {
            listener(&event);
        }
    }

    fn snapshot(&self, now: u64) -> Snapshot {
        match &self.window {
            Recorder::Count(w) => w.snapshot(),
            Recorder::Time(w) => w.snapshot(now),
        }
    }

    /// Records a finished call.
    #[inline]
    fn complete(&self, ticket: Ticket, c: Classification) {
        let issued = Word::decode(ticket.word);
        // A closed breaker with a count window and no slow-call threshold needs no clock.
        let finished = match (&self.window, self.wants_latency()) {
            (Recorder::Count(_), false) if issued.state == BreakerState::Closed => None,
            _ => Some(self.now()),
        };
        let slow = match (self.config.slow_call, finished) {
            (Some(threshold), Some(end)) => end.saturating_sub(ticket.started) >= threshold,
            _ => false,
        };
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.call(c.outcome, slow);
        }
        match issued.state {
            BreakerState::Closed => self.complete_closed(ticket.word, c, slow, finished),
            BreakerState::HalfOpen => {
                let now = finished.unwrap_or_else(|| self.now());
                self.complete_probe(ticket.word, c, slow, now)
            }
            _ => {}
        }
    }

    #[inline]
    fn complete_closed(&self, issued: u64, c: Classification, slow: bool, finished: Option<u64>) {
        if c.outcome == Outcome::Ignored {
            return;
        }
        let current = self.state.load(Ordering::Acquire);
        if !same_epoch(current, issued) {
            return; // permitted before the last state change
        }
        // `count_calls`: the calls in a count window after this one, while it is filling.
        let (count_calls, now) = match &self.window {
            Recorder::Count(w) => (w.record(c.outcome, slow), finished),
            Recorder::Time(w) => {
                let now = finished.unwrap_or_else(|| self.now());
                w.record(c.outcome, slow, now);
                (None, Some(now))
            }
        };
        // A success lowers the rates, so it can trip the breaker only by bringing the window
        // to its minimum number of calls: the rates are evaluated then too.
        let reached_minimum = || match (&self.window, now) {
            (Recorder::Time(w), Some(now)) => w.snapshot(now).calls == self.config.minimum_calls,
            _ => count_calls == Some(self.config.minimum_calls),
        };
        let failed = c.outcome == Outcome::Failure;
        let consecutive = if self.config.consecutive_failures.is_none() {
            0
        } else if failed {
            self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Release);
            }
            0
        };
        if failed && let Some(pause) = c.retry_after {
            self.requested_pause
                .fetch_max(crate::clock::nanos(pause), Ordering::AcqRel);
        }
        if failed || slow || reached_minimum() {
            let now = now.unwrap_or_else(|| self.now());
            if let Some(cause) = self.trip_cause(consecutive, now) {
                self.transition(current, BreakerState::Open, cause, now);
            }
        }
    }

    fn trip_cause(&self, consecutive: u32, now: u64) -> Option<TransitionCause> {
        crate::policy::trip_cause(&self.config, consecutive, || self.snapshot(now))
    }

    fn complete_probe(&self, issued: u64, c: Classification, slow: bool, now: u64) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if !same_epoch(current, issued) {
                return; // the half-open test this probe belonged to is over
            }
            let w = Word::decode(current);
            let failed = c.outcome == Outcome::Failure || (slow && c.outcome != Outcome::Ignored);
            if failed {
                if let Some(pause) = c.retry_after {
                    self.requested_pause
                        .fetch_max(crate::clock::nanos(pause), Ordering::AcqRel);
                }
                self.transition(
                    current,
                    BreakerState::Open,
                    TransitionCause::ProbeFailed,
                    now,
                );
                return;
            }
            let succeeded = c.outcome == Outcome::Success;
            if succeeded && w.successes + 1 >= self.config.successes_to_close {
                self.transition(
                    current,
                    BreakerState::Closed,
                    TransitionCause::ProbesSucceeded,
                    now,
                );
                return;
            }
            let next = Word {
                in_flight: w.in_flight.saturating_sub(1),
                successes: w.successes + u16::from(succeeded),
                ..w
            }
            .encode();
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// A permit dropped without a result: give a probe slot back.
    fn release(&self, ticket: Ticket) {
        if Word::decode(ticket.word).state == BreakerState::HalfOpen {
            self.complete_probe(ticket.word, Classification::IGNORED, false, 0);
        }
    }

    /// Moves from the state word `from` (if it is still current) to `to`.
    fn transition(&self, from: u64, to: BreakerState, cause: TransitionCause, now: u64) -> bool {
        let _one_at_a_time = self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.state.load(Ordering::Acquire);
        if !same_epoch(current, from) {
            return false;
        }
        self.enter(current, to, cause, now);
        true
    }

    /// An operator's transition, from whatever state.
    fn force(&self, to: BreakerState, cause: TransitionCause) {
        let _one_at_a_time = self
            .transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.state.load(Ordering::Acquire);
        self.enter(current, to, cause, self.now());
    }

    /// Does the transition; the caller holds the transition lock.
    fn enter(&self, current: u64, to: BreakerState, cause: TransitionCause, now: u64) {
        let from = Word::decode(current);
        match to {
            BreakerState::Open => {
                let trips = self.trips.fetch_add(1, Ordering::AcqRel);
                let requested = self.requested_pause.swap(0, Ordering::AcqRel);
                let wait = crate::policy::open_wait(&self.config, trips, requested);
                self.open_until
                    .store(now.saturating_add(wait), Ordering::Release);
            }
            BreakerState::HalfOpen => {
                let until = self
                    .config
                    .max_half_open
                    .map_or(u64::MAX, |m| now.saturating_add(m));
                self.half_open_until.store(until, Ordering::Release);
            }
            BreakerState::Closed => {
                match &self.window {
                    Recorder::Count(w) => w.reset(),
                    Recorder::Time(w) => w.reset(),
                }
                self.trips.store(0, Ordering::Release);
                self.requested_pause.store(0, Ordering::Release);
            }
            BreakerState::ForcedOpen | BreakerState::Disabled => {}
        }
        self.consecutive_failures.store(0, Ordering::Release);
        self.state.store(from.next(to).encode(), Ordering::Release);
        #[cfg(feature = "prometheus")]
        if let Some(m) = &self.metrics {
            m.transition(from.state, to);
        }
        self.emit(Event::Transition {
            breaker: self.config.name.clone(),
            from: from.state,
            to,
            cause,
        });
    }
}
