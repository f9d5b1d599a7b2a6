//! Prometheus metrics of [`RedisLimiter`](super::RedisLimiter)s (features `redis` and
//! `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_ratelimit_redis_calls_total` | counter | `limiter`, `outcome` (`ok`, `error`, `timeout`) |
//! | `maas_ratelimit_redis_call_seconds` | histogram: one script call, answered or not | `limiter` |
//! | `maas_ratelimit_redis_policy_answers_total` | counter: checks answered by the outage policy | `limiter` |
//! | `maas_ratelimit_redis_degraded` | gauge: 1 while answering by the outage policy | `limiter` |
//!
//! `limiter` is the limiter's key prefix: one value per configured limit, never a key.
//!
//! ```
//! use maas_ratelimit::redis::RedisMetrics;
//!
//! let registry = prometheus::Registry::new();
//! let metrics = RedisMetrics::register(&registry)?;
//! // RedisLimiter::builder(..).metrics(&metrics)
//! # let _ = metrics;
//! # Ok::<(), prometheus::Error>(())
//! ```

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Latency buckets of one script call, in seconds: 0.1 ms to the 50 ms default deadline and
/// a little beyond.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// The Redis limiter metric families.
#[derive(Debug, Clone)]
pub struct RedisMetrics {
    calls: IntCounterVec,
    latency: HistogramVec,
    policy: IntCounterVec,
    degraded: IntGaugeVec,
}

impl RedisMetrics {
    /// Creates the families and registers them in `registry` (an error if they already are).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = RedisMetrics {
            calls: IntCounterVec::new(
                Opts::new(
                    "maas_ratelimit_redis_calls_total",
                    "Rate-limit script calls to Redis, by outcome.",
                ),
                &["limiter", "outcome"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    "maas_ratelimit_redis_call_seconds",
                    "Time of one rate-limit script call to Redis.",
                )
                .buckets(BUCKETS.to_vec()),
                &["limiter"],
            )?,
            policy: IntCounterVec::new(
                Opts::new(
                    "maas_ratelimit_redis_policy_answers_total",
                    "Checks answered by the outage policy instead of Redis.",
                ),
                &["limiter"],
            )?,
            degraded: IntGaugeVec::new(
                Opts::new(
                    "maas_ratelimit_redis_degraded",
                    "1 while the limiter answers by its outage policy.",
                ),
                &["limiter"],
            )?,
        };
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.policy.clone()))?;
        registry.register(Box::new(m.degraded.clone()))?;
        Ok(m)
    }

    pub(crate) fn handles(&self, limiter: &str) -> Handles {
        let degraded = self.degraded.with_label_values(&[limiter]);
        degraded.set(0);
        Handles {
            ok: self.calls.with_label_values(&[limiter, "ok"]),
            error: self.calls.with_label_values(&[limiter, "error"]),
            timeout: self.calls.with_label_values(&[limiter, "timeout"]),
            latency: self.latency.with_label_values(&[limiter]),
            policy: self.policy.with_label_values(&[limiter]),
            degraded,
        }
    }
}

/// One limiter's resolved handles.
#[derive(Debug)]
pub(crate) struct Handles {
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
    latency: Histogram,
    policy: IntCounter,
    degraded: IntGauge,
}

impl Handles {
    /// A call ended: `ok`, `error` or `timeout` (one of them), after `took`.
    pub(crate) fn call(&self, ok: bool, timeout: bool, took: Duration) {
        match (ok, timeout) {
            (true, _) => self.ok.inc(),
            (false, true) => self.timeout.inc(),
            (false, false) => self.error.inc(),
        }
        self.latency.observe(took.as_secs_f64());
    }

    pub(crate) fn policy_answer(&self) {
        self.policy.inc();
    }

    pub(crate) fn degraded(&self, down: bool) {
        self.degraded.set(i64::from(down));
    }
}
