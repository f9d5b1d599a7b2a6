//! One key's lease on one replica, without I/O: the units this replica took from Redis
//! ahead of demand and answers checks from, a cached denial, and the sizing of the next
//! refill from the replica's own observed rate.
//!
//! Everything is atomics, driven with times in nanoseconds on the replica's own clock, so
//! a check answered from the lease takes no lock, and the deterministic simulation in the
//! tests runs the same code against a model of the scripts.
//!
//! The invariants the overshoot bound rests on:
//! - at most one call that changes this replica's lease record in Redis is in flight
//!   ([`Slot::claim`]), so the record always covers what the replica holds;
//! - the lease ends on this replica no later than Redis forgets it: its end is counted from
//!   the moment the call was *sent*, which is before the script read the server's time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

/// How a replica sizes its leases of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// A lease covers this much of the replica's observed demand, ns.
    pub horizon_ns: u64,
    /// The most units one lease may hold (the limit's overshoot share of this replica).
    pub cap: u64,
    /// The longest a lease lives, ns.
    pub lifetime_ns: u64,
}

/// What a check gets from the local state alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Passed from the lease; `left` units remain in it.
    Local {
        /// Units left in the lease.
        left: u64,
    },
    /// Refused by a cached denial until `retry_at` (ns).
    Denied {
        /// When the denial ends, ns.
        retry_at: u64,
    },
    /// Redis must decide.
    Ask,
}

/// A script's answer to a take, as the slot uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Whether the check passed.
    pub allowed: bool,
    /// Units left in Redis after the call.
    pub remaining: u64,
    /// When the key's state resets, from the call, ns.
    pub reset_after_ns: u64,
    /// `None`: the cost can never pass.
    pub retry_after_ns: Option<u64>,
    /// Units added to the lease.
    pub granted: u64,
    /// How long the lease lives from the call, ns.
    pub lease_ns: u64,
    /// Whether the units the replica held are still its own.
    pub carried: bool,
}

/// One key's lease state on one replica.
#[derive(Debug, Default)]
pub struct Slot {
    /// Units left in the lease.
    tokens: AtomicU64,
    /// The lease is usable while `now < expires`.
    expires: AtomicU64,
    /// Checks of at least `denied_cost` are refused until `denied_until`.
    denied_until: AtomicU64,
    denied_cost: AtomicU64,
    /// When the key's Redis state next resets, as last heard.
    reset_at: AtomicU64,
    /// Units left in Redis, as last heard.
    server_left: AtomicU64,
    /// A call that changes this replica's lease record is in flight.
    busy: AtomicBool,
    /// Units asked since `since`: the observed rate.
    demand: AtomicU64,
    since: AtomicU64,
    last_used: AtomicU64,
    /// The size of the last grant (refills start when a quarter of it is left).
    last_grant: AtomicU64,
}

impl Slot {
    /// An empty slot, first seen at `now`.
    pub fn new(now: u64) -> Self {
        let s = Slot::default();
        s.since.store(now, Relaxed);
        s.last_used.store(now, Relaxed);
        s
    }

    /// Answers `cost` units at `now` from the lease or a cached denial, if it can.
    pub fn take(&self, now: u64, cost: u64) -> Take {
        self.demand.fetch_add(cost, Relaxed);
        self.last_used.fetch_max(now, Relaxed);
        let until = self.denied_until.load(Acquire);
        if now < until && cost >= self.denied_cost.load(Relaxed) {
            return Take::Denied { retry_at: until };
        }
        if now >= self.expires.load(Acquire) {
            return Take::Ask;
        }
        let mut have = self.tokens.load(Acquire);
        loop {
            if have < cost {
                return Take::Ask;
            }
            match self
                .tokens
                .compare_exchange_weak(have, have - cost, AcqRel, Acquire)
            {
                Ok(_) => return Take::Local { left: have - cost },
                Err(now_have) => have = now_have,
            }
        }
    }

    /// Whether a lease should be topped up ahead of demand: a quarter of the last grant or
    /// less is left, or less than a quarter of its life.
    pub fn wants_refill(&self, now: u64, lifetime_ns: u64) -> bool {
        if self.busy.load(Relaxed) {
            return false;
        }
        let left = self.tokens.load(Relaxed);
        let expires = self.expires.load(Relaxed);
        left <= self.last_grant.load(Relaxed) / 4 || expires.saturating_sub(now) < lifetime_ns / 4
    }

