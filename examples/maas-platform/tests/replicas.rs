//! Two platform instances sharing PostgreSQL (127.0.0.1:5432, database `test`) behave as
//! replicas behind one Service: a model uploaded through one is seen, built, through the
//! other (their model files on one shared volume), a tenant's quota is one quota whichever instance charges it, and an API key made
//! through one replica's admin API works on the other.

mod support;

use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};

const DATABASE: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

async fn require_postgres() {
    if let Err(e) = tokio_postgres::connect(DATABASE, tokio_postgres::NoTls).await {
        panic!(
            "PostgreSQL is not reachable at 127.0.0.1:5432 ({e}); start it with \
             `scripts/dev-services up`"
        );
    }
}

/// A replica on the shared database, keeping model files in the shared `artifacts`.
async fn replica(name: &str, artifacts: &std::path::Path) -> Platform {
    Platform::start(
        Config {
            database_url: Some(DATABASE.to_owned()),
            instance: format!("{name}-{}", std::process::id()),
            tenant_quota: 25,
            build_cost: 10,
            build_time: Duration::from_millis(10),
            builders: 1,
            artifact_dir: Some(artifacts.to_owned()),
            ..support::config(name)
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("a replica starts on PostgreSQL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_models_and_quota() {
    require_postgres().await;
    let artifacts = std::env::temp_dir().join(format!("maas-replicas-{}", support::random()));
    let (a, b) = (
        replica("replica-a", &artifacts).await,
        replica("replica-b", &artifacts).await,
    );
    let (a_url, b_url) = (
        format!("http://{}", a.addr()),
        format!("http://{}", b.addr()),
    );
    let tenant = format!("tenant-{}-{}", std::process::id(), fastrand::u32(..));
    let http = reqwest::Client::new();
    let key = support::create_key(&http, &format!("http://{}", a.admin_addr()), &tenant).await;
    let upload = |base: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            support::upload(
                &http,
                &base,
                Some(&key),
                "shared-model",
                support::model_file("r"),
            )
            .await
        }
    };
    let (code, model) = upload(a_url.clone()).await;
    assert_eq!(code, 202, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    // Seen through the other replica, and built.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = support::get_json(&http, &format!("{b_url}/v1/models/{id}"), &key).await;
        if m["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "not built: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One quota: 25 credits pay for one build on A and one on B, not a third anywhere.
    assert_eq!(upload(b_url.clone()).await.0, 202);
    let (code, refused) = upload(a_url.clone()).await;
    assert_eq!(code, 402, "{refused}");
    let q = support::get_json(&http, &format!("{b_url}/v1/tenants/{tenant}/quota"), &key).await;
    assert_eq!(q["remaining"], 5);
    a.shutdown().await;
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(artifacts);
}
