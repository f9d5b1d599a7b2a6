//! What the XA tests share: throwaway branch databases and pools on them, and a store that
//! lets a test act at the moment a decision is written.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use maas_saga::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use maas_saga::store::{
    AdminRequest, BoxFuture, BranchProgress, Lease, NewSaga, Renewed, SagaRecord, StoreError,
};
use maas_saga::{SagaId, SagaStore, Status};
use tokio_postgres::NoTls;

use super::pg;

/// A fresh database on the server of `server_url` (a libpq string naming any database);
/// returns its connection string.
pub async fn database(server_url: &str, tag: &str) -> String {
    let name = format!(
        "maas_xa_{tag}_{}_{:06x}",
        std::process::id(),
        fastrand::u32(..0xff_ffff)
    );
    pg::connect(server_url)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a branch database");
    let base: Vec<&str> = server_url
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    format!("{} dbname={name}", base.join(" "))
}

/// A pool of at most `size` connections to `url`.
pub fn pool(url: &str, size: usize) -> Pool {
    let config: tokio_postgres::Config = url.parse().expect("connection string");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(maas_saga::deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(3)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .build()
        .expect("pool")
}

/// Prepared transactions of ours (gid prefix `maas:`) in the database of `url`.
pub async fn prepared(url: &str) -> Vec<String> {
    pg::connect(url)
        .await
        .query(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'maas:%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Called with the transaction and the decision, `after` = false before the store writes
/// it and true once it is durable.
pub type DecisionHook = Arc<dyn Fn(SagaId, Status, bool) -> BoxFuture<'static, ()> + Send + Sync>;

/// A store that runs a hook around every decision it records.
pub struct Hooked<S> {
    pub inner: S,
    pub hook: DecisionHook,
}

impl<S: SagaStore> SagaStore for Hooked<S> {
    fn create<'a>(
        &'a self,
        saga: NewSaga,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.create(saga, lease)
    }

    fn record_decision<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        decision: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            (self.hook)(id.clone(), decision, false).await;
            let held = self
                .inner
                .record_decision(id, lease, decision, progress)
                .await?;
            (self.hook)(id.clone(), decision, true).await;
            Ok(held)
        })
    }

    fn finish<'a>(
        &'a self,
        id: &'a SagaId,
        lease: &'a Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.finish(id, lease, status, progress)
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        ids: &'a [SagaId],
    ) -> BoxFuture<'a, Result<Vec<Renewed>, StoreError>> {
        self.inner.renew(lease, ids)
    }

    fn claim<'a>(
        &'a self,
        lease: &'a Lease,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.claim(lease, limit)
    }

    fn get<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        self.inner.get(id)
    }

    fn list(
        &self,
        status: Status,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<SagaRecord>, StoreError>> {
        self.inner.list(status, limit)
    }

    fn request<'a>(
        &'a self,
        id: &'a SagaId,
        request: AdminRequest,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.request(id, request)
    }

    fn gc(&self, retention: Duration) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.gc(retention)
    }
}
