//! The driver of one transaction: runs the machine's commands against participants, feeds
//! the outcomes back, and writes the decision (to roll back, or to confirm a TCC) before
//! acting on it. It sees only the [`Runtime`]; the supervisor writes the final status.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

use super::runtime::Runtime;
use super::trace::{trace_of, traceparent};
use crate::machine::{Command, Event, Machine};
use crate::participant::{BranchCall, Participant, Reply};
use crate::store::{AdminRequest, BranchProgress, BranchStatus};
use crate::{Operation, SagaId, Status, Step, Transaction};

/// What the executor tells the world as it goes: the live view behind the query API.
#[derive(Debug, Clone)]
pub(crate) struct LiveView {
    pub(crate) status: Status,
    pub(crate) branches: Vec<BranchProgress>,
    /// Attempts as the operations count them, read when the view is asked for.
    pub(crate) attempts: Option<Arc<[AtomicU32]>>,
}

impl LiveView {
    /// The view with up-to-date attempt counts.
    pub(crate) fn snapshot(&self) -> (Status, Vec<BranchProgress>) {
        let mut branches = self.branches.clone();
        if let Some(attempts) = &self.attempts {
            for (b, a) in branches.iter_mut().zip(attempts.iter()) {
                b.attempts = a.load(Ordering::Relaxed);
            }
        }
        (self.status, branches)
    }
}

/// A transaction being driven.
pub(crate) struct Drive {
    pub(crate) id: SagaId,
    pub(crate) transaction: Arc<Transaction>,
    pub(crate) machine: Machine,
    /// Whether the transaction's decision is already durable (recovered as compensating or
    /// committing).
    pub(crate) marked: bool,
    pub(crate) deadline: Option<Instant>,
    pub(crate) control: mpsc::UnboundedReceiver<AdminRequest>,
    pub(crate) view: Arc<Mutex<LiveView>>,
    /// The span that submitted the transaction (none when recovered): the saga span is its
    /// child, so it lands in the caller's trace.
    pub(crate) parent: tracing::Span,
}

/// Each branch's state, as the stores and the query API name it.
fn branch_states(machine: &Machine) -> Vec<BranchStatus> {
    match machine {
        Machine::Saga(m) => m.steps().iter().map(|&s| s.into()).collect(),
        Machine::Tcc(m) => m.branches().iter().map(|&s| s.into()).collect(),
    }
}

/// How one operation ended, after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Succeeded,
    Failed,
    Exhausted,
}

