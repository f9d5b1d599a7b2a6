//! A deterministic simulation of N = 1…16 replicas leasing one key, against a model of the
//! Redis lease script (no Redis, one virtual clock): the replicas run the limiter's own lease
//! state machine (`Slot`), calls take 50–300 µs each way and overtake one another, and the
//! demand is adversarial — windows just under the limit (so leases still hold units when
//! they end) alternate with windows at three times the limit, and every replica bursts on
//! each window boundary and on the moments its lease ends. Checked, per window:
//!
//! * for both algorithms: the units outstanding in leases never exceed the maximum
//!   overshoot, even with half the replicas sizing their leases as if they were alone, and
//!   the replicas admit what Redis counted in the window ± the maximum overshoot;
//! * fixed window: admitted ≤ limit (a lease ends with its window), and, in the windows that
//!   ask more than the limit, ≥ limit − max overshoot;
//! * token bucket: Redis never counts more in a window than one exact bucket hands out
//!   (its burst and the refill), so admitted ≤ that + max overshoot.
//!
//! The model follows `src/redis/script.rs` line for line: the `LEASE` body over the
//! `FIXED_WINDOW` and `TOKEN_BUCKET` chunks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use maas_ratelimit::redis::sim::{Reply, Sizing, Slot, Take};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;

/// The key's state in "Redis", times in µs as the scripts keep them.
trait Model {
    fn avail(&self, now: u64) -> u64;
    /// `(allowed, remaining, reset_after, retry_after)`; `None` retry: never.
    fn verdict(&self, now: u64, cost: u64) -> (bool, u64, u64, Option<u64>);
    fn take(&mut self, now: u64, n: u64);
    fn refund(&mut self, now: u64, n: u64, stamp: u64);
    fn stamp(&self, now: u64) -> u64;
    fn restamp(&self, now: u64, stamp: u64) -> bool;
    fn lease_span(&self, now: u64, ttl: u64) -> u64;
}

/// `FIXED_WINDOW`.
struct Window {
    period: u64,
    limit: u64,
    window: u64,
    used: u64,
}

impl Window {
    fn used(&self, now: u64) -> u64 {
        if now / self.period == self.window {
            self.used
        } else {
            0
        }
    }
}

impl Model for Window {
    fn avail(&self, now: u64) -> u64 {
        self.limit.saturating_sub(self.used(now))
    }
    fn verdict(&self, now: u64, cost: u64) -> (bool, u64, u64, Option<u64>) {
        let ends = (now / self.period + 1) * self.period - now;
        let used = self.used(now);
        if cost > self.limit {
            (false, self.avail(now), ends, None)
        } else if used + cost <= self.limit {
            (true, self.limit - used - cost, ends, Some(0))
        } else {
            (false, self.avail(now), ends, Some(ends))
        }
    }
    fn take(&mut self, now: u64, n: u64) {
        self.used = self.used(now) + n;
        self.window = now / self.period;
        assert!(self.used <= self.limit, "DEBUG used {} at {now}", self.used);
    }
    fn refund(&mut self, now: u64, n: u64, stamp: u64) {
        if stamp == now / self.period {
            self.used = self.used(now).saturating_sub(n);
            self.window = stamp;
        }
    }
    fn stamp(&self, now: u64) -> u64 {
        now / self.period
    }
    fn restamp(&self, now: u64, stamp: u64) -> bool {
        stamp == now / self.period
    }
    fn lease_span(&self, now: u64, ttl: u64) -> u64 {
        ttl.min((now / self.period + 1) * self.period - now)
    }
}

/// `TOKEN_BUCKET` (GCRA).
struct Bucket {
    interval: u64,
    capacity: u64,
    tat: u64,
}

impl Bucket {
    fn debt(&self, now: u64) -> u64 {
        self.tat
            .saturating_sub(now)
            .min(self.interval * self.capacity)
    }
}

