//! Limits shared by every replica, kept in Redis (feature `redis`).
//!
//! Each replica of a service that limits in memory lets a key through `N ×` its quota. A
//! [`RedisLimiter`] keeps the state in Redis instead, so every replica answers from one
//! count: atomic Lua scripts (sent as `EVALSHA`, loaded again after a `NOSCRIPT`), the time
//! read inside the script from the server's `TIME` — replicas with skewed clocks agree — and
//! the key's expiry set in the same script, so no crash between two commands can leave a
//! key that never expires.
//!
//! **Leases.** A round trip per check costs ~0.1 ms and caps a hot key at what one Redis
//! can run. So by default a replica that sees a key often takes a *lease*: a share of the
//! key's remaining units, taken from Redis in the same script call as a check, sized from
//! its own observed rate. It answers the following checks from the lease without a round
//! trip, tops the lease up before it runs dry, and gives unused units back when the key
//! goes idle and on [`give_back_leases`](RedisLimiter::give_back_leases). A denial is
//! cached until its exact retry time. The units outstanding in all replicas' leases of a
//! key never exceed its maximum overshoot (default 1 % of the limit; no leases under 200 per
//! window), which bounds the error both ways: in any window, the replicas together admit
//! at most `limit + max_overshoot`, and, driven above the limit, at least
//! `limit − max_overshoot`. See `docs/ratelimit.md`, "Across replicas".
//!
//! Keys are `<prefix>:{<key>}`: the braces are a Redis Cluster hash tag (a key's data and
//! its leases live in one slot); braces inside the key are escaped. Each call has a
//! deadline (default 50 ms): past it the check fails with [`RedisLimitError::Timeout`]
//! instead of holding the request.
//!
//! Decisions have the same meaning as the local limiters' ([`Decision`]): the token bucket is
//! the same GCRA as [`TokenBucket`](crate::TokenBucket), the fixed and sliding windows the
//! same as [`FixedWindow`](crate::FixedWindow) and [`SlidingWindow`](crate::SlidingWindow),
//! in whole microseconds. A decision answered from a lease reports the units left in Redis
//! when the lease was taken plus those left in the lease.
//!
//! ```no_run
//! use maas_ratelimit::Quota;
//! use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter, Replicas};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = RedisLimiter::builder(
//!     "redis://127.0.0.1:6379",
//!     RedisAlgorithm::TokenBucket(Quota::per_minute(60_000)),
//!     // While Redis is away, each replica allows its share of the limit on its own.
//!     OutagePolicy::LocalShare { replicas: Replicas::Seen },
//! )
//! .prefix("maas:tenants")
//! .connect()
//! .await?;
//! let d = limiter.check("acme", 1).await;
//! println!("allowed: {}, remaining: {}", d.is_allowed(), d.remaining());
//! // At shutdown: hand the unused lease units back to the other replicas.
//! limiter.give_back_leases().await;
//! # Ok(()) }
//! ```
//!
//! While Redis does not answer, the limiter answers by the [`OutagePolicy`] chosen at build —
//! fail open, fail closed, or a local share of the limit — behind a small breaker: after a
//! failure Redis is left alone for the probe interval, so an outage costs no request a
//! timeout, and the first successful probe returns to Redis. Leases still running keep
//! answering: their units were counted in Redis when they were taken.

mod background;
mod builder;
mod call;
mod lease;
mod leases;
#[cfg(feature = "prometheus")]
mod metrics;
mod observer;
mod outage;
mod script;
mod share;
mod tower;

pub use builder::RedisLimiterBuilder;
#[cfg(feature = "prometheus")]
pub use metrics::RedisMetrics;
pub use outage::{OutagePolicy, Replicas};

