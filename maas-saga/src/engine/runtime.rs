//! What a driver may use: the store (through the two writes a driver makes), the
//! participants, the lease, and the observer. Nothing here knows about other transactions.

use std::sync::Arc;
use std::time::Duration;

use crate::SagaId;
use crate::Status;
use crate::observer::Observer;
use crate::participant::Registry;
use crate::store::{BranchProgress, Lease, SagaStore};

/// The narrow runtime shared by the drivers and the supervisor.
pub(crate) struct Runtime {
    pub(crate) store: Arc<dyn SagaStore>,
    pub(crate) registry: Registry,
    pub(crate) lease: Lease,
    /// Attempts of an undo operation after which it is reported as stuck.
    pub(crate) alert_after: u32,
    pub(crate) observer: Observer,
    /// Continues a span in a stored trace, when the application gave a way to.
    pub(crate) trace_context: Option<super::trace::TraceContext>,
    /// The XA branch databases, by participant name.
    #[cfg(feature = "postgres")]
    pub(crate) xa: Vec<(String, crate::xa::XaBranch)>,
}

impl Runtime {
    /// Whether `participant` is an XA branch database.
    pub(crate) fn is_xa_branch(&self, participant: &str) -> bool {
        #[cfg(feature = "postgres")]
        return self.xa.iter().any(|(name, _)| name == participant);
        #[cfg(not(feature = "postgres"))]
        {
            let _ = participant;
            false
        }
    }

    /// Writes a decision (roll back, or commit a TCC), retrying transient store errors.
    /// `false` if the lease is gone.
    pub(crate) async fn record_decision(
        &self,
        id: &SagaId,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> bool {
        retrying("record the decision", || {
            self.store
                .record_decision(id, &self.lease, decision, progress.clone())
        })
        .await
    }

    /// Writes the final status and releases the lease, retrying transient store errors.
    /// `false` if the lease is gone.
    pub(crate) async fn finish(
        &self,
        id: &SagaId,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> bool {
        retrying("record the final status", || {
            self.store.finish(id, &self.lease, status, progress.clone())
        })
        .await
    }
}

/// Runs a store write until it answers, backing off from 50 ms to 2 s between failures: a
/// decision or a final status must not be dropped because the database blinked.
async fn retrying<'a, F>(what: &'static str, mut write: impl FnMut() -> F) -> bool
where
    F: std::future::Future<Output = Result<bool, crate::store::StoreError>> + 'a,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match write().await {
            Ok(held) => return held,
            Err(e) => {
                tracing::warn!(error = %e, "could not {what}; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}
