//! Prometheus metrics of outbox relays (feature `prometheus`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `maas_outbox_backlog` | gauge: records not yet published | `outbox` (the table) |
//! | `maas_outbox_oldest_seconds` | gauge: age of the oldest unpublished record | `outbox` |
//! | `maas_outbox_published_total` | counter: records acknowledged by the broker | `outbox` |
//!
//! The gauges are set by the relay that publishes, once a second.

use prometheus::{Gauge, GaugeVec};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The outbox metric families.
#[derive(Debug, Clone)]
pub struct OutboxMetrics {
    backlog: IntGaugeVec,
    oldest: GaugeVec,
    published: IntCounterVec,
}

impl OutboxMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = OutboxMetrics {
            backlog: IntGaugeVec::new(
                Opts::new("maas_outbox_backlog", "Outbox records not yet published."),
                &["outbox"],
            )?,
            oldest: GaugeVec::new(
                Opts::new(
                    "maas_outbox_oldest_seconds",
                    "Age of the oldest unpublished outbox record, in seconds.",
                ),
                &["outbox"],
            )?,
            published: IntCounterVec::new(
                Opts::new(
                    "maas_outbox_published_total",
                    "Outbox records the broker acknowledged.",
                ),
                &["outbox"],
            )?,
        };
        registry.register(Box::new(m.backlog.clone()))?;
        registry.register(Box::new(m.oldest.clone()))?;
        registry.register(Box::new(m.published.clone()))?;
        Ok(m)
    }

    pub(crate) fn handles(&self, outbox: &str) -> Handles {
        Handles {
            backlog: self.backlog.with_label_values(&[outbox]),
            oldest: self.oldest.with_label_values(&[outbox]),
            published: self.published.with_label_values(&[outbox]),
        }
    }
}

/// One outbox's resolved series.
#[derive(Debug)]
pub(crate) struct Handles {
    backlog: IntGauge,
    oldest: Gauge,
    published: IntCounter,
}

impl Handles {
    pub(crate) fn backlog(&self, rows: i64, oldest_seconds: f64) {
        self.backlog.set(rows);
        self.oldest.set(oldest_seconds);
    }

    pub(crate) fn published(&self, n: u64) {
        self.published.inc_by(n);
    }
}
