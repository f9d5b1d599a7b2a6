//! The platform and its PostgreSQL, on a cluster of the test's own (never the shared server):
//! restarted while uploads run, the platform answers 503 quickly, readiness follows, and it
//! works again with no restart of its own — no accepted upload lost, none charged twice; and
//! over TLS (`sslmode=require`), verified against the test's own certificate authority.

mod support;

use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use support::load::Load;
use support::own_postgres::{Certificates, OwnPostgres};

const QUOTA: i64 = 1_000_000;

/// An upload's answer: its status (0: no answer), the seconds it took, the model's id.
type Answer = (u16, f64, Option<String>);

fn config(name: &str, url: String) -> Config {
    Config {
        database_url: Some(url),
        instance: format!("{name}-{}", std::process::id()),
        tenant_quota: QUOTA,
        build_cost: 1,
        build_time: Duration::from_millis(5),
        builders: 1,
        ..support::config(name)
    }
}

async fn admin(pg: &OwnPostgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url("sslmode=disable"), tokio_postgres::NoTls)
        .await
        .expect("the test's own PostgreSQL answers");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    let pg = OwnPostgres::start("restart", None);
    let platform = Platform::start(
        config("pg-restart", pg.url("")),
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts on the test's PostgreSQL");
    let base = format!("http://{}", platform.addr());
    let admin_base = format!("http://{}", platform.admin_addr());
    let http = reqwest::Client::new();
    let tenant = format!("restart-{}", support::random());
    let key = support::create_key(&http, &admin_base, &tenant).await;

    // Uploads from three clients until told to stop: (answer, seconds it took, model id).
    let load = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        Load::start(3, Duration::from_millis(20), move |c, n| {
            let (http, base, key) = (http.clone(), base.clone(), key.clone());
            async move {
                let started = Instant::now();
                let sent = http
                    .post(format!("{base}/v1/models"))
                    .query(&[("name", format!("m-{c}-{n}"))])
                    .bearer_auth(&key)
                    .body(support::model_file(&format!("{c}-{n}")))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                let (code, id) = match sent {
                    Ok(r) => {
                        let code = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        (code, body["id"].as_str().map(str::to_owned))
                    }
                    Err(_) => (0, None),
                };
                (code, started.elapsed().as_secs_f64(), id)
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(support::readiness(&http, &base).await.0, 200);
    let before_outage = load.count();
    pg.stop();
    // Readiness follows the outage.
    let not_ready_after =
        support::await_readiness(&http, &base, 503, Some("database"), Duration::from_secs(10))
            .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during_outage = load.seen()[before_outage..].to_vec();
    pg.resume();
    let ready_after =
        support::await_readiness(&http, &base, 200, None, Duration::from_secs(20)).await;
    let after_resume = load.count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers: Vec<Answer> = load.stop().await;

    // During the outage: quick 503s, nothing else.
    let refused: Vec<_> = during_outage.iter().filter(|a| a.0 == 503).collect();
    assert!(
        !refused.is_empty(),
        "no upload met the outage: {during_outage:?}"
    );
    let slowest = refused.iter().map(|a| a.1).fold(0.0, f64::max);
    assert!(slowest < 5.0, "a 503 took {slowest:.1} s");
    for (code, secs, _) in &answers {
        assert!(
            *code == 202 || *code == 503,
            "an upload answered {code} after {secs:.1} s"
        );
    }
    // After it: uploads are accepted again, by the same platform.
    let accepted_after = answers[after_resume..]
        .iter()
        .filter(|a| a.0 == 202)
        .count();
    assert!(accepted_after > 0, "no upload accepted after the restart");

    // Every accepted upload is built; the quota paid for exactly the models that exist.
    let db = admin(&pg).await;
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.0 == 202)
        .filter_map(|a| a.2.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let unsettled: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM maas_saga
                         WHERE status IN ('running', 'compensating', 'committing'))
                      + (SELECT count(*) FROM maas_platform_models
                         WHERE tenant = $1 AND status NOT IN ('ready', 'failed'))
                      + (SELECT count(*) FROM maas_platform_outbox)",
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        if unsettled == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unsettled} sagas, builds or tasks never settled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = db
        .query(
            "SELECT id, status, builds, coalesce(reason, '') FROM maas_platform_models WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .unwrap();
    let models: std::collections::HashMap<String, (String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let reasons: std::collections::HashMap<String, String> =
        rows.iter().map(|r| (r.get(0), r.get(3))).collect();
    for id in &accepted {
        let (status, builds) = models
            .get(id)
            .unwrap_or_else(|| panic!("accepted upload {id} was lost"));
        assert_eq!(
            (status.as_str(), *builds),
            ("ready", 1),
            "accepted upload {id}: {}",
            reasons[id]
        );
    }
    let refunded: i64 = db
        .query_one(
            "SELECT coalesce(sum(amount), 0)::bigint FROM maas_platform_refunds WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    let quota: i64 = db
        .query_one(
            "SELECT amount FROM maas_platform_quota WHERE tenant = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        quota,
        QUOTA - models.len() as i64 + refunded,
        "the quota does not match the models charged"
    );
    println!(
        "postgres restart: {} uploads ({} accepted, {} refused with 503 during the outage, \
         slowest 503 {slowest:.2} s); not ready {not_ready_after:.1} s after the stop, ready \
         {ready_after:.1} s after the start; {} models, {} refunded",
        answers.len(),
        accepted.len(),
        refused.len(),
        models.len(),
        refunded
    );
    platform.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls() {
    let dir = std::env::temp_dir().join(format!("maas-pg-certs-{}", support::random()));
    let certs = Certificates::make(&dir);
    let pg = OwnPostgres::start("tls", Some(&certs));

    // Not trusting the test's authority: the handshake fails and the platform does not start.
    let untrusted = Platform::start(
        config("pg-tls-untrusted", pg.url("sslmode=require")),
        prometheus::Registry::new(),
    )
    .await;
    let error = match untrusted {
        Ok(_) => panic!("the platform trusted a certificate no authority of its own signed"),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    };
    assert!(
        error.to_lowercase().contains("certificate"),
        "unexpected error: {error}"
    );

    let platform = Platform::start(
        Config {
            database_ca: Some(certs.ca.clone()),
            ..config("pg-tls", pg.url("sslmode=require"))
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts over TLS");
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key = support::create_key(
        &http,
        &format!("http://{}", platform.admin_addr()),
        "tls-tenant",
    )
    .await;
    let (code, model) = support::upload(
        &http,
        &base,
        Some(&key),
        "over-tls",
        support::model_file("tls"),
    )
    .await;
    assert_eq!(code, 202, "{model}");
    let url = format!("{base}/v1/models/{}", model["id"].as_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    while support::get_json(&http, &url, &key).await["status"] != "ready" {
        assert!(Instant::now() < deadline, "not built over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every connection of the platform's is encrypted (the test's own is the plain one).
    let db = admin(&pg).await;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        encrypted > 0 && plain == 0,
        "{encrypted} over TLS, {plain} plain"
    );
    println!(
        "postgres over TLS: {encrypted} connections encrypted, none plain; untrusted: {error}"
    );
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
