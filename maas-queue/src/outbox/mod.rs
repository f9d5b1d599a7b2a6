//! The transactional outbox: a record is written into the caller's own database
//! transaction, with the business data it belongs to, and a relay publishes it through the
//! [`Producer`](crate::Producer) once that transaction has committed — so a message is sent
//! if and only if the data it announces was committed, even when the process dies between
//! the two.
//!
//! * [`pg`] (feature `postgres`): `enqueue` into a `tokio_postgres` transaction; a
//!   [`PgRelay`](pg::PgRelay) per replica, one of which publishes at a time (an advisory
//!   lock), reading only rows every transaction before them has finished with — a row whose
//!   transaction commits late is never skipped (see [`pg`]).
//!
//! * [`sqlite`] (feature `sqlite`): the same on one SQLite file, whose single writer leaves
//!   no late commit to skip; relays of one file share a lease row.
//!
//! Delivery is at least once: a relay that dies after the broker acknowledged a record but
//! before deleting its row publishes it again. Every record carries a unique event id in the
//! `maas-event-id` header; [`Deduplicator`] drops repeats on the consuming side. The
//! `traceparent` of the transaction that enqueued a record is stored with it and sent as its
//! header, so the consumer continues that trace.

mod dedup;
#[cfg(any(feature = "postgres", feature = "sqlite", test))]
mod encoding;
#[cfg(feature = "prometheus")]
mod metrics;
#[cfg(feature = "postgres")]
pub mod pg;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod relay;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use dedup::Deduplicator;
#[cfg(feature = "prometheus")]
pub use metrics::OutboxMetrics;

/// The header that carries a record's event id.
pub const EVENT_ID: &str = "maas-event-id";

/// A new event id: 128 random bits, as 32 hexadecimal digits.
pub fn new_event_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The event id of a consumed message, if it came through an outbox.
pub fn event_id(message: &crate::Message) -> Option<&str> {
    message
        .headers
        .iter()
        .find(|(n, _)| n == EVENT_ID)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A table name that is a plain SQL identifier (letters, digits, `_`; not starting with a
/// digit; at most 63 bytes), or `None`.
#[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) fn checked_table(table: &str) -> Option<&str> {
    let ok = !table.is_empty()
        && table.len() <= 63
        && !table.as_bytes()[0].is_ascii_digit()
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(table)
}

/// What a relay did, for tests and operators.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) published: std::sync::atomic::AtomicU64,
    pub(crate) leader: std::sync::atomic::AtomicBool,
    pub(crate) changed: tokio::sync::Notify,
}

impl Stats {
    /// Records this relay published (acknowledged by the broker).
    pub fn published(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until this relay has published (and removed) at least `records` records — for
    /// a test, a benchmark, or a drain before shutdown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_published(&self, records: u64) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.published() >= records {
                return;
            }
            changed.await;
        }
    }

    pub(crate) fn add_published(&self, n: u64) {
        if n > 0 {
            self.published
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            self.changed.notify_waiters();
        }
    }

    /// Whether this relay holds the lock (or lease) and publishes.
    pub fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }
}