impl Model for Bucket {
    fn avail(&self, now: u64) -> u64 {
        (self.interval * self.capacity - self.debt(now)) / self.interval
    }
    fn verdict(&self, now: u64, cost: u64) -> (bool, u64, u64, Option<u64>) {
        let (tau, debt) = (self.interval * self.capacity, self.debt(now));
        if cost > self.capacity {
            return (false, self.avail(now), debt, None);
        }
        let new_debt = debt + cost * self.interval;
        if new_debt <= tau {
            (true, (tau - new_debt) / self.interval, new_debt, Some(0))
        } else {
            (false, self.avail(now), debt, Some(new_debt - tau))
        }
    }
    fn take(&mut self, now: u64, n: u64) {
        self.tat = now + self.debt(now) + n * self.interval;
    }
    fn refund(&mut self, now: u64, n: u64, _: u64) {
        self.tat = now + self.debt(now).saturating_sub(n * self.interval);
    }
    fn stamp(&self, _: u64) -> u64 {
        0
    }
    fn restamp(&self, _: u64, _: u64) -> bool {
        true
    }
    fn lease_span(&self, _: u64, ttl: u64) -> u64 {
        ttl
    }
}

/// The `LEASE` body: lease records per replica, `(units, expires, stamp)`.
struct Server<M> {
    model: M,
    records: HashMap<usize, (u64, u64, u64)>,
    max_out: u64,
    ttl: u64,
    /// Units taken less units refunded, per window of `period` µs, by the server's clock.
    handed: Vec<i64>,
    period: u64,
}

impl<M: Model> Server<M> {
    fn count(&mut self, now: u64, n: i64) {
        let w = (now / self.period) as usize;
        if self.handed.len() <= w {
            self.handed.resize(w + 1, 0);
        }
        self.handed[w] += n;
    }

    fn live(&mut self, now: u64, me: usize) -> (u64, Option<(u64, u64)>) {
        self.records.retain(|_, r| r.1 > now);
        let others = self
            .records
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(_, r)| r.0)
            .sum();
        (others, self.records.get(&me).map(|r| (r.0, r.2)))
    }

    fn take(&mut self, now: u64, me: usize, cost: u64, want: u64, mut held: u64) -> Reply {
        let (others, mine) = self.live(now, me);
        let mut carried = false;
        if let (true, true, Some((n, e))) = (want > 0, held > 0, mine) {
            held = held.min(n);
            carried = self.model.restamp(now, e);
        }
        if !carried {
            held = 0;
        }
        let (allowed, mut remaining, reset, retry) = self.model.verdict(now, cost);
        let mut granted = 0;
        if allowed {
            self.model.take(now, cost);
            self.count(now, cost as i64);
            if want > 0 {
                let room = self.max_out.saturating_sub(others + held);
                granted = want.min(self.model.avail(now)).min(room);
                self.model.take(now, granted);
                self.count(now, granted as i64);
            }
            remaining = self.model.avail(now);
        }
        let span = self.model.lease_span(now, self.ttl);
        if want > 0 {
            let n = held + granted;
            if n > 0 && span > 0 {
                self.records
                    .insert(me, (n, now + span, self.model.stamp(now)));
            } else {
                self.records.remove(&me);
                granted = 0;
                carried = false;
            }
        }
        Reply {
            allowed,
            remaining,
            reset_after_ns: reset * US,
            retry_after_ns: retry.map(|r| r * US),
            granted,
            lease_ns: span * US,
            carried,
        }
    }

    fn give(&mut self, now: u64, me: usize, held: u64) {
        let (_, mine) = self.live(now, me);
        if let Some((n, e)) = mine {
            let before = self.model.avail(now);
            self.model.refund(now, held.min(n), e);
            let back = self.model.avail(now) - before;
            self.count(now, -(back as i64));
            self.records.remove(&me);
        }
    }

    fn outstanding(&mut self, now: u64) -> u64 {
        self.live(now, usize::MAX).0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A check of one unit arrives at the replica.
    Check(usize),
    /// A take reaches the server: `(replica, call)`.
    Serve(usize, usize),
    /// Its reply reaches the replica.
    Answer(usize, usize),
    /// A give-back reaches the server.
    Give(usize, u64),
    /// Its answer reaches the replica: the return has ended.
    Given(usize),
    /// The replica's upkeep: idle leases go back.
    Upkeep(usize),
}

struct Call {
    sent_at: u64,
    claimed: bool,
    cost: u64,
    want: u64,
    held: u64,
    reply: Option<Reply>,
}

/// A deterministic LCG: the calls' latencies.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

/// The demand of even and odd windows, as a fraction of the limit.
const DEMAND: [(u64, u64); 2] = [(95, 100), (3, 1)];