    /// Claims the right to change this replica's lease record (one call at a time).
    /// Returns `(want, held)` for the call: the units to ask for (the observed rate's need
    /// less what is held, at least 1) and the units still held. `None` when another call holds the claim, or the demand
    /// is too low for a lease to pay (then the call asks for nothing and leaves the record).
    pub fn claim(&self, now: u64, sizing: &Sizing) -> Option<(u64, u64)> {
        let want = self.want(now, sizing);
        if want == 0 || self.busy.swap(true, AcqRel) {
            return None;
        }
        let held = if now < self.expires.load(Acquire) {
            self.tokens.load(Acquire)
        } else {
            0
        };
        // At least one unit: a call that asks for nothing would not renew the record.
        Some((want.saturating_sub(held).max(1), held))
    }

    /// Units to lease: the demand seen since the last refill, scaled to the horizon, at
    /// most the cap. Under two units asked, or two to lease, nothing is leased: the key is not
    /// hot.
    fn want(&self, now: u64, sizing: &Sizing) -> u64 {
        if sizing.cap == 0 {
            return 0;
        }
        let since = self.since.load(Relaxed);
        let demand = self.demand.load(Relaxed);
        if demand < 2 {
            return 0;
        }
        // A quiet start counts as a millisecond, so one early burst does not look infinite.
        let elapsed = now.saturating_sub(since).max(1_000_000);
        let want = u128::from(demand) * u128::from(sizing.horizon_ns) / u128::from(elapsed);
        let want = u64::try_from(want).unwrap_or(u64::MAX).min(sizing.cap);
        if want < 2 { 0 } else { want }
    }

    /// Gives up a claim whose call failed.
    pub fn unclaim(&self) {
        self.busy.store(false, Release);
    }

    /// Applies a take's reply to a call sent at `sent_at` for `cost` units; `claimed` when
    /// the call held the claim (it asked for a lease). Returns the units left in the lease.
    pub fn settle(&self, sent_at: u64, cost: u64, claimed: bool, r: &Reply) -> u64 {
        self.server_left.store(r.remaining, Relaxed);
        self.reset_at
            .store(sent_at.saturating_add(r.reset_after_ns), Relaxed);
        if let (false, Some(retry)) = (r.allowed, r.retry_after_ns) {
            self.denied_cost.store(cost, Relaxed);
            self.denied_until
                .store(sent_at.saturating_add(retry), Release);
        }
        if !claimed {
            return self.tokens.load(Acquire);
        }
        let left = if r.carried {
            self.tokens.fetch_add(r.granted, AcqRel) + r.granted
        } else {
            self.tokens.swap(r.granted, AcqRel);
            r.granted
        };
        // Counted from the sending: never later than Redis lets the lease go.
        self.expires
            .store(sent_at.saturating_add(r.lease_ns), Release);
        if r.granted > 0 {
            self.last_grant.store(r.granted, Relaxed);
        }
        self.demand.store(0, Relaxed);
        self.since.store(sent_at, Relaxed);
        self.busy.store(false, Release);
        left
    }

    /// Claims the record to give the lease back: takes every unit out of it. `None` when
    /// another call holds the claim; `Some(0)` when there is nothing to give (the claim is
    /// then released).
    pub fn begin_return(&self, now: u64) -> Option<u64> {
        if self.busy.swap(true, AcqRel) {
            return None;
        }
        let held = self.tokens.swap(0, AcqRel);
        if now >= self.expires.load(Acquire) || held == 0 {
            self.busy.store(false, Release);
            return Some(0);
        }
        Some(held)
    }

    /// The give-back call ended (answered or not): the record is gone or will expire.
    pub fn end_return(&self) {
        self.expires.store(0, Release);
        self.busy.store(false, Release);
    }

    /// When the lease ends, ns (0: no lease).
    pub fn ends(&self) -> u64 {
        self.expires.load(Acquire)
    }

    /// Whether the upkeep should give the lease back now: it holds units, no call is on it,
    /// and either the key was not checked since `idle_before`, or less than half of
    /// `lifetime_ns` is left — a lease nobody renewed by then would otherwise expire with
    /// its units unused before the next upkeep (every quarter lifetime) comes round.
    pub fn should_return(&self, now: u64, idle_before: u64, lifetime_ns: u64) -> bool {
        self.held(now) > 0
            && !self.is_busy()
            && (self.last_used() < idle_before || self.ends().saturating_sub(now) < lifetime_ns / 2)
    }

    /// When the key was last checked.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Relaxed)
    }

    /// Whether a call on the record is in flight.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Acquire)
    }

    /// Units left in the lease (0 once it ended).
    pub fn held(&self, now: u64) -> u64 {
        if now >= self.expires.load(Acquire) {
            0
        } else {
            self.tokens.load(Acquire)
        }
    }

    /// Units left in Redis as last heard, and when the key resets (ns), for the decisions
    /// answered locally.
    pub fn hint(&self) -> (u64, u64) {
        (self.server_left.load(Relaxed), self.reset_at.load(Relaxed))
    }
}

