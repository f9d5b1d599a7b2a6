//! A rolling update with no cluster: three platform processes sharing PostgreSQL, the
//! Kafka-API broker and Redis (all from `scripts/dev-services up`) behind a proxy that behaves
//! like a Service (it drops a replica only a second after its readiness fails). Keep-alive
//! clients upload models and ask for completions, and idle connections that never send a
//! request hang on, while each replica is replaced in turn as a Deployment does it: the new
//! one starts and becomes ready, then the old one gets SIGTERM. No request may fail, no
//! accepted upload may be lost; the p99 latency during the roll, each old replica's stop
//! time, the builder group's rebalances and the re-handled build tasks are printed.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::load::Load;
use support::process::PlatformProcess;
use support::service_proxy::ServiceProxy;

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const DRAIN_SECS: u64 = 2;
const DEADLINE_SECS: u64 = 5;
/// How long the proxy keeps a replica whose readiness failed (endpoint propagation).
const PROPAGATION: Duration = Duration::from_secs(1);

fn replica(run: &str, slot: usize, generation: usize, broker: &str) -> PlatformProcess {
    let name = format!("roll-{run}-{slot}-{generation}");
    PlatformProcess::new(
        &name,
        vec![
            ("MAAS_DATABASE_URL", DATABASE.to_owned()),
            ("MAAS_KAFKA_BROKERS", broker.to_owned()),
            ("MAAS_REDIS_URL", "redis://127.0.0.1:6379/".to_owned()),
            ("MAAS_INSTANCE", name.clone()),
            ("MAAS_BUILD_TOPIC", format!("roll-builds-{run}")),
            ("MAAS_BUILD_GROUP", format!("roll-builders-{run}")),
            ("MAAS_RATE_PER_MINUTE", "1000000".to_owned()),
            ("MAAS_TOKENS_PER_MINUTE", "100000000".to_owned()),
            ("MAAS_TENANT_QUOTA", "1000000".to_owned()),
            ("MAAS_BUILD_COST", "1".to_owned()),
            ("MAAS_BUILD_MILLIS", "10".to_owned()),
            ("MAAS_BUILDERS", "1".to_owned()),
            ("MAAS_TOKEN_MILLIS", "1".to_owned()),
            ("MAAS_DRAIN_SECS", DRAIN_SECS.to_string()),
            ("MAAS_SHUTDOWN_DEADLINE_SECS", DEADLINE_SECS.to_string()),
            (
                "MAAS_ARTIFACT_DIR",
                std::env::temp_dir()
                    .join(format!("maas-roll-{run}-artifacts"))
                    .display()
                    .to_string(),
            ),
        ],
    )
}

