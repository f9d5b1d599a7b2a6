//! Refunds for builds that end dead-lettered: a consumer group on `<topic>.dlq` gives the
//! tenant the build's credits back and marks the model `failed` (keeping the reason the build
//! recorded, else the dead letter's error) — once per model, however
//! often the dead letter is delivered (`Store::refund` records it in the same transaction).
//!
//! The rule for a redrive (`maas-queue redrive` puts dead letters back on the topic): a
//! refunded model is charged again, once, before it is rebuilt (`Store::recharge_if_refunded`);
//! a tenant that cannot pay any more gets no build and the model stays `failed`. So credits
//! left plus credits charged for models not refunded always equal the tenant's quota.

use maas_queue::metrics::QueueMetrics;
use maas_queue::{ConsumerHandle, FailurePolicy, GroupConsumerBuilder, Message, Poison};
use prometheus::IntCounterVec;
use tower::service_fn;

use crate::store::Store;

/// What a build task names: its model, tenant, cost and model file.
pub(crate) struct Task {
    pub(crate) model: String,
    pub(crate) tenant: String,
    pub(crate) cost: i64,
    /// The file's `sha256:` digest (absent in tasks queued before uploads carried files).
    pub(crate) digest: Option<String>,
}

/// Reads a build task; a poison error when it is not one.
pub(crate) fn task(m: &Message) -> Result<Task, Poison> {
    let v: serde_json::Value = m
        .value_str()
        .and_then(|v| serde_json::from_str(v).ok())
        .ok_or_else(|| Poison::new("a build task must be a JSON object"))?;
    let model = v["model"]
        .as_str()
        .ok_or_else(|| Poison::new("a build task needs a `model` id"))?
        .to_owned();
    Ok(Task {
        model,
        tenant: v["tenant"].as_str().unwrap_or_default().to_owned(),
        cost: v["cost"].as_i64().unwrap_or(0),
        digest: v["digest"].as_str().map(str::to_owned),
    })
}

/// Starts the refunding member of `consumer`'s group on the dead-letter topic.
pub(crate) fn start(
    consumer: GroupConsumerBuilder,
    topic: &str,
    store: Store,
    refunds: IntCounterVec,
    metrics: &QueueMetrics,
) -> Result<ConsumerHandle, maas_queue::ConfigError> {
    let consumer = consumer
        .topics([format!("{topic}.dlq")])
        .client_id("refunds")
        // A refund that fails (database away) is retried; it never goes to another DLQ.
        .failure_policy(
            FailurePolicy::default()
                .retries(5, std::time::Duration::from_millis(200))
                .dead_letter(false),
        )
        .metrics(metrics)
        .build()?;
    Ok(consumer.start(service_fn(move |m: Message| {
        let (store, refunds) = (store.clone(), refunds.clone());
        async move {
            let t = task(&m)?;
            if t.tenant.is_empty() {
                // A task queued before tasks named their tenant: nothing known to refund.
                tracing::warn!(model = %t.model, "dead-lettered build without a tenant; not refunded");
                return Ok(());
            }
            // The build's own reason when it recorded one, else the dead letter's error.
            let reason = format!(
                "dead-lettered: {}",
                m.header_str(maas_queue::failure::headers::ERROR)
                    .unwrap_or("the build task could not be handled")
            );
            // A refund waits out a database restart; it has no dead-letter topic to fall to.
            let refunded = crate::store::while_database_away(
                "refunding",
                std::time::Duration::from_secs(3600),
                || async { Ok(store.refund(&t.model, &t.tenant, t.cost, &reason).await?) },
            )
            .await?;
            refunds
                .with_label_values(&[if refunded { "refunded" } else { "repeat" }])
                .inc();
            if refunded {
                tracing::info!(model = %t.model, tenant = %t.tenant, credits = t.cost, "dead-lettered build refunded");
            }
            Ok::<_, maas_queue::BoxError>(())
        }
    })))
}
