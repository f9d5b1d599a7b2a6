//! The platform on embedded defaults, driven over real HTTP on 127.0.0.1: an upload commits
//! its saga and gets built by the group; an upload past the quota is compensated (402) and
//! registers nothing; a failing build ends `failed` with its task dead-lettered; inference
//! degrades when the backend fails and the breaker opens; `/v1` answers 429 past the rate
//! of an API key;
//! errors are JSON; `/metrics` shows every crate's metrics.

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use serde_json::{Value, json};

fn config(rate_per_minute: u32) -> Config {
    Config {
        tenant_quota: 25,
        build_cost: 10,
        build_time: Duration::from_millis(20),
        rate_per_minute,
        breaker_open: Duration::from_secs(60),
        ..support::config("test")
    }
}

struct Api {
    base: String,
    admin: String,
    http: reqwest::Client,
    /// Each tenant's API key, made on first use.
    keys: Mutex<HashMap<String, String>>,
}

impl Api {
    async fn key(&self, tenant: &str) -> String {
        if let Some(k) = self.keys.lock().unwrap().get(tenant) {
            return k.clone();
        }
        let key = support::create_key(&self.http, &self.admin, tenant).await;
        self.keys
            .lock()
            .unwrap()
            .insert(tenant.to_owned(), key.clone());
        key
    }

