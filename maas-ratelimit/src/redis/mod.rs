//! Limits shared by every replica, kept in Redis (feature `redis`).
//!
//! Each replica of a service that limits in memory lets a key through `N ×` its quota. A
//! [`RedisLimiter`] keeps the state in Redis instead, so every replica answers from one
//! count: one atomic Lua script per check (sent as `EVALSHA`, loaded again after a
//! `NOSCRIPT`), the time read inside the script from the server's `TIME` — replicas with
//! skewed clocks agree — and the key's expiry set in the same script, so no crash between two
//! commands can leave a key that never expires.
//!
//! Keys are `<prefix>:{<key>}`: the braces are a Redis Cluster hash tag (a key's data lives in
//! one slot); braces inside the key are escaped. Each call has a deadline (default 50 ms):
//! past it the check fails with [`RedisLimitError::Timeout`] instead of holding the request.
//!
//! Decisions have the same meaning as the local limiters' ([`Decision`]): the token bucket is
//! the same GCRA as [`TokenBucket`](crate::TokenBucket), the fixed and sliding windows the
//! same as [`FixedWindow`](crate::FixedWindow) and [`SlidingWindow`](crate::SlidingWindow),
//! in whole microseconds.
//!
//! ```no_run
//! use maas_ratelimit::Quota;
//! use maas_ratelimit::redis::{RedisAlgorithm, RedisLimiter};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use maas_ratelimit::redis::OutagePolicy;
//! let limiter = RedisLimiter::builder(
//!     "redis://127.0.0.1:6379",
//!     RedisAlgorithm::TokenBucket(Quota::per_minute(600)),
//!     // While Redis is away, each of 3 replicas allows 200 per minute on its own.
//!     OutagePolicy::LocalShare { replicas: 3 },
//! )
//! .prefix("maas:tenants")
//! .connect()
//! .await?;
//! let d = limiter.check("acme", 1).await;
//! println!("allowed: {}, remaining: {}", d.is_allowed(), d.remaining());
//! # Ok(()) }
//! ```
//!
//! While Redis does not answer, the limiter answers by the [`OutagePolicy`] chosen at build —
//! fail open, fail closed, or a local share of the limit — behind a small breaker: after a
//! failure Redis is left alone for the probe interval, so an outage costs no request a
//! timeout, and the first successful probe returns to Redis.
//!
//! This is the per-request form: one round trip per check. Local token leases (the fast
//! path for hot keys), metrics and the tower layer's use of it are the next steps (issue 13).

#[cfg(feature = "prometheus")]
mod metrics;
mod observer;
mod outage;
mod script;

#[cfg(feature = "prometheus")]
pub use metrics::RedisMetrics;
pub use outage::OutagePolicy;

use std::time::Duration;

use ::redis::aio::ConnectionManager;

use crate::{Decision, KeyedLimiter, Limiter, Quota};
use observer::{CallOutcome, Observer};
use outage::{Outage, Route};

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
}

