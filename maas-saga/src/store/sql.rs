//! What the PostgreSQL and SQLite stores share: error mapping, the progress encoding, and
//! turning a row's columns into a [`SagaRecord`].

use super::{
    AdminRequest, BranchProgress, SagaRecord, StoreError, decode_progress, decode_transaction,
    from_millis,
};
use crate::{SagaId, Status};

/// A database error as a [`StoreError`].
pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The JSON stored in the `progress` column.
pub(crate) fn json(progress: &[BranchProgress]) -> String {
    serde_json::to_string(progress).unwrap_or_else(|_| "[]".to_owned())
}

/// The columns of one `maas_saga` row, as both stores select them (times in unix
/// milliseconds, JSON as text).
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) definition: String,
    pub(crate) status: String,
    pub(crate) created_ms: i64,
    pub(crate) updated_ms: i64,
    pub(crate) deadline_ms: Option<i64>,
    pub(crate) progress: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) request: Option<String>,
}

impl Row {
    /// Decodes the row; a definition, status or progress that does not parse is
    /// [`StoreError::Corrupt`].
    pub(crate) fn decode(self) -> Result<SagaRecord, StoreError> {
        let id = self.id;
        Ok(SagaRecord {
            transaction: decode_transaction(&id, &self.definition)?,
            status: Status::parse(&self.status).ok_or_else(|| StoreError::Corrupt {
                id: id.clone(),
                reason: format!("unknown status `{}`", self.status),
            })?,
            created_at: from_millis(self.created_ms),
            updated_at: from_millis(self.updated_ms),
            deadline: self.deadline_ms.map(from_millis),
            progress: decode_progress(&id, self.progress.as_deref())?,
            owner: self.owner,
            request: self.request.as_deref().and_then(AdminRequest::parse),
            id: SagaId::from(id),
        })
    }
}
