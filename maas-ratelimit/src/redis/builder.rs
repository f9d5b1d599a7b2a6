//! [`RedisLimiterBuilder`]: the settings of a Redis limiter, checked before it connects.

use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;

#[cfg(feature = "prometheus")]
use super::RedisMetrics;
use super::call::{Caller, heartbeat_script};
use super::leases::{LeaseSettings, Leases};
use super::observer::Observer;
use super::outage::{Outage, OutagePolicy, Replicas};
use super::script::{self, Kind};
use super::share::LocalShare;
use super::{Inner, Params, RedisAlgorithm, RedisLimitError, RedisLimiter};

/// Configures a [`RedisLimiter`].
#[derive(Debug, Clone)]
pub struct RedisLimiterBuilder {
    url: String,
    algorithm: RedisAlgorithm,
    policy: OutagePolicy,
    probe_every: Duration,
    #[cfg(feature = "prometheus")]
    metrics: Option<RedisMetrics>,
    prefix: String,
    deadline: Duration,
    overshoot_percent: f64,
    lease_lifetime: Duration,
    lease_horizon: Duration,
    max_lease_keys: usize,
}

/// The largest period or interval accepted, in µs: 100 years, far inside a double's exact
/// integers even when added to the server's time.
const MAX_MICROS: u64 = 100 * 365 * 24 * 3600 * 1_000_000;

impl RedisLimiterBuilder {
    pub(super) fn new(url: String, algorithm: RedisAlgorithm, policy: OutagePolicy) -> Self {
        RedisLimiterBuilder {
            url,
            algorithm,
            policy,
            probe_every: Duration::from_millis(250),
            #[cfg(feature = "prometheus")]
            metrics: None,
            prefix: "maas:ratelimit".to_owned(),
            deadline: Duration::from_millis(50),
            overshoot_percent: 1.0,
            lease_lifetime: Duration::from_secs(1),
            lease_horizon: Duration::from_millis(100),
            max_lease_keys: 100_000,
        }
    }

    /// The prefix of every key (default `maas:ratelimit`): one namespace per limit, so two
    /// limits never share state.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long Redis is left alone after a failed call before one call probes it again
    /// (default 250 ms; at least 1 ms).
    pub fn probe_every(mut self, every: Duration) -> Self {
        self.probe_every = every;
        self
    }

    /// Reports calls, their latency, leases and the outage state into `metrics`, labelled
    /// with this limiter's prefix (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &RedisMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The longest a check waits for Redis (default 50 ms).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The most units outstanding in all replicas' leases of one key, as a percentage of
    /// its limit (default 1; between 0 and 100). It is the bound on the error of the limit
    /// both ways (see the [module documentation](super)). A key whose share is under 2
    /// units (under 200 per window at 1 %) takes no leases.
    pub fn max_overshoot_percent(mut self, percent: f64) -> Self {
        self.overshoot_percent = percent;
        self
    }

    /// One script call per check, no leases: exact, and bounded by Redis's throughput.
    /// The same as `max_overshoot_percent(0.0)`.
    pub fn per_request(self) -> Self {
        self.max_overshoot_percent(0.0)
    }

    /// The longest a lease lives (default 1 s, at most the quota's period): the time a
    /// crashed replica's share stays out of use.
    pub fn lease_lifetime(mut self, lifetime: Duration) -> Self {
        self.lease_lifetime = lifetime;
        self
    }

    /// How much of this replica's own observed demand one lease covers (default 100 ms):
    /// longer leases mean fewer calls, up to the overshoot share.
    pub fn lease_horizon(mut self, horizon: Duration) -> Self {
        self.lease_horizon = horizon;
        self
    }

    /// The most keys this replica keeps lease state for (default 100,000); beyond it, new
    /// keys are checked in Redis one call at a time.
    pub fn max_lease_keys(mut self, keys: usize) -> Self {
        self.max_lease_keys = keys;
        self
    }

    /// The quota's script parameters.
    fn params(&self) -> Result<Params, RedisLimitError> {
        if self.deadline.is_zero() {
            return Err(RedisLimitError::Config(
                "the deadline must be longer than zero",
            ));
        }
        if !(0.0..=100.0).contains(&self.overshoot_percent) {
            return Err(RedisLimitError::Config(
                "the maximum overshoot must be between 0 and 100 percent",
            ));
        }
        params_of(self.algorithm, self.overshoot_percent)
    }

    /// The lease settings, or `None` when the limiter runs one call per check.
    fn lease_settings(&self, p: &Params) -> Result<Option<LeaseSettings>, RedisLimitError> {
        if p.max_overshoot == 0 {
            return Ok(None);
        }
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let period = match self.algorithm {
            RedisAlgorithm::TokenBucket(q)
            | RedisAlgorithm::FixedWindow(q)
            | RedisAlgorithm::SlidingWindow { quota: q, .. } => q.period(),
        };
        let lifetime = self.lease_lifetime.min(period);
        if lifetime < Duration::from_millis(1) || self.lease_horizon.is_zero() {
            return Err(RedisLimitError::Config(
                "a lease must live at least 1 ms and cover some demand",
            ));
        }
        if self.max_lease_keys == 0 {
            return Err(RedisLimitError::Config(
                "leases need room for at least one key",
            ));
        }
        Ok(Some(LeaseSettings {
            horizon_ns: nanos(self.lease_horizon),
            lifetime_ns: nanos(lifetime),
            max_keys: self.max_lease_keys,
        }))
    }