/// A rate limiter whose state is in Redis, shared by every process that uses the same
/// Redis, prefix and algorithm. Cheap to clone (clones share one reconnecting connection).
#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: std::sync::Arc<::redis::Script>,
    prefix: String,
    deadline: Duration,
    /// Token interval (token bucket), window (fixed window) or bucket (sliding window), µs.
    step_us: u64,
    /// Capacity (token bucket) or limit (windows): the `limit` of its decisions.
    capacity: u64,
    /// Sub-buckets of a sliding window (none for the others).
    buckets: Option<u32>,
    policy: OutagePolicy,
    outage: std::sync::Arc<Outage>,
    /// `LocalShare`'s in-memory limiter.
    local: Option<std::sync::Arc<dyn Limiter<str>>>,
    observer: std::sync::Arc<Observer>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("limit", &self.capacity)
            .field("deadline", &self.deadline)
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
        RedisLimiterBuilder {
            url: url.into(),
            algorithm,
            policy,
            probe_every: Duration::from_millis(250),
            #[cfg(feature = "prometheus")]
            metrics: None,
            prefix: "maas:ratelimit".to_owned(),
            deadline: Duration::from_millis(50),
        }
    }

    /// Checks `cost` units for `key`, consuming them when the request passes. While Redis
    /// is unreachable, slow or failing, the limiter answers by its [`OutagePolicy`]: after a
    /// failed call Redis is not asked again for the probe interval (default 250 ms), so an
    /// outage costs requests nothing; then one call probes it, and a success returns to
    /// Redis at once. Each change is a `tracing` event (target `maas_ratelimit`).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the units consumed (the script may have run); the
    /// request is then counted without passing, which errs on the side of the limit.
    pub async fn check(&self, key: &str, cost: u64) -> Decision {
        self.decide(key, cost, true).await
    }

    /// What [`check`](RedisLimiter::check) would answer, consuming nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn peek(&self, key: &str, cost: u64) -> Decision {
        self.decide(key, cost, false).await
    }

    /// Like [`check`](RedisLimiter::check), but Redis only: an outage is an error (and is
    /// not recorded by the outage breaker).
    ///
    /// # Cancel safety
    ///
    /// As [`check`](RedisLimiter::check).
    pub async fn try_check(&self, key: &str, cost: u64) -> Result<Decision, RedisLimitError> {
        self.run(key, cost, true).await
    }

    /// Like [`peek`](RedisLimiter::peek), but Redis only: an outage is an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn try_peek(&self, key: &str, cost: u64) -> Result<Decision, RedisLimitError> {
        self.run(key, cost, false).await
    }

    /// Whether the limiter answers by its outage policy right now.
    pub fn is_degraded(&self) -> bool {
        self.outage.is_down()
    }

    async fn decide(&self, key: &str, cost: u64, consume: bool) -> Decision {
        let route = self.outage.route(std::time::Instant::now());
        if let Route::Redis { probe } = route {
            match self.run(key, cost, consume).await {
                Ok(d) => {
                    if self.outage.succeeded() {
                        self.observer.degraded(false);
                        tracing::info!(target: "maas_ratelimit", prefix = %self.prefix, "Redis answers again; limiting through it");
                    }
                    return d;
                }
                Err(e) => {
                    if self.outage.failed(std::time::Instant::now()) || probe {
                        self.observer.degraded(true);
                        tracing::warn!(target: "maas_ratelimit", prefix = %self.prefix, error = %e, policy = ?self.policy, "Redis is not answering; limiting by the outage policy");
                    }
                }
            }
        }
        self.observer.policy_answer();
        match &self.local {
            Some(local) if consume => local.check_key(key, cost),
            Some(local) => local.peek_key(key, cost),
            None => outage::fixed_answer(
                self.policy == OutagePolicy::FailOpen,
                self.capacity,
                self.outage.probe_every(),
            ),
        }
    }

    /// The Redis key that holds `key`'s state.
    pub fn redis_key(&self, key: &str) -> String {
        let escaped = key
            .replace('%', "%25")
            .replace('{', "%7B")
            .replace('}', "%7D");
        format!("{}:{{{escaped}}}", self.prefix)
    }

    async fn run(&self, key: &str, cost: u64, consume: bool) -> Result<Decision, RedisLimitError> {
        let mut conn = self.conn.clone();
        let mut call = self.script.prepare_invoke();
        call.key(self.redis_key(key)).arg(self.step_us);
        if let Some(b) = self.buckets {
            call.arg(b);
        }
        call.arg(self.capacity)
            // A cost beyond the capacity can never pass; sent capped, so Lua's doubles
            // never see a number they cannot hold exactly.
            .arg(cost.min(self.capacity.saturating_add(1)))
            .arg(u8::from(consume));
        let start = std::time::Instant::now();
        let answered = tokio::time::timeout(self.deadline, call.invoke_async(&mut conn)).await;
        let (outcome, reply) = match answered {
            Err(_) => (
                CallOutcome::Timeout,
                Err(RedisLimitError::Timeout(self.deadline)),
            ),
            Ok(Err(e)) => (CallOutcome::Error, Err(RedisLimitError::Redis(e))),
            Ok(Ok(r)) => (CallOutcome::Ok, Ok(r)),
        };
        self.observer.call(outcome, start.elapsed());
        let reply: Vec<i64> = reply?;
        script::decision(self.capacity, &reply).ok_or(RedisLimitError::Reply(reply))
    }
}

/// The largest period or interval accepted, in µs: 100 years, far inside a double's exact
/// integers even when added to the server's time.
const MAX_MICROS: u64 = 100 * 365 * 24 * 3600 * 1_000_000;

impl RedisLimiterBuilder {
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

