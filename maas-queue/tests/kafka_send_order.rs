//! `send` queues a record when it is called: records leave in call order even when they wait
//! in the backlog (a new topic's layout being looked up, a full buffer), and a record whose
//! future is dropped is still produced.

mod support;

use maas_queue::{Producer, QueueError, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keep_call_order_through_the_backlog() {
    let addr = support::require_kafka();
    let topic = support::unique_topic("send-order");
    support::producer_with_topic(&addr, &topic, 2).await;
    // A fresh producer: it knows nothing of the topic yet, and its buffer holds 16 records,
    // so nearly every record below waits in the backlog first.
    let producer = Producer::builder([addr.as_str()])
        .max_buffered_records(16)
        .build()
        .expect("producer");
    let sends: Vec<_> = (0..3000)
        .map(|i| {
            let key = if i % 3 == 0 { "b" } else { "a" };
            producer.send(Record::new(topic.as_str(), i.to_string()).key(key))
        })
        .collect();
    let mut last: [Option<(i32, i64)>; 2] = [None, None];
    for (i, send) in sends.into_iter().enumerate() {
        let d = send.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        let slot = usize::from(i % 3 == 0);
        if let Some((partition, offset)) = last[slot] {
            assert_eq!(d.partition, partition, "one key, one partition");
            assert!(
                d.offset > offset,
                "record {i} at {d:?} after offset {offset}"
            );
        }
        last[slot] = Some((d.partition, d.offset));
    }

    // Futures dropped unpolled: the records are produced all the same.
    let (partition, offset) = last[0].unwrap();
    for i in 0..10 {
        drop(producer.send(Record::new(topic.as_str(), format!("dropped {i}")).key("a")));
    }
    producer.flush().await;
    let next = producer
        .send(Record::new(topic.as_str(), "after").key("a"))
        .await
        .expect("send");
    assert_eq!(next.partition, partition);
    assert_eq!(
        next.offset,
        offset + 11,
        "the 10 dropped sends were produced"
    );
    producer.shutdown().await;
    assert!(matches!(
        producer.send(Record::new(topic.as_str(), "late")).await,
        Err(QueueError::Closed)
    ));
}

#[test]
fn send_outside_a_runtime_is_an_error_not_a_panic() {
    let producer = Producer::builder(["127.0.0.1:9"])
        .build()
        .expect("producer");
    let result = futures::executor::block_on(producer.send(Record::new("t", "v")));
    assert!(matches!(result, Err(QueueError::NoRuntime)), "{result:?}");
}
