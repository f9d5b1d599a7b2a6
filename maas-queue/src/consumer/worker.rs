//! One assigned partition: fetch, handle (with the failure policy), advance the
//! handled-up-to offset the coordinator commits.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::Instrument;

use super::fetcher::{Fetcher, OFFSET_OUT_OF_RANGE};
use super::shared::{PartitionState, Shared};
use crate::failure::History;
use crate::time::millis;
use crate::{Message, Poison};

/// Runs until told to stop (revoked, or shutting down). Stops between records: the record
/// being handled is finished first.
pub(crate) async fn run(
    shared: Arc<Shared>,
    fetcher: Fetcher,
    mut position: i64,
    state: Arc<PartitionState>,
    mut stop: watch::Receiver<bool>,
) {
    let c = &shared.config;
    loop {
        if *stop.borrow() {
            return;
        }
        let fetched = tokio::select! {
            r = fetcher.fetch(position, c.fetch_max_bytes, c.fetch_max_wait) => r,
            _ = stop.changed() => return,
        };
        let (messages, hw) = match fetched {
            Ok(f) => f,
            Err(e) if e.code() == Some(OFFSET_OUT_OF_RANGE) => {
                // Records before `position` were deleted (retention): start over as configured.
                match fetcher.start_offset(c.start_from).await {
                    Ok(p) => {
                        tracing::warn!(target: "maas_queue", from = position, to = p, "offset out of range; resetting");
                        position = p;
                    }
                    Err(e) => {
                        tracing::warn!(target: "maas_queue", error = %e, "could not find a start offset")
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(target: "maas_queue", error = %e, "fetch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        state.high_watermark.store(hw, Ordering::Relaxed);
        let messages: Vec<Message> = messages
            .into_iter()
            .filter(|m| m.offset >= position)
            .collect();
        let Some(last) = messages.last().map(|m| m.offset) else {
            continue;
        };
        let Ok(_slot) = shared.partitions_at_once.acquire().await else {
            return;
        };
        if c.key_parallelism <= 1 {
            for m in messages {
                if *stop.borrow() {
                    return;
                }
                let offset = m.offset;
                handle(&shared, m).await;
                state.handled.fetch_add(1, Ordering::Relaxed);
                state.handled_up_to.store(offset + 1, Ordering::Release);
                position = offset + 1;
            }
        } else {
            // Same key: in order; different keys: concurrently, up to the limit.
            let mut lanes: Vec<(Option<bytes::Bytes>, Vec<Message>)> = Vec::new();
            for m in messages {
                match lanes.iter_mut().find(|(k, _)| *k == m.key) {
                    Some((_, lane)) => lane.push(m),
                    None => lanes.push((m.key.clone(), vec![m])),
                }
            }
            let mut running = FuturesUnordered::new();
            let mut lanes = lanes.into_iter();
            loop {
                while running.len() < c.key_parallelism {
                    let Some((_, lane)) = lanes.next() else { break };
                    let (shared, state) = (&shared, &state);
                    running.push(async move {
                        for m in lane {
                            handle(shared, m).await;
                            state.handled.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                if running.next().await.is_none() {
                    break;
                }
            }
            state.handled_up_to.store(last + 1, Ordering::Release);
            position = last + 1;
        }
    }
}

/// Handles one record under the failure policy; returns when it is handled, moved to a
/// retry topic, dead-lettered, or (without a DLQ) given up on.
pub(crate) async fn handle(shared: &Shared, m: Message) {
    let policy = &shared.config.failure;
    let history = History::of(&m);
    if let Some(due) = history.due {
        // A due time is a header anyone could write: never wait longer than this retry
        // level's own delay.
        let longest = history
            .level
            .checked_sub(1)
            .and_then(|l| policy.retry_topics.get(l))
            .copied()
            .unwrap_or(Duration::ZERO);
        let wait = due.saturating_sub(millis(SystemTime::now()));
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64).min(longest)).await;
        }
    }
    let span = tracing::info_span!(
        target: "maas_queue",
        "queue_message",
        topic = %m.topic,
        partition = m.partition,
        offset = m.offset,
        traceparent = m.traceparent().unwrap_or_default(),
        otel.status_code = tracing::field::Empty,
    );
    if let (Some(continue_in), Some(tp)) = (&shared.trace_context, m.traceparent()) {
        (continue_in.0)(&span, tp);
    }
    let mut backoff = policy.backoff;
    let mut attempt = 0u32;
    let error = loop {
        attempt += 1;
        match shared
            .handler()
            .oneshot(m.clone())
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                shared.handled.fetch_add(1, Ordering::Relaxed);
                shared.observe(&m.topic, "handled");
                return;
            }
            Err(e) => {
                let poison = e.is::<Poison>();
                if !poison && attempt <= policy.retries {
                    shared.retried.fetch_add(1, Ordering::Relaxed);
                    shared.observe(&m.topic, "retried");
                    tracing::debug!(target: "maas_queue", parent: &span, error = %e, attempt, "handler failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2).min(Duration::from_secs(30));
                    continue;
                }
                break (e.to_string(), poison);
            }
        }
    };
    let (error, poison) = error;
    // The record failed for good here (it moves on to a retry topic or the DLQ).
    span.record("otel.status_code", "error");
    let mut history = history;
    history.attempts += attempt;
    let group = &shared.config.group;
    let next_level = history.level + 1;
    let record = if !poison && next_level <= policy.retry_topics.len() {
        let delay = policy.retry_topics[history.level];
        let due = millis(SystemTime::now()).saturating_add(delay.as_millis() as i64);
        shared.retried.fetch_add(1, Ordering::Relaxed);
        shared.observe(&m.topic, "retried");
        tracing::info!(target: "maas_queue", parent: &span, %error, level = next_level, "moving the record to a retry topic");
        Some(history.forward(
            &m,
            policy.retry_topic(&history.original_topic, next_level),
            &error,
            group,
            Some(due),
        ))
    } else if policy.dlq {
        shared.dead_lettered.fetch_add(1, Ordering::Relaxed);
        shared.observe(&m.topic, "dead_lettered");
        tracing::warn!(target: "maas_queue", parent: &span, %error, poison, "sending the record to the dead-letter queue");
        Some(history.forward(
            &m,
            policy.dlq_topic(&history.original_topic),
            &error,
            group,
            None,
        ))
    } else {
        tracing::error!(target: "maas_queue", parent: &span, %error, "record failed and there is no dead-letter queue: skipped");
        None
    };
    if let Some(record) = record {
        // Nothing is lost: the partition does not move on until the record is stored.
        let mut pause = Duration::from_millis(100);
        while let Err(e) = shared.dead_letters.send(record.clone()).await {
            tracing::warn!(target: "maas_queue", error = %e, topic = %record.topic, "could not store a failed record; retrying");
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2).min(Duration::from_secs(5));
        }
    }
}
