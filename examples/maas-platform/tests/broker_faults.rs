//! The platform and a Kafka-API broker of the test's own (tansu on SQLite, never the shared
//! one) killed with SIGKILL and restarted while uploads run: uploads go on being accepted (the
//! build task waits in the outbox, in the same transaction as the model), readiness names the
//! broker while it is away, and once it is back every accepted upload is built — with no
//! restart of the platform.

mod support;

use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use support::load::Load;
use support::own_broker::OwnBroker;

/// An upload's status and the model's id.
type Answer = (u16, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load() {
    let mut broker = OwnBroker::start("restart");
    let platform = Platform::start(
        Config {
            kafka_brokers: Some(vec![broker.addr.clone()]),
            // The check at the end reads every model: not to be rate limited.
            rate_per_minute: 1_000_000,
            tenant_quota: 1_000_000,
            build_cost: 1,
            build_time: Duration::from_millis(5),
            builders: 1,
            ..support::config("broker-restart")
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts with the test's broker");
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key = support::create_key(
        &http,
        &format!("http://{}", platform.admin_addr()),
        "broker-tenant",
    )
    .await;

    let load = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        Load::start(2, Duration::from_millis(30), move |c, n| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let name = format!("b-{c}-{n}");
                let (code, body) =
                    support::upload(&http, &base, Some(&key), &name, support::model_file(&name))
                        .await;
                (code, body["id"].as_str().map(str::to_owned))
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::readiness(&http, &base).await.0, 200);
    broker.kill();
    let not_ready_after =
        support::await_readiness(&http, &base, 503, Some("broker"), Duration::from_secs(15)).await;
    let before = load.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_outage = load.count() - before;
    broker.resume();
    let resumed_at = Instant::now();
    let ready_after =
        support::await_readiness(&http, &base, 200, None, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answers: Vec<Answer> = load.stop().await;
    let refused: Vec<_> = answers.iter().filter(|a| a.0 != 202).collect();
    assert!(
        refused.is_empty(),
        "{} of {} uploads were not accepted across the broker restart: {:?}",
        refused.len(),
        answers.len(),
        &refused[..refused.len().min(5)]
    );
    assert!(
        during_outage > 0,
        "no upload was answered during the outage"
    );

    // Every accepted upload is built once the broker is back.
    let ids: Vec<String> = answers.iter().filter_map(|a| a.1.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut pending = ids.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let m = support::get_json(&http, &format!("{base}/v1/models/{id}"), &key).await;
            assert_ne!(m["status"], "failed", "{m}");
            if m["status"] != "ready" {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "{} of {} accepted uploads not built 90 s after the broker came back",
            pending.len(),
            ids.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let built_after = resumed_at.elapsed().as_secs_f64();
    println!(
        "broker restart: {} uploads accepted ({during_outage} while the broker was down), all \
         built {built_after:.1} s after it came back; not ready {not_ready_after:.1} s after \
         the kill, ready {ready_after:.1} s after the start",
        answers.len()
    );
    platform.shutdown().await;
}