/// Releases a slot's claim if the call holding it is abandoned — its future dropped by a
/// caller's timeout — so the slot does not stay busy for good.
#[derive(Debug)]
pub struct ClaimGuard<'a> {
    slot: &'a Slot,
    release: fn(&Slot),
}

impl<'a> ClaimGuard<'a> {
    /// Guards `slot`'s claim, calling `release` on it unless disarmed.
    pub fn new(slot: &'a Slot, release: fn(&Slot)) -> Self {
        ClaimGuard { slot, release }
    }

    /// The call ended and settled the claim itself.
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        (self.release)(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SIZING: Sizing = Sizing {
        horizon_ns: 100 * MS,
        cap: 50,
        lifetime_ns: 1_000 * MS,
    };

    fn reply(allowed: bool, granted: u64, carried: bool) -> Reply {
        Reply {
            allowed,
            remaining: 100,
            reset_after_ns: 10 * MS,
            retry_after_ns: (!allowed).then_some(5 * MS),
            granted,
            lease_ns: 1_000 * MS,
            carried,
        }
    }

    #[test]
    fn a_cold_key_asks_redis_and_a_hot_one_leases_up_to_the_cap() {
        let s = Slot::new(0);
        assert_eq!(s.take(0, 1), Take::Ask);
        assert_eq!(s.claim(0, &SIZING), None, "one check is not demand");
        for _ in 0..99 {
            s.take(MS, 1);
        }
        let (want, held) = s.claim(10 * MS, &SIZING).expect("hot");
        assert_eq!((want, held), (50, 0), "1,000 per 10 ms asks the cap");
        assert_eq!(s.claim(10 * MS, &SIZING), None, "one claim at a time");
        assert_eq!(s.settle(10 * MS, 1, true, &reply(true, 40, false)), 40);
        assert_eq!(s.take(11 * MS, 3), Take::Local { left: 37 });
        assert_eq!(s.take(11 * MS, 38), Take::Ask, "all or nothing");
        assert_eq!(s.take(1_010 * MS, 1), Take::Ask, "the lease ended");
        assert_eq!(s.held(1_010 * MS), 0);
    }

    #[test]
    fn a_denial_is_cached_until_its_retry_time_for_costs_as_large() {
        let s = Slot::new(0);
        s.settle(0, 4, false, &reply(false, 0, false));
        assert_eq!(s.take(MS, 4), Take::Denied { retry_at: 5 * MS });
        assert_eq!(s.take(MS, 1), Take::Ask, "a smaller cost may pass");
        assert_eq!(s.take(5 * MS, 4), Take::Ask, "the retry time has come");
    }

    #[test]
    fn held_units_are_dropped_when_redis_no_longer_counts_them() {
        let s = Slot::new(0);
        for _ in 0..100 {
            s.take(0, 1);
        }
        s.claim(MS, &SIZING).unwrap();
        s.settle(MS, 0, true, &reply(true, 30, false));
        for _ in 0..10 {
            s.take(2 * MS, 1);
        }
        let (_, held) = s.claim(3 * MS, &SIZING).unwrap();
        assert_eq!(held, 20);
        assert_eq!(
            s.settle(3 * MS, 0, true, &reply(true, 10, false)),
            10,
            "not carried: the 20 held are dropped"
        );
        for _ in 0..5 {
            s.take(4 * MS, 1);
        }
        let (_, held) = s.claim(5 * MS, &SIZING).unwrap();
        assert_eq!(held, 5);
        assert_eq!(s.settle(5 * MS, 0, true, &reply(true, 5, true)), 10);
    }

    #[test]
    fn an_abandoned_claim_is_released() {
        let s = Slot::new(0);
        for _ in 0..100 {
            s.take(0, 1);
        }
        s.claim(MS, &SIZING).unwrap();
        drop(ClaimGuard::new(&s, Slot::unclaim));
        assert!(!s.is_busy());
        s.claim(MS, &SIZING).unwrap();
        ClaimGuard::new(&s, Slot::unclaim).disarm();
        assert!(s.is_busy(), "a disarmed guard leaves the claim to settle");
    }

    #[test]
    fn giving_back_empties_the_lease_once() {
        let s = Slot::new(0);
        for _ in 0..100 {
            s.take(0, 1);
        }
        s.claim(MS, &SIZING).unwrap();
        s.settle(MS, 0, true, &reply(true, 20, false));
        assert_eq!(s.begin_return(2 * MS), Some(20));
        assert_eq!(
            s.begin_return(2 * MS),
            None,
            "the first return holds the claim"
        );
        s.end_return();
        assert_eq!(s.begin_return(2 * MS), Some(0));
        assert_eq!(s.take(2 * MS, 1), Take::Ask);
    }
}
