//! What the PostgreSQL and SQLite relays share: the record as published, one round of
//! sending in order and collecting what the broker acknowledged, the pause between rounds,
//! and where a relay reports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::{EVENT_ID, Stats, encoding};
use crate::{Producer, QueueError, Record};

/// A stored row as the record to publish: headers decoded, its event id appended.
pub(crate) fn record(
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: &[u8],
    event: String,
) -> Record {
    let mut headers = encoding::decode(headers).unwrap_or_default();
    headers.push((EVENT_ID.to_owned(), Bytes::from(event)));
    Record {
        topic,
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        headers,
        partition: None,
        timestamp: None,
    }
}

/// Sends `rows` (id, record) in id order — the producer keeps the order of the calls, so per
/// key too — and waits for every acknowledgement. Returns the ids the broker acknowledged and
/// the last error: the others stay in the table and go out again next round.
pub(crate) async fn publish(
    producer: &Producer,
    rows: Vec<(i64, Record)>,
) -> (Vec<i64>, Option<QueueError>) {
    let sends: Vec<_> = rows
        .into_iter()
        .map(|(id, r)| (id, producer.send(r)))
        .collect();
    let mut acknowledged = Vec::with_capacity(sends.len());
    let mut failed = None;
    for (id, send) in sends {
        match send.await {
            Ok(_) => acknowledged.push(id),
            Err(e) => failed = Some(e),
        }
    }
    (acknowledged, failed)
}

/// Waits for the poll interval, a wake-up (`wake`) or the stop, whichever comes first.
pub(crate) async fn pause(
    every: Duration,
    wake: Option<&Notify>,
    stopped: &mut watch::Receiver<bool>,
) {
    let woken = async {
        match wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = woken => {}
        _ = tokio::time::sleep(every) => {}
        _ = stopped.changed() => {}
    }
}

/// Where a relay reports: its [`Stats`], and its metrics with the `prometheus` feature — so
/// the relays carry no `cfg`. The backlog is worth a query at most once a second, and only
/// when someone reads it.
#[derive(Debug)]
pub(crate) struct Report {
    #[cfg(feature = "prometheus")]
    handles: Option<super::metrics::Handles>,
    last_backlog: Option<Instant>,
}

impl Report {
    /// Reports `table` into `metrics`.
    pub(crate) fn new(metrics: &Metrics, table: &str) -> Self {
        #[cfg(not(feature = "prometheus"))]
        let _ = (metrics, table);
        Report {
            #[cfg(feature = "prometheus")]
            handles: metrics.as_ref().map(|m| m.handles(table)),
            last_backlog: None,
        }
    }

    /// Whether to measure the backlog now (and if so, counts this as the measurement).
    pub(crate) fn backlog_due(&mut self) -> bool {
        #[cfg(feature = "prometheus")]
        let wanted = self.handles.is_some();
        #[cfg(not(feature = "prometheus"))]
        let wanted = false;
        let due = wanted
            && self
                .last_backlog
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            self.last_backlog = Some(Instant::now());
        }
        due
    }

    /// The backlog measured: `rows` unpublished, the oldest `oldest_seconds` old.
    pub(crate) fn backlog(&self, rows: i64, oldest_seconds: f64) {
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles {
            h.backlog(rows, oldest_seconds);
        }
        let _ = (rows, oldest_seconds);
    }

    /// `n` records acknowledged and removed from the table.
    pub(crate) fn published(&self, stats: &Stats, n: u64) {
        stats.add_published(n);
        #[cfg(feature = "prometheus")]
        if let Some(h) = &self.handles
            && n > 0
        {
            h.published(n);
        }
    }
}

/// The metrics a relay builder was given (always none without `prometheus`).
#[cfg(feature = "prometheus")]
pub(crate) type Metrics = Option<super::OutboxMetrics>;
/// The metrics a relay builder was given (always none without `prometheus`).
#[cfg(not(feature = "prometheus"))]
pub(crate) type Metrics = ();
