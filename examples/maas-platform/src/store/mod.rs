//! The platform's own data — models and tenants' quota — and the two saga participants that
//! change it: the model registry and billing. SQLite for one instance (embedded mode),
//! PostgreSQL when replicas share the data.
//!
//! Both participants protect every operation with the saga barrier, so a retried or late
//! call applies at most once and a compensation never runs before (or without) its action.

mod keys;
mod postgres;
mod sqlite;

use serde::Serialize;

use crate::artifacts::ModelMetadata;

pub use keys::{KeyInfo, StoredKey};
pub use postgres::PgApp;
pub use sqlite::SqliteApp;

/// The outbox table the create-model saga writes build tasks into.
pub const OUTBOX: &str = "maas_platform_outbox";

/// The build task for the model a saga step registers: its topic, key and trace come from
/// the step's payload (`topic`, `model`, `traceparent`).
pub(crate) fn build_task(payload: &serde_json::Value) -> maas_queue::Record {
    let model = payload["model"].as_str().unwrap_or_default();
    let topic = payload["topic"].as_str().unwrap_or_default();
    let task = serde_json::json!({
        "model": model,
        "tenant": payload["tenant"],
        "cost": payload["cost"],
        "digest": payload["digest"],
    });
    let mut task = maas_queue::Record::new(topic, task.to_string()).key(model.to_owned());
    if let Some(tp) = payload["traceparent"].as_str() {
        task = task.header("traceparent", tp.to_owned());
    }
    task
}

/// A model as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Model {
    /// Its id (`m-` and 16 hex digits).
    pub id: String,
    /// The name given at upload.
    pub name: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// `queued` (registered, its build task in the outbox or on the topic), `building`,
    /// `ready` or `failed`.
    pub status: String,
    /// Why the model is `failed` (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many builds of this model completed: 1 once `ready`. Deliveries of a build task
    /// may repeat; a number above 1 here would mean a build did too.
    pub builds: i64,
    /// The uploaded model file.
    pub artifact: Artifact,
    /// What the builder read in the file's header (once `ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ModelMetadata>,
}

/// A model's file in the artifact store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Artifact {
    /// `sha256:` and 64 hex digits.
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
}

/// Reads the `metadata` column (JSON written by [`Store::finish`]).
pub(crate) fn metadata_of(column: Option<String>) -> Option<ModelMetadata> {
    column.and_then(|m| serde_json::from_str(&m).ok())
}

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Built: the model is `ready` with what its file holds, and its completed builds count
    /// one more.
    Ready(&'a ModelMetadata),
    /// Failed for this reason: the model is `failed` with it.
    Failed(&'a str),
}

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had: the database is unreachable (each attempt to
    /// connect gives up after a few seconds) or every pooled connection is busy.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl StoreError {
    /// Whether the database was unreachable or went away mid-call (a restart, a failover, a
    /// full pool), rather than refusing the call: trying again later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            // Errors PostgreSQL reported carry a SQLSTATE; connection errors carry none.
            // Class 08: connection exceptions; 57P01–57P03: shutting down or starting up;
            // class 53: out of resources (too many connections).
            StoreError::Postgres(e) => e.code().is_none_or(|c| {
                let c = c.code();
                c.starts_with("08") || c.starts_with("57P0") || c.starts_with("53")
            }),
            StoreError::Sqlite(_) => false,
        }
    }
}

