//! The member's life: join a generation, run a worker per assigned partition, heartbeat
//! and commit, and on a rebalance stop the workers, commit what they handled and rejoin.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fetcher::{Fetcher, Source};
use super::shared::{PartitionState, Shared};
use super::worker;
use crate::QueueError;
use crate::kafka::Brokers;
use crate::kafka::group::{Joined, KafkaGroup, codes};
use crate::memory::MemoryBroker;

/// The group as the member talks to it: Kafka's coordinator, or the in-memory broker.
enum Coordinator {
    Kafka(KafkaGroup),
    Memory {
        broker: MemoryBroker,
        group: String,
        member: String,
        topics: Vec<String>,
        session: Duration,
    },
}

impl Coordinator {
    async fn join(&mut self) -> Result<Joined, QueueError> {
        match self {
            Coordinator::Kafka(g) => g.join().await,
            Coordinator::Memory {
                broker,
                group,
                member,
                topics,
                session,
            } => {
                let (generation, partitions) = broker.join(group, member, topics, *session);
                Ok(Joined {
                    generation,
                    member_id: member.clone(),
                    partitions,
                })
            }
        }
    }

    async fn heartbeat(&mut self, generation: i32) -> Result<i16, QueueError> {
        match self {
            Coordinator::Kafka(g) => g.heartbeat(generation).await,
            Coordinator::Memory {
                broker,
                group,
                member,
                ..
            } => Ok(broker.heartbeat(group, member, generation)),
        }
    }

    async fn commit(
        &mut self,
        generation: i32,
        offsets: &[(String, i32, i64)],
    ) -> Result<(), QueueError> {
        match self {
            Coordinator::Kafka(g) => g.commit(generation, offsets).await,
            Coordinator::Memory { broker, group, .. } => broker.commit(group, generation, offsets),
        }
    }

    async fn committed(
        &mut self,
        partitions: &[(String, i32)],
    ) -> Result<BTreeMap<(String, i32), i64>, QueueError> {
        match self {
            Coordinator::Kafka(g) => g.committed(partitions).await,
            Coordinator::Memory { broker, group, .. } => Ok(partitions
                .iter()
                .filter_map(|(t, p)| broker.committed(group, t, *p).map(|o| ((t.clone(), *p), o)))
                .collect()),
        }
    }

    async fn leave(&mut self) -> Result<(), QueueError> {
        match self {
            Coordinator::Kafka(g) => g.leave().await,
            Coordinator::Memory {
                broker,
                group,
                member,
                ..
            } => {
                broker.leave(group, member);
                Ok(())
            }
        }
    }

    /// After an error: forget what the error says is stale.
    fn recover_from(&mut self, e: &QueueError) {
        if let Coordinator::Kafka(g) = self {
            match e.code() {
                Some(codes::UNKNOWN_MEMBER_ID) => g.reset_member(),
                Some(
                    codes::NOT_COORDINATOR
                    | codes::COORDINATOR_NOT_AVAILABLE
                    | codes::COORDINATOR_LOADING,
                )
                | None => g.forget_coordinator(),
                _ => {}
            }
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The member is shutting down: commit, leave.
    Shutdown,
    /// The group is rebalancing: commit, rejoin.
    Rebalance,
    /// The coordinator no longer accepts this member's generation: handled offsets are
    /// dropped (another member may already own the partitions) and the member rejoins.
    Fenced,
}

/// Sleeps `d`, or less if the consumer is stopped; says whether it was stopped.
async fn pause(d: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

/// Creates the retry and dead-letter topics with the partitions of the topic they serve.
async fn create_failure_topics(shared: &Shared, stopped: &mut watch::Receiver<bool>) -> bool {
    let policy = &shared.config.failure;
    for topic in &shared.config.topics {
        let mut wanted = policy.retry_topics_of(topic);
        if policy.dlq {
            wanted.push(policy.dlq_topic(topic));
        }
        if wanted.is_empty() {
            continue;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let created = async {
                let n = shared.dead_letters.partitions(topic).await?;
                for t in &wanted {
                    shared.dead_letters.create_topic(t, n).await?;
                }
                Ok::<_, QueueError>(())
            };
            match created.await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(target: "maas_queue", topic, error = %e, "cannot create the retry and dead-letter topics yet");
                    if pause(backoff, stopped).await {
                        return false;
                    }
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
                }
            }
        }
    }
    true
}

async fn rskafka_client(
    shared: &Shared,
    bootstrap: &[String],
    stopped: &mut watch::Receiver<bool>,
) -> Option<Arc<Client>> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let built = ClientBuilder::new(bootstrap.to_vec())
            .client_id(shared.config.client_id.clone())
            .backoff_config(BackoffConfig {
                // Calls give up (and are retried by the worker, which can be stopped) instead
                // of retrying forever inside rskafka.
                deadline: Some(shared.config.request_timeout),
                ..BackoffConfig::default()
            })
            .build();
        match tokio::time::timeout(shared.config.request_timeout, built).await {
            Ok(Ok(c)) => return Some(Arc::new(c)),
            Ok(Err(e)) => {
                tracing::warn!(target: "maas_queue", error = %e, "cannot reach the brokers; retrying")
            }
            Err(_) => tracing::warn!(target: "maas_queue", "no answer from the brokers; retrying"),
        }
        if pause(backoff, stopped).await {
            return None;
        }
        backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
    }
}

