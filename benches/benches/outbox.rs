//! The PostgreSQL outbox, end to end, against the producer alone and against the commits
//! alone, in one run, on the local PostgreSQL and Kafka-API broker (tansu):
//!
//! * `outbox/pg_relay`: 4 writers each commit transactions of one `outbox::pg::enqueue`; the
//!   time runs until the relay has published every record (acknowledged, row deleted).
//! * `outbox/raw_commit`: the same 4 writers commit the same insert into a table of the same
//!   shape, without a relay.
//! * `outbox/direct_produce`: the producer alone, as a handler without an outbox uses it: 4
//!   senders, each awaiting the broker's acknowledgement of one record before the next.
//! * `outbox/commit_to_ack`: one record at a time, from its COMMIT to the relay holding the
//!   broker's acknowledgement (woken by `NOTIFY`); p50 and p99 printed to stderr.
//!
//! Targets (time per event, so lower is better): `pg_relay` ≤ 2 × `direct_produce` (relay ≥
//! 0.5 × its events/s) and `pg_relay` ≤ `raw_commit` × 1 (the relay keeps up with the
//! commits by grouping them). Needs `scripts/dev-services` (PostgreSQL on 5432, tansu on 9092).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use maas_queue::outbox::pg::{self, PgRelay};
use maas_queue::{Producer, Record};
use tokio_postgres::{Client, NoTls};

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const WRITERS: usize = 4;

async fn client() -> Client {
    let (c, conn) = tokio_postgres::connect(DATABASE, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL at 127.0.0.1:5432 ({e}): start it with `scripts/dev-services`")
        });
    tokio::spawn(conn);
    c
}

/// `n` transactions, split among the writers, each inserting one record through `insert`.
async fn commit_all<F, Fut>(writers: &[Arc<tokio::sync::Mutex<Client>>], n: u64, insert: F)
where
    F: Fn(Arc<tokio::sync::Mutex<Client>>, u64) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let per = n.div_ceil(writers.len() as u64);
    let mut tasks = Vec::new();
    for (w, c) in writers.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                insert(c.clone(), w as u64 * per + i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn record(topic: &str, i: u64) -> Record {
    Record::new(topic.to_owned(), format!("{{\"model\":\"m-{i}\"}}")).key(format!("m-{}", i % 64))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = std::env::var("MAAS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let run = std::process::id();
    let topic = format!("bench-outbox-{run}");
    let (table, raw) = (format!("bench_outbox_{run}"), format!("bench_raw_{run}"));
    let producer = rt.block_on(async {
        let p = Producer::builder([addr.as_str()]).build().unwrap();
        p.create_topic(&topic, 4).await.unwrap_or_else(|e| {
            panic!("no broker at {addr} ({e}): start it with `scripts/dev-services`")
        });
        p
    });
    let writers: Vec<Arc<tokio::sync::Mutex<Client>>> = rt.block_on(async {
        let admin = client().await;
        pg::install(&admin, &table).await.unwrap();
        pg::install(&admin, &raw).await.unwrap();
        let mut w = Vec::new();
        for _ in 0..WRITERS {
            w.push(Arc::new(tokio::sync::Mutex::new(client().await)));
        }
        w
    });
    let relay = rt.block_on(async {
        PgRelay::builder(DATABASE, producer.clone())
            .table(&table)
            .lock_key(run as i64)
            .poll_every(Duration::from_millis(5))
            .start()
    });

    let mut g = c.benchmark_group("outbox");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let t = table.clone();
    let tp = topic.clone();
    g.bench_function("pg_relay", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let before = relay.stats().published();
                let start = Instant::now();
                let (t, tp) = (t.clone(), tp.clone());
                let t: &'static str = Box::leak(t.into_boxed_str());
                let tp: &'static str = Box::leak(tp.into_boxed_str());
                commit_all(&writers, iters, move |c, i| async move {
                    let mut c = c.lock().await;
                    let tx = c.transaction().await.unwrap();
                    pg::enqueue(&tx, t, &record(tp, i)).await.unwrap();
                    tx.commit().await.unwrap();
                })
                .await;
                let want = before + iters.div_ceil(WRITERS as u64) * WRITERS as u64;
                relay.stats().wait_published(want).await;
                start.elapsed()
            })
        })
    });
    // Commit to acknowledgement: one writer, one record at a time, woken by NOTIFY as the
    // platform does; the time from COMMIT returning until the relay has the broker's
    // acknowledgement (and deleted the row). Criterion gets the mean; p50 and p99 printed.
    let mut samples = Vec::new();
    let (t2, tp3) = (table.clone(), topic.clone());
    g.bench_function("commit_to_ack", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut c = writers[0].lock().await;
                for i in 0..iters {
                    let before = relay.stats().published();
                    let tx = c.transaction().await.unwrap();
                    pg::enqueue(&tx, &t2, &record(&tp3, i)).await.unwrap();
                    tx.commit().await.unwrap();
                    let committed = Instant::now();
                    pg::notify(&*c, &t2).await.unwrap();
                    relay.stats().wait_published(before + 1).await;
                    let took = committed.elapsed();
                    samples.push(took);
                    total += took;
                }
                total
            })
        })
    });
    print_percentiles("outbox/commit_to_ack", &mut samples);
    let r = raw.clone();
    let tp2 = topic.clone();
    g.bench_function("raw_commit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let r: &'static str = Box::leak(r.clone().into_boxed_str());
                let tp: &'static str = Box::leak(tp2.clone().into_boxed_str());
                commit_all(&writers, iters, move |c, i| async move {
                    let mut c = c.lock().await;
                    let tx = c.transaction().await.unwrap();
                    pg::enqueue(&tx, r, &record(tp, i)).await.unwrap();
                    tx.commit().await.unwrap();
                })
                .await;
                start.elapsed()
            })
        })
    });
    g.bench_function("direct_produce", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let per = iters.div_ceil(WRITERS as u64);
                let mut tasks = Vec::new();
                for w in 0..WRITERS as u64 {
                    let (p, topic) = (producer.clone(), topic.clone());
                    tasks.push(tokio::spawn(async move {
                        for i in 0..per {
                            p.send(record(&topic, w * per + i))
                                .await
                                .expect("acknowledged");
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    rt.block_on(async {
        let admin = client().await;
        let _ = admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {raw}"
            ))
            .await;
    });
}

/// Criterion reports means; the latency figures that matter are p50 and p99.
fn print_percentiles(id: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return; // filtered out of this run
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{id}: {} records, p50 {:?}, p99 {:?}",
        samples.len(),
        at(0.50),
        at(0.99)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