/// Calls `f` until it succeeds or fails for a reason other than an unreachable database
/// ([`StoreError::is_transient`]), waiting 100 ms after the first failure, doubling to 5 s,
/// for at most `patience` in all. A consumer's handler uses this so that a database restart
/// holds its partition back instead of sending the record to the dead-letter topic.
pub(crate) async fn while_database_away<T, F, Fut>(
    what: &str,
    patience: std::time::Duration,
    mut f: F,
) -> Result<T, maas_queue::BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, maas_queue::BoxError>>,
{
    let started = tokio::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match f().await {
            Err(e)
                if e.downcast_ref::<StoreError>()
                    .is_some_and(StoreError::is_transient)
                    && started.elapsed() + wait < patience =>
            {
                tracing::warn!(error = %e, retry_in = ?wait, "{what}: the database is away; waiting");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// The application database, shared by the API, the participants and the builders.
#[derive(Clone)]
pub enum Store {
    /// One instance's SQLite file.
    Sqlite(SqliteApp),
    /// A PostgreSQL database the replicas share.
    Postgres(PgApp),
}

impl Store {
    /// The model `id`, if registered.
    pub async fn model(&self, id: &str) -> Result<Option<Model>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.model(id)?,
            Store::Postgres(p) => p.model(id).await?,
        })
    }

    /// Whether the database answers (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping()?,
            Store::Postgres(p) => p.ping().await?,
        }
        Ok(())
    }

    /// `tenant`'s models that are `ready`, by id.
    pub async fn ready_models(&self, tenant: &str) -> Result<Vec<Model>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.ready_models(tenant)?,
            Store::Postgres(p) => p.ready_models(tenant).await?,
        })
    }

    /// Marks a model `building`; `false` when there is no such model or it is already
    /// `ready` (another delivery of its task built it).
    pub async fn start_build(&self, id: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.start_build(id)?,
            Store::Postgres(p) => p.start_build(id).await?,
        })
    }

    /// Records how a build of `id` ended; `false` when there is no such model or it is
    /// already `ready`. Delivery is at least once and two deliveries of one task can build
    /// at the same time: only the first to finish counts in `builds`.
    pub async fn finish(&self, id: &str, outcome: Outcome<'_>) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.finish(id, outcome)?,
            Store::Postgres(p) => p.finish(id, outcome).await?,
        })
    }

    /// A tenant's remaining quota (`None` before its first upload).
    pub async fn quota(&self, tenant: &str) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.quota(tenant)?,
            Store::Postgres(p) => p.quota(tenant).await?,
        })
    }

    /// Refunds a dead-lettered build: `cost` credits back to `tenant`, once per model however
    /// often it is asked (a `refunds` row, written in the same transaction), and the model
    /// marked `failed` (with `reason` unless the build recorded one). `true` when this call
    /// refunded.
    pub async fn refund(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
        reason: &str,
    ) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.refund(model, tenant, cost, reason)?,
            Store::Postgres(p) => p.refund(model, tenant, cost, reason).await?,
        })
    }

    /// Before building a model that may have been refunded (a redriven task): charges its
    /// `cost` again, once. `false` when it was refunded and the tenant cannot pay again —
    /// the build must not run.
    pub async fn recharge_if_refunded(
        &self,
        model: &str,
        tenant: &str,
        cost: i64,
    ) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.recharge_if_refunded(model, tenant, cost)?,
            Store::Postgres(p) => p.recharge_if_refunded(model, tenant, cost).await?,
        })
    }

    /// Stores a new API key (its SHA-256, never the key); `false` when its id is taken.
    pub async fn add_key(&self, id: &str, tenant: &str, hash: &[u8]) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.add_key(id, tenant, hash)?,
            Store::Postgres(p) => p.add_key(id, tenant, hash).await?,
        })
    }

    /// The API key `id`, if stored.
    pub async fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.key(id)?,
            Store::Postgres(p) => p.key(id).await?,
        })
    }

    /// A tenant's API keys, by creation time (in seconds), then id.
    pub async fn keys(&self, tenant: &str) -> Result<Vec<KeyInfo>, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.keys(tenant)?,
            Store::Postgres(p) => p.keys(tenant).await?,
        })
    }

    /// Revokes the API key `id`; `false` when there is no such key.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        Ok(match self {
            Store::Sqlite(s) => s.revoke_key(id)?,
            Store::Postgres(p) => p.revoke_key(id).await?,
        })
    }

    /// Sets a tenant's remaining quota to `amount` credits.
    pub async fn set_quota(&self, tenant: &str, amount: i64) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_quota(tenant, amount)?,
            Store::Postgres(p) => p.set_quota(tenant, amount).await?,
        }
        Ok(())
    }

    /// The model registry: `action` registers the model, `compensate` removes it.
    pub fn models_participant(&self) -> maas_saga::Participant {
        match self {
            Store::Sqlite(s) => s.models_participant(),
            Store::Postgres(p) => p.models_participant(),
        }
    }

    /// Billing: `action` deducts the build's cost from the tenant's quota (a tenant starts
    /// with `initial` credits) and refuses when it would go negative; `compensate` refunds.
    ///
    /// Every refusal is noted in `refusals`, so the API can tell a tenant out of credits
    /// (402) from a saga rolled back because a participant did not answer (503).
    pub fn billing_participant(&self, initial: i64, refusals: Refusals) -> maas_saga::Participant {
        use tower::ServiceExt;
        let inner = match self {
            Store::Sqlite(s) => s.billing_participant(initial),
            Store::Postgres(p) => p.billing_participant(initial),
        };
        maas_saga::participant(tower::service_fn(move |call: maas_saga::BranchCall| {
            let (inner, refusals) = (inner.clone(), refusals.clone());
            async move {
                let saga = call.saga_id.to_string();
                let reply = inner.oneshot(call).await?;
                if let maas_saga::Reply::Rejected(_) = reply {
                    refusals.record(saga);
                }
                Ok::<_, maas_saga::BoxError>(reply)
            }
        }))
    }
}

/// The sagas whose billing step refused for lack of credits (the most recent 10,000).
#[derive(Clone, Default)]
pub struct Refusals(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Refusals {
    fn record(&self, saga: String) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == 10_000 {
            q.pop_front();
        }
        q.push_back(saga);
    }

    /// Whether billing refused `saga` (forgotten once asked).
    pub fn take(&self, saga: &str) -> bool {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match q.iter().position(|s| s == saga) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}
