//! The build tasks' outbox: the create-model saga writes each task in the transaction that
//! registers its model, and a relay (one per replica; one publishes at a time) sends them to
//! the broker — so a registered model always gets its build task, and a rolled-back one never.

use std::sync::Arc;
use std::time::Duration;

use maas_queue::Producer;
use maas_queue::outbox::pg::PgRelay;
use maas_queue::outbox::sqlite::SqliteRelay;
use tokio::sync::Notify;

use crate::store::{OUTBOX, PgApp, Store};

/// The running relay.
pub(crate) enum Relay {
    Pg(PgRelay),
    Sqlite(SqliteRelay),
}

/// Wakes the relay after a commit that enqueued a task.
#[derive(Clone)]
pub(crate) enum Wake {
    Pg(PgApp),
    Sqlite(Arc<Notify>),
}

/// Starts the relay for `store`'s database.
pub(crate) fn start(
    data_dir: &std::path::Path,
    store: &Store,
    producer: &Producer,
    metrics: &maas_queue::outbox::OutboxMetrics,
) -> (Relay, Wake) {
    match store {
        Store::Postgres(app) => {
            let database = app.database();
            let relay = database
                .relay(PgRelay::builder(database.conninfo(), producer.clone()))
                .table(OUTBOX)
                .poll_every(Duration::from_millis(500))
                .metrics(metrics)
                .start();
            (Relay::Pg(relay), Wake::Pg(app.clone()))
        }
        Store::Sqlite(_) => {
            let relay = SqliteRelay::builder(data_dir.join("app.db"), producer.clone())
                .table(OUTBOX)
                .poll_every(Duration::from_millis(500))
                .metrics(metrics)
                .start();
            let wake = relay.waker();
            (Relay::Sqlite(relay), Wake::Sqlite(wake))
        }
    }
}

impl Relay {
    /// Stops after the batch in progress; what is left is published on the next start.
    pub(crate) async fn shutdown(self) {
        match self {
            Relay::Pg(r) => r.shutdown().await,
            Relay::Sqlite(r) => r.shutdown().await,
        }
    }
}

impl Wake {
    /// Wakes the relay; a lost wake-up only delays the task until the next poll.
    pub(crate) async fn wake(&self) {
        match self {
            Wake::Pg(app) => {
                if let Err(e) = app.notify_outbox().await {
                    tracing::debug!(error = %e, "outbox notification not sent; the relay polls");
                }
            }
            Wake::Sqlite(n) => n.notify_one(),
        }
    }
}
