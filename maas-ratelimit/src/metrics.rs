//! Prometheus metrics (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_ratelimit_allowed_total` | counter | `limiter` |
//! | `maas_ratelimit_rejected_total` | counter | `limiter` |
//! | `maas_ratelimit_tracked_keys` | gauge | `limiter` |
//!
//! Register once into the registry your `/metrics` endpoint serves, then name each layer
//! (and keyed limiter) that should report:
//!
//! ```
//! use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer};
//! use maas_ratelimit::metrics::RateLimitMetrics;
//!
//! let registry = prometheus::Registry::new();
//! let metrics = RateLimitMetrics::register(&registry)?;
//! let limiter = KeyedLimiter::token_bucket(Quota::per_second(5))
//!     .metrics(&metrics, "api")
//!     .build::<String>()?;
//! let layer = RateLimitLayer::builder(limiter)
//!     .key(|req: &String| req.clone())
//!     .metrics(&metrics, "api")
//!     .build();
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Counting costs one relaxed atomic add per request, and nothing for layers without metrics.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The rate-limit metric families, registered in a `prometheus::Registry`.
#[derive(Debug, Clone)]
pub struct RateLimitMetrics {
    allowed: IntCounterVec,
    rejected: IntCounterVec,
    tracked: IntGaugeVec,
}

/// The per-layer counter handles.
#[derive(Debug)]
pub(crate) struct Counters {
    allowed: IntCounter,
    rejected: IntCounter,
}

impl Counters {
    #[inline]
    pub(crate) fn allowed(&self) {
        self.allowed.inc();
    }

    #[inline]
    pub(crate) fn rejected(&self) {
        self.rejected.inc();
    }
}

impl RateLimitMetrics {
    /// Creates the metric families and registers them in `registry`. Fails if they are
    /// already registered there.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let label = &["limiter"];
        let m = RateLimitMetrics {
            allowed: IntCounterVec::new(
                Opts::new(
                    "maas_ratelimit_allowed_total",
                    "Requests the rate limiter let through.",
                ),
                label,
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "maas_ratelimit_rejected_total",
                    "Requests the rate limiter rejected.",
                ),
                label,
            )?,
            tracked: IntGaugeVec::new(
                Opts::new(
                    "maas_ratelimit_tracked_keys",
                    "Keys a keyed rate limiter currently tracks.",
                ),
                label,
            )?,
        };
        registry.register(Box::new(m.allowed.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.tracked.clone()))?;
        Ok(m)
    }

    pub(crate) fn counters(&self, name: &str) -> std::sync::Arc<Counters> {
        std::sync::Arc::new(Counters {
            allowed: self.allowed.with_label_values(&[name]),
            rejected: self.rejected.with_label_values(&[name]),
        })
    }

    pub(crate) fn tracked_gauge(&self, name: &str) -> IntGauge {
        self.tracked.with_label_values(&[name])
    }
}