/// Whether window `w` asked more than the limit.
fn over(w: usize) -> bool {
    DEMAND[w % 2].0 > DEMAND[w % 2].1
}

struct Outcome {
    /// Admitted per window of `period`.
    per_window: Vec<u64>,
    max_outstanding: u64,
}

/// Runs `n` replicas for `windows` windows of `period` ns, each replica asking `per_replica`
/// units per window at an even pace plus bursts.
fn simulate<M: Model>(
    model: M,
    n: usize,
    limit: u64,
    period: u64,
    windows: u64,
    max_out: u64,
) -> (Outcome, Server<M>) {
    let lifetime = 40 * MS;
    // Half the replicas have not yet seen the others and would lease the whole overshoot:
    // the script's cap over all records must hold them.
    let sizing = |r: usize| Sizing {
        horizon_ns: 10 * MS,
        cap: if r % 2 == 1 {
            max_out
        } else {
            max_out / n as u64
        },
        lifetime_ns: lifetime,
    };
    let mut server = Server {
        model,
        records: HashMap::new(),
        max_out,
        ttl: lifetime / US,
        handed: Vec::new(),
        period: period / US,
    };
    let slots: Vec<Slot> = (0..n).map(|_| Slot::new(0)).collect();
    let mut calls: Vec<Call> = Vec::new();
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<_>, at: u64, e: Event| {
        seq += 1;
        q.push(Reverse((at, seq, e)));
    };
    let end = windows * period;
    // Windows alternate: just under the limit (leases still hold units when the window
    // ends) and three times the limit; each boundary also brings a burst of 50 per replica.
    for r in 0..n {
        for w in 0..windows {
            let (num, den) = DEMAND[w as usize % 2];
            let gap = period * n as u64 * den / (num * limit);
            let mut t = w * period + r as u64 * 7 * US;
            while t < (w + 1) * period {
                push(&mut queue, t, Event::Check(r));
                t += gap;
            }
        }
        for w in 0..=windows {
            for k in 0..50 {
                push(
                    &mut queue,
                    (w * period + k * US).saturating_sub(25 * US),
                    Event::Check(r),
                );
            }
        }
        push(&mut queue, lifetime / 4, Event::Upkeep(r));
    }
    let mut lcg = Lcg(n as u64);
    let mut per_window = vec![0u64; windows as usize + 2];
    let mut max_outstanding = 0u64;
    let mut expiry_bursts = vec![0u64; n];
    while let Some(Reverse((now, _, event))) = queue.pop() {
        if now >= end {
            break;
        }
        let admit = |at: u64, per_window: &mut Vec<u64>| {
            per_window[(at / period) as usize] += 1;
        };
        match event {
            Event::Check(r) => {
                let slot = &slots[r];
                match slot.take(now, 1) {
                    Take::Local { .. } => {
                        admit(now, &mut per_window);
                        if slot.wants_refill(now, lifetime)
                            && let Some((want, held)) = slot.claim(now, &sizing(r))
                        {
                            calls.push(Call {
                                sent_at: now,
                                claimed: true,
                                cost: 0,
                                want,
                                held,
                                reply: None,
                            });
                            push(
                                &mut queue,
                                now + lcg.next(50 * US, 300 * US),
                                Event::Serve(r, calls.len() - 1),
                            );
                        }
                    }
                    Take::Denied { .. } => {}
                    Take::Ask => {
                        let claim = slot.claim(now, &sizing(r));
                        let (want, held) = claim.unwrap_or((0, 0));
                        calls.push(Call {
                            sent_at: now,
                            claimed: claim.is_some(),
                            cost: 1,
                            want,
                            held,
                            reply: None,
                        });
                        push(
                            &mut queue,
                            now + lcg.next(50 * US, 300 * US),
                            Event::Serve(r, calls.len() - 1),
                        );
                    }
                }
            }
            Event::Serve(r, c) => {
                let call = &mut calls[c];
                let reply = server.take(now / US, r, call.cost, call.want, call.held);
                call.reply = Some(reply);
                if reply.allowed && call.cost > 0 {
                    admit(now, &mut per_window);
                }
                max_outstanding = max_outstanding.max(server.outstanding(now / US));
                push(
                    &mut queue,
                    now + lcg.next(50 * US, 300 * US),
                    Event::Answer(r, c),
                );
            }
            Event::Answer(r, c) => {
                let call = &calls[c];
                let reply = call.reply.expect("served");
                slots[r].settle(call.sent_at, call.cost, call.claimed, &reply);
                // Adversarial: burst right before and at the moment this lease ends.
                if call.claimed && reply.granted > 0 && expiry_bursts[r] < 200 {
                    expiry_bursts[r] += 1;
                    let ends = call.sent_at + reply.lease_ns;
                    for k in 0..20 {
                        push(
                            &mut queue,
                            (ends + k * US).saturating_sub(10 * US).max(now),
                            Event::Check(r),
                        );
                    }
                }
            }
            Event::Give(r, held) => {
                server.give(now / US, r, held);
                push(
                    &mut queue,
                    now + lcg.next(50 * US, 300 * US),
                    Event::Given(r),
                );
            }
            Event::Given(r) => slots[r].end_return(),
            Event::Upkeep(r) => {
                let slot = &slots[r];
                if slot.should_return(now, now.saturating_sub(lifetime / 4), lifetime)
                    && let Some(held) = slot.begin_return(now)
                {
                    if held > 0 {
                        push(
                            &mut queue,
                            now + lcg.next(50 * US, 300 * US),
                            Event::Give(r, held),
                        );
                    } else {
                        slot.end_return();
                    }
                }
                push(&mut queue, now + lifetime / 4, Event::Upkeep(r));
            }
        }
    }
    per_window.truncate(windows as usize);
    (
        Outcome {
            per_window,
            max_outstanding,
        },
        server,
    )
}

