//! The `model-builders` group: consumes `model-build-tasks` and builds models.
//!
//! A task is `{"model": id}` keyed by the model id, so the tasks of one model stay in order on
//! one partition. A build that fails is retried in place, then dead-lettered to
//! `model-build-tasks.dlq` with the reason (`maas-queue redrive` puts it back); the model is
//! marked `failed`, and the `refunds` member gives the tenant its credits back. A task that
//! is not JSON goes straight to the DLQ.

use std::time::Duration;

use maas_queue::metrics::QueueMetrics;
use maas_queue::{ConsumerHandle, FailurePolicy, GroupConsumerBuilder, Message};
use prometheus::IntCounterVec;
use tower::service_fn;
use tracing::Instrument;

use crate::store::{Outcome, Store};

/// The topic of build tasks, unless `MAAS_BUILD_TOPIC` names another.
pub const TOPIC: &str = "model-build-tasks";
/// Its partitions (when the platform creates it).
pub const PARTITIONS: i32 = 6;
/// The consumer group, unless `MAAS_BUILD_GROUP` names another.
pub const GROUP: &str = "model-builders";

/// What a build needs besides the task.
#[derive(Clone)]
pub struct Builder {
    /// Where models live.
    pub store: Store,
    /// How long a build takes.
    pub build_time: Duration,
    /// The topic of build tasks.
    pub topic: String,
    /// `maas_platform_builds_total{outcome}` (attempts: a failing build counts each try).
    pub builds: IntCounterVec,
}

/// A build that failed, with the reason the DLQ records.
#[derive(Debug, thiserror::Error)]
#[error("building {model} failed: {reason}")]
struct BuildFailed {
    model: String,
    reason: String,
}

impl Builder {
    /// Starts one member of the group.
    pub fn start(
        &self,
        consumer: GroupConsumerBuilder,
        member: usize,
        metrics: &QueueMetrics,
    ) -> Result<ConsumerHandle, maas_queue::ConfigError> {
        let this = self.clone();
        let consumer = consumer
            .topics([self.topic.as_str()])
            .client_id(format!("builder-{member}"))
            .key_parallelism(4)
            .failure_policy(FailurePolicy::default().retries(2, Duration::from_millis(50)))
            .metrics(metrics)
            // The build joins the trace of the upload that queued it: the consumer's record
            // span continues the record's traceparent, and build_model is its child.
            .trace_context(crate::continue_trace)
            .build()?;
        Ok(consumer.start(service_fn(move |m: Message| {
            let this = this.clone();
            let span = tracing::info_span!(
                "build_model",
                partition = m.partition,
                offset = m.offset,
                otel.status_code = tracing::field::Empty,
            );
            async move {
                let built = this.build(m).await;
                if built.is_err() {
                    tracing::Span::current().record("otel.status_code", "error");
                }
                built
            }
            .instrument(span)
        })))
    }

    async fn build(&self, m: Message) -> Result<(), maas_queue::BoxError> {
        let task = crate::refunds::task(&m)?;
        let id = task.model.clone();
        let Some(model) = self.store.model(&id).await? else {
            // Compensated after the task was sent, or never registered: nothing to build.
            tracing::warn!(model = %id, "build task for an unknown model; skipped");
            self.builds.with_label_values(&["skipped"]).inc();
            return Ok(());
        };
        if model.status == "ready" {
            // Delivery is at least once: a task handled again after a rebalance finds the
            // model built and does nothing.
            self.builds.with_label_values(&["skipped"]).inc();
            return Ok(());
        }
        // A redriven task of a refunded model is paid for again first (see `refunds`).
        if !task.tenant.is_empty()
            && !self
                .store
                .recharge_if_refunded(&id, &task.tenant, task.cost)
                .await?
        {
            tracing::warn!(model = %id, tenant = %task.tenant, "redriven build not rebuilt: the tenant cannot pay for it again");
            self.builds.with_label_values(&["skipped"]).inc();
            return Ok(());
        }
        self.store.set_status(&id, "building").await?;
        tokio::time::sleep(self.build_time).await;
        if model.name.contains("broken") {
            // The demo's failing build: retried, then dead-lettered with this reason.
            // Counted first: whoever sees the status can rely on the count.
            let reason = "the weights do not load";
            self.builds.with_label_values(&["failed"]).inc();
            self.store.finish(&id, Outcome::Failed(reason)).await?;
            return Err(BuildFailed {
                model: id,
                reason: reason.into(),
            }
            .into());
        }
        self.builds.with_label_values(&["built"]).inc();
        self.store.finish(&id, Outcome::Ready).await?;
        tracing::info!(model = %id, name = %model.name, "model built");
        Ok(())
    }
}
