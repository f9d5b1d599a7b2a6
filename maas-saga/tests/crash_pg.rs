//! The crash test: "create a model + deduct billing quota", for real.
//!
//! * A model service and a billing service (quota rows in PostgreSQL, both behind the
//!   barrier) run on 127.0.0.1 in this process, failing at random: errors before doing
//!   anything, answers lost after committing, answers slower than the engine's timeout —
//!   and, for one transaction in ten, actions that arrive after their compensation.
//! * An engine runs in a **child process** on the PostgreSQL store, submitting 300 jobs —
//!   sagas (create model → deduct quota) and TCC transactions (reserve quota + reserve a
//!   model slot, then confirm or cancel) — and is **SIGKILLed at random moments**, at least
//!   six times, and restarted.
//! * Afterwards: every transaction is terminal; a model exists if and only if its quota was
//!   deducted; no quota is negative and every unit is accounted for; no TCC reservation is
//!   still held.
//!
//! This file is its own test harness: run as a child (`MAAS_SAGA_CRASH_CHILD` set) it is
//! the engine; otherwise it is the test.

#[path = "support/pg.rs"]
mod pg;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use maas_saga::barrier::{BranchKey, postgres as barrier};
use maas_saga::store::PgStore;
use maas_saga::{
    Engine, HttpParticipant, Operation, Reply, RetryPolicy, Saga, SagaId, Step, Tcc, participant,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_postgres::Client;

const JOBS: usize = 300;
const TENANTS: usize = 8;
const INITIAL_QUOTA: i64 = 1_000;
const KILLS: usize = 6;
const CHILD_ENV: &str = "MAAS_SAGA_CRASH_CHILD";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(CHILD_ENV).is_some() {
        rt.block_on(child());
    } else {
        rt.block_on(parent());
        println!("test crash_pg ... ok");
    }
}

// ------------------------------------------------------------------ the engine (child)

fn step(name: &str, participant: &str, payload: Value) -> Step {
    Step::new(name, participant)
        .payload(payload)
        .timeout(Duration::from_millis(250))
        .retry(RetryPolicy::new(4).backoff(Duration::from_millis(20), Duration::from_millis(200)))
}

async fn child() {
    let url = std::env::var("MAAS_SAGA_CRASH_DB").unwrap();
    let models = std::env::var("MAAS_SAGA_CRASH_MODELS").unwrap();
    let billing = std::env::var("MAAS_SAGA_CRASH_BILLING").unwrap();
    let store = PgStore::connect(&url)
        .await
        .expect("child: connect the store");
    let engine = Engine::builder(store)
        .participant("models", participant(HttpParticipant::new(models)))
        .participant("billing", participant(HttpParticipant::new(billing)))
        .owner("crash-engine")
        .lease(Duration::from_secs(2))
        .recovery_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("child: start the engine");
    let jobs = pg::connect(&url).await;
    loop {
        if engine.in_flight() < 6 {
            let rows = jobs
                .query("SELECT id, kind, tenant, cost FROM jobs WHERE NOT submitted ORDER BY id LIMIT 8", &[])
                .await
                .unwrap();
            for row in rows {
                let (id, kind, tenant, cost): (String, String, String, i64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let payload =
                    json!({ "model": format!("model-{id}"), "tenant": tenant, "cost": cost });
                let submitted = if kind == "saga" {
                    let saga = Saga::builder("create-model")
                        .step(step("create-model", "models", payload.clone()))
                        .step(step("deduct-quota", "billing", payload))
                        .build()
                        .unwrap();
                    engine.submit_with_id(SagaId::from(id.clone()), saga).await
                } else {
                    let tcc = Tcc::builder("reserve-model")
                        .branch(step("reserve-quota", "billing", payload.clone()))
                        .branch(step("reserve-slot", "models", payload))
                        .ttl(Duration::from_secs(3))
                        .build()
                        .unwrap();
                    engine.submit_with_id(SagaId::from(id.clone()), tcc).await
                };
                if submitted.is_ok() {
                    jobs.execute("UPDATE jobs SET submitted = true WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ participants

/// A few connections shared by a service's handlers.
struct Pool {
    clients: Vec<Mutex<Client>>,
    next: AtomicUsize,
}

impl Pool {
    async fn new(url: &str, n: usize) -> Self {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(Mutex::new(pg::connect(url).await));
        }
        Pool {
            clients,
            next: AtomicUsize::new(0),
        }
    }

    async fn get(&self) -> tokio::sync::MutexGuard<'_, Client> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].lock().await
    }
}

/// What the random failure injector does to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    FailBefore,
    LoseAnswer,
    Slow,
}

fn fault() -> Fault {
    match fastrand::u32(0..100) {
        0..=9 => Fault::FailBefore,
        10..=15 => Fault::LoseAnswer,
        16..=19 => Fault::Slow,
        _ => Fault::None,
    }
}

type Answer = (StatusCode, String);

fn answer(reply: Reply, fault: Fault) -> Answer {
    match (reply, fault) {
        (_, Fault::LoseAnswer) => (StatusCode::BAD_GATEWAY, "answer lost".into()),
        (Reply::Done, _) => (StatusCode::OK, String::new()),
        (Reply::Rejected(reason), _) => (StatusCode::CONFLICT, reason),
    }
}

async fn inject(f: Fault) -> Option<Answer> {
    match f {
        Fault::FailBefore => Some((StatusCode::INTERNAL_SERVER_ERROR, "injected failure".into())),
        Fault::Slow => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            None
        }
        _ => None,
    }
}

/// One transaction in ten is doomed: every action or try it sends the model service hangs
/// for two seconds before doing its work — long after the engine gave up on it and
/// compensated. The barrier must refuse these late actions.
fn doomed(key: &BranchKey) -> bool {
    let h = key
        .saga_id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    key.op.is_forward() && h % 10 == 0
}

/// Runs a handler's work in its own task: like a real service, the work goes on even when
/// the engine stops waiting (hyper would otherwise drop it with the connection).
async fn detached<F: std::future::Future<Output = Answer> + Send + 'static>(work: F) -> Answer {
    tokio::spawn(work)
        .await
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, "handler panicked".into()))
}

