//! `LocalShare`'s in-memory limiter: the same algorithm with the quota divided by the
//! replicas, resized when the number of replicas seen changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::RedisAlgorithm;
use crate::algorithm::SlidingWindowCore;
use crate::{ConfigError, KeyedLimiter, Limiter, Quota};

type Requota = Box<dyn Fn(Quota) -> Result<(), ConfigError> + Send + Sync>;

/// One replica's share of a limit, in memory.
pub(crate) struct LocalShare {
    pub(crate) limiter: Arc<dyn Limiter<str>>,
    requota: Requota,
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
                (l as Arc<dyn Limiter<str>>, requota, $quota)
            }};
        }
        let (limiter, requota, quota) = match algorithm {
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
            quota,
            burst: matches!(algorithm, RedisAlgorithm::TokenBucket(_)),
            replicas: AtomicU64::new(replicas.max(1)),
            seen,
        })
    }

    /// Resizes the share for `n` replicas (keeping what each key has spent).
    pub(crate) fn resize(&self, n: u64) {
        let n = n.max(1);
        if self.replicas.swap(n, Relaxed) != n {
            // The quota was valid divided once; divided again it stays valid.
            if (self.requota)(divided(self.quota, n, self.burst)).is_err() {
                tracing::warn!(target: "maas_ratelimit", replicas = n, "the local share could not be resized");
            }
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
