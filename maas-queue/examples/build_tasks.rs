//! The platform's model-build flow: an API produces build tasks keyed by model id, a group of
//! three workers handles them, a malformed task lands in the dead-letter queue, and the lag
//! drains to zero.
//!
//! ```text
//! cargo run -p maas-queue --example build_tasks                 # in-memory broker
//! MAAS_KAFKA_BROKERS=127.0.0.1:9092 cargo run -p maas-queue --example build_tasks   # Kafka
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use maas_queue::{
    Cluster, ConsumerHandle, FailurePolicy, GroupConsumer, GroupConsumerBuilder, MemoryBroker,
    Message, Poison, Producer, Record,
};
use tower::service_fn;

const TOPIC: &str = "model-build-tasks";
const TASKS: usize = 30;

/// One worker of the `model-builders` group.
fn worker(
    builder: GroupConsumerBuilder,
    name: &'static str,
    built: Arc<AtomicUsize>,
) -> ConsumerHandle {
    builder
        .client_id(name)
        .key_parallelism(4)
        .failure_policy(FailurePolicy::default().retries(2, Duration::from_millis(50)))
        .build()
        .expect("valid consumer settings")
        .start(service_fn(move |m: Message| {
            let built = built.clone();
            async move {
                let task = m
                    .value_str()
                    .filter(|v| v.starts_with('{'))
                    .ok_or_else(|| Poison::new("not a JSON task"))?;
                tokio::time::sleep(Duration::from_millis(5)).await; // "build" the model
                built.fetch_add(1, Ordering::Relaxed);
                println!(
                    "{name}: partition {} offset {}: built {task}",
                    m.partition, m.offset
                );
                Ok::<_, maas_queue::BoxError>(())
            }
        }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kafka = std::env::var("MAAS_KAFKA_BROKERS").ok();
    // Kafka when MAAS_KAFKA_BROKERS is set, else an in-memory broker: one `Cluster` value.
    let cluster = match kafka.as_deref() {
        Some(list) => Cluster::kafka(list.split(',').map(str::trim)),
        None => Cluster::in_memory(&MemoryBroker::new()),
    };
    let group = format!("model-builders-{}", std::process::id());
    let consumer = |()| GroupConsumer::builder(cluster.clone(), group.clone()).topics([TOPIC]);

    let producer = Producer::builder(cluster.clone()).build()?;
    producer.create_topic(TOPIC, 6).await?;

    // The workers: three members share the six partitions.
    let built = Arc::new(AtomicUsize::new(0));
    let workers: Vec<ConsumerHandle> = ["builder-a", "builder-b", "builder-c"]
        .into_iter()
        .map(|name| worker(consumer(()), name, built.clone()))
        .collect();
    while workers.iter().any(|w| w.assignment().is_empty()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The API side: one task per model, keyed by model id, plus one malformed task.
    for i in 0..TASKS {
        let task = format!(r#"{{"model":"m-{i}","weights":"s3://models/m-{i}"}}"#);
        producer
            .send(Record::new(TOPIC, task).key(format!("m-{i}")))
            .await?;
    }
    producer
        .send(Record::new(TOPIC, "garbage").key("m-bad"))
        .await?;

    while built.load(Ordering::Relaxed) < TASKS
        || workers.iter().map(|w| w.stats().dead_lettered).sum::<u64>() < 1
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // one commit interval
    for w in &workers {
        let lag: i64 = w.lag().iter().map(|l| l.lag).sum();
        println!(
            "{}: partitions {:?}, lag {lag}",
            w.member_id(),
            w.assignment()
        );
    }
    for w in workers {
        w.shutdown().await;
    }
    producer.shutdown().await;
    println!(
        "built {} models; 1 malformed task went to {TOPIC}.dlq",
        built.load(Ordering::Relaxed)
    );
    Ok(())
}