    async fn post(&self, path: &str, tenant: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.key(tenant).await)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn get(&self, path: &str, tenant: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.key(tenant).await)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Polls `tenant`'s model until it is neither `queued` nor `building` (or 10 s pass).
    async fn settled(&self, id: &str, tenant: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, model) = self.get(&format!("/v1/models/{id}"), tenant).await;
            assert_eq!(code, 200, "{model}");
            let status = model["status"].as_str().unwrap().to_owned();
            if !matches!(status.as_str(), "queued" | "building") || Instant::now() > deadline {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn start(rate_per_minute: u32) -> (Platform, Api, std::path::PathBuf) {
    let config = config(rate_per_minute);
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .expect("platform starts on embedded defaults");
    let api = Api {
        base: format!("http://{}", platform.addr()),
        admin: format!("http://{}", platform.admin_addr()),
        http: reqwest::Client::new(),
        keys: Mutex::default(),
    };
    (platform, api, dir)
}

async fn stop(platform: Platform, dir: std::path::PathBuf) {
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_build_quota_dlq_degradation_and_metrics() {
    let (platform, api, dir) = start(10_000).await;

    // Two uploads fit acme's 25 credits (10 each); both are built by the group.
    let (code, first) = api
        .post("/v1/models", "acme", json!({ "name": "llama-3-8b" }))
        .await;
    assert_eq!(code, 202, "{first}");
    assert_eq!(first["status"], "queued");
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(api.settled(&id, "acme").await, "ready");
    let (_, built) = api.get(&format!("/v1/models/{id}"), "acme").await;
    assert_eq!(built["builds"], 1, "{built}");
    assert!(built.get("reason").is_none(), "{built}");

    // A build that fails: retried, then dead-lettered; the model ends `failed`.
    let (code, broken) = api
        .post("/v1/models", "acme", json!({ "name": "broken-weights" }))
        .await;
    assert_eq!(code, 202, "{broken}");
    let broken_id = broken["id"].as_str().unwrap();
    assert_eq!(api.settled(broken_id, "acme").await, "failed");
    let (_, failed) = api.get(&format!("/v1/models/{broken_id}"), "acme").await;
    assert_eq!(failed["reason"], "the weights do not load", "{failed}");
    assert_eq!(failed["builds"], 0, "{failed}");
    // Dead-lettered, it is refunded: acme has 15 of its 25 credits again, not 5.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, quota) = api.get("/v1/tenants/acme/quota", "acme").await;
        if quota["remaining"] == 15 {
            break;
        }
        assert!(Instant::now() < deadline, "not refunded: {quota}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, third) = api
        .post("/v1/models", "acme", json!({ "name": "phi-3" }))
        .await;
    assert_eq!(code, 202, "{third}");

    // The next would overdraw: the saga compensates, nothing is registered or charged.
    let (code, refused) = api
        .post("/v1/models", "acme", json!({ "name": "mistral-7b" }))
        .await;
    assert_eq!(code, 402, "{refused}");
    assert_eq!(refused["error"], "quota_exhausted");
    assert_eq!(refused["saga_status"], "compensated");
    let (_, quota) = api.get("/v1/tenants/acme/quota", "acme").await;
    assert_eq!(quota["remaining"], 5);
    // Another tenant has its own quota.
    let (code, qwen) = api
        .post("/v1/models", "globex", json!({ "name": "qwen" }))
        .await;
    assert_eq!(code, 202);
    assert_eq!(
        api.settled(qwen["id"].as_str().unwrap(), "globex").await,
        "ready"
    );

    // Bad input: JSON errors with the right status.
    let (code, err) = api.post("/v1/models", "acme", json!({ "nam": 1 })).await;
    assert_eq!((code, err["error"].as_str()), (400, Some("bad_request")));
    let (code, err) = api
        .post("/v1/models", "acme", json!({ "name": "../../etc/passwd" }))
        .await;
    assert_eq!((code, err["error"].as_str()), (400, Some("bad_request")));
    let (code, err) = api.get("/v1/models/m-0000000000000000", "acme").await;
    assert_eq!((code, err["error"].as_str()), (404, Some("not_found")));

    // Inference: normal, then degraded while the backend is down and the breaker opens.
    let infer = format!("/v1/models/{id}/infer");
    let (code, answer) = api.post(&infer, "acme", json!({ "prompt": "hi" })).await;
    assert_eq!(code, 200);
    assert_eq!(answer["degraded"], false);
    let r = api
        .http
        .put(format!("{}/admin/backend", api.admin))
        .bearer_auth(support::ADMIN_TOKEN)
        .json(&json!({ "healthy": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut reasons = Vec::new();
    for _ in 0..8 {
        let (code, answer) = api.post(&infer, "acme", json!({ "prompt": "hi" })).await;
        assert_eq!(code, 200, "degraded, not failed: {answer}");
        assert_eq!(answer["degraded"], true);
        reasons.push(answer["reason"].as_str().unwrap().to_owned());
    }
    assert_eq!(reasons[0], "model backend unavailable");
    assert_eq!(reasons.last().unwrap(), "circuit open", "{reasons:?}");

    // Every crate reports on the one /metrics page.
    let text = support::get_text(&api.http, &format!("{}/metrics", api.base)).await;
    for needle in [
        r#"http_requests_total{method="POST",path="/v1/models",status="402"} 1"#,
        r#"http_requests_total{method="POST",path="/v1/models",status="202"} 4"#,
        r#"maas_platform_refunds_total{outcome="refunded"} 1"#,
        r#"maas_saga_finished_total{status="compensated"} 1"#,
        r#"maas_breaker_state{breaker="inference"} 1"#,
        "maas_ratelimit_allowed_total",
        "maas_queue_",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // At least the two successful builds (delivery is at least once: a task handled again
    // around a rebalance can be counted twice, or as skipped).
    let built: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"maas_platform_builds_total{outcome="built"} "#))
        .and_then(|v| v.parse().ok())
        .expect("built count");
    assert!(built >= 2.0, "{built}");
    stop(platform, dir).await;
}

/// A billing participant that fails (here: its database refuses every quota change) rolls
/// the saga back for a reason the tenant did not cause: 503, not 402, and nothing charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_cannot_answer_is_503_not_402() {
    let (platform, api, dir) = start(10_000).await;
    let (code, _) = api
        .post("/v1/models", "initech", json!({ "name": "first" }))
        .await;
    assert_eq!(code, 202);
    let db = rusqlite::Connection::open(dir.join("app.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER quota_down BEFORE UPDATE ON quota
         BEGIN SELECT RAISE(ABORT, 'the quota table is unavailable'); END;",
    )
    .unwrap();
    let (code, err) = api
        .post("/v1/models", "initech", json!({ "name": "second" }))
        .await;
    assert_eq!(code, 503, "{err}");
    assert_eq!(err["error"], "unavailable", "{err}");
    db.execute_batch("DROP TRIGGER quota_down").unwrap();
    // Nothing was charged for it; a real shortage is still 402.
    let (_, quota) = api.get("/v1/tenants/initech/quota", "initech").await;
    assert_eq!(quota["remaining"], 15, "{quota}");
    let (code, _) = api
        .post("/v1/models", "initech", json!({ "name": "third" }))
        .await;
    assert_eq!(code, 202);
    let (code, err) = api
        .post("/v1/models", "initech", json!({ "name": "fourth" }))
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (402, Some("quota_exhausted"))
    );
    stop(platform, dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_is_rate_limited_per_api_key() {
    let (platform, api, dir) = start(5).await;
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(api.get("/v1/tenants/acme/quota", "acme").await.0);
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429]);
    let r = api
        .http
        .get(format!("{}/v1/tenants/acme/quota", api.base))
        .bearer_auth(api.key("acme").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // The limit is the key's: a key of another tenant, or a second key of acme, is not
    // affected; health checks are not limited.
    assert_eq!(api.get("/v1/tenants/globex/quota", "globex").await.0, 200);
    let second = support::create_key(&api.http, &api.admin, "acme").await;
    let r = api
        .http
        .get(format!("{}/v1/tenants/acme/quota", api.base))
        .bearer_auth(second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let health = api
        .http
        .get(format!("{}/health", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop(platform, dir).await;
}