/// Starts the worker of one partition: open a fetcher, find the start offset, run.
fn start_worker(
    shared: &Arc<Shared>,
    source: &Source,
    workers: &mut JoinSet<()>,
    topic: String,
    partition: i32,
    committed: Option<i64>,
    stop: watch::Receiver<bool>,
) {
    let state = Arc::new(PartitionState::new(committed.unwrap_or(-1)));
    Shared::lock(&shared.assignment).insert((topic.clone(), partition), state.clone());
    let (shared, source) = (shared.clone(), source.clone());
    workers.spawn(async move {
        let mut stop = stop;
        let mut backoff = Duration::from_millis(100);
        let fetcher = loop {
            match Fetcher::new(&source, &topic, partition).await {
                Ok(f) => break f,
                Err(e) => tracing::warn!(target: "maas_queue", %topic, partition, error = %e, "cannot read the partition yet"),
            }
            if pause(backoff, &mut stop).await {
                return;
            }
            backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
        };
        let position = match committed {
            Some(p) => p,
            None => loop {
                match fetcher.start_offset(shared.config.start_from).await {
                    Ok(p) => break p,
                    Err(e) => tracing::warn!(target: "maas_queue", %topic, partition, error = %e, "cannot find the start offset yet"),
                }
                if pause(backoff, &mut stop).await {
                    return;
                }
            },
        };
        for a in [&state.handled_up_to, &state.committed, &state.high_watermark] {
            let _ = a.compare_exchange(-1, position, Ordering::AcqRel, Ordering::Acquire);
        }
        worker::run(shared, fetcher, position, state, stop).await;
    });
}

/// Offsets handled but not committed yet.
fn pending_commits(shared: &Shared) -> Vec<(String, i32, i64)> {
    Shared::lock(&shared.assignment)
        .iter()
        .filter_map(|((t, p), st)| {
            let handled = st.handled_up_to.load(Ordering::Acquire);
            (handled > st.committed.load(Ordering::Acquire)).then(|| (t.clone(), *p, handled))
        })
        .collect()
}

/// Commits what was handled; on success records it.
async fn commit(
    shared: &Shared,
    group: &mut Coordinator,
    generation: i32,
) -> Result<(), QueueError> {
    let offsets = pending_commits(shared);
    if offsets.is_empty() {
        return Ok(());
    }
    group.commit(generation, &offsets).await?;
    let assignment = Shared::lock(&shared.assignment);
    for (t, p, o) in &offsets {
        if let Some(st) = assignment.get(&(t.clone(), *p)) {
            st.committed.fetch_max(*o, Ordering::AcqRel);
        }
    }
    drop(assignment);
    shared.commits.fetch_add(1, Ordering::Relaxed);
    *Shared::lock(&shared.last_commit) = Some(Instant::now());
    shared.observe_commit();
    Ok(())
}

/// What an error from a group call means for the generation.
fn classify(code: Option<i16>) -> Option<End> {
    match code {
        Some(codes::REBALANCE_IN_PROGRESS) => Some(End::Rebalance),
        Some(codes::ILLEGAL_GENERATION | codes::UNKNOWN_MEMBER_ID) => Some(End::Fenced),
        _ => None,
    }
}