impl Drive {
    fn progress(&self, attempts: &[AtomicU32]) -> Vec<BranchProgress> {
        self.transaction
            .steps()
            .iter()
            .zip(branch_states(&self.machine))
            .zip(attempts)
            .map(|((step, state), attempts)| BranchProgress {
                name: step.name.clone(),
                state,
                attempts: attempts.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn publish(&self, attempts: &Arc<[AtomicU32]>) {
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        view.status = self.machine.status();
        view.branches = self.progress(attempts);
        view.attempts = Some(attempts.clone());
    }

    /// Runs the transaction to its end. Returns `None` if it cannot finish here (lease
    /// lost, or an internal inconsistency that was logged).
    pub(crate) async fn run(
        mut self,
        runtime: Arc<Runtime>,
    ) -> Option<(Status, Vec<BranchProgress>)> {
        let span = tracing::info_span!(
            parent: &self.parent,
            "saga",
            saga.id = %self.id,
            saga.name = self.transaction.name(),
            saga.kind = self.transaction.kind().as_str(),
            otel.status_code = tracing::field::Empty,
        );
        // Recovered (no caller here): continue the trace stored with the intent.
        if self.parent.is_none()
            && let (Some(tp), Some(continue_in)) =
                (self.transaction.traceparent(), &runtime.trace_context)
        {
            continue_in(&span, tp);
        }
        let span_handle = span.clone();
        async move {
            let n = self.transaction.steps().len();
            // Attempts per branch, counted by the operations as they go (the live view
            // shows a compensation that keeps failing).
            let attempts: Arc<[AtomicU32]> = (0..n).map(|_| AtomicU32::new(0)).collect();
            let ops = Arc::new(Ops {
                saga_id: self.id.clone(),
                deadline: self.deadline,
                ttl: match &*self.transaction {
                    Transaction::Tcc(t) => Some(t.ttl),
                    Transaction::Saga(_) | Transaction::Xa(_) => None,
                },
                coordinator: match &*self.transaction {
                    Transaction::Xa(x) => Some(x.coordinator.clone()),
                    Transaction::Saga(_) | Transaction::Tcc(_) => None,
                },
                retry_now: Notify::new(),
                stop: Stop::default(),
                attempts: attempts.clone(),
                trace: trace_of(&self.id, self.transaction.traceparent()),
                runtime: runtime.clone(),
            });
            let mut running = FuturesUnordered::new();
            let mut commands = self.machine.start();
            let mut deadline_passed = false;
            loop {
                if !commands.is_empty() {
                    let decision = if commands.iter().any(|c| c.op == Operation::Confirm) {
                        Some(Status::Committing)
                    } else if commands.iter().any(|c| !c.op.is_forward()) {
                        Some(Status::Compensating)
                    } else {
                        None
                    };
                    if let Some(decision) = decision.filter(|_| !self.marked) {
                        // The decision is durable before the first confirm or compensation,
                        // so a recovered transaction cannot change its mind.
                        if !runtime.record_decision(&self.id, decision, self.progress(&attempts)).await {
                            tracing::warn!(%decision, "lease lost before acting on the decision; leaving the transaction to its new owner");
                            return None;
                        }
                        self.marked = true;
                    }
                    for command in commands.drain(..) {
                        let step = &self.transaction.steps()[command.branch];
                        let Some(participant) = runtime.registry.get(&step.participant) else {
                            tracing::error!(participant = %step.participant, "participant not registered on this engine");
                            return None;
                        };
                        running.push(ops.clone().run(participant, command, step.clone()));
                    }
                }
                self.publish(&attempts);
                if running.is_empty() {
                    break;
                }
                let deadline = self.deadline.filter(|_| !deadline_passed && self.machine.status() == Status::Running);
                let event = tokio::select! {
                    Some((command, ended)) = running.next() => {
                        match ended {
                            Ended::Succeeded => Event::Succeeded(command.branch),
                            Ended::Failed => Event::Failed(command.branch),
                            Ended::Exhausted => Event::Exhausted(command.branch),
                        }
                    }
                    Some(request) = self.control.recv() => match request {
                        AdminRequest::Abort => {
                            ops.stop.trigger();
                            Event::Abort
                        }
                        AdminRequest::Retry => {
                            ops.retry_now.notify_waiters();
                            continue;
                        }
                    },
                    _ = sleep_until(deadline), if deadline.is_some() => {
                        deadline_passed = true;
                        Event::Abort
                    }
                };
                match self.machine.apply(event) {
                    Ok(next) => commands = next,
                    Err(e) => {
                        tracing::error!(error = %e, "saga machine rejected an event; leaving the transaction for recovery");
                        return None;
                    }
                }
            }
            let status = self.machine.status();
            debug_assert!(status.is_final(), "drive ended in {status}");
            if status == Status::Compensated {
                // Rolled back: the business operation failed, which the trace shows.
                span_handle.record("otel.status_code", "error");
            }
            Some((status, self.progress(&attempts)))
        }
        .instrument(span)
        .await
    }
}

/// Tells forward operations (actions, tries) to stop retrying: the transaction is being
/// aborted. An attempt already on the wire is still awaited.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    fn trigger(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What the operations of one transaction share.
struct Ops {
    saga_id: SagaId,
    deadline: Option<Instant>,
    /// A TCC's TTL, sent with its tries.
    ttl: Option<Duration>,
    /// An XA transaction's coordinator, part of its branches' global transaction ids.
    coordinator: Option<String>,
    /// Woken by an operator's retry request.
    retry_now: Notify,
    stop: Stop,
    attempts: Arc<[AtomicU32]>,
    trace: String,
    runtime: Arc<Runtime>,
}

impl Ops {
    /// Runs one operation with its retry policy. Actions and tries give up after their
    /// attempts or at the deadline; compensations, confirms and cancels never give up.
    async fn run(
        self: Arc<Self>,
        participant: Participant,
        command: Command,
        step: Step,
    ) -> (Command, Ended) {
        let op = command.op;
        let bounded = op.is_forward();
        let span = tracing::info_span!("saga_step", step = %step.name, op = %op, participant = %step.participant);
        async move {
        let mut attempt = 0u32;
        loop {
            let past_deadline = self.deadline.is_some_and(|d| Instant::now() >= d);
            if bounded && (past_deadline || self.stop.is_set()) {
                // Even with nothing sent in this run, an earlier run (before a crash) may
                // have applied it: uncertain, so it is undone (a no-op if it never applied).
                return (command, Ended::Exhausted);
            }
            attempt += 1;
            self.attempts[command.branch].fetch_add(1, Ordering::Relaxed);
            let call = BranchCall {
                saga_id: self.saga_id.clone(),
                branch: step.name.clone(),
                op,
                payload: step.payload.clone(),
                attempt,
                traceparent: Some(traceparent(&self.trace)),
                ttl: if op == Operation::Try { self.ttl } else { None },
                xa_gid: self.coordinator.as_ref().and_then(|c| {
                    crate::xa::Gid::new(c, &self.saga_id, &step.name).encode()
                }),
            };
            let outcome = tokio::time::timeout(crate::duration::clamp(step.timeout), participant.clone().oneshot(call)).await;
            let unknown = match outcome {
                Ok(Ok(Reply::Done)) => {
                    self.runtime.observer.call(op, "success");
                    return (command, Ended::Succeeded);
                }
                Ok(Ok(Reply::Rejected(reason))) if bounded => {
                    self.runtime.observer.call(op, "rejected");
                    tracing::info!(%reason, "participant rejected the operation");
                    return (command, Ended::Failed);
                }
                Ok(Ok(Reply::Rejected(reason))) => format!("rejected a {op}, which must not fail: {reason}"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {:?}", step.timeout),
            };
            self.runtime.observer.call(op, "unknown");
            tracing::debug!(attempt, error = %unknown, "outcome unknown; will retry");
            if bounded && attempt >= step.retry.max_attempts {
                return (command, Ended::Exhausted);
            }
            if !bounded && attempt == self.runtime.alert_after {
                self.runtime.observer.stuck(op);
                tracing::warn!(attempt, error = %unknown, "undo operation keeps failing; still retrying");
            }
            self.runtime.observer.retry(op);
            let pause = step.retry.pause_after(attempt);
            let wake = match self.deadline.filter(|_| bounded) {
                Some(d) => crate::duration::instant_after(Instant::now(), pause).min(d),
                None => crate::duration::instant_after(Instant::now(), pause),
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.retry_now.notified() => {}
                _ = self.stop.notify.notified(), if bounded => {}
            }
        }
    }
    .instrument(span)
    .await
    }
}