    /// `LocalShare`'s in-memory limiter.
    fn local_share(&self) -> Result<Option<LocalShare>, RedisLimitError> {
        let OutagePolicy::LocalShare { replicas } = self.policy else {
            return Ok(None);
        };
        let (n, seen) = match replicas {
            Replicas::Fixed(0) => {
                return Err(RedisLimitError::Config(
                    "LocalShare needs at least one replica",
                ));
            }
            Replicas::Fixed(n) => (u64::from(n), false),
            Replicas::Seen => (1, true),
        };
        LocalShare::new(self.algorithm, n, seen)
            .map(Some)
            .map_err(|_| RedisLimitError::Config("the local share of the quota is invalid"))
    }

    /// Validates the settings and connects (through the `redis` crate's reconnecting
    /// manager: a dropped connection is re-established in the background). A limiter that
    /// leases, or shares by the replicas seen, announces itself at once and then every
    /// second from a background task, which ends when the last clone is dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being opened.
    pub async fn connect(self) -> Result<RedisLimiter, RedisLimitError> {
        let params = self.params()?;
        let lease_settings = self.lease_settings(&params)?;
        let local = self.local_share()?;
        let client = ::redis::Client::open(self.url.as_str())?;
        let connect_within = self.deadline.max(Duration::from_secs(2));
        let conn = tokio::time::timeout(connect_within, ConnectionManager::new(client))
            .await
            .map_err(|_| RedisLimitError::Timeout(connect_within))??;
        let kind = match self.algorithm {
            RedisAlgorithm::TokenBucket(_) => Kind::TokenBucket,
            RedisAlgorithm::FixedWindow(_) => Kind::FixedWindow,
            RedisAlgorithm::SlidingWindow { .. } => Kind::SlidingWindow,
        };
        let observer = Observer {
            #[cfg(feature = "prometheus")]
            handles: self.metrics.as_ref().map(|m| m.handles(&self.prefix)),
        };
        let replica = replica_id();
        let announces =
            lease_settings.is_some() || local.as_ref().is_some_and(LocalShare::follows_seen);
        let limiter = RedisLimiter {
            inner: Arc::new(Inner {
                caller: Caller {
                    conn,
                    per_request: Script::new(&script::per_request(kind)),
                    lease: Script::new(&script::lease(kind)),
                    refund: Script::new(&script::refund(kind)),
                    heartbeat: heartbeat_script(),
                    deadline: self.deadline,
                    observer,
                },
                prefix: self.prefix,
                algorithm: self.algorithm,
                overshoot_percent: self.overshoot_percent,
                params,
                overrides: Default::default(),
                has_overrides: Default::default(),
                policy: self.policy,
                outage: Outage::new(self.probe_every.max(Duration::from_millis(1))),
                local,
                leases: lease_settings.map(Leases::new),
                replica,
            }),
        };
        if announces {
            limiter.heartbeat().await;
            limiter.spawn_background();
        }
        Ok(limiter)
    }
}

/// The script parameters of `algorithm`'s quota, with leases of at most `overshoot_percent`
/// of its limit.
pub(super) fn params_of(
    algorithm: RedisAlgorithm,
    overshoot_percent: f64,
) -> Result<Params, RedisLimitError> {
    let (quota, token_bucket) = match algorithm {
        RedisAlgorithm::TokenBucket(q) => (q, true),
        RedisAlgorithm::FixedWindow(q) | RedisAlgorithm::SlidingWindow { quota: q, .. } => {
            (q, false)
        }
    };
    if quota.limit() == 0 {
        return Err(RedisLimitError::Config("the limit must be at least 1"));
    }
    let period = u64::try_from(quota.period().as_micros()).unwrap_or(u64::MAX);
    if period == 0 || period > MAX_MICROS {
        return Err(RedisLimitError::Config(
            "the period must be between 1 µs and 100 years",
        ));
    }
    // Whole units, rounded down: never more than the percentage.
    let max_overshoot = (quota.limit() as f64 * overshoot_percent / 100.0) as u64;
    let max_overshoot = if max_overshoot < 2 { 0 } else { max_overshoot };
    let (step_us, capacity, buckets) = if token_bucket {
        // One token refills in period / limit, rounded up to a whole microsecond.
        let interval = period.div_ceil(quota.limit());
        let capacity = quota.burst().max(1);
        if interval.saturating_mul(capacity) > MAX_MICROS {
            return Err(RedisLimitError::Config(
                "the burst times the refill interval must stay under 100 years",
            ));
        }
        (interval, capacity, None)
    } else if let RedisAlgorithm::SlidingWindow { buckets, .. } = algorithm {
        if buckets == 0 {
            return Err(RedisLimitError::Config(
                "a sliding window needs at least one bucket",
            ));
        }
        let bucket = period / u64::from(buckets);
        if bucket == 0 {
            return Err(RedisLimitError::Config(
                "a sliding window's bucket must be at least 1 µs",
            ));
        }
        (bucket, quota.limit(), Some(buckets))
    } else {
        (period, quota.limit(), None)
    };
    Ok(Params {
        step_us,
        capacity,
        buckets,
        max_overshoot,
    })
}

/// A replica id unique across processes and limiters: random bits and the process id.
fn replica_id() -> String {
    use std::hash::BuildHasher;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let bits = foldhash::fast::RandomState::default().hash_one(seed);
    format!("{bits:016x}-{}", std::process::id())
}
