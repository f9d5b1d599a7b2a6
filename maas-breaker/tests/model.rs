//! The breaker against a deliberately simple reference model: random configurations and
//! random sequences of calls (with outcomes and latencies), held permits, cancellations
//! and clock advances must give the same decisions and the same states.

use std::collections::VecDeque;
use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::{BreakerState, CircuitBreaker, Classification, Outcome, Permit, Window};
use proptest::prelude::*;

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
struct Cfg {
    time_window: Option<(u64, u32)>, // (length ms, buckets); None: count window
    count: u32,
    minimum: u32,
    failure_rate: Option<f64>,
    slow: Option<(u64, f64)>, // (threshold ms, rate)
    consecutive: Option<u32>,
    open_wait: u64,
    backoff: f64,
    max_open: u64,
    probes: u16,
    successes: u16,
    max_half_open: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    /// A whole call: acquire, take `latency` ms, record.
    Call(Outcome, u64, Option<u64>),
    /// Acquire and keep the permit.
    Hold,
    /// Record a held permit (index modulo the number held).
    Finish(usize, Outcome),
    /// Drop a held permit without recording.
    Cancel(usize),
    Advance(u64),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        4 => Just(Outcome::Success),
        4 => Just(Outcome::Failure),
        1 => Just(Outcome::Ignored),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (outcome(), 0u64..300, prop::option::weighted(0.1, 1u64..20_000)).prop_map(|(o, l, r)| Op::Call(o, l, r)),
        1 => Just(Op::Hold),
        1 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Finish(i, o)),
        1 => any::<usize>().prop_map(Op::Cancel),
        2 => (0u64..15_000).prop_map(Op::Advance),
    ]
}

fn cfg() -> impl Strategy<Value = Cfg> {
    (
        prop::option::weighted(0.3, (100u64..5_000, 1u32..8)),
        1u32..12,
        1u32..8,
        prop::option::weighted(0.8, 10.0f64..=100.0),
        prop::option::weighted(0.3, (10u64..200, 10.0f64..=100.0)),
        prop::option::weighted(0.4, 1u32..5),
        (
            100u64..5_000,
            prop_oneof![Just(1.0), 1.0f64..3.0],
            0u64..20_000,
        ),
        (
            1u16..4,
            1u16..4,
            prop::option::weighted(0.7, 500u64..20_000),
        ),
    )
        .prop_map(
            |(tw, count, minimum, fr, slow, cons, (ow, bo, extra), (p, s, mho))| Cfg {
                time_window: tw,
                count,
                // A count window must be able to hold the minimum (else a ConfigError).
                minimum: if tw.is_none() {
                    minimum.min(count)
                } else {
                    minimum
                },
                failure_rate: if fr.is_none() && slow.is_none() && cons.is_none() {
                    Some(50.0)
                } else {
                    fr
                },
                slow,
                consecutive: cons,
                open_wait: ow,
                backoff: bo,
                max_open: ow + extra,
                probes: p,
                successes: s,
                max_half_open: mho,
            },
        )
}

/// The reference: plain fields, plain collections, one call at a time.
struct Model {
    c: Cfg,
    now: u64,
    state: BreakerState,
    generation: u64,
    calls: VecDeque<(u64, bool, bool)>, // (time slice or 0, failed, slow)
    consecutive: u32,
    trips: u32,
    open_until: u64,
    half_open_until: u64,
    in_flight: u16,
    successes: u16,
    pause: u64,
}

#[derive(Debug, Clone, Copy)]
struct MPermit {
    generation: u64,
    state: BreakerState,
    start: u64,
}

impl Model {
    fn new(c: Cfg) -> Self {
        Model {
            c,
            now: 0,
            state: BreakerState::Closed,
            generation: 0,
            calls: VecDeque::new(),
            consecutive: 0,
            trips: 0,
            open_until: 0,
            half_open_until: u64::MAX,
            in_flight: 0,
            successes: 0,
            pause: 0,
        }
    }