async fn models(State(pool): State<Arc<Pool>>, headers: HeaderMap, body: String) -> Answer {
    detached(models_work(pool, headers, body)).await
}

async fn billing(State(pool): State<Arc<Pool>>, headers: HeaderMap, body: String) -> Answer {
    detached(billing_work(pool, headers, body)).await
}

async fn models_work(pool: Arc<Pool>, headers: HeaderMap, body: String) -> Answer {
    let Ok(key) = BranchKey::from_headers(&headers) else {
        return (StatusCode::BAD_REQUEST, "not a saga call".into());
    };
    if doomed(&key) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let f = fault();
    if let Some(a) = inject(f).await {
        return a;
    }
    let payload: Value = serde_json::from_str(&body).unwrap_or_default();
    let model = payload["model"].as_str().unwrap_or_default().to_owned();
    let mut client = pool.get().await;
    let result: Result<Reply, tokio_postgres::Error> = async {
        let tx = client.transaction().await?;
        let b = barrier::enter(&tx, &key).await?;
        if b.should_apply() {
            match key.op {
                Operation::Action => {
                    tx.execute(
                        "INSERT INTO models (id, saga_id, state) VALUES ($1, $2, 'active')",
                        &[&model, &key.saga_id],
                    )
                    .await?;
                }
                Operation::Try => {
                    tx.execute(
                        "INSERT INTO models (id, saga_id, state) VALUES ($1, $2, 'reserved')",
                        &[&model, &key.saga_id],
                    )
                    .await?;
                }
                Operation::Confirm => {
                    tx.execute(
                        "UPDATE models SET state = 'active' WHERE id = $1",
                        &[&model],
                    )
                    .await?;
                }
                Operation::Compensate | Operation::Cancel => {
                    tx.execute("DELETE FROM models WHERE id = $1", &[&model])
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(b.reply())
    }
    .await;
    match result {
        Ok(reply) => answer(reply, f),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn billing_work(pool: Arc<Pool>, headers: HeaderMap, body: String) -> Answer {
    let Ok(key) = BranchKey::from_headers(&headers) else {
        return (StatusCode::BAD_REQUEST, "not a saga call".into());
    };
    let f = fault();
    if let Some(a) = inject(f).await {
        return a;
    }
    let payload: Value = serde_json::from_str(&body).unwrap_or_default();
    let tenant = payload["tenant"].as_str().unwrap_or_default().to_owned();
    let cost = payload["cost"].as_i64().unwrap_or(0);
    let ttl_ms: i64 = headers
        .get(maas_saga::barrier::headers::TTL_MS)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(3_000);
    let mut client = pool.get().await;
    let result: Result<Reply, tokio_postgres::Error> = async {
        let tx = client.transaction().await?;
        let b = barrier::enter(&tx, &key).await?;
        if b.should_apply() {
            match key.op {
                Operation::Action | Operation::Try => {
                    let n = tx
                        .execute(
                            "UPDATE quota SET amount = amount - $2 WHERE tenant = $1 AND amount >= $2",
                            &[&tenant, &cost],
                        )
                        .await?;
                    if n == 0 {
                        // Business failure: roll back, barrier row included.
                        return Ok(Reply::Rejected("quota exhausted".into()));
                    }
                    let state = if key.op == Operation::Try { "held" } else { "deducted" };
                    tx.execute(
                        "INSERT INTO ledger (saga_id, tenant, amount, state, expires_at)
                         VALUES ($1, $2, $3, $4, now() + $5::bigint * interval '1 millisecond')",
                        &[&key.saga_id, &tenant, &cost, &state, &ttl_ms],
                    )
                    .await?;
                }
                Operation::Confirm => {
                    tx.execute(
                        "UPDATE ledger SET state = 'deducted', settled_at = now() WHERE saga_id = $1 AND state = 'held'",
                        &[&key.saga_id],
                    )
                    .await?;
                }
                Operation::Compensate | Operation::Cancel => {
                    let refunded = tx
                        .query_opt(
                            "UPDATE ledger SET state = 'refunded', settled_at = now()
                             WHERE saga_id = $1 AND state IN ('deducted', 'held') RETURNING amount",
                            &[&key.saga_id],
                        )
                        .await?;
                    if let Some(row) = refunded {
                        let amount: i64 = row.get(0);
                        tx.execute("UPDATE quota SET amount = amount + $2 WHERE tenant = $1", &[&tenant, &amount])
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(b.reply())
    }
    .await;
    match result {
        Ok(reply) => answer(reply, f),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

// ------------------------------------------------------------------ the test (parent)

fn spawn_child(url: &str, models: &str, billing: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .env("MAAS_SAGA_CRASH_DB", url)
        .env("MAAS_SAGA_CRASH_MODELS", models)
        .env("MAAS_SAGA_CRASH_BILLING", billing)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the engine child process")
}

fn kill9(child: &mut Child) {
    // SIGKILL: no destructors, no flushing, no goodbye.
    child.kill().expect("SIGKILL the engine");
    child.wait().expect("reap the engine");
}

async fn parent() {
    let seed = std::env::var("MAAS_SAGA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    fastrand::seed(seed);
    println!(
        "crash_pg: seed {seed} (set MAAS_SAGA_CRASH_SEED to replay the kill schedule and the job mix)"
    );
    let schema = pg::Schema::create("crash").await;
    let db = pg::connect(&schema.url).await;
    db.batch_execute(&format!(
        "CREATE TABLE models (id TEXT PRIMARY KEY, saga_id TEXT NOT NULL, state TEXT NOT NULL);
         CREATE TABLE quota (tenant TEXT PRIMARY KEY, amount BIGINT NOT NULL CHECK (amount >= 0));
         CREATE TABLE ledger (saga_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, amount BIGINT NOT NULL,
                              state TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL, settled_at TIMESTAMPTZ);
         CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, tenant TEXT NOT NULL, cost BIGINT NOT NULL,
                            submitted BOOLEAN NOT NULL DEFAULT false);
         INSERT INTO quota (tenant, amount) SELECT 'tenant-' || g, {INITIAL_QUOTA} FROM generate_series(0, {}) g;",
        TENANTS - 1
    ))
    .await
    .unwrap();
    barrier::migrate(&db).await.unwrap();
    for i in 0..JOBS {
        let kind = if i % 3 == 2 { "tcc" } else { "saga" };
        db.execute(
            "INSERT INTO jobs (id, kind, tenant, cost) VALUES ($1, $2, $3, $4)",
            &[
                &format!("job-{i:04}"),
                &kind,
                &format!("tenant-{}", fastrand::usize(0..TENANTS)),
                &fastrand::i64(10..80),
            ],
        )
        .await
        .unwrap();
    }

    let pool = Arc::new(Pool::new(&schema.url, 12).await);
    let models_addr = serve(
        Router::new()
            .route("/saga", post(models))
            .with_state(pool.clone()),
    )
    .await;
    let billing_addr = serve(
        Router::new()
            .route("/saga", post(billing))
            .with_state(pool.clone()),
    )
    .await;
    let (models_url, billing_url) = (
        format!("http://{models_addr}/saga"),
        format!("http://{billing_addr}/saga"),
    );

    // Kill the engine at random moments while work is in flight, at least KILLS times.
    let mut child = spawn_child(&schema.url, &models_url, &billing_url);
    let mut kills = 0;
    while kills < KILLS {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..700))).await;
        let finished: i64 = db
            .query_one(
                "SELECT count(*) FROM maas_saga WHERE status IN ('committed', 'compensated')",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        assert!(
            finished < JOBS as i64,
            "all work finished after {kills} kills; the test needs {KILLS} kills mid-run"
        );
        kill9(&mut child);
        kills += 1;
        let unfinished: i64 = db
            .query_one(
                "SELECT count(*) FROM maas_saga WHERE status NOT IN ('committed', 'compensated')",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        println!(
            "crash_pg: kill -9 #{kills} with {unfinished} transactions unfinished; {finished} finished"
        );
        child = spawn_child(&schema.url, &models_url, &billing_url);
    }

    // Let the last incarnation finish everything.
    let started = Instant::now();
    loop {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM jobs WHERE submitted),
                        (SELECT count(*) FROM maas_saga WHERE status IN ('committed', 'compensated'))",
                &[],
            )
            .await
            .unwrap();
        let (submitted, finished): (i64, i64) = (row.get(0), row.get(1));
        if submitted == JOBS as i64 && finished == JOBS as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {finished} of {JOBS} transactions finished ({submitted} submitted)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill9(&mut child);

    // Every transaction is terminal.
    let unfinished: i64 = db
        .query_one(
            "SELECT count(*) FROM maas_saga WHERE status NOT IN ('committed', 'compensated')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unfinished, 0);
    let per_status: Vec<(String, String, i64)> = db
        .query(
            "SELECT kind, status, count(*) FROM maas_saga GROUP BY kind, status ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    println!("crash_pg: outcomes {per_status:?}");
    assert_eq!(per_status.iter().map(|r| r.2).sum::<i64>(), JOBS as i64);

    // A model exists (active) if and only if its quota was deducted, and only for
    // committed transactions.
    let mismatches: Vec<(String, String, Option<String>, Option<String>)> = db
        .query(
            "SELECT s.id, s.status, m.state, l.state FROM maas_saga s
             LEFT JOIN models m ON m.saga_id = s.id
             LEFT JOIN ledger l ON l.saga_id = s.id AND l.state <> 'refunded'
             WHERE (s.status = 'committed') <> COALESCE(m.state = 'active' AND l.state = 'deducted', false)
                OR (m.saga_id IS NULL) <> (l.saga_id IS NULL)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(
        mismatches.is_empty(),
        "model/quota mismatches: {mismatches:?}"
    );

    // No quota is negative (a CHECK constraint too), and every unit is accounted for.
    let accounts: Vec<(String, i64, i64)> = db
        .query(
            "SELECT q.tenant, q.amount, COALESCE(SUM(l.amount) FILTER (WHERE l.state <> 'refunded'), 0)::bigint
             FROM quota q LEFT JOIN ledger l ON l.tenant = q.tenant GROUP BY q.tenant, q.amount",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    for (tenant, amount, spent) in &accounts {
        assert!(*amount >= 0, "{tenant} has negative quota {amount}");
        assert_eq!(
            amount + spent,
            INITIAL_QUOTA,
            "{tenant}: {amount} left + {spent} spent"
        );
    }

    // No TCC reservation is still held.
    let held: i64 = db
        .query_one("SELECT count(*) FROM ledger WHERE state = 'held'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        held, 0,
        "reservations still held after every transaction ended"
    );
    let late: i64 = db
        .query_one(
            "SELECT count(*) FROM ledger l JOIN maas_saga s ON s.id = l.saga_id
             WHERE s.kind = 'tcc' AND l.settled_at > l.expires_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let barrier_rows: i64 = db
        .query_one("SELECT count(*) FROM maas_saga_barrier", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "crash_pg: {KILLS} kills; reservations settled after their TTL (engine dead meanwhile): {late}; \
         barrier rows: {barrier_rows}"
    );
    schema.drop_it().await;
}
