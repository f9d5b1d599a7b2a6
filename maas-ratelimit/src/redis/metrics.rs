//! Prometheus metrics of [`RedisLimiter`](super::RedisLimiter)s (features `redis` and
//! `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_ratelimit_redis_calls_total` | counter | `limiter`, `outcome` (`ok`, `error`, `timeout`) |
//! | `maas_ratelimit_redis_call_seconds` | histogram: one script call, answered or not | `limiter` |
//! | `maas_ratelimit_redis_policy_answers_total` | counter: checks answered by the outage policy | `limiter` |
//! | `maas_ratelimit_redis_degraded` | gauge: 1 while answering by the outage policy | `limiter` |
//! | `maas_ratelimit_redis_lease_answers_total` | counter: checks answered from a lease, without a call | `limiter` |
//! | `maas_ratelimit_redis_lease_refills_total` | counter: calls that took or topped up a lease | `limiter` |
//! | `maas_ratelimit_redis_leased_units_total` | counter: units granted to leases | `limiter` |
//! | `maas_ratelimit_redis_lease_returns_total` | counter: leases given back (idle key, shutdown) | `limiter` |
//! | `maas_ratelimit_redis_returned_units_total` | counter: units Redis took back from leases | `limiter` |
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
    lease_answers: IntCounterVec,
    refills: IntCounterVec,
    leased: IntCounterVec,
    returns: IntCounterVec,
    returned: IntCounterVec,
}

fn counter(name: &str, help: &str) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help), &["limiter"])
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
            lease_answers: counter(
                "maas_ratelimit_redis_lease_answers_total",
                "Checks answered from a local lease, without a call to Redis.",
            )?,
            refills: counter(
                "maas_ratelimit_redis_lease_refills_total",
                "Calls to Redis that took or topped up a lease.",
            )?,
            leased: counter(
                "maas_ratelimit_redis_leased_units_total",
                "Units granted to local leases.",
            )?,
            returns: counter(
                "maas_ratelimit_redis_lease_returns_total",
                "Leases given back to Redis (idle key or shutdown).",
            )?,
            returned: counter(
                "maas_ratelimit_redis_returned_units_total",
                "Units Redis took back from leases given back.",
            )?,
        };
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.policy.clone()))?;
        registry.register(Box::new(m.degraded.clone()))?;
        for c in [
            &m.lease_answers,
            &m.refills,
            &m.leased,
            &m.returns,
            &m.returned,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
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
            lease_answers: self.lease_answers.with_label_values(&[limiter]),
            refills: self.refills.with_label_values(&[limiter]),
            leased: self.leased.with_label_values(&[limiter]),
            returns: self.returns.with_label_values(&[limiter]),
            returned: self.returned.with_label_values(&[limiter]),
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
    lease_answers: IntCounter,
    refills: IntCounter,
    leased: IntCounter,
    returns: IntCounter,
    returned: IntCounter,
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

    pub(crate) fn lease_answer(&self) {
        self.lease_answers.inc();
    }

    pub(crate) fn refill(&self, granted: u64) {
        self.refills.inc();
        self.leased.inc_by(granted);
    }

    pub(crate) fn returned(&self, units: u64) {
        self.returns.inc();
        self.returned.inc_by(units);
    }

    pub(crate) fn degraded(&self, down: bool) {
        self.degraded.set(i64::from(down));
    }
}
