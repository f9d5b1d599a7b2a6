//! API keys and quota settings in both databases: a key is stored as its id, its tenant and
//! the SHA-256 of the whole key (see `crate::keys`), never the key itself.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{PgApp, SqliteApp, StoreError};

/// A stored key, as the authentication middleware needs it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The tenant the key acts for.
    pub tenant: String,
    /// The SHA-256 of the whole key.
    pub hash: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A key as listings show it: never the key or its hash.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id; the key starts with `maas_<id>_`.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// When it was created (seconds since the Unix epoch).
    pub created: i64,
    /// When it was revoked, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(super) const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash BLOB NOT NULL,
    created INTEGER NOT NULL, revoked INTEGER);
  CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant);";

pub(super) const PG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS maas_platform_api_keys (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, hash BYTEA NOT NULL,
    created BIGINT NOT NULL, revoked BIGINT);
  CREATE INDEX IF NOT EXISTS maas_platform_api_keys_tenant
    ON maas_platform_api_keys (tenant);";

impl SqliteApp {
    /// Stores a new key; `false` when its id is taken (the caller makes another).
    pub fn add_key(&self, id: &str, tenant: &str, hash: &[u8]) -> rusqlite::Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO api_keys (id, tenant, hash, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id, tenant, hash, now()],
        )?;
        Ok(n == 1)
    }

    /// The key `id`, if stored.
    pub fn key(&self, id: &str) -> rusqlite::Result<Option<StoredKey>> {
        self.conn()
            .query_row(
                "SELECT tenant, hash, revoked IS NOT NULL FROM api_keys WHERE id = ?1",
                params![id],
                |r| {
                    Ok(StoredKey {
                        tenant: r.get(0)?,
                        hash: r.get(1)?,
                        revoked: r.get(2)?,
                    })
                },
            )
            .optional()
    }

    /// A tenant's keys, by creation time (in seconds), then id.
    pub fn keys(&self, tenant: &str) -> rusqlite::Result<Vec<KeyInfo>> {
        let conn = self.conn();
        let mut q = conn.prepare(
            "SELECT id, tenant, created, revoked FROM api_keys WHERE tenant = ?1
             ORDER BY created, id",
        )?;
        q.query_map(params![tenant], |r| {
            Ok(KeyInfo {
                id: r.get(0)?,
                tenant: r.get(1)?,
                created: r.get(2)?,
                revoked: r.get(3)?,
            })
        })?
        .collect()
    }

    /// Revokes the key `id`; `false` when there is no such key (revoking twice is fine).
    pub fn revoke_key(&self, id: &str) -> rusqlite::Result<bool> {
        let n = self.conn().execute(
            "UPDATE api_keys SET revoked = coalesce(revoked, ?2) WHERE id = ?1",
            params![id, now()],
        )?;
        Ok(n == 1)
    }

    /// Sets a tenant's remaining quota.
    pub fn set_quota(&self, tenant: &str, amount: i64) -> rusqlite::Result<()> {
        self.conn().execute(
            "INSERT INTO quota (tenant, amount) VALUES (?1, ?2)
             ON CONFLICT (tenant) DO UPDATE SET amount = excluded.amount",
            params![tenant, amount],
        )?;
        Ok(())
    }
}

impl PgApp {
    pub(super) async fn add_key(
        &self,
        id: &str,
        tenant: &str,
        hash: &[u8],
    ) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO maas_platform_api_keys (id, tenant, hash, created)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[&id, &tenant, &hash, &now()],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT tenant, hash, revoked IS NOT NULL FROM maas_platform_api_keys
                 WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| StoredKey {
            tenant: r.get(0),
            hash: r.get(1),
            revoked: r.get(2),
        }))
    }

    pub(super) async fn keys(&self, tenant: &str) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, tenant, created, revoked FROM maas_platform_api_keys
                 WHERE tenant = $1 ORDER BY created, id",
                &[&tenant],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| KeyInfo {
                id: r.get(0),
                tenant: r.get(1),
                created: r.get(2),
                revoked: r.get(3),
            })
            .collect())
    }

    pub(super) async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE maas_platform_api_keys SET revoked = coalesce(revoked, $2)
                 WHERE id = $1",
                &[&id, &now()],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn set_quota(&self, tenant: &str, amount: i64) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO maas_platform_quota (tenant, amount) VALUES ($1, $2)
                 ON CONFLICT (tenant) DO UPDATE SET amount = excluded.amount",
                &[&tenant, &amount],
            )
            .await?;
        Ok(())
    }
}