    /// Reports calls, their latency and the outage state into `metrics`, labelled with this
    /// limiter's prefix (feature `prometheus`).
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

    /// `(capacity, step µs, buckets)`: the capacity is the bucket's burst or the window's
    /// limit, the step the token interval, the window or the sub-bucket.
    fn validated(&self) -> Result<(u64, u64, Option<u32>), RedisLimitError> {
        if self.deadline.is_zero() {
            return Err(RedisLimitError::Config(
                "the deadline must be longer than zero",
            ));
        }
        let (quota, token_bucket) = match self.algorithm {
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
        if token_bucket {
            // One token refills in period / limit, rounded up to a whole microsecond.
            let interval = period.div_ceil(quota.limit());
            let capacity = quota.burst().max(1);
            if interval.saturating_mul(capacity) > MAX_MICROS {
                return Err(RedisLimitError::Config(
                    "the burst times the refill interval must stay under 100 years",
                ));
            }
            Ok((capacity, interval, None))
        } else if let RedisAlgorithm::SlidingWindow { buckets, .. } = self.algorithm {
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
            Ok((quota.limit(), bucket, Some(buckets)))
        } else {
            Ok((quota.limit(), period, None))
        }
    }

    /// `LocalShare`'s in-memory limiter: the same algorithm with the limit (and burst)
    /// divided by the replicas, at least 1.
    fn local_share(&self) -> Result<Option<std::sync::Arc<dyn Limiter<str>>>, RedisLimitError> {
        let OutagePolicy::LocalShare { replicas } = self.policy else {
            return Ok(None);
        };
        if replicas == 0 {
            return Err(RedisLimitError::Config(
                "LocalShare needs at least one replica",
            ));
        }
        let share = |q: Quota| {
            let n = u64::from(replicas);
            Quota::new((q.limit() / n).max(1), q.period()).with_burst((q.burst() / n).max(1))
        };
        let bad = |_| RedisLimitError::Config("the local share of the quota is invalid");
        let local: std::sync::Arc<dyn Limiter<str>> = match self.algorithm {
            RedisAlgorithm::TokenBucket(q) => std::sync::Arc::new(
                KeyedLimiter::token_bucket(share(q))
                    .build::<String>()
                    .map_err(bad)?,
            ),
            RedisAlgorithm::FixedWindow(q) => std::sync::Arc::new(
                KeyedLimiter::fixed_window(share(q))
                    .build::<String>()
                    .map_err(bad)?,
            ),
            RedisAlgorithm::SlidingWindow { quota, buckets } => std::sync::Arc::new(
                KeyedLimiter::with_algorithm(
                    crate::algorithm::SlidingWindowCore::with_buckets(buckets),
                    share(quota),
                )
                .build::<String>()
                .map_err(bad)?,
            ),
        };
        Ok(Some(local))
    }

    /// Validates the settings and connects (through the `redis` crate's reconnecting
    /// manager: a dropped connection is re-established in the background).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the connection being opened.
    pub async fn connect(self) -> Result<RedisLimiter, RedisLimitError> {
        let (capacity, step_us, buckets) = self.validated()?;
        let local = self.local_share()?;
        let client = ::redis::Client::open(self.url.as_str())?;
        let conn = tokio::time::timeout(
            self.deadline.max(Duration::from_secs(2)),
            ConnectionManager::new(client),
        )
        .await
        .map_err(|_| RedisLimitError::Timeout(self.deadline.max(Duration::from_secs(2))))??;
        let source = match self.algorithm {
            RedisAlgorithm::TokenBucket(_) => script::TOKEN_BUCKET,
            RedisAlgorithm::FixedWindow(_) => script::FIXED_WINDOW,
            RedisAlgorithm::SlidingWindow { .. } => script::SLIDING_WINDOW,
        };
        let observer = std::sync::Arc::new(Observer {
            #[cfg(feature = "prometheus")]
            handles: self.metrics.as_ref().map(|m| m.handles(&self.prefix)),
        });
        Ok(RedisLimiter {
            conn,
            script: std::sync::Arc::new(::redis::Script::new(source)),
            prefix: self.prefix,
            deadline: self.deadline,
            step_us,
            capacity,
            buckets,
            policy: self.policy,
            outage: std::sync::Arc::new(Outage::new(
                self.probe_every.max(Duration::from_millis(1)),
            )),
            local,
            observer,
        })
    }
}
