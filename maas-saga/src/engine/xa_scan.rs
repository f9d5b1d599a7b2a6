//! The XA part of a recovery pass: prepared transactions in the branch databases that no
//! driver will finish, resolved against the store.

use super::supervisor::Supervisor;
use crate::Status;
use crate::store::StoreError;
use crate::xa::recovery;

impl Supervisor {
    /// Resolves, in every XA branch database, the prepared transactions of ours that no
    /// driver will finish, and reports the age of the oldest one left. A database that
    /// cannot be read is logged and retried next pass.
    pub(crate) async fn resolve_prepared(&self) -> Result<(), StoreError> {
        for (name, branch) in &self.runtime.xa {
            let prepared = match recovery::prepared(branch).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(branch = %name, error = %e, "cannot list the prepared transactions of an XA branch");
                    continue;
                }
            };
            let mut oldest_left = 0f64;
            for p in prepared {
                let decision = if self.is_live(&p.parts.saga) {
                    None // its driver finishes it
                } else {
                    match self.runtime.store.get(&p.parts.saga).await? {
                        // Finished: a phase 1 that landed after the end (a late retry, or the
                        // work of an engine that died mid-call). Resolve it as decided.
                        Some(r) if r.status.is_final() => Some(r.status == Status::Committed),
                        // Unfinished: its lease holder drives phase 2, or recovery claims it.
                        Some(_) => None,
                        // Unknown to the store (its intent never written, or deleted after the
                        // retention): presumed aborted, once older than a lease — if we made
                        // it; another engine's may live in a store we do not see.
                        None => (p.parts.coordinator == self.runtime.lease.owner
                            && p.age > self.runtime.lease.duration)
                            .then_some(false),
                    }
                };
                match decision {
                    Some(commit) => match branch.finish(&p.gid, commit).await {
                        Ok(()) => {
                            tracing::info!(branch = %name, gid = %p.gid, commit, "resolved a prepared transaction left behind")
                        }
                        Err(e) => {
                            tracing::warn!(branch = %name, gid = %p.gid, error = %e, "cannot resolve a prepared transaction; retrying next pass");
                            oldest_left = oldest_left.max(p.age.as_secs_f64());
                        }
                    },
                    None => oldest_left = oldest_left.max(p.age.as_secs_f64()),
                }
            }
            self.runtime.observer.xa_oldest_prepared(name, oldest_left);
        }
        Ok(())
    }

    /// Deletes XA markers past the retention (their transactions finished long before).
    pub(crate) async fn delete_old_markers(&self) {
        for (name, branch) in &self.runtime.xa {
            match recovery::delete_old_markers(branch, self.settings.retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(branch = %name, deleted = n, "deleted old XA markers"),
                Err(e) => {
                    tracing::warn!(branch = %name, error = %e, "cannot delete old XA markers")
                }
            }
        }
    }
}
