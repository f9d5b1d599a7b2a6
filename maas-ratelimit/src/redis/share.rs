//! `LocalShare`'s in-memory limiter: the same algorithm with the quota divided by the
//! replicas, resized when the number of replicas seen changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::RedisAlgorithm;
use crate::algorithm::SlidingWindowCore;
use crate::{ConfigError, KeyedLimiter, Limiter, Quota};

type Requota = Box<dyn Fn(Quota) -> Result<(), ConfigError> + Send + Sync>;
/// Sets (`Some`) or clears a key's own quota.
type KeyRequota = Box<dyn Fn(&str, Option<Quota>) -> Result<(), ConfigError> + Send + Sync>;
/// Gives units back to a key.
type Refund = Box<dyn Fn(&str, u64) + Send + Sync>;

/// One replica's share of a limit, in memory.
pub(crate) struct LocalShare {
    pub(crate) limiter: Arc<dyn Limiter<str>>,
    requota: Requota,
    key_requota: KeyRequota,
    refund: Refund,
    /// Keys with their own (undivided) quota.
    overrides: std::sync::Mutex<Vec<(String, Quota)>>,
    quota: Quota,
    /// Whether the quota's burst is divided too (the token bucket).
    burst: bool,
    replicas: AtomicU64,
    /// Sized by the replicas seen ([`Replicas::Seen`](super::Replicas::Seen)).
    seen: bool,
}

impl std::fmt::Debug for LocalShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalShare")
            .field("quota", &self.quota)
            .field("replicas", &self.replicas.load(Relaxed))
            .finish_non_exhaustive()
    }
}

/// `quota` divided by `n` replicas: the limit and, for a bucket (`burst`), the burst, each
/// at least 1.
fn divided(quota: Quota, n: u64, burst: bool) -> Quota {
    let n = n.max(1);
    let q = Quota::new((quota.limit() / n).max(1), quota.period());
    if burst {
        q.with_burst((quota.burst() / n).max(1))
    } else {
        q
    }
}

impl LocalShare {
    /// The share of `algorithm`'s quota for one of `replicas`.
    /// `seen`: resized by the replicas seen.
    pub(crate) fn new(
        algorithm: RedisAlgorithm,
        replicas: u64,
        seen: bool,
    ) -> Result<Self, ConfigError> {
        macro_rules! keyed {
            ($builder:expr, $quota:expr) => {{
                let l = Arc::new($builder.build::<String>()?);
                let set = l.clone();
                let requota: Requota = Box::new(move |q| set.set_quota(q));
                let set = l.clone();
                let key_requota: KeyRequota = Box::new(move |k, q| match q {
                    Some(q) => set.set_key_quota(k.to_owned(), q),
                    None => {
                        set.clear_key_quota(k);
                        Ok(())
                    }
                });
                let set = l.clone();
                let refund: Refund = Box::new(move |k, n| set.refund(k, n));
                (
                    l as Arc<dyn Limiter<str>>,
                    requota,
                    key_requota,
                    refund,
                    $quota,
                )
            }};
        }
        let (limiter, requota, key_requota, refund, quota) = match algorithm {
            RedisAlgorithm::TokenBucket(q) => {
                keyed!(KeyedLimiter::token_bucket(divided(q, replicas, true)), q)
            }
            RedisAlgorithm::FixedWindow(q) => {
                keyed!(KeyedLimiter::fixed_window(divided(q, replicas, false)), q)
            }
            RedisAlgorithm::SlidingWindow { quota, buckets } => keyed!(
                KeyedLimiter::with_algorithm(
                    SlidingWindowCore::with_buckets(buckets),
                    divided(quota, replicas, false)
                ),
                quota
            ),
        };
        Ok(LocalShare {
            limiter,
            requota,
            key_requota,
            refund,
            overrides: std::sync::Mutex::default(),
            quota,
            burst: matches!(algorithm, RedisAlgorithm::TokenBucket(_)),
            replicas: AtomicU64::new(replicas.max(1)),
            seen,
        })
    }

    /// Gives `units` back to `key`'s share.
    pub(crate) fn refund(&self, key: &str, units: u64) {
        (self.refund)(key, units);
    }

    /// Resizes the share for `n` replicas (keeping what each key has spent).
    pub(crate) fn resize(&self, n: u64) {
        let n = n.max(1);
        if self.replicas.swap(n, Relaxed) != n {
            // The quota was valid divided once; divided again it stays valid.
            let mut ok = (self.requota)(divided(self.quota, n, self.burst)).is_ok();
            for (k, q) in self
                .overrides
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                ok &= (self.key_requota)(k, Some(divided(*q, n, self.burst))).is_ok();
            }
            if !ok {
                tracing::warn!(target: "maas_ratelimit", replicas = n, "the local share could not be resized");
            }
        }
    }

    /// Gives `key` its own quota (`Some`, divided like the default) or takes it away.
    pub(crate) fn set_key(&self, key: &str, quota: Option<Quota>) {
        let mut o = self.overrides.lock().unwrap_or_else(|p| p.into_inner());
        o.retain(|(k, _)| k != key);
        let n = self.replicas();
        let share = quota.map(|q| divided(q, n, self.burst));
        if let Some(q) = quota {
            o.push((key.to_owned(), q));
        }
        if (self.key_requota)(key, share).is_err() {
            tracing::warn!(target: "maas_ratelimit", "a key's local share could not be set");
        }
    }

    /// Whether the share follows the replicas seen.
    pub(crate) fn follows_seen(&self) -> bool {
        self.seen
    }

    /// The replicas the share is sized for.
    pub(crate) fn replicas(&self) -> u64 {
        self.replicas.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_share_follows_the_replicas() {
        let q = Quota::new(90, Duration::from_secs(3600));
        let s = LocalShare::new(RedisAlgorithm::FixedWindow(q), 3, true).unwrap();
        let passed = (0..100).filter(|_| s.limiter.check_key("k", 1).is_allowed());
        assert_eq!(passed.count(), 30);
        let s = LocalShare::new(RedisAlgorithm::FixedWindow(q), 3, true).unwrap();
        s.resize(9);
        let passed = (0..100).filter(|_| s.limiter.check_key("k", 1).is_allowed());
        assert_eq!(passed.count(), 10);
        assert_eq!(s.replicas(), 9);
    }
}