#[doc(hidden)]
pub mod sim {
    //! The lease state machine and the scripts' reply, exposed for the deterministic
    //! simulation in this crate's tests. Not a stable interface.
    pub use super::lease::{Reply, Sizing, Slot, Take};
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hashbrown::HashMap;

use crate::Decision;
use call::Caller;
use lease::{ClaimGuard, Slot, Take};
use leases::Leases;
use outage::{Outage, Route};
use share::LocalShare;

/// Which algorithm a [`RedisLimiter`] runs, with its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisAlgorithm {
    /// GCRA: `limit` per `period`, bursts up to the quota's burst.
    TokenBucket(Quota),
    /// At most `limit` per window of `period`, windows aligned on the server's clock.
    FixedWindow(Quota),
    /// At most `limit` in any span of `period`, counted over `buckets` sub-buckets (as
    /// [`SlidingWindow`](crate::SlidingWindow); 10 is its default).
    SlidingWindow {
        /// The limit and the window.
        quota: Quota,
        /// Sub-buckets per window.
        buckets: u32,
    },
}

use crate::Quota;

impl RedisAlgorithm {
    /// The same algorithm with `quota`.
    fn with_quota(self, quota: Quota) -> Self {
        match self {
            RedisAlgorithm::TokenBucket(_) => RedisAlgorithm::TokenBucket(quota),
            RedisAlgorithm::FixedWindow(_) => RedisAlgorithm::FixedWindow(quota),
            RedisAlgorithm::SlidingWindow { buckets, .. } => {
                RedisAlgorithm::SlidingWindow { quota, buckets }
            }
        }
    }
}

/// Why a Redis check did not give a decision.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLimitError {
    /// The setting cannot work (a zero limit or period, a period under a microsecond).
    #[error("invalid Redis limiter setting: {0}")]
    Config(&'static str),
    /// Redis did not answer within the deadline.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or could not be reached.
    #[error("Redis")]
    Redis(#[from] ::redis::RedisError),
    /// The script answered something this limiter does not understand.
    #[error("unexpected reply from the rate-limit script: {0:?}")]
    Reply(Vec<i64>),
}

/// One quota as the scripts take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// Token interval (token bucket), window (fixed window) or bucket (sliding window), µs.
    pub(crate) step_us: u64,
    /// Capacity (token bucket) or limit (windows): the `limit` of its decisions.
    pub(crate) capacity: u64,
    /// Sub-buckets of a sliding window (none for the others).
    pub(crate) buckets: Option<u32>,
    /// The most units outstanding in leases of one key (0: no leases).
    pub(crate) max_overshoot: u64,
}

