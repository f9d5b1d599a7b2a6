//! One XA branch: a PostgreSQL database, the caller's work in it, and the three operations
//! the engine asks of it — prepare (the TCC machine's *try*), `COMMIT PREPARED` (*confirm*)
//! and `ROLLBACK PREPARED` (*cancel*).

use std::sync::Arc;
use std::task::{Context, Poll};

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

use super::XaError;
use crate::Operation;
use crate::participant::{BoxError, BranchCall, Reply};
use crate::store::BoxFuture;

/// The caller's work in one branch: SQL run inside the branch's transaction, before it is
/// prepared. Answer [`Reply::Done`] to prepare it, [`Reply::Rejected`] for a business
/// failure (the transaction is rolled back, and so is every other branch), or an error
/// when the outcome is unknown (rolled back here; the engine retries).
///
/// Implemented for closures `|tx, call| Box::pin(async move { … })`.
pub trait XaWork: Send + Sync + 'static {
    /// Runs the work in `tx` for `call` (its payload, transaction id and branch name).
    fn run<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        call: &'a BranchCall,
    ) -> BoxFuture<'a, Result<Reply, BoxError>>;
}

impl<F> XaWork for F
where
    F: for<'a> Fn(
            &'a tokio_postgres::Transaction<'a>,
            &'a BranchCall,
        ) -> BoxFuture<'a, Result<Reply, BoxError>>
        + Send
        + Sync
        + 'static,
{
    fn run<'a>(
        &'a self,
        tx: &'a tokio_postgres::Transaction<'a>,
        call: &'a BranchCall,
    ) -> BoxFuture<'a, Result<Reply, BoxError>> {
        self(tx, call)
    }
}

/// A branch database and the work to run in it; register it with
/// [`EngineBuilder::xa_branch`](crate::EngineBuilder::xa_branch).
///
/// All calls take connections from one pool (the caller's: TLS, size and timeouts are
/// theirs); a prepared transaction holds no connection.
#[derive(Clone)]
pub struct XaBranch {
    pub(crate) pool: Pool,
    work: Arc<dyn XaWork>,
    pub(crate) marker: Arc<str>,
}

impl std::fmt::Debug for XaBranch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaBranch")
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

impl XaBranch {
    /// A branch on the database behind `pool`, running the closure `work` in each
    /// transaction: `|tx, call| Box::pin(async move { … })`.
    pub fn new<F>(pool: Pool, work: F) -> Self
    where
        F: for<'a> Fn(
                &'a tokio_postgres::Transaction<'a>,
                &'a BranchCall,
            ) -> BoxFuture<'a, Result<Reply, BoxError>>
            + Send
            + Sync
            + 'static,
    {
        Self::with_work(pool, work)
    }

    /// A branch on the database behind `pool`, running `work` in each transaction.
    pub fn with_work(pool: Pool, work: impl XaWork) -> Self {
        XaBranch {
            pool,
            work: Arc::new(work),
            marker: Arc::from(super::MARKER_TABLE),
        }
    }

    /// The table holding commit markers (default `maas_xa_marker`; a plain identifier:
    /// letters, digits and `_`).
    pub fn marker_table(mut self, table: &str) -> Self {
        self.marker = Arc::from(table);
        self
    }

    /// Checks the database can prepare transactions and creates the marker table.
    pub(crate) async fn install(&self, branch: &str) -> Result<(), XaError> {
        if !super::plain_identifier(&self.marker) {
            return Err(XaError::MarkerTable(self.marker.to_string()));
        }
        let client = self.pool.get().await?;
        let setting: String = client
            .query_one("SHOW max_prepared_transactions", &[])
            .await?
            .get(0);
        if setting.trim() == "0" {
            return Err(XaError::PreparedTransactionsDisabled {
                branch: branch.to_owned(),
            });
        }
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (
                    gid text PRIMARY KEY,
                    created_at timestamptz NOT NULL DEFAULT now()
                )",
                self.marker
            ))
            .await?;
        Ok(())
    }

    /// Phase 1: the marker, the work, `PREPARE TRANSACTION`. A retry finds the branch
    /// already prepared and answers done. (A first attempt needs no look: a transaction
    /// recovered before its decision is rolled back, never tried again.)
    async fn prepare(&self, gid: &str, call: &BranchCall) -> Result<Reply, BoxError> {
        let mut client = self.pool.get().await.map_err(XaError::from)?;
        if call.attempt > 1 {
            let already = client
                .query_opt(
                    "SELECT 1 FROM pg_prepared_xacts WHERE gid = $1 AND database = current_database()",
                    &[&gid],
                )
                .await
                .map_err(XaError::from)?;
            if already.is_some() {
                return Ok(Reply::Done);
            }
        }
        let tx = client.transaction().await.map_err(XaError::from)?;
        // The marker commits with the branch, so phase 2 can tell a committed branch from a
        // rolled-back one after the prepared transaction is gone. Its primary key also
        // stops a late duplicate of this call from preparing the work a second time once
        // the first was committed.
        tx.execute(
            &format!("INSERT INTO {} (gid) VALUES ($1)", self.marker),
            &[&gid],
        )
        .await
        .map_err(XaError::from)?;
        match self.work.run(&tx, call).await? {
            Reply::Done => {}
            rejected @ Reply::Rejected(_) => {
                tx.rollback().await.map_err(XaError::from)?;
                return Ok(rejected);
            }
        }
        match tx
            .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
            .await
        {
            Ok(()) => {}
            // Another attempt of this call prepared first: this one's work is rolled back.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(XaError::from(e).into()),
        }
        // The session left the transaction at PREPARE: dropping `tx` would send a ROLLBACK
        // that PostgreSQL answers with a warning. `Transaction` owns nothing to free.
        std::mem::forget(tx);
        Ok(Reply::Done)
    }

    /// Phase 2: `COMMIT PREPARED` or `ROLLBACK PREPARED`. A prepared transaction that is not
    /// there is resolved by the marker: present means it committed, absent that it rolled
    /// back (or never prepared) — and the opposite of what was decided is an error, never
    /// taken for success.
    pub(crate) async fn finish(&self, gid: &str, commit: bool) -> Result<(), XaError> {
        let client = self.pool.get().await?;
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        match client
            .batch_execute(&format!("{verb} PREPARED '{gid}'"))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                let committed = client
                    .query_opt(
                        &format!("SELECT 1 FROM {} WHERE gid = $1", self.marker),
                        &[&gid],
                    )
                    .await?
                    .is_some();
                if committed == commit {
                    Ok(())
                } else {
                    Err(XaError::Contradicted {
                        gid: gid.to_owned(),
                        committed,
                    })
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl tower::Service<BranchCall> for XaBranch {
    type Response = Reply;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Reply, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: BranchCall) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(gid) = call.xa_gid.clone() else {
                // Not a branch of an XA transaction: a saga's action or a TCC's try is
                // refused, so their undo has nothing to do.
                return Ok(match call.op {
                    Operation::Action | Operation::Try => Reply::Rejected(
                        "an XA branch takes part in XA transactions only".to_owned(),
                    ),
                    _ => Reply::Done,
                });
            };
            match call.op {
                Operation::Try => this.prepare(&gid, &call).await,
                Operation::Confirm => Ok(this.finish(&gid, true).await.map(|()| Reply::Done)?),
                Operation::Cancel => Ok(this.finish(&gid, false).await.map(|()| Reply::Done)?),
                Operation::Action => Ok(Reply::Rejected(
                    "an XA branch is prepared, committed or rolled back, never run as a saga step"
                        .to_owned(),
                )),
                Operation::Compensate => Ok(Reply::Done),
            }
        })
    }
}
