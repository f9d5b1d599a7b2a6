//! What a recovery pass reads from and does to a branch database: its prepared
//! transactions of ours, their resolution, and the deletion of old markers.

use std::time::Duration;

use super::gid::{Gid, PREFIX};
use super::{XaBranch, XaError};

/// A prepared transaction of ours in a branch database.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Its gid as PostgreSQL holds it.
    pub(crate) gid: String,
    /// What the gid names.
    pub(crate) parts: Gid,
    /// How long ago it was prepared.
    pub(crate) age: Duration,
}

/// The prepared transactions in `branch`'s database whose gid this crate made, oldest
/// first; with the age of the oldest gid of any shape starting with our prefix.
pub(crate) async fn prepared(branch: &XaBranch) -> Result<Vec<Prepared>, XaError> {
    let client = branch.pool.get().await?;
    let rows = client
        .query(
            "SELECT gid, greatest(extract(epoch FROM now() - prepared), 0)::float8
             FROM pg_prepared_xacts
             WHERE database = current_database() AND starts_with(gid, $1)
             ORDER BY prepared",
            &[&PREFIX],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let gid: String = r.get(0);
            let age = Duration::try_from_secs_f64(r.get(1)).unwrap_or_default();
            Gid::parse(&gid).map(|parts| Prepared { gid, parts, age })
        })
        .collect())
}

/// Deletes markers older than `retention` (their transactions finished long ago); returns
/// how many.
pub(crate) async fn delete_old_markers(
    branch: &XaBranch,
    retention: Duration,
) -> Result<u64, XaError> {
    let client = branch.pool.get().await?;
    Ok(client
        .execute(
            &format!(
                "DELETE FROM {} WHERE created_at < now() - make_interval(secs => $1)",
                branch.marker
            ),
            &[&retention.as_secs_f64()],
        )
        .await?)
}