    fn slice(&self) -> u64 {
        let (len, buckets) = self.c.time_window.unwrap();
        (len * MS).div_ceil(u64::from(buckets))
    }

    fn window(&mut self) -> (u64, u64, u64) {
        if let Some((_, buckets)) = self.c.time_window {
            let current = self.now / self.slice();
            self.calls
                .retain(|(s, _, _)| s + u64::from(buckets) > current);
        }
        let n = self.calls.len() as u64;
        let f = self.calls.iter().filter(|c| c.1).count() as u64;
        let s = self.calls.iter().filter(|c| c.2).count() as u64;
        (n, f, s)
    }

    fn enter(&mut self, to: BreakerState) {
        match to {
            BreakerState::Open => {
                let wait = ((self.c.open_wait * MS) as f64 * self.c.backoff.powi(self.trips as i32))
                    .min((self.c.max_open * MS) as f64) as u64;
                self.open_until = self.now + wait.max(self.pause);
                self.pause = 0;
                self.trips += 1;
            }
            BreakerState::HalfOpen => {
                self.half_open_until = self.c.max_half_open.map_or(u64::MAX, |m| self.now + m * MS);
            }
            BreakerState::Closed => {
                self.calls.clear();
                self.trips = 0;
                self.pause = 0;
            }
            _ => unreachable!(),
        }
        self.consecutive = 0;
        self.state = to;
        self.generation += 1;
        self.in_flight = 0;
        self.successes = 0;
    }

    fn acquire(&mut self) -> Result<MPermit, (BreakerState, Option<u64>)> {
        loop {
            match self.state {
                BreakerState::Closed => {
                    return Ok(MPermit {
                        generation: self.generation,
                        state: self.state,
                        start: self.now,
                    });
                }
                BreakerState::Open => {
                    if self.now < self.open_until {
                        return Err((BreakerState::Open, Some(self.open_until - self.now)));
                    }
                    self.enter(BreakerState::HalfOpen);
                }
                BreakerState::HalfOpen => {
                    if self.now >= self.half_open_until {
                        self.enter(BreakerState::Open);
                    } else if self.in_flight >= self.c.probes {
                        return Err((BreakerState::HalfOpen, None));
                    } else {
                        self.in_flight += 1;
                        return Ok(MPermit {
                            generation: self.generation,
                            state: self.state,
                            start: self.now,
                        });
                    }
                }
                _ => unreachable!(),
            }
        }
    }

    fn complete(&mut self, p: MPermit, outcome: Outcome, retry: Option<u64>, measure: bool) {
        let slow = measure
            && self
                .c
                .slow
                .is_some_and(|(t, _)| self.now - p.start >= t * MS);
        if p.generation != self.generation || p.state != self.state {
            return;
        }
        let failed = outcome == Outcome::Failure;
        match p.state {
            BreakerState::Closed => {
                if outcome == Outcome::Ignored {
                    return;
                }
                let stamp = if self.c.time_window.is_some() {
                    self.now / self.slice()
                } else {
                    0
                };
                self.calls.push_back((stamp, failed, slow));
                if self.c.time_window.is_none() && self.calls.len() > self.c.count as usize {
                    self.calls.pop_front();
                }
                if self.c.consecutive.is_some() {
                    self.consecutive = if failed { self.consecutive + 1 } else { 0 };
                }
                if failed && let Some(r) = retry {
                    self.pause = self.pause.max(r * MS);
                }
                let (n, _, _) = self.window();
                if failed || slow || n == u64::from(self.c.minimum) {
                    let (n, f, s) = self.window();
                    let pct = |x: u64| x as f64 * 100.0 / n as f64;
                    let trip = self.c.consecutive.is_some_and(|k| self.consecutive >= k)
                        || (n >= u64::from(self.c.minimum)
                            && (self.c.failure_rate.is_some_and(|t| pct(f) >= t)
                                || self.c.slow.is_some_and(|(_, t)| pct(s) >= t)));
                    if trip {
                        self.enter(BreakerState::Open);
                    }
                }
            }
            BreakerState::HalfOpen => {
                if failed || (slow && outcome != Outcome::Ignored) {
                    if failed && let Some(r) = retry {
                        self.pause = self.pause.max(r * MS);
                    }
                    self.enter(BreakerState::Open);
                } else if outcome == Outcome::Success && self.successes + 1 >= self.c.successes {
                    self.enter(BreakerState::Closed);
                } else {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    self.successes += u16::from(outcome == Outcome::Success);
                }
            }
            _ => {}
        }
    }
}