/// The sum of a counter's samples (all label sets) in a replica's `/metrics`.
async fn counter(http: &reqwest::Client, replica: &PlatformProcess, line_prefix: &str) -> f64 {
    support::get_text(http, &format!("{}/metrics", replica.base))
        .await
        .lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a replica counted in its life: (group generations, re-handled build tasks).
async fn churn(http: &reqwest::Client, replica: &PlatformProcess) -> (f64, f64) {
    (
        counter(http, replica, "maas_queue_generations_total{").await,
        counter(
            http,
            replica,
            "maas_platform_builds_total{outcome=\"skipped\"}",
        )
        .await,
    )
}

async fn wait_serving(proxy: &ServiceProxy, replica: &PlatformProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.serving(replica.addr) {
        assert!(
            Instant::now() < deadline,
            "replica {} never became ready; see {}",
            replica.base,
            replica.log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three connections through the proxy that never send a request.
async fn open_idle(proxy: &ServiceProxy, idle: &mut Vec<tokio::net::TcpStream>) {
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
}

/// One request's outcome: its status (0: transport error), the answer or error, seconds.
type Outcome = (u16, String, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_fails_no_request() {
    let broker = support::require_kafka();
    let (db, conn) = tokio_postgres::connect(DATABASE, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at 127.0.0.1:5432 ({e}); run `scripts/dev-services up`"
            )
        });
    tokio::spawn(conn);
    let run = format!("{:08x}", fastrand::u32(..));
    let http = reqwest::Client::new();
    let proxy = ServiceProxy::start(PROPAGATION).await;
    let mut replicas = Vec::new();
    for slot in 0..3 {
        let mut r = replica(&run, slot, 0, &broker);
        r.start(&http).await;
        proxy.add(r.addr);
        replicas.push(r);
    }
    for r in &replicas {
        wait_serving(&proxy, r).await;
    }
    let base = format!("http://{}", proxy.addr);
    let tenant = format!("roll-{run}");
    let key = support::create_key(&http, &replicas[0].admin, &tenant).await;
    let (code, model) = support::upload(
        &http,
        &base,
        Some(&key),
        "roll",
        support::model_file("roll"),
    )
    .await;
    assert_eq!(code, 202, "{model}");
    let model_id = model["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::get_json(&http, &format!("{base}/v1/models/{model_id}"), &key).await["status"]
        != "ready"
    {
        assert!(Instant::now() < deadline, "the first model was never built");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The load: keep-alive clients (one connection pool each) and idle connections.
    // One connection pool per client, kept across its calls.
    let send = {
        let (base, key, model_id) = (base.clone(), key.clone(), model_id.clone());
        let pools: Vec<reqwest::Client> = (0..5).map(|_| reqwest::Client::new()).collect();
        move |upload: bool, c: usize, n: usize| {
            let (base, key, model_id, http) = (
                base.clone(),
                key.clone(),
                model_id.clone(),
                pools[c].clone(),
            );
            async move {
                let started = Instant::now();
                let request = if upload {
                    http.post(format!("{base}/v1/models"))
                        .query(&[("name", format!("roll-{n}"))])
                        .body(support::model_file(&format!("roll-{c}-{n}")))
                } else {
                    http.post(format!("{base}/v1/chat/completions"))
                        .json(&json!({
                            "model": model_id, "max_tokens": 8,
                            "messages": [{ "role": "user", "content": "how are you" }]
                        }))
                };
                let (status, detail) = match request
                    .bearer_auth(&key)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or_default();
                        (status, body.to_string())
                    }
                    Err(e) => (0, format!("{e:?}")),
                };
                (status, detail, started.elapsed().as_secs_f64())
            }
        }
    };
    let uploads = {
        let send = send.clone();
        Load::start(1, Duration::from_millis(50), move |c, n| send(true, c, n))
    };
    let chats = Load::start(4, Duration::from_millis(5), move |c, n| {
        send(false, c + 1, n)
    });
    let mut idle = Vec::new();
    open_idle(&proxy, &mut idle).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The roll: a new replica, ready, then SIGTERM to the old one — three times.
    let roll_started = (uploads.count(), chats.count());
    let (mut generations, mut rehandled) = (0.0, 0.0);
    let mut stops = Vec::new();
    for (slot, current) in replicas.iter_mut().enumerate() {
        let mut new = replica(&run, slot, 1, &broker);
        new.start(&http).await;
        proxy.add(new.addr);
        wait_serving(&proxy, &new).await;
        let mut old = std::mem::replace(current, new);
        let (g, s) = churn(&http, &old).await;
        generations += g;
        rehandled += s;
        let (status, took) = old.stop().await;
        assert!(
            status.success(),
            "a replica's graceful stop exits 0, not {status}; see {}",
            old.log.display()
        );
        proxy.remove(old.addr);
        stops.push(took.as_secs_f64());
        open_idle(&proxy, &mut idle).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let roll_ended = (uploads.count(), chats.count());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (uploads, chats) = (uploads.stop().await, chats.stop().await);
    for r in &replicas {
        let (g, s) = churn(&http, r).await;
        generations += g;
        rehandled += s;
    }

    let outcomes: Vec<&Outcome> = uploads.iter().chain(&chats).collect();
    let failed: Vec<&&Outcome> = outcomes
        .iter()
        .filter(|o| !(200..300).contains(&o.0))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the roll, e.g. {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(5)]
    );
    let mut during: Vec<f64> = uploads[roll_started.0..roll_ended.0]
        .iter()
        .chain(&chats[roll_started.1..roll_ended.1])
        .map(|o| o.2)
        .collect();
    during.sort_by(f64::total_cmp);
    let p99 = during[(during.len() * 99 / 100).min(during.len() - 1)];
    for took in &stops {
        assert!(
            *took < (DRAIN_SECS + DEADLINE_SECS + 3) as f64,
            "a replica took {took:.1} s to stop (drain {DRAIN_SECS} s + deadline {DEADLINE_SECS} s)"
        );
    }

    // Every accepted upload is built, once.
    let accepted: Vec<String> = uploads
        .iter()
        .filter(|o| o.0 == 202)
        .map(|o| {
            serde_json::from_str::<Value>(&o.1).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'ready' AND builds = 1),
                        count(*) FILTER (WHERE status = 'failed')
                 FROM maas_platform_models WHERE id = ANY($1)",
                &[&accepted],
            )
            .await
            .unwrap();
        let (built, failed): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(failed, 0, "an accepted upload failed during the roll");
        if built as usize == accepted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{built} of {} accepted uploads built 90 s after the roll",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "rolling update: {} requests ({} during the roll), 0 failed, p99 during the roll \
         {:.0} ms; {} uploads accepted, all built once; old replicas stopped in {:?} s; \
         {} idle connections; proxy refused {}; builder group generations {generations}, \
         re-handled build tasks {rehandled}",
        outcomes.len(),
        during.len(),
        p99 * 1000.0,
        accepted.len(),
        stops.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>(),
        idle.len(),
        proxy.refused.load(Ordering::Relaxed),
    );
    drop(idle);
    for mut r in replicas {
        r.stop().await;
    }
}
