//! The leases one replica holds, per key: a bounded, sharded map of [`Slot`]s and the clock
//! they run on.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hashbrown::HashMap;

use super::lease::{Sizing, Slot};

const SHARDS: usize = 16;

type Map = HashMap<String, Arc<Slot>, foldhash::fast::RandomState>;

/// How a limiter leases: set at build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseSettings {
    /// How much of a replica's own demand one lease covers, ns.
    pub(crate) horizon_ns: u64,
    /// The longest a lease lives, ns.
    pub(crate) lifetime_ns: u64,
    /// The most keys with a lease state on this replica.
    pub(crate) max_keys: usize,
}

/// One replica's leases.
#[derive(Debug)]
pub(crate) struct Leases {
    shards: Box<[RwLock<Map>]>,
    hasher: foldhash::fast::RandomState,
    base: Instant,
    pub(crate) settings: LeaseSettings,
    /// Replicas seen recently (at least 1): each may hold `max_overshoot / replicas`.
    replicas: AtomicU64,
    keys: AtomicUsize,
}

impl Leases {
    pub(crate) fn new(settings: LeaseSettings) -> Self {
        Leases {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            base: Instant::now(),
            settings,
            replicas: AtomicU64::new(1),
            keys: AtomicUsize::new(0),
        }
    }

    /// Nanoseconds on this replica's lease clock.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The sizing of this replica's next lease of a key whose leases may hold
    /// `max_overshoot` units in all.
    pub(crate) fn sizing(&self, max_overshoot: u64) -> Sizing {
        Sizing {
            horizon_ns: self.settings.horizon_ns,
            cap: max_overshoot / self.replicas.load(Relaxed).max(1),
            lifetime_ns: self.settings.lifetime_ns,
        }
    }

    /// The longest a lease lives.
    pub(crate) fn lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.settings.lifetime_ns)
    }

    /// Replicas seen recently, as last counted (at least 1).
    pub(crate) fn replicas(&self) -> u64 {
        self.replicas.load(Relaxed).max(1)
    }

    /// Records how many replicas were seen recently.
    pub(crate) fn set_replicas(&self, n: u64) {
        self.replicas.store(n.max(1), Relaxed);
    }

    fn shard(&self, key: &str) -> &RwLock<Map> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// Runs `f` on `key`'s slot without creating it.
    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&Arc<Slot>) -> R) -> Option<R> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard.get(key).map(f)
    }

    /// `key`'s slot, created at `now` when missing; `None` when this replica already keeps
    /// the most keys (the check then goes to Redis without a lease).
    pub(crate) fn slot(&self, key: &str, now: u64) -> Option<Arc<Slot>> {
        if let Some(s) = self.with(key, Arc::clone) {
            return Some(s);
        }
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shard.get(key) {
            return Some(s.clone());
        }
        if self.keys.load(Relaxed) >= self.settings.max_keys {
            return None;
        }
        self.keys.fetch_add(1, Relaxed);
        let s = Arc::new(Slot::new(now));
        shard.insert(key.to_owned(), s.clone());
        Some(s)
    }

    /// The slots the upkeep should give back now (see [`Slot::should_return`]).
    pub(crate) fn to_return(&self, now: u64) -> Vec<(String, Arc<Slot>)> {
        let life = self.settings.lifetime_ns;
        self.collect(|s| s.should_return(now, now.saturating_sub(life / 4), life))
    }

    /// Every slot, to give back at shutdown.
    pub(crate) fn all(&self) -> Vec<(String, Arc<Slot>)> {
        self.collect(|_| true)
    }

    fn collect(&self, keep: impl Fn(&Slot) -> bool) -> Vec<(String, Arc<Slot>)> {
        let mut out = Vec::new();
        for shard in &*self.shards {
            let shard = shard.read().unwrap_or_else(|p| p.into_inner());
            out.extend(
                shard
                    .iter()
                    .filter(|(_, s)| keep(s))
                    .map(|(k, s)| (k.clone(), s.clone())),
            );
        }
        out
    }

    /// Forgets the slots unused since `before` that hold nothing and have no call in
    /// flight: memory stays bounded by the keys in use.
    pub(crate) fn evict(&self, before: u64, now: u64) {
        for shard in &*self.shards {
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            let was = shard.len();
            shard.retain(|_, s| s.last_used() >= before || s.is_busy() || s.held(now) > 0);
            self.keys.fetch_sub(was - shard.len(), Relaxed);
        }
    }

    /// Keys with a lease state on this replica.
    pub(crate) fn len(&self) -> usize {
        self.keys.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(max_keys: usize) -> Leases {
        Leases::new(LeaseSettings {
            horizon_ns: 1,
            lifetime_ns: 1,
            max_keys,
        })
    }

    #[test]
    fn slots_are_bounded_and_idle_ones_evicted() {
        let l = leases(2);
        assert!(l.slot("a", 0).is_some());
        assert!(l.slot("b", 0).is_some());
        assert!(
            l.slot("a", 0).is_some(),
            "an existing key is found when full"
        );
        assert!(l.slot("c", 0).is_none(), "full");
        assert_eq!(l.all().len(), 2);
        l.evict(1, 1);
        assert_eq!(l.len(), 0);
        assert!(l.slot("c", 2).is_some());
    }

    #[test]
    fn the_overshoot_is_shared_among_the_replicas_seen() {
        let l = leases(1);
        assert_eq!(l.sizing(30).cap, 30);
        l.set_replicas(3);
        assert_eq!(l.sizing(30).cap, 10);
        l.set_replicas(0);
        assert_eq!(l.sizing(30).cap, 30);
    }
}
