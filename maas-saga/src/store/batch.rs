//! Group commit: concurrent writes are gathered and committed together.
//!
//! Each write waits for the commit of the batch it joined, so every write is durable when
//! its future resolves; under load many writes share one commit, which is how the SQL
//! stores stay well under one commit per transaction.
//!
//! One write the database refuses must not fail the others: when a batch of several fails,
//! each of its writes is committed again on its own, so only the refused one gets the error.
//! (Writes are validated before they get here — durations are clamped when a transaction is
//! built — so this is the safety net for what validation cannot foresee.)

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::{BranchProgress, Lease, NewSaga, StoreError};
use crate::{SagaId, Status};

/// A write the batcher commits.
#[derive(Debug)]
pub(crate) enum Write {
    Create(NewSaga, Lease),
    Decision {
        id: SagaId,
        lease: Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    },
    Finish {
        id: SagaId,
        lease: Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    },
}

type Pending = (Write, oneshot::Sender<Result<bool, StoreError>>);

/// The sending side; the worker owns the connection.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts one worker per `commit` function; each takes up to `max_batch` waiting writes
    /// at a time and commits them with its function, which returns one result per write, in
    /// order. Several workers (each with its own connection) commit in parallel.
    ///
    /// A commit function hands its writes back with its result, so that a failed batch can
    /// be retried one write at a time.
    pub(crate) fn spawn<F, Fut>(max_batch: usize, commits: Vec<F>) -> Self
    where
        F: FnMut(Vec<Write>) -> Fut + Send + 'static,
        Fut: Future<Output = (Vec<Write>, Result<Vec<bool>, StoreError>)> + Send,
    {
        let (tx, rx) = mpsc::channel::<Pending>(max_batch * 4);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for mut commit in commits {
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut batch = vec![first];
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(p) => batch.push(p),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    let (writes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let several = writes.len() > 1;
                    match commit(writes).await {
                        (_, Ok(results)) => {
                            for (reply, ok) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(ok));
                            }
                        }
                        (writes, Err(e)) if several && writes.len() == replies.len() => {
                            tracing::warn!(error = %e, writes = writes.len(), "a batch failed; committing its writes one by one");
                            for (write, reply) in writes.into_iter().zip(replies) {
                                let (_, result) = commit(vec![write]).await;
                                let _ =
                                    reply.send(result.map(|r| r.first().copied().unwrap_or(false)));
                            }
                        }
                        (_, Err(e)) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            });
        }
        Batcher { tx }
    }

    /// Writes an intent ([`SagaStore::create`](super::SagaStore::create)).
    pub(crate) async fn create(&self, saga: NewSaga, lease: &Lease) -> Result<bool, StoreError> {
        self.write(Write::Create(saga, lease.clone())).await
    }

    /// Writes a decision ([`SagaStore::record_decision`](super::SagaStore::record_decision)).
    pub(crate) async fn decision(
        &self,
        id: &SagaId,
        lease: &Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> Result<bool, StoreError> {
        self.write(Write::Decision {
            id: id.clone(),
            lease: lease.clone(),
            status,
            progress,
        })
        .await
    }

    /// Writes a final status ([`SagaStore::finish`](super::SagaStore::finish)).
    pub(crate) async fn finish(
        &self,
        id: &SagaId,
        lease: &Lease,
        status: Status,
        progress: Vec<BranchProgress>,
    ) -> Result<bool, StoreError> {
        self.write(Write::Finish {
            id: id.clone(),
            lease: lease.clone(),
            status,
            progress,
        })
        .await
    }

    /// Queues `write` and waits until its batch is committed.
    async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((write, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Marks all but the first create of each id in a batch as not created.
pub(crate) fn first_creates(writes: &[Write]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    writes
        .iter()
        .map(|w| match w {
            Write::Create(s, _) => seen.insert(s.id.clone()),
            _ => true,
        })
        .collect()
}