/// In every window the replicas admitted what Redis counted in it, give or take the units
/// outstanding in leases: never more than the maximum overshoot.
fn check_against_redis<M>(n: usize, o: &Outcome, server: &Server<M>, max_out: u64) {
    assert!(
        o.max_outstanding <= max_out,
        "n = {n}: {} outstanding",
        o.max_outstanding
    );
    let worst = o
        .per_window
        .iter()
        .zip(&server.handed)
        .map(|(&a, &h)| (a as i64 - h).abs())
        .max();
    eprintln!(
        "n = {n}: worst |admitted - counted| {worst:?}, outstanding {}",
        o.max_outstanding
    );
    for (w, &a) in o.per_window.iter().enumerate() {
        let h = server.handed[w];
        assert!(
            a as i64 <= h + max_out as i64 && a as i64 >= h - max_out as i64,
            "n = {n}, window {w}: {a} admitted, Redis counted {h}; all {:?}",
            o.per_window
        );
    }
}

#[test]
fn fixed_window_replicas_admit_the_limit_within_the_overshoot() {
    let (limit, period) = (10_000, 100 * MS);
    let max_out = limit / 100;
    for n in 1..=16 {
        let model = Window {
            period: period / US,
            limit,
            window: 0,
            used: 0,
        };
        let (o, server) = simulate(model, n, limit, period, 6, max_out);
        check_against_redis(n, &o, &server, max_out);
        assert!(
            o.max_outstanding <= max_out,
            "n = {n}: {} outstanding",
            o.max_outstanding
        );
        for (w, &a) in o.per_window.iter().enumerate() {
            assert!(
                a <= limit && (!over(w) || a >= limit - max_out),
                "n = {n}, window {w}: {a} admitted against {limit} (max overshoot {max_out}); all {:?}; counted {:?}",
                o.per_window,
                server.handed
            );
        }
    }
}

#[test]
fn token_bucket_replicas_admit_the_rate_within_the_overshoot() {
    // 10,000 per 100 ms, a burst of 10,000 (the bucket starts full).
    let (limit, period) = (10_000u64, 100 * MS);
    let max_out = limit / 100;
    let windows = 6;
    for n in 1..=16 {
        let model = Bucket {
            interval: period / US / limit,
            capacity: limit,
            tat: 0,
        };
        let (o, server) = simulate(model, n, limit, period, windows, max_out);
        assert!(
            o.max_outstanding <= max_out,
            "n = {n}: {} outstanding",
            o.max_outstanding
        );
        check_against_redis(n, &o, &server, max_out);
        for (w, &h) in server.handed.iter().enumerate().take(windows as usize) {
            // What one exact bucket can hand out in a window: its burst and the refill.
            assert!(
                h <= 2 * limit as i64,
                "n = {n}, window {w}: Redis handed out {h}"
            );
        }
    }
}
