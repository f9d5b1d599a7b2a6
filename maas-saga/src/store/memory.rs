//! An in-memory store: for users' unit tests and demos. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{
    AdminRequest, BoxFuture, BranchProgress, Lease, NewSaga, Renewed, SagaRecord, SagaStore,
    StoreError,
};
use crate::duration::system_after;
use crate::{SagaId, Status};

#[derive(Debug, Clone)]
struct Row {
    record: SagaRecord,
    incarnation: Option<String>,
    lease_until: SystemTime,
}

/// A [`SagaStore`] in a `HashMap`. Clones share the same map, so a test can "restart" an
/// engine on the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    rows: Arc<Mutex<HashMap<SagaId, Row>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SagaId, Row>) -> T) -> T {
        f(&mut self.rows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn holds(row: &Row, lease: &Lease) -> bool {
    row.record.owner.as_deref() == Some(&lease.owner)
        && row.incarnation.as_deref() == Some(&lease.incarnation)
}

impl SagaStore for MemoryStore {
    fn create<'a>(
        &'a self,
        saga: NewSaga,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let now = SystemTime::now();
            Ok(self.with(|rows| {
                if rows.contains_key(&saga.id) {
                    return false;
                }
                rows.insert(
                    saga.id.clone(),
                    Row {
                        record: SagaRecord {
                            id: saga.id,
                            transaction: saga.transaction,
                            status: Status::Running,
                            created_at: now,
                            updated_at: now,
                            deadline: saga.deadline_after.map(|d| system_after(now, d)),
                            progress: Vec::new(),
                            owner: Some(lease.owner.clone()),
                            request: None,
                        },
                        incarnation: Some(lease.incarnation.clone()),
                        lease_until: system_after(now, lease.duration),
                    },
                );
                true
            }))
        })
    }

    fn record_decision<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|rows| match rows.get_mut(id) {
                Some(row) if holds(row, lease) && row.record.status == Status::Running => {
                    row.record.status = decision;
                    row.record.progress = progress;
                    row.record.updated_at = SystemTime::now();
                    true
                }
                Some(row) => holds(row, lease) && row.record.status == decision,
                None => false,
            }))
        })
    }

    fn finish<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|rows| match rows.get_mut(id) {
                Some(row) if holds(row, lease) && !row.record.status.is_final() => {
                    row.record.status = status;
                    row.record.progress = progress;
                    row.record.updated_at = SystemTime::now();
                    row.record.owner = None;
                    row.record.request = None;
                    row.incarnation = None;
                    true
                }
                _ => false,
            }))
        })
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<Renewed>, StoreError>> {
        Box::pin(async move {
            let until = system_after(SystemTime::now(), lease.duration);
            Ok(self.with(|rows| {
                ids.iter()
                    .filter_map(|id| {
                        let row = rows.get_mut(id)?;
                        if !holds(row, lease) || row.record.status.is_final() {
                            return None;
                        }
                        row.lease_until = until;
                        let request = row.record.request;
                        if request == Some(AdminRequest::Retry) {
                            row.record.request = None;
                        }
                        Some(Renewed {
                            id: id.clone(),
                            request,
                        })
                    })
                    .collect()
            }))
        })
    }

    fn claim<'a>(
        &'a self,
        lease: &'a Lease,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            let now = SystemTime::now();
            Ok(self.with(|rows| {
                let mut claimed = Vec::new();
                for row in rows.values_mut() {
                    if claimed.len() >= limit {
                        break;
                    }
                    let expired = row.lease_until <= now;
                    let own_past_life = row.record.owner.as_deref() == Some(&lease.owner)
                        && row.incarnation.as_deref() != Some(&lease.incarnation);
                    if !row.record.status.is_final() && (expired || own_past_life) {
                        row.record.owner = Some(lease.owner.clone());
                        row.incarnation = Some(lease.incarnation.clone());
                        row.lease_until = system_after(now, lease.duration);
                        claimed.push(row.record.clone());
                    }
                }
                claimed
            }))
        })
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        Box::pin(async move { Ok(self.with(|rows| rows.get(id).map(|r| r.record.clone()))) })
    }

    fn list(
        &self,
        status: Status,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|rows| {
                let mut found: Vec<SagaRecord> = rows
                    .values()
                    .filter(|r| r.record.status == status)
                    .map(|r| r.record.clone())
                    .collect();
                found.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
                found.truncate(limit);
                found
            }))
        })
    }

    fn request<'a>(
        &'a self,
        id: &'a SagaId,
        request: AdminRequest,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|rows| match rows.get_mut(id) {
                Some(row) if !row.record.status.is_final() => {
                    if row.record.request != Some(AdminRequest::Abort) {
                        row.record.request = Some(request);
                    }
                    true
                }
                _ => false,
            }))
        })
    }

    fn gc(&self, retention: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let cutoff = SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            Ok(self.with(|rows| {
                let before = rows.len();
                rows.retain(|_, r| !(r.record.status.is_final() && r.record.updated_at < cutoff));
                (before - rows.len()) as u64
            }))
        })
    }
}