/// One generation: workers running, heartbeats and commits, until it ends.
async fn generation(
    shared: &Arc<Shared>,
    group: &mut Coordinator,
    source: &Source,
    joined: Joined,
    stopped: &mut watch::Receiver<bool>,
) -> End {
    let c = &shared.config;
    let committed = match group.committed(&joined.partitions).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "maas_queue", error = %e, "cannot read the committed offsets; rejoining");
            group.recover_from(&e);
            return classify(e.code()).unwrap_or(End::Rebalance);
        }
    };
    let (stop_workers, workers_stop) = watch::channel(false);
    let mut workers = JoinSet::new();
    for (topic, partition) in &joined.partitions {
        let from = committed.get(&(topic.clone(), *partition)).copied();
        start_worker(
            shared,
            source,
            &mut workers,
            topic.clone(),
            *partition,
            from,
            workers_stop.clone(),
        );
    }
    tracing::info!(
        target: "maas_queue",
        group = %c.group,
        member = %joined.member_id,
        generation = joined.generation,
        partitions = ?joined.partitions,
        "joined the group"
    );

    let mut heartbeat = tokio::time::interval(c.heartbeat_interval);
    let mut commits = tokio::time::interval(c.commit_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heartbeat = Instant::now();
    let end = loop {
        tokio::select! {
            _ = stopped.changed() => break End::Shutdown,
            _ = heartbeat.tick() => match group.heartbeat(joined.generation).await {
                Ok(0) => last_heartbeat = Instant::now(),
                Ok(code) => {
                    let e = QueueError::from_code(code, "heartbeat").unwrap_or(QueueError::Closed);
                    group.recover_from(&e);
                    if let Some(end) = classify(Some(code)) {
                        tracing::debug!(target: "maas_queue", error = %e, "heartbeat: the generation is over");
                        break end;
                    }
                    tracing::warn!(target: "maas_queue", error = %e, "heartbeat refused");
                }
                Err(e) => {
                    tracing::warn!(target: "maas_queue", error = %e, "heartbeat failed");
                    group.recover_from(&e);
                    if last_heartbeat.elapsed() > c.session_timeout {
                        // The coordinator has dropped us by now.
                        break End::Fenced;
                    }
                }
            },
            _ = commits.tick() => if let Err(e) = commit(shared, group, joined.generation).await.inspect(|()| shared.observe_lag(false)) {
                group.recover_from(&e);
                if let Some(end) = classify(e.code()) {
                    break end;
                }
                tracing::warn!(target: "maas_queue", error = %e, "commit failed; will retry");
            },
        }
    };

    tracing::debug!(target: "maas_queue", generation = joined.generation, ?end, "the generation ends");
    // Stop fetching; let in-flight records finish, up to the rebalance timeout.
    let _ = stop_workers.send(true);
    let finish = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout(c.rebalance_timeout, finish)
        .await
        .is_err()
    {
        tracing::warn!(target: "maas_queue", "abandoning records still being handled after the rebalance timeout");
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    if end != End::Fenced
        && let Err(e) = commit(shared, group, joined.generation).await
    {
        tracing::warn!(target: "maas_queue", error = %e, "final commit of the generation failed");
        group.recover_from(&e);
    }
    shared.observe_lag(true);
    Shared::lock(&shared.assignment).clear();
    end
}

/// The consumer's main task.
pub(crate) async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let c = &shared.config;
    let mut topics = c.topics.clone();
    for t in &c.topics {
        topics.extend(c.failure.retry_topics_of(t));
    }
    if let Some(m) = shared.cluster.memory() {
        for t in &c.topics {
            if m.partition_count(t).is_none() {
                tracing::warn!(target: "maas_queue", topic = %t, "the topic does not exist; creating it with one partition");
                m.create_topic(t, 1);
            }
        }
    }
    if !create_failure_topics(&shared, &mut stopped).await {
        return;
    }
    let (mut group, source) = match (shared.cluster.memory(), shared.cluster.bootstrap()) {
        (Some(broker), _) => (
            Coordinator::Memory {
                broker: broker.clone(),
                group: c.group.clone(),
                member: format!("{}-{:016x}", c.client_id, fastrand::u64(..)),
                topics,
                session: c.session_timeout,
            },
            Source::Memory(broker.clone()),
        ),
        (None, bootstrap) => {
            let bootstrap = bootstrap.unwrap_or_default();
            let Some(client) = rskafka_client(&shared, bootstrap, &mut stopped).await else {
                return;
            };
            // A join may wait for the whole group, up to the rebalance timeout.
            let brokers = Brokers::new(
                bootstrap.to_vec(),
                &c.client_id,
                c.request_timeout + c.rebalance_timeout,
            );
            let group = KafkaGroup::new(
                Arc::new(brokers),
                c.group.clone(),
                topics,
                c.assignor,
                c.session_timeout,
                c.rebalance_timeout,
            );
            (Coordinator::Kafka(group), Source::Kafka(client))
        }
    };

    let mut backoff = Duration::from_millis(100);
    loop {
        if *stopped.borrow() {
            break;
        }
        let joined = tokio::select! {
            j = group.join() => j,
            _ = stopped.changed() => break,
        };
        let joined = match joined {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(target: "maas_queue", group = %c.group, error = %e, "joining failed; retrying");
                group.recover_from(&e);
                if pause(backoff, &mut stopped).await {
                    break;
                }
                backoff = backoff.saturating_mul(2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        shared.generations.fetch_add(1, Ordering::Relaxed);
        shared.observe_join();
        *Shared::lock(&shared.member_id) = joined.member_id.clone();
        match generation(&shared, &mut group, &source, joined, &mut stopped).await {
            End::Shutdown => break,
            End::Rebalance => {}
            End::Fenced => {
                tracing::info!(target: "maas_queue", group = %c.group, "fenced by the coordinator; dropping uncommitted offsets and rejoining");
            }
        }
    }
    if let Err(e) = group.leave().await {
        tracing::warn!(target: "maas_queue", error = %e, "leaving the group failed; the coordinator will drop the member after the session timeout");
    }
}