/// A rate limiter whose state is in Redis, shared by every process that uses the same
/// Redis, prefix and algorithm. Cheap to clone (clones share one reconnecting connection
/// and one set of leases).
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    caller: Caller,
    prefix: String,
    algorithm: RedisAlgorithm,
    overshoot_percent: f64,
    /// The default quota's parameters.
    params: Params,
    /// Keys with a quota of their own.
    overrides: RwLock<HashMap<String, Params, foldhash::fast::RandomState>>,
    has_overrides: AtomicBool,
    policy: OutagePolicy,
    outage: Outage,
    /// `LocalShare`'s in-memory limiter.
    local: Option<LocalShare>,
    /// Leases, unless the limiter runs one call per check.
    leases: Option<Leases>,
    /// This replica's id (in the lease records and the replica set).
    replica: String,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.inner.prefix)
            .field("limit", &self.inner.params.capacity)
            .field("deadline", &self.inner.caller.deadline)
            .field("leases", &self.inner.leases.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Starts configuring a limiter on the Redis at `url` (`redis://host:port/db`), which
    /// answers by `policy` while Redis does not (there is no default: see [`OutagePolicy`]).
    pub fn builder(
        url: impl Into<String>,
        algorithm: RedisAlgorithm,
        policy: OutagePolicy,
    ) -> RedisLimiterBuilder {
        RedisLimiterBuilder::new(url.into(), algorithm, policy)
    }

    /// Checks `cost` units for `key`, consuming them when the request passes — from this
    /// replica's lease of the key when it holds one, else in Redis. While Redis is
    /// unreachable, slow or failing, the limiter answers by its [`OutagePolicy`]: after a
    /// failed call Redis is not asked again for the probe interval (default 250 ms), so an
    /// outage costs requests nothing; then one call probes it, and a success returns to
    /// Redis at once. Each change is a `tracing` event (target `maas_ratelimit`).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the units consumed (the script may have run); the
    /// request is then counted without passing, which errs on the side of the limit. A
    /// lease being taken when the future is dropped is abandoned: the units it may have
    /// leased stay counted in Redis until the lease's lifetime ends.
    pub async fn check(&self, key: &str, cost: u64) -> Decision {
        self.decide(key, cost, true).await
    }

    /// What [`check`](RedisLimiter::check) would answer, consuming nothing (always asked of
    /// Redis, whatever this replica leases).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn peek(&self, key: &str, cost: u64) -> Decision {
        self.decide(key, cost, false).await
    }

    /// Like [`check`](RedisLimiter::check), but an outage is an error (and is not recorded
    /// by the outage breaker).
    ///
    /// # Cancel safety
    ///
    /// As [`check`](RedisLimiter::check).
    pub async fn try_check(&self, key: &str, cost: u64) -> Result<Decision, RedisLimitError> {
        if let Some(d) = self.local_answer(key, cost) {
            return Ok(d);
        }
        self.ask(key, cost, true).await
    }

    /// Like [`peek`](RedisLimiter::peek), but an outage is an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn try_peek(&self, key: &str, cost: u64) -> Result<Decision, RedisLimitError> {
        self.ask(key, cost, false).await
    }

    /// Whether the limiter answers by its outage policy right now.
    pub fn is_degraded(&self) -> bool {
        self.inner.outage.is_down()
    }

    /// Gives every unit this replica holds in leases back to Redis, for the other replicas;
    /// returns how many Redis took back. Call it on graceful shutdown (idle keys are given
    /// back on their own). Checks go on working afterwards.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a lease whose return is dropped half-way is no longer used
    /// here and expires in Redis within its lifetime.
    pub async fn give_back_leases(&self) -> u64 {
        let Some(leases) = &self.inner.leases else {
            return 0;
        };
        let mut back = 0;
        for (key, slot) in leases.all() {
            back += self.give_back(&key, &slot).await;
        }
        back
    }

    /// Replicas of this limiter seen in the last 5 s, this one included, as last counted
    /// (each announces itself every second while it leases or shares by [`Replicas::Seen`]).
    pub fn replicas_seen(&self) -> u64 {
        match (&self.inner.leases, &self.inner.local) {
            (Some(l), _) => l.replicas(),
            (None, Some(s)) => s.replicas(),
            (None, None) => 1,
        }
    }

    /// Gives `key` a quota of its own (same algorithm), e.g. a larger one for one customer.
    /// It lives on this limiter: give every replica the same overrides, or they disagree
    /// about the key's limit. The key's leases follow its quota's overshoot.
    pub fn set_key_quota(&self, key: &str, quota: Quota) -> Result<(), RedisLimitError> {
        let inner = &self.inner;
        let algorithm = inner.algorithm.with_quota(quota);
        let params = builder::params_of(algorithm, inner.overshoot_percent)?;
        if let Some(share) = &inner.local {
            share.set_key(key, Some(quota));
        }
        inner
            .overrides
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), params);
        inner.has_overrides.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes `key`'s own quota; returns whether it had one.
    pub fn clear_key_quota(&self, key: &str) -> bool {
        let inner = &self.inner;
        if let Some(share) = &inner.local {
            share.set_key(key, None);
        }
        let mut o = inner.overrides.write().unwrap_or_else(|p| p.into_inner());
        let had = o.remove(key).is_some();
        inner.has_overrides.store(!o.is_empty(), Ordering::Release);
        had
    }

    /// The parameters of `key`'s quota.
    fn params_for(&self, key: &str) -> Params {
        let inner = &self.inner;
        if !inner.has_overrides.load(Ordering::Acquire) {
            return inner.params;
        }
        let o = inner.overrides.read().unwrap_or_else(|p| p.into_inner());
        o.get(key).copied().unwrap_or(inner.params)
    }

    /// This limiter's id among the replicas: the field of its lease records under each key
    /// and its member in the replica set (`<prefix>:replicas`). Random per limiter.
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// Gives back `units` that `key` was charged and did not use (admission by estimate,
    /// reconciled afterwards), in Redis, for every replica: never more than the key still
    /// counts, newest first. Correct whether the charge came from Redis or from this
    /// replica's lease (leased units are counted in Redis when they are taken). While Redis
    /// does not answer, the units go back to the local share the outage policy limits by.
    ///
    /// # Cancel safety
    ///
    /// Dropped before Redis answers, the refund may or may not have been applied; it is
    /// never applied twice.
    pub async fn refund(&self, key: &str, units: u64) {
        if units == 0 {
            return;
        }
        let inner = &self.inner;
        if let Route::Redis { probe } = inner.outage.route(std::time::Instant::now()) {
            match inner
                .caller
                .refund(self.redis_key(key), &self.params_for(key), units)
                .await
            {
                Ok(_) => {
                    self.note_success();
                    return;
                }
                Err(e) => self.note_failure(&e, probe),
            }
        }
        if let Some(share) = &inner.local {
            share.refund(key, units);
        }
    }

    /// Keys this replica keeps lease state for (0 when it does not lease).
    pub fn leased_keys(&self) -> usize {
        self.inner.leases.as_ref().map_or(0, Leases::len)
    }

    /// The Redis key that holds `key`'s state (its leases are under the same hash tag).
    pub fn redis_key(&self, key: &str) -> String {
        let prefix = &self.inner.prefix;
        let mut k = String::with_capacity(prefix.len() + key.len() + 3);
        k.push_str(prefix);
        k.push_str(":{");
        for c in key.chars() {
            match c {
                '%' => k.push_str("%25"),
                '{' => k.push_str("%7B"),
                '}' => k.push_str("%7D"),
                c => k.push(c),
            }
        }
        k.push('}');
        k
    }

    /// The key's state and its lease records (same hash tag).
    fn lease_keys(&self, key: &str) -> (String, String) {
        let state = self.redis_key(key);
        let leases = format!("{state}:leases");
        (state, leases)
    }

    async fn decide(&self, key: &str, cost: u64, consume: bool) -> Decision {
        if let Some(d) = consume.then(|| self.local_answer(key, cost)).flatten() {
            return d;
        }
        self.decide_remotely(key, cost, consume).await
    }

    /// Decides in Redis (the local answer was not enough), or by the outage policy.
    async fn decide_remotely(&self, key: &str, cost: u64, consume: bool) -> Decision {
        let inner = &self.inner;
        if let Route::Redis { probe } = inner.outage.route(std::time::Instant::now()) {
            match self.ask(key, cost, consume).await {
                Ok(d) => {
                    self.note_success();
                    return d;
                }
                Err(e) => self.note_failure(&e, probe),
            }
        }
        inner.caller.observer.policy_answer();
        match &inner.local {
            Some(share) if consume => share.limiter.check_key(key, cost),
            Some(share) => share.limiter.peek_key(key, cost),
            None => outage::fixed_answer(
                inner.policy == OutagePolicy::FailOpen,
                self.params_for(key).capacity,
                inner.outage.probe_every(),
            ),
        }
    }

    fn note_success(&self) {
        if self.inner.outage.succeeded() {
            self.inner.caller.observer.degraded(false);
            tracing::info!(target: "maas_ratelimit", prefix = %self.inner.prefix, "Redis answers again; limiting through it");
        }
    }

    fn note_failure(&self, e: &RedisLimitError, probe: bool) {
        if self.inner.outage.failed(std::time::Instant::now()) || probe {
            self.inner.caller.observer.degraded(true);
            tracing::warn!(target: "maas_ratelimit", prefix = %self.inner.prefix, error = %e, policy = ?self.inner.policy, "Redis is not answering; limiting by the outage policy");
        }
    }

    /// The answer from this replica's lease or cached denial, when one can be given.
    fn local_answer(&self, key: &str, cost: u64) -> Option<Decision> {
        let leases = self.inner.leases.as_ref()?;
        let now = leases.now();
        let limit = self.params_for(key).capacity;
        let (take, refill, (server_left, reset_at)) = leases.with(key, |slot| {
            let take = slot.take(now, cost);
            let refill = matches!(take, Take::Local { .. })
                && slot.wants_refill(now, leases.settings.lifetime_ns);
            (take, refill.then(|| slot.clone()), slot.hint())
        })?;
        if let Some(slot) = refill {
            self.spawn_refill(key, slot);
        }
        let reset = Duration::from_nanos(reset_at.saturating_sub(now));
        match take {
            Take::Local { left } => {
                self.inner.caller.observer.lease_answer();
                Some(Decision::allowed(
                    limit,
                    left.saturating_add(server_left),
                    reset,
                ))
            }
            Take::Denied { retry_at } => Some(Decision::rejected(
                limit,
                0,
                reset,
                Some(Duration::from_nanos(retry_at.saturating_sub(now))),
            )),
            Take::Ask => None,
        }
    }

    /// Asks Redis: with a lease when the limiter leases and the check consumes.
    async fn ask(&self, key: &str, cost: u64, consume: bool) -> Result<Decision, RedisLimitError> {
        let inner = &self.inner;
        let p = &self.params_for(key);
        let leased = match &inner.leases {
            Some(leases) if consume => {
                let now = leases.now();
                leases.slot(key, now).map(|slot| (leases, slot, now))
            }
            _ => None,
        };
        let Some((leases, slot, sent_at)) = leased else {
            let reply = inner
                .caller
                .check(self.redis_key(key), p, cost, consume)
                .await?;
            return script::decision(p.capacity, &reply).ok_or(RedisLimitError::Reply(reply));
        };
        let claim = slot.claim(sent_at, &leases.sizing(p.max_overshoot));
        let (want, held) = claim.unwrap_or((0, 0));
        // Released on an error or if this future is dropped mid-call.
        let guard = claim.map(|_| ClaimGuard::new(&slot, Slot::unclaim));
        let keys = self.lease_keys(key);
        let (raw, reply) = inner
            .caller
            .take(keys, p, &inner.replica, cost, want, held, leases.lifetime())
            .await?;
        if let Some(guard) = guard {
            guard.disarm();
            inner.caller.observer.refill(reply.granted);
        }
        let left = slot.settle(sent_at, cost, claim.is_some(), &reply);
        let d = script::decision(p.capacity, &raw).ok_or(RedisLimitError::Reply(raw))?;
        Ok(if d.is_allowed() {
            Decision::allowed(
                p.capacity,
                d.remaining().saturating_add(left),
                d.reset_after(),
            )
        } else {
            d
        })
    }

    /// Gives `key`'s lease back; returns the units Redis took back.
    async fn give_back(&self, key: &str, slot: &Slot) -> u64 {
        let Some(leases) = &self.inner.leases else {
            return 0;
        };
        let Some(held) = slot.begin_return(leases.now()) else {
            return 0;
        };
        if held == 0 {
            return 0;
        }
        // The return ends, answered or not — or if this future is dropped mid-call.
        let guard = ClaimGuard::new(slot, Slot::end_return);
        let keys = self.lease_keys(key);
        let back = self
            .inner
            .caller
            .give_back(keys, &self.params_for(key), &self.inner.replica, held)
            .await;
        drop(guard);
        match back {
            Ok(n) => {
                self.inner.caller.observer.returned(n);
                n
            }
            Err(e) => {
                tracing::debug!(target: "maas_ratelimit", prefix = %self.inner.prefix, error = %e, "a lease could not be given back; it expires in Redis");
                0
            }
        }
    }
}
