//! The `model-builders` group: consumes `model-build-tasks` and builds models.
//!
//! A task is `{"model": id, "digest": "sha256:…", "tenant": …, "cost": …}` keyed by the model
//! id, so the tasks of one model stay in order on one partition. The build reads the model
//! file's header from the artifact store ([`crate::artifacts::inspect_stored`]) and records
//! what it holds on the model. A file that is refused (unsupported, truncated, corrupt) fails
//! the build at once with that reason; a store that cannot be read is retried in place. Either
//! way a failed build ends dead-lettered on `model-build-tasks.dlq` with the reason
//! (`maas-queue redrive` puts it back); the model is marked `failed`, and the `refunds`
//! member gives the tenant its credits back. A task that is not one goes straight to the
//! DLQ.

use std::sync::Arc;
use std::time::Duration;

use maas_queue::metrics::QueueMetrics;
use maas_queue::{ConsumerHandle, FailurePolicy, GroupConsumerBuilder, Message, Poison};
use prometheus::IntCounterVec;
use tower::service_fn;
use tracing::Instrument;

use crate::artifacts::{ArtifactStore, Digest, InspectError, inspect_stored};
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
    /// Where their files live.
    pub artifacts: Arc<dyn ArtifactStore>,
    /// How long a build takes.
    pub build_time: Duration,
    /// The topic of build tasks.
    pub topic: String,
    /// `maas_platform_builds_total{outcome}` (attempts: a failing build counts each try).
    pub builds: IntCounterVec,
}

/// How long a build waits for the database to come back before it fails (and, after its
/// retries, is dead-lettered and refunded).
const PATIENCE: Duration = Duration::from_secs(600);

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
                // A database away (restarting) holds the build back; it does not fail it.
                let built = crate::store::while_database_away("building", PATIENCE, || {
                    this.build(m.clone())
                })
                .await;
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
        let digest: Digest = task
            .digest
            .as_deref()
            .ok_or_else(|| Poison::new("a build task must name its model file's `digest`"))?
            .parse()
            .map_err(|e| Poison::new(format!("the task's digest: {e}")))?;
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
        if !self.store.start_build(&id).await? {
            // Another delivery of this task built the model since it was read.
            self.builds.with_label_values(&["skipped"]).inc();
            return Ok(());
        }
        let metadata = match inspect_stored(&*self.artifacts, &digest).await {
            Ok(metadata) => metadata,
            Err(InspectError::Refused(refused)) => {
                // Counted first: whoever sees the status can rely on the count.
                let reason = refused.to_string();
                self.builds.with_label_values(&["failed"]).inc();
                self.store.finish(&id, Outcome::Failed(&reason)).await?;
                tracing::warn!(model = %id, %digest, %reason, "model file refused");
                // Retrying cannot mend the file: straight to the dead-letter topic.
                return Err(Poison::new(reason).into());
            }
            Err(e @ InspectError::Store(_)) => {
                self.builds.with_label_values(&["failed"]).inc();
                self.store
                    .finish(&id, Outcome::Failed(&e.to_string()))
                    .await?;
                return Err(e.into());
            }
        };
        // The rest of a build (converting, placing the weights) is simulated.
        tokio::time::sleep(self.build_time).await;
        // Two deliveries of one task can build at once (a rebalance hands the partition on
        // while a build runs): the first to finish records the build, the other is skipped.
        self.builds.with_label_values(&["built"]).inc();
        if self.store.finish(&id, Outcome::Ready(&metadata)).await? {
            tracing::info!(model = %id, name = %model.name, %digest,
                format = ?metadata.format, parameters = metadata.parameters, "model built");
        } else {
            tracing::info!(model = %id, "model already built by another delivery of its task");
        }
        Ok(())
    }
}
