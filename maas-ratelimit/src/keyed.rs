//! One limiter for many keys — API keys, tenants, models — with a hard bound on memory.
//!
//! A [`KeyedLimiter`] keeps one small state per key (8 bytes for the token bucket and the
//! fixed window) in a sharded hash table: a check on a known key takes a shard's read lock,
//! finds the entry and updates its state with a compare-and-swap; only the first check of a
//! new key takes the shard's write lock.
//!
//! ## Bounded memory without fresh bursts
//!
//! At most `max_keys` keys are tracked. When a new key arrives and the bound is reached,
//! the limiter first evicts entries that are *indistinguishable from a fresh one* — a full
//! bucket, an empty window — so forgetting them changes no future decision. Only when
//! every tracked key is still active does the configured [`WhenFull`] policy apply: reject
//! the new key, or send it to a shared overflow limiter. An active key is never evicted, so
//! it is never silently handed a full bucket.
//!
//! ## Per-key quotas
//!
//! Every key uses the default quota unless [`set_key_quota`](KeyedLimiter::set_key_quota)
//! gave it its own. Overrides survive eviction, and both the default and the overrides can
//! change at runtime; a change keeps what each key has already spent.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::HashTable;

use crate::algorithm::{Algorithm, FixedWindowCore, SlidingWindowCore, TokenBucketCore};
use crate::clock::{Clock, MonotonicClock};
use crate::{ConfigError, Decision, Quota};

/// The hasher keyed limiters use unless told otherwise: fast, and randomly seeded per
/// process so clients cannot aim keys at one shard.
pub type DefaultHasher = foldhash::fast::RandomState;

/// A keyed token bucket.
pub type KeyedTokenBucket<K, C = MonotonicClock> = KeyedLimiter<K, TokenBucketCore, C>;
/// A keyed sliding window.
pub type KeyedSlidingWindow<K, C = MonotonicClock> = KeyedLimiter<K, SlidingWindowCore, C>;
/// A keyed fixed window.
pub type KeyedFixedWindow<K, C = MonotonicClock> = KeyedLimiter<K, FixedWindowCore, C>;

/// The most shards a keyed limiter takes.
const MAX_SHARDS: usize = 1 << 16;

/// What a [`KeyedLimiter`] does with a new key when `max_keys` keys are tracked and all of
/// them are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Reject the new key's requests (with a `retry_after` of when a tracked key will next
    /// become idle), until room frees up. Protects tracked keys completely.
    Reject,
    /// Let new keys share one overflow limiter with this quota until room frees up.
    Overflow(Quota),
}

#[derive(Debug)]
struct Entry<K, A: Algorithm> {
    key: K,
    config: A::Config,
    has_override: bool,
    state: A::State,
}

#[derive(Debug)]
struct Shard<K, A: Algorithm> {
    table: HashTable<Entry<K, A>>,
    overrides: HashTable<(K, A::Config)>,
    default: A::Config,
    /// No tracked entry becomes evictable before this time (nanoseconds).
    next_evictable_at: u64,
}

/// Keeps each shard's lock on its own cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Padded<T>(T);

/// One shard behind its lock, alone on its cache line.
type ShardSlot<K, A> = Padded<RwLock<Shard<K, A>>>;

/// A rate limiter keeping a separate state per key, with per-key quotas and a hard bound
/// on the number of keys.
///
/// ```
/// use maas_ratelimit::{KeyedLimiter, Quota};
/// use maas_ratelimit::clock::ManualClock;
///
/// let limiter = KeyedLimiter::token_bucket(Quota::per_second(2))
///     .max_keys(10_000)
///     .clock(ManualClock::new())
///     .build()?;
/// limiter.set_key_quota("premium".to_owned(), Quota::per_second(100))?;
///
/// assert!(limiter.check_n("free", 2).is_allowed());
/// assert!(!limiter.check("free").is_allowed());
/// assert!(limiter.check_n("premium", 50).is_allowed());
/// # Ok::<(), maas_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct KeyedLimiter<
    K,
    A: Algorithm = TokenBucketCore,
    C: Clock = MonotonicClock,
    S = DefaultHasher,