fn build(c: &Cfg, clock: &ManualClock) -> CircuitBreaker<ManualClock> {
    let mut b = CircuitBreaker::builder()
        .window(match c.time_window {
            Some((len, buckets)) => Window::Time {
                length: Duration::from_millis(len),
                buckets,
            },
            None => Window::Count(c.count),
        })
        .minimum_calls(c.minimum)
        .open_wait(Duration::from_millis(c.open_wait))
        .backoff(c.backoff, Duration::from_millis(c.max_open))
        .half_open(u32::from(c.probes), u32::from(c.successes))
        .max_half_open(c.max_half_open.map(Duration::from_millis))
        .clock(clock.clone());
    b = match c.failure_rate {
        Some(r) => b.failure_rate(r),
        None => b.without_failure_rate(),
    };
    if let Some((t, r)) = c.slow {
        b = b.slow_calls(Duration::from_millis(t), r);
    }
    if let Some(k) = c.consecutive {
        b = b.consecutive_failures(k);
    }
    b.build().unwrap()
}

fn classification(o: Outcome, retry: Option<u64>) -> Classification {
    let c = Classification::from(o);
    match retry {
        Some(r) if o == Outcome::Failure => c.with_retry_after(Duration::from_millis(r)),
        _ => c,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn breaker_matches_the_reference_model(c in cfg(), ops in prop::collection::vec(op(), 1..200)) {
        let clock = ManualClock::new();
        let breaker = build(&c, &clock);
        let mut model = Model::new(c.clone());
        let mut held: Vec<(Permit<'_, ManualClock>, MPermit)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call(o, latency, retry) => {
                    let real = breaker.try_acquire();
                    let expected = model.acquire();
                    match (real, expected) {
                        (Ok(permit), Ok(mp)) => {
                            clock.advance(Duration::from_millis(latency));
                            model.now += latency * MS;
                            permit.record(classification(o, retry));
                            model.complete(mp, o, retry, true);
                        }
                        (Err(r), Err((state, remaining))) => {
                            prop_assert_eq!(r.state(), state, "step {}", step);
                            prop_assert_eq!(r.retry_after(), remaining.map(Duration::from_nanos), "step {}", step);
                        }
                        (real, expected) => prop_assert!(false, "step {step}: breaker {:?}, model {:?}", real.map(|_| ()), expected.map(|_| ())),
                    }
                }
                Op::Hold => match (breaker.try_acquire(), model.acquire()) {
                    (Ok(p), Ok(mp)) => held.push((p, mp)),
                    (Err(_), Err(_)) => {}
                    (real, expected) => prop_assert!(false, "step {step}: breaker {:?}, model {:?}", real.map(|_| ()), expected.map(|_| ())),
                },
                Op::Finish(i, o) if !held.is_empty() => {
                    let (p, mp) = held.remove(i % held.len());
                    p.record(o);
                    model.complete(mp, o, None, true);
                }
                Op::Cancel(i) if !held.is_empty() => {
                    let (p, mp) = held.remove(i % held.len());
                    drop(p);
                    if mp.state == BreakerState::HalfOpen {
                        model.complete(mp, Outcome::Ignored, None, false);
                    }
                }
                Op::Finish(..) | Op::Cancel(_) => {}
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms * MS;
                }
            }
            prop_assert_eq!(breaker.state(), model.state, "step {}", step);
            if model.state == BreakerState::Closed {
                let (n, f, s) = model.window();
                let snap = breaker.snapshot();
                prop_assert_eq!((snap.calls, snap.failures, snap.slow), (n, f, s), "window at step {}", step);
            }
        }
    }
}
