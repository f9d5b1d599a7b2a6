//! [`ConsumerHandle`]: a running consumer, its numbers and its shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::shared::Shared;

/// Counts of what the consumer did with records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records the handler succeeded on.
    pub handled: u64,
    /// Handler calls that failed and were retried (in place or via a retry topic).
    pub retried: u64,
    /// Records sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Commits made.
    pub commits: u64,
    /// Generations joined (1 + rebalances).
    pub generations: u64,
}

/// One partition's lag, as the consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The partition's high watermark at the last fetch.
    pub high_watermark: i64,
    /// The group's committed offset.
    pub committed: i64,
    /// `high_watermark − committed`: records not yet handled and committed.
    pub lag: i64,
    /// Records handled per second, over the interval since the previous `lag()` call.
    pub records_per_second: f64,
}

/// A running consumer.
pub struct ConsumerHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("group", &self.shared.config.group)
            .field("member_id", &self.member_id())
            .finish()
    }
}

impl ConsumerHandle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stop: watch::Sender<bool>,
        task: JoinHandle<()>,
    ) -> Self {
        ConsumerHandle { shared, stop, task }
    }

    /// Stops fetching, lets in-flight records finish (up to the rebalance timeout), commits
    /// what was handled, leaves the group (its partitions move to the others at once) and
    /// flushes the dead-letter producer.
    ///
    /// # Cancel safety
    ///
    /// Once called, the consumer stops whether or not the future is awaited to the end;
    /// dropping it early skips waiting for the final commit and the producer flush (records
    /// handled but not committed are handled again by the next owner of their partition).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.shared.dead_letters.shutdown().await;
    }

    /// Whether the consumer's task has ended (it only ends when shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// The partitions this member holds now.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        Shared::lock(&self.shared.assignment)
            .keys()
            .cloned()
            .collect()
    }

    /// The member id the coordinator gave this member (empty before the first join).
    pub fn member_id(&self) -> String {
        Shared::lock(&self.shared.member_id).clone()
    }

    /// What the consumer did so far.
    pub fn stats(&self) -> ConsumerStats {
        let s = &self.shared;
        ConsumerStats {
            handled: s.handled.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
            commits: s.commits.load(Ordering::Relaxed),
            generations: s.generations.load(Ordering::Relaxed),
        }
    }

    /// Lag per assigned partition, and the handling rate since the previous call.
    pub fn lag(&self) -> Vec<PartitionLag> {
        lag(&self.shared)
    }

    /// Time since the last successful commit (`None` before the first).
    pub fn last_commit_age(&self) -> Option<Duration> {
        Shared::lock(&self.shared.last_commit).map(|t| t.elapsed())
    }
}

pub(crate) fn lag(shared: &Shared) -> Vec<PartitionLag> {
    let now = Instant::now();
    let assignment = Shared::lock(&shared.assignment);
    let mut rates = Shared::lock(&shared.rates);
    assignment
        .iter()
        .map(|((topic, partition), st)| {
            let handled = st.handled.load(Ordering::Relaxed);
            let (then, before) = rates
                .insert((topic.clone(), *partition), (now, handled))
                .unwrap_or((now, handled));
            let secs = now.duration_since(then).as_secs_f64();
            let hw = st.high_watermark.load(Ordering::Relaxed);
            let committed = st.committed.load(Ordering::Relaxed);
            PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                high_watermark: hw,
                committed,
                lag: (hw - committed).max(0),
                records_per_second: if secs > 0.0 {
                    (handled - before) as f64 / secs
                } else {
                    0.0
                },
            }
        })
        .collect()
}