> {
    shards: Box<[ShardSlot<K, A>]>,
    hasher: S,
    algorithm: A,
    clock: C,
    max_keys: usize,
    tracked: AtomicUsize,
    /// No shard has an evictable entry before this time: skip global sweeps until then.
    next_global_sweep_at: AtomicU64,
    overflow: Option<(A::Config, A::State)>,
    #[cfg(feature = "prometheus")]
    gauge: Option<prometheus::IntGauge>,
}

/// Builds a [`KeyedLimiter`]; invalid configuration fails at [`build`](KeyedLimiterBuilder::build).
#[derive(Debug, Clone)]
pub struct KeyedLimiterBuilder<A: Algorithm, C: Clock = MonotonicClock, S = DefaultHasher> {
    algorithm: A,
    quota: Quota,
    clock: C,
    hasher: S,
    max_keys: usize,
    shards: Option<usize>,
    when_full: WhenFull,
    #[cfg(feature = "prometheus")]
    gauge: Option<prometheus::IntGauge>,
}

/// The default bound on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

impl KeyedLimiter<(), TokenBucketCore> {
    /// A keyed token bucket: each key gets a bucket with `quota`.
    pub fn token_bucket(quota: Quota) -> KeyedLimiterBuilder<TokenBucketCore> {
        Self::with_algorithm(TokenBucketCore, quota)
    }

    /// A keyed sliding window with the default 10 sub-buckets.
    pub fn sliding_window(quota: Quota) -> KeyedLimiterBuilder<SlidingWindowCore> {
        Self::with_algorithm(SlidingWindowCore::default(), quota)
    }

    /// A keyed fixed window.
    pub fn fixed_window(quota: Quota) -> KeyedLimiterBuilder<FixedWindowCore> {
        Self::with_algorithm(FixedWindowCore, quota)
    }

    /// A keyed limiter with the given algorithm core (e.g.
    /// [`SlidingWindowCore::with_buckets`]).
    pub fn with_algorithm<A: Algorithm>(algorithm: A, quota: Quota) -> KeyedLimiterBuilder<A> {
        KeyedLimiterBuilder {
            algorithm,
            quota,
            clock: MonotonicClock,
            hasher: DefaultHasher::default(),
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
            when_full: WhenFull::Reject,
            #[cfg(feature = "prometheus")]
            gauge: None,
        }
    }
}

impl<A: Algorithm, C: Clock, S: BuildHasher> KeyedLimiterBuilder<A, C, S> {
    /// The most keys tracked at once (default 100,000).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// What to do with new keys when every tracked key is active (default: reject them).
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// Number of shards (rounded up to a power of two; default: 4 per CPU, at most
    /// `max_keys`). More shards mean less contention between keys. More than 65,536 is a
    /// [`ConfigError`].
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Reports the number of tracked keys as `maas_ratelimit_tracked_keys{limiter="<name>"}`.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::RateLimitMetrics, name: &str) -> Self {
        self.gauge = Some(metrics.tracked_gauge(name));
        self
    }

    /// Uses another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> KeyedLimiterBuilder<A, C2, S> {
        KeyedLimiterBuilder {
            algorithm: self.algorithm,
            quota: self.quota,
            clock,
            hasher: self.hasher,
            max_keys: self.max_keys,
            shards: self.shards,
            when_full: self.when_full,
            #[cfg(feature = "prometheus")]
            gauge: self.gauge,
        }
    }

    /// Uses another hasher for keys.
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> KeyedLimiterBuilder<A, C, S2> {
        KeyedLimiterBuilder {
            algorithm: self.algorithm,
            quota: self.quota,
            clock: self.clock,
            hasher,
            max_keys: self.max_keys,
            shards: self.shards,
            when_full: self.when_full,
            #[cfg(feature = "prometheus")]
            gauge: self.gauge,
        }
    }

    /// Validates the configuration and builds the limiter.
    pub fn build<K>(self) -> Result<KeyedLimiter<K, A, C, S>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        let resolution = self.clock.resolution();
        let default = self.algorithm.configure(&self.quota, resolution)?;
        let now = self.clock.now_nanos();
        let overflow = match self.when_full {
            WhenFull::Reject => None,
            WhenFull::Overflow(q) => {
                let config = self.algorithm.configure(&q, resolution)?;
                Some((config, self.algorithm.fresh(&config, now)))
            }
        };
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        if let Some(n) = self.shards
            && n > MAX_SHARDS
        {
            return Err(ConfigError::TooLarge("more than 65,536 shards"));
        }
        let shards = self
            .shards
            .unwrap_or(cpus * 4)
            .clamp(1, self.max_keys.min(MAX_SHARDS))
            .next_power_of_two();
        let shards = (0..shards)
            .map(|_| {
                Padded(RwLock::new(Shard {
                    table: HashTable::new(),
                    overrides: HashTable::new(),
                    default,
                    next_evictable_at: 0,
                }))
            })
            .collect();
        Ok(KeyedLimiter {
            shards,
            hasher: self.hasher,
            algorithm: self.algorithm,
            clock: self.clock,
            max_keys: self.max_keys,
            tracked: AtomicUsize::new(0),
            next_global_sweep_at: AtomicU64::new(0),
            overflow,
            #[cfg(feature = "prometheus")]
            gauge: self.gauge,
        })
    }
}

