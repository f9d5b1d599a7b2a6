//! maas-saga against the database's own commit rate, in one run.
//!
//! `saga/two_step_pg_c32`: 32 concurrent clients; `maas` runs a two-step saga with
//! in-process participants on the PostgreSQL store per item (intent, final status), and
//! `raw_commit` does one single-row `INSERT` commit per item on the same database. Both are
//! reported as time per item. The target is `maas` ≤ 2 × `raw_commit`: a saga costs at most
//! two raw commits, which batching brings well below. `saga/two_step_sqlite` and
//! `saga/two_step_memory` show the same saga on the other stores.
//!
//! Needs PostgreSQL (`scripts/dev-services`; override with `MAAS_TEST_POSTGRES`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use maas_saga::store::{PgStore, SqliteStore};
use maas_saga::{Engine, MemoryStore, Reply, Saga, SagaStore, Status, Step, participant};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;
use tower::service_fn;

const CONCURRENCY: u64 = 32;

fn postgres_url() -> String {
    std::env::var("MAAS_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_owned())
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL not reachable at `{url}` ({e}): start it with `scripts/dev-services`"
            )
        });
    tokio::spawn(conn);
    client
}

fn saga() -> Saga {
    Saga::builder("create-model")
        .step(
            Step::new("create-model", "models")
                .payload(serde_json::json!({ "model": "m", "tenant": "t" })),
        )
        .step(
            Step::new("deduct-quota", "billing")
                .payload(serde_json::json!({ "tenant": "t", "cost": 1 })),
        )
        .build()
        .unwrap()
}

async fn engine(store: Arc<dyn SagaStore>) -> Engine {
    let ok = participant(service_fn(|_| async {
        Ok::<_, std::io::Error>(Reply::Done)
    }));
    Engine::builder_arc(store)
        .participant("models", ok.clone())
        .participant("billing", ok)
        .start()
        .await
        .unwrap()
}

/// Runs `iters` items over `CONCURRENCY` workers; returns the wall time.
async fn concurrently<F, Fut>(iters: u64, item: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let left = Arc::new(AtomicU64::new(iters));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (left, item) = (left.clone(), item.clone());
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    item().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    start.elapsed()
}

fn bench_engine(c: &mut Criterion, rt: &Runtime, group: &str, engine: Engine) {
    let mut g = c.benchmark_group(group);
    g.bench_function("maas", |b| {
        b.iter_custom(|iters| {
            let engine = engine.clone();
            rt.block_on(concurrently(iters, move || {
                let engine = engine.clone();
                async move {
                    let out = engine.run(saga()).await.unwrap();
                    assert_eq!(out.status, Status::Committed);
                }
            }))
        })
    });
    g.finish();
}

fn sagas(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("maas_bench_{}_{nanos}", std::process::id());
    let url = format!("{} options='-csearch_path={schema}'", postgres_url());
    rt.block_on(async {
        pg_client(&postgres_url())
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        pg_client(&url)
            .await
            .batch_execute("CREATE TABLE raw_commit (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)")
            .await
            .unwrap();
    });

    {
        let mut g = c.benchmark_group("saga/two_step_pg_c32");
        let clients: Vec<Arc<tokio_postgres::Client>> = rt
            .block_on(async { futures_join((0..CONCURRENCY).map(|_| pg_client(&url))).await })
            .into_iter()
            .map(Arc::new)
            .collect();
        let next_id = Arc::new(AtomicU64::new(0));
        let next_client = Arc::new(AtomicU64::new(0));
        g.bench_function("raw_commit", |b| {
            b.iter_custom(|iters| {
                let (clients, next_id, next_client) =
                    (clients.clone(), next_id.clone(), next_client.clone());
                rt.block_on(concurrently(iters, move || {
                    let client = clients
                        [(next_client.fetch_add(1, Ordering::Relaxed) % CONCURRENCY) as usize]
                        .clone();
                    let id = next_id.fetch_add(1, Ordering::Relaxed) as i64;
                    async move {
                        client
                            .execute(
                                "INSERT INTO raw_commit (id, payload) VALUES ($1, $2)",
                                &[&id, &"m:t:1"],
                            )
                            .await
                            .unwrap();
                    }
                }))
            })
        });
        let store: Arc<dyn SagaStore> = Arc::new(rt.block_on(PgStore::connect(&url)).unwrap());
        let engine = rt.block_on(engine(store));
        g.bench_function("maas", |b| {
            b.iter_custom(|iters| {
                let engine = engine.clone();
                rt.block_on(concurrently(iters, move || {
                    let engine = engine.clone();
                    async move {
                        assert_eq!(engine.run(saga()).await.unwrap().status, Status::Committed);
                    }
                }))
            })
        });
        g.finish();
    }

    let dir = std::env::temp_dir().join(format!("maas-bench-saga-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite: Arc<dyn SagaStore> = Arc::new(
        rt.block_on(SqliteStore::open(dir.join("sagas.db")))
            .unwrap(),
    );
    bench_engine(c, &rt, "saga/two_step_sqlite", rt.block_on(engine(sqlite)));
    bench_engine(
        c,
        &rt,
        "saga/two_step_memory",
        rt.block_on(engine(Arc::new(MemoryStore::new()))),
    );

    rt.block_on(async {
        pg_client(&postgres_url())
            .await
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in futures {
        out.push(f.await);
    }
    out
}

criterion_group!(benches, sagas);
criterion_main!(benches);