impl<K, A, C, S> KeyedLimiter<K, A, C, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    A: Algorithm,
    C: Clock,
    S: BuildHasher,
{
    /// The clock, read when called: limiters read it after loading a key's state, so the
    /// state never holds a time later than the reading.
    #[inline]
    fn now(&self) -> impl Fn() -> u64 + '_ {
        || self.clock.now_nanos()
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard<K, A>> {
        // Bits 32.. pick the shard; hashbrown uses the low bits and the top 7 inside it.
        &self.shards[((hash >> 32) as usize) & (self.shards.len() - 1)].0
    }

    fn write<'a>(&self, lock: &'a RwLock<Shard<K, A>>) -> RwLockWriteGuard<'a, Shard<K, A>> {
        lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks one unit of cost for `key`.
    #[inline]
    pub fn check<Q>(&self, key: &Q) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.check_n(key, 1)
    }

    /// Checks `cost` for `key`, all or nothing.
    #[inline]
    pub fn check_n<Q>(&self, key: &Q, cost: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.run(key, cost, true)
    }

    /// Gives back `units` that `key` was charged and did not use — a request admitted by an
    /// estimate (say, the tokens a model may answer with) that turned out to need less.
    /// Never more than the key's state still counts: an expired or untracked charge has
    /// nothing to give back, and a key never ends up above its burst.
    ///
    /// ```
    /// use maas_ratelimit::{KeyedLimiter, Quota};
    ///
    /// let tokens = KeyedLimiter::token_bucket(Quota::per_minute(1_000))
    ///     .build::<String>()
    ///     .unwrap();
    /// // Admitted by estimate: a prompt of 100 tokens and up to 400 in the answer.
    /// assert!(tokens.check_n("key-1", 500).is_allowed());
    /// // The answer took 150: the other 250 go back.
    /// tokens.refund("key-1", 250);
    /// assert_eq!(tokens.peek("key-1", 0).remaining(), 750);
    /// ```
    pub fn refund<Q>(&self, key: &Q, units: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = shard.table.find(hash, |e| e.key.borrow() == key) {
            self.algorithm
                .refund(&e.config, &e.state, &self.now(), units);
        }
    }

    /// What `check_n(key, cost)` would answer now, without consuming anything (and without
    /// starting to track an unknown key).
    pub fn peek<Q>(&self, key: &Q, cost: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now_nanos();
        let hash = self.hasher.hash_one(key);
        let shard = self
            .shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = shard.table.find(hash, |e| e.key.borrow() == key) {
            return self
                .algorithm
                .check(&e.config, &e.state, &self.now(), cost, false);
        }
        let config = shard
            .overrides
            .find(hash, |(k, _)| k.borrow() == key)
            .map_or(shard.default, |(_, c)| *c);
        let fresh = self.algorithm.fresh(&config, now);
        self.algorithm.check(&config, &fresh, &|| now, cost, false)
    }

    #[inline]
    fn run<Q>(&self, key: &Q, cost: u64, consume: bool) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let lock = self.shard(hash);
        {
            let shard = lock.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = shard.table.find(hash, |e| e.key.borrow() == key) {
                return self
                    .algorithm
                    .check(&e.config, &e.state, &self.now(), cost, consume);
            }
        }
        self.check_new_key(lock, hash, key, cost, consume)
    }

    /// The slow path: the key is not tracked yet.
    #[cold]
    fn check_new_key<Q>(
        &self,
        lock: &RwLock<Shard<K, A>>,
        hash: u64,
        key: &Q,
        cost: u64,
        consume: bool,
    ) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.clock.now_nanos();
        for attempt in 0..2 {
            let mut shard = self.write(lock);
            if let Some(e) = shard.table.find(hash, |e| e.key.borrow() == key) {
                return self
                    .algorithm
                    .check(&e.config, &e.state, &self.now(), cost, consume);
            }
            if self.reserve_slot() || (self.evict_in(&mut shard, now) > 0 && self.reserve_slot()) {
                return self.insert(&mut shard, hash, key.to_owned(), now, cost, consume);
            }
            drop(shard);
            // This shard has nothing to evict: look in the others, once.
            if attempt == 0 && !self.sweep_all(now) {
                break;
            }
        }
        self.when_full(now, cost, consume)
    }

    fn reserve_slot(&self) -> bool {
        let reserved = self
            .tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok();
        #[cfg(feature = "prometheus")]
        if reserved && let Some(g) = &self.gauge {
            g.inc();
        }
        reserved
    }

    fn insert(
        &self,
        shard: &mut Shard<K, A>,
        hash: u64,
        key: K,
        now: u64,
        cost: u64,
        consume: bool,
    ) -> Decision {
        let (config, has_override) = match shard.overrides.find(hash, |(k, _)| *k == key) {
            Some((_, c)) => (*c, true),
            None => (shard.default, false),
        };
        let state = self.algorithm.fresh(&config, now);
        let decision = self
            .algorithm
            .check(&config, &state, &|| now, cost, consume);
        let idle_at = now.saturating_add(self.algorithm.idle_in(&config, &state, now));
        shard.next_evictable_at = shard.next_evictable_at.min(idle_at);
        self.next_global_sweep_at
            .fetch_min(idle_at, Ordering::AcqRel);
        let hasher = &self.hasher;
        shard.table.insert_unique(
            hash,
            Entry {
                key,
                config,
                has_override,
                state,
            },
            |e| hasher.hash_one(&e.key),
        );
        decision
    }

    /// Evicts the idle entries of one shard; returns how many went.
    fn evict_in(&self, shard: &mut Shard<K, A>, now: u64) -> usize {
        if now < shard.next_evictable_at {
            return 0;
        }
        let before = shard.table.len();
        let mut soonest = u64::MAX;
        let algorithm = &self.algorithm;
        shard.table.retain(|e| {
            let idle_in = algorithm.idle_in(&e.config, &e.state, now);
            if idle_in > 0 {
                soonest = soonest.min(now.saturating_add(idle_in));
            }
            idle_in > 0
        });
        shard.next_evictable_at = if shard.table.is_empty() { 0 } else { soonest };
        let evicted = before - shard.table.len();
        self.tracked.fetch_sub(evicted, Ordering::AcqRel);
        #[cfg(feature = "prometheus")]
        if let Some(g) = &self.gauge {
            g.sub(evicted as i64);
        }
        evicted
    }

    /// Evicts idle entries in every shard, unless a recent sweep showed none can be idle
    /// yet. Returns whether anything was evicted.
    fn sweep_all(&self, now: u64) -> bool {
        if now < self.next_global_sweep_at.load(Ordering::Acquire) {
            return false;
        }
        let mut evicted = 0;
        let mut soonest = u64::MAX;
        for lock in self.shards.iter() {
            let mut shard = self.write(&lock.0);
            evicted += self.evict_in(&mut shard, now);
            if !shard.table.is_empty() {
                soonest = soonest.min(shard.next_evictable_at);
            }
        }
        self.next_global_sweep_at.store(
            if soonest == u64::MAX { 0 } else { soonest },
            Ordering::Release,
        );
        evicted > 0
    }

    fn when_full(&self, now: u64, cost: u64, consume: bool) -> Decision {
        match &self.overflow {
            Some((config, state)) => {
                self.algorithm
                    .check(config, state, &self.now(), cost, consume)
            }
            None => {
                let limit = {
                    let shard = self.shards[0]
                        .0
                        .read()
                        .unwrap_or_else(PoisonError::into_inner);
                    self.algorithm.limit(&shard.default)
                };
                let wait = self
                    .next_global_sweep_at
                    .load(Ordering::Acquire)
                    .saturating_sub(now)
                    .max(1);
                Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after: Duration::from_nanos(wait),
                    retry_after: Some(Duration::from_nanos(wait)),
                }
            }
        }
    }

    /// Gives `key` its own quota (kept when the key is evicted), converting what the key has
    /// already spent so the change hands out no fresh burst.
    pub fn set_key_quota(&self, key: K, quota: Quota) -> Result<(), ConfigError> {
        let config = self.algorithm.configure(&quota, self.clock.resolution())?;
        let hash = self.hasher.hash_one(&key);
        let mut shard = self.write(self.shard(hash));
        let now = self.clock.now_nanos(); // after the lock: no check can be ahead of it
        if let Some(e) = shard.table.find_mut(hash, |e| e.key == key) {
            e.state = self
                .algorithm
                .reconfigure(&e.config, &config, &e.state, now);
            e.config = config;
            e.has_override = true;
        }
        shard.next_evictable_at = 0;
        let hasher = &self.hasher;
        match shard.overrides.find_mut(hash, |(k, _)| *k == key) {
            Some(slot) => slot.1 = config,
            None => {
                shard
                    .overrides
                    .insert_unique(hash, (key, config), |(k, _)| hasher.hash_one(k));
            }
        }
        self.next_global_sweep_at.store(0, Ordering::Release);
        Ok(())
    }

    /// Removes `key`'s own quota: it goes back to the default. Returns whether it had one.
    pub fn clear_key_quota<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.write(self.shard(hash));
        let now = self.clock.now_nanos(); // after the lock: no check can be ahead of it
        let Ok(found) = shard.overrides.find_entry(hash, |(k, _)| k.borrow() == key) else {
            return false;
        };
        found.remove();
        let default = shard.default;
        if let Some(e) = shard.table.find_mut(hash, |e| e.key.borrow() == key) {
            e.state = self
                .algorithm
                .reconfigure(&e.config, &default, &e.state, now);
            e.config = default;
            e.has_override = false;
        }
        shard.next_evictable_at = 0;
        self.next_global_sweep_at.store(0, Ordering::Release);
        true
    }

    /// Changes the default quota of every key without an override of its own, keeping
    /// what each has already spent.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let config = self.algorithm.configure(&quota, self.clock.resolution())?;
        for lock in self.shards.iter() {
            let mut shard = self.write(&lock.0);
            let now = self.clock.now_nanos(); // after the lock: no check can be ahead of it
            let old = shard.default;
            shard.default = config;
            for e in shard.table.iter_mut().filter(|e| !e.has_override) {
                e.state = self.algorithm.reconfigure(&old, &config, &e.state, now);
                e.config = config;
            }
            shard.next_evictable_at = 0;
        }
        self.next_global_sweep_at.store(0, Ordering::Release);
        Ok(())
    }

    /// Evicts every key that is indistinguishable from a fresh one; returns how many.
    /// Not needed for the memory bound (new keys evict on demand), but keeps memory low
    /// after a burst of one-off keys when called periodically.
    pub fn evict_idle(&self) -> usize {
        let now = self.clock.now_nanos();
        self.shards
            .iter()
            .map(|lock| {
                let mut shard = self.write(&lock.0);
                shard.next_evictable_at = 0;
                self.evict_in(&mut shard, now)
            })
            .sum()
    }

    /// Number of keys tracked now.
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Acquire)
    }

    /// The bound on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn bucket(
        quota: Quota,
        max_keys: usize,
        when_full: WhenFull,
    ) -> (KeyedTokenBucket<u64, ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        let l = KeyedLimiter::token_bucket(quota)
            .max_keys(max_keys)
            .when_full(when_full)
            .clock(clock.clone())
            .build()
            .unwrap();
        (l, clock)
    }

    #[test]
    fn keys_are_limited_independently() {
        let (l, _clock) = bucket(Quota::per_second(2), 100, WhenFull::Reject);
        assert!(l.check_n(&1, 2).is_allowed());
        assert!(!l.check(&1).is_allowed());
        assert!(l.check_n(&2, 2).is_allowed());
        assert_eq!(l.tracked_keys(), 2);
    }

    #[test]
    fn refunds_give_back_what_was_charged_and_no_more() {
        fn check<A: Algorithm>(l: KeyedLimiter<u64, A, ManualClock>, name: &str) {
            assert!(l.check_n(&1, 80).is_allowed(), "{name}");
            assert_eq!(l.peek(&1, 0).remaining(), 20, "{name}");
            l.refund(&1, 50);
            assert_eq!(l.peek(&1, 0).remaining(), 70, "{name}");
            assert!(l.check_n(&1, 70).is_allowed(), "{name}");
            assert!(!l.check(&1).is_allowed(), "{name}");
            // More than was charged: the key is full, not above its limit.
            l.refund(&1, 1_000);
            assert_eq!(l.peek(&1, 0).remaining(), 100, "{name}");
            assert!(!l.check_n(&1, 101).is_allowed(), "{name}");
            // A key never seen is not started by a refund.
            l.refund(&2, 5);
            assert_eq!(l.tracked_keys(), 1, "{name}");
        }
        let quota = Quota::per_minute(100);
        let clock = ManualClock::new();
        check(
            KeyedLimiter::token_bucket(quota)
                .clock(clock.clone())
                .build()
                .unwrap(),
            "token bucket",
        );
        check(
            KeyedLimiter::fixed_window(quota)
                .clock(clock.clone())
                .build()
                .unwrap(),
            "fixed window",
        );
        check(
            KeyedLimiter::sliding_window(quota)
                .clock(clock.clone())
                .build()
                .unwrap(),
            "sliding window",
        );
    }

    #[test]
    fn a_sliding_window_refund_takes_from_the_newest_bucket_first() {
        let clock = ManualClock::new();
        let l: KeyedLimiter<u64, SlidingWindowCore, ManualClock> =
            KeyedLimiter::sliding_window(Quota::per_second(100))
                .clock(clock.clone())
                .build()
                .unwrap();
        assert!(l.check_n(&1, 60).is_allowed());
        clock.advance(Duration::from_millis(500));
        assert!(l.check_n(&1, 40).is_allowed());
        // Give back 30 of the later 40: when the first 60 leave, 10 remain counted.
        l.refund(&1, 30);
        assert_eq!(l.peek(&1, 0).remaining(), 30);
        clock.advance(Duration::from_millis(600));
        assert_eq!(l.peek(&1, 0).remaining(), 90);
    }

    #[test]
    fn str_lookups_for_string_keys() {
        let l: KeyedTokenBucket<String, ManualClock> =
            KeyedLimiter::token_bucket(Quota::per_second(1))
                .clock(ManualClock::new())
                .build()
                .unwrap();
        assert!(l.check("tenant-a").is_allowed());
        assert!(!l.check("tenant-a").is_allowed());
        assert!(!l.peek("tenant-a", 1).is_allowed());
        assert!(l.peek("tenant-b", 1).is_allowed());
        assert_eq!(l.tracked_keys(), 1, "peek does not track a key");
    }

    #[test]
    fn idle_keys_are_evicted_first_active_keys_never() {
        let (l, clock) = bucket(Quota::per_second(10), 4, WhenFull::Reject);
        for k in 0..4 {
            assert!(l.check(&k).is_allowed());
        }
        // All four are active (each owes 100 ms of refill): a fifth key is rejected.
        let d = l.check(&99);
        assert!(!d.is_allowed());
        assert_eq!(d.retry_after(), Some(Duration::from_millis(100)));
        // Key 0 keeps its spent token: it is not reset.
        assert!(l.check_n(&0, 9).is_allowed());
        assert!(!l.check(&0).is_allowed());
        // 100 ms later keys 1..4 are full again, so they can go; key 0 is still active.
        clock.advance(Duration::from_millis(100));
        assert!(l.check(&99).is_allowed());
        assert!(!l.check_n(&0, 2).is_allowed(), "active key 0 was reset");
        assert!(l.tracked_keys() <= 4);
    }

    #[test]
    fn overflow_policy_sends_new_keys_to_a_shared_limiter() {
        let (l, _clock) = bucket(
            Quota::per_second(10),
            2,
            WhenFull::Overflow(Quota::per_second(3)),
        );
        assert!(l.check(&1).is_allowed());
        assert!(l.check(&2).is_allowed());
        let passed = (100..110).filter(|k| l.check(k).is_allowed()).count();
        assert_eq!(passed, 3, "new keys share the overflow quota");
        assert_eq!(l.tracked_keys(), 2);
    }

    #[test]
    fn bound_holds_under_a_flood_of_new_keys() {
        let (l, clock) = bucket(Quota::per_second(1000), 1000, WhenFull::Reject);
        for k in 0..50_000u64 {
            l.check(&k);
            if k % 1000 == 0 {
                clock.advance(Duration::from_micros(500));
            }
            assert!(l.tracked_keys() <= 1000);
        }
        let counted: usize = l
            .shards
            .iter()
            .map(|s| s.0.read().unwrap().table.len())
            .sum();
        assert_eq!(counted, l.tracked_keys());
    }

    #[test]
    fn per_key_quota_overrides_survive_eviction_and_change_without_burst() {
        let (l, clock) = bucket(Quota::per_second(1), 100, WhenFull::Reject);
        l.set_key_quota(7, Quota::per_second(5)).unwrap();
        assert!(l.check_n(&7, 5).is_allowed());
        assert!(!l.check(&7).is_allowed());
        clock.advance(Duration::from_secs(2));
        assert_eq!(l.evict_idle(), 1);
        assert!(
            l.check_n(&7, 5).is_allowed(),
            "override kept after eviction"
        );
        // Raising the quota keeps the spent tokens: no fresh burst.
        l.set_key_quota(7, Quota::per_second(50)).unwrap();
        assert!(!l.check(&7).is_allowed());
        assert!(l.clear_key_quota(&7));
        assert!(!l.clear_key_quota(&7));
        clock.advance(Duration::from_secs(1));
        assert!(l.check(&7).is_allowed());
        assert!(!l.check(&7).is_allowed(), "back to the default of 1/s");
    }

    #[test]
    fn set_quota_changes_keys_without_overrides_only() {
        let (l, _clock) = bucket(Quota::per_second(4), 100, WhenFull::Reject);
        l.set_key_quota(1, Quota::per_second(4)).unwrap();
        assert!(l.check_n(&1, 1).is_allowed());
        assert!(l.check_n(&2, 3).is_allowed());
        l.set_quota(Quota::per_second(2)).unwrap();
        assert!(l.check_n(&1, 3).is_allowed(), "override untouched");
        // Key 2 held 1 token: it still holds 1, no fresh burst of 2.
        assert!(l.check(&2).is_allowed());
        assert!(!l.check(&2).is_allowed());
        // A new key gets the new default.
        assert!(l.check_n(&3, 2).is_allowed());
        assert!(!l.check(&3).is_allowed());
    }

    #[test]
    fn sliding_and_fixed_cores_work_per_key() {
        let clock = ManualClock::new();
        let sw: KeyedSlidingWindow<u32, _> = KeyedLimiter::sliding_window(Quota::per_second(3))
            .clock(clock.clone())
            .build()
            .unwrap();
        let fw: KeyedFixedWindow<u32, _> = KeyedLimiter::fixed_window(Quota::per_second(3))
            .clock(clock.clone())
            .build()
            .unwrap();
        assert!(sw.check_n(&1, 3).is_allowed());
        assert!(fw.check_n(&1, 3).is_allowed());
        assert!(!sw.check(&1).is_allowed());
        assert!(!fw.check(&1).is_allowed());
        assert!(sw.check(&2).is_allowed());
        // A sliding window's length can change per key: what was counted stays counted.
        sw.set_key_quota(1, Quota::new(3, Duration::from_secs(5)))
            .unwrap();
        clock.advance(Duration::from_secs(2));
        assert!(!sw.check(&1).is_allowed());
        assert!(fw.check(&1).is_allowed());
    }

    #[test]
    fn invalid_config_fails_at_build() {
        let e = KeyedLimiter::token_bucket(Quota::per_second(1))
            .max_keys(0)
            .build::<u8>();
        assert_eq!(e.err(), Some(ConfigError::ZeroMaxKeys));
        let e = KeyedLimiter::token_bucket(Quota::per_second(0)).build::<u8>();
        assert_eq!(e.err(), Some(ConfigError::ZeroLimit));
        let e = KeyedLimiter::token_bucket(Quota::per_second(1))
            .when_full(WhenFull::Overflow(Quota::per_second(0)))
            .build::<u8>();
        assert_eq!(e.err(), Some(ConfigError::ZeroLimit));
        let e = KeyedLimiter::sliding_window(Quota::per_second(1)).build::<u8>();
        assert!(e.is_ok());
    }
}
