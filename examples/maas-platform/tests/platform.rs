//! The platform on embedded defaults, driven over real HTTP on 127.0.0.1: an upload commits
//! its saga and gets built by the group; an upload past the quota is compensated (402) and
//! registers nothing; a refused model file ends `failed` with its task dead-lettered; chat
//! degrades when the backend fails and the breaker opens; `/v1` answers 429 past the rate
//! of an API key;
//! errors are JSON; `/metrics` shows every crate's metrics.

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use maas_platform::{Config, Platform};
use serde_json::{Value, json};
use sha2::Digest as _;

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

    async fn upload(&self, tenant: &str, name: &str, file: Vec<u8>) -> (u16, Value) {
        let key = self.key(tenant).await;
        support::upload(&self.http, &self.base, Some(&key), name, file).await
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
    let file = support::model_file("llama");
    let (code, first) = api.upload("acme", "llama-3-8b", file.clone()).await;
    assert_eq!(code, 202, "{first}");
    assert_eq!(first["status"], "queued");
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&file));
    assert_eq!(
        first["artifact"],
        json!({ "digest": digest, "size": file.len() })
    );
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(api.settled(&id, "acme").await, "ready");
    let (_, built) = api.get(&format!("/v1/models/{id}"), "acme").await;
    assert_eq!(built["builds"], 1, "{built}");
    assert!(built.get("reason").is_none(), "{built}");
    // The builder read the file: two tensors, 32 + 8 parameters.
    assert_eq!(
        built["metadata"],
        json!({ "format": "safetensors", "tensors": 2, "parameters": 40,
                "dtypes": ["BF16", "F32"] }),
        "{built}"
    );
    assert_eq!(built["artifact"]["digest"], digest.as_str());

    // A file cut short: refused with its reason, dead-lettered; the model ends `failed`.
    let (code, broken) = api
        .upload("acme", "broken-weights", support::broken_file("b"))
        .await;
    assert_eq!(code, 202, "{broken}");
    let broken_id = broken["id"].as_str().unwrap();
    assert_eq!(api.settled(broken_id, "acme").await, "failed");
    let (_, failed) = api.get(&format!("/v1/models/{broken_id}"), "acme").await;
    assert_eq!(
        failed["reason"],
        "truncated: the tensors need 144 bytes after the header; the file has 134",
        "{failed}"
    );
    assert_eq!(failed["builds"], 0, "{failed}");
    assert!(failed.get("metadata").is_none(), "{failed}");
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
    // A GGUF file: its quantized tensors and architecture are read too.
    let gguf = maas_platform::artifacts::samples::gguf(
        "phi3",
        &[
            ("token_embd.weight", 12, &[256, 2]),
            ("output.weight", 0, &[64]),
        ],
    );
    let (code, third) = api.upload("acme", "phi-3", gguf).await;
    assert_eq!(code, 202, "{third}");
    let phi = third["id"].as_str().unwrap();
    assert_eq!(api.settled(phi, "acme").await, "ready");
    let (_, phi) = api.get(&format!("/v1/models/{phi}"), "acme").await;
    assert_eq!(
        phi["metadata"],
        json!({ "format": "gguf", "tensors": 2, "parameters": 576,
                "dtypes": ["F32", "Q4_K"], "architecture": "phi3" }),
        "{phi}"
    );

    // The next would overdraw: refused before the file is read; nothing charged.
    let (code, refused) = api
        .upload("acme", "mistral-7b", support::model_file("m"))
        .await;
    assert_eq!(code, 402, "{refused}");
    assert_eq!(refused["error"], "quota_exhausted");
    let (_, quota) = api.get("/v1/tenants/acme/quota", "acme").await;
    assert_eq!(quota["remaining"], 5);
    // Another tenant has its own quota.
    let (code, qwen) = api.upload("globex", "qwen", support::model_file("q")).await;
    assert_eq!(code, 202);
    assert_eq!(
        api.settled(qwen["id"].as_str().unwrap(), "globex").await,
        "ready"
    );

    // Bad input: JSON errors with the right status.
    let key = api.key("globex").await;
    let no_name = api
        .http
        .post(format!("{}/v1/models", api.base))
        .bearer_auth(&key)
        .body(support::model_file("n"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_name.status(), 400);
    for (name, file) in [
        ("../../etc/passwd", support::model_file("p")),
        ("empty", Vec::new()),
    ] {
        let (code, err) = api.upload("globex", name, file).await;
        assert_eq!(
            (code, err["error"].as_str()),
            (400, Some("bad_request")),
            "{err}"
        );
    }
    let (code, err) = api.get("/v1/models/m-0000000000000000", "acme").await;
    assert_eq!((code, err["error"].as_str()), (404, Some("not_found")));

    // Inference: normal, then degraded while the backend is down and the breaker opens.
    let ask = json!({ "model": id, "max_tokens": 64,
                      "messages": [{ "role": "user", "content": "hello there" }] });
    let (code, answer) = api.post("/v1/chat/completions", "acme", ask.clone()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["model"], id.as_str());
    assert!(answer.get("degraded").is_none(), "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Simulated answer from llama-3-8b: there hello"
    );
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
        let (code, answer) = api.post("/v1/chat/completions", "acme", ask.clone()).await;
        assert_eq!(code, 200, "degraded, not failed: {answer}");
        assert_eq!(answer["degraded"], true);
        assert_eq!(answer["model"], "maas-fallback", "{answer}");
        reasons.push(answer["degraded_reason"].as_str().unwrap().to_owned());
    }
    assert_eq!(reasons[0], "model backend marked down");
    assert_eq!(reasons.last().unwrap(), "circuit open", "{reasons:?}");

    // Every crate reports on the one /metrics page.
    let text = support::get_text(&api.http, &format!("{}/metrics", api.base)).await;
    for needle in [
        r#"http_requests_total{method="POST",path="/v1/models",status="402"} 1"#,
        r#"http_requests_total{method="POST",path="/v1/models",status="202"} 4"#,
        r#"maas_platform_refunds_total{outcome="refunded"} 1"#,
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
        .upload("initech", "first", support::model_file("1"))
        .await;
    assert_eq!(code, 202);
    let db = rusqlite::Connection::open(dir.join("app.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER quota_down BEFORE UPDATE ON quota
         BEGIN SELECT RAISE(ABORT, 'the quota table is unavailable'); END;",
    )
    .unwrap();
    let (code, err) = api
        .upload("initech", "second", support::model_file("2"))
        .await;
    assert_eq!(code, 503, "{err}");
    assert_eq!(err["error"], "unavailable", "{err}");
    db.execute_batch("DROP TRIGGER quota_down").unwrap();
    // Nothing was charged for it; a real shortage is still 402.
    let (_, quota) = api.get("/v1/tenants/initech/quota", "initech").await;
    assert_eq!(quota["remaining"], 15, "{quota}");
    let (code, _) = api
        .upload("initech", "third", support::model_file("3"))
        .await;
    assert_eq!(code, 202);
    let (code, err) = api
        .upload("initech", "fourth", support::model_file("4"))
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
    assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");
    // On the OpenAI routes the same refusal is in OpenAI's error shape.
    let r = api
        .http
        .get(format!("{}/v1/models", api.base))
        .bearer_auth(api.key("acme").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "5");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "requests", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
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

/// An upload over raw HTTP/1.1, so that the test decides when each byte goes out.
struct RawUpload(tokio::net::TcpStream);

impl RawUpload {
    /// Sends the request head: a `Content-Length` of `length`, or chunked without one.
    async fn start(api: &Api, tenant: &str, name: &str, length: Option<usize>) -> RawUpload {
        use tokio::io::AsyncWriteExt;
        let key = api.key(tenant).await;
        let host = api.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
        let framing = match length {
            Some(n) => format!("content-length: {n}"),
            None => "transfer-encoding: chunked".to_owned(),
        };
        let head = format!(
            "POST /v1/models?name={name} HTTP/1.1\r\nhost: {host}\r\n\
             authorization: Bearer {key}\r\n{framing}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        RawUpload(stream)
    }

    /// Sends `bytes` as they are (with a content length) or as one chunk.
    async fn send(&mut self, bytes: &[u8], chunked: bool) {
        use tokio::io::AsyncWriteExt;
        if chunked {
            let _ = self
                .0
                .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                .await;
            let _ = self.0.write_all(bytes).await;
            let _ = self.0.write_all(b"\r\n").await;
        } else {
            let _ = self.0.write_all(bytes).await;
        }
    }

    /// Reads the answer: its status and JSON body.
    async fn answer(mut self) -> (u16, Value) {
        use tokio::io::AsyncReadExt;
        let mut text = Vec::new();
        let _ = self.0.read_to_end(&mut text).await;
        let text = String::from_utf8_lossy(&text);
        let status = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// The files under `dir` (recursively), by name.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Waits until `dir` holds `n` files.
async fn until_files(dir: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while files(dir).len() != n {
        assert!(
            Instant::now() < deadline,
            "{:?} in {}",
            files(dir),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Uploads past the maximum (declared or not), abandoned half-way, stalled, or compensated
/// by the saga keep no file; the one registered model keeps exactly its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_refused_abandoned_or_rolled_back_leave_nothing_behind() {
    let config = Config {
        max_model_bytes: 4096,
        request_timeout: Duration::from_millis(700),
        ..config(10_000)
    };
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    let api = Api {
        base: format!("http://{}", platform.addr()),
        admin: format!("http://{}", platform.admin_addr()),
        http: reqwest::Client::new(),
        keys: Mutex::default(),
    };
    let artifacts = dir.join("artifacts");
    let big = vec![7u8; 4097];

    // Declared too large: 413 before a byte of the body is read.
    let (code, err) = RawUpload::start(&api, "acme", "big", Some(1 << 40))
        .await
        .answer()
        .await;
    assert_eq!(
        (code, err["error"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );
    // Sent too large without a declared length: 413 once the body passes the maximum.
    let mut chunked = RawUpload::start(&api, "acme", "big", None).await;
    chunked.send(&big, true).await;
    let (code, err) = chunked.answer().await;
    assert_eq!(
        (code, err["error"].as_str()),
        (413, Some("too_large")),
        "{err}"
    );
    let (code, _) = api.upload("acme", "big", big.clone()).await;
    assert_eq!(code, 413);
    // Stalled past the request timeout between chunks: 408.
    let mut stalled = RawUpload::start(&api, "acme", "slow", Some(100)).await;
    stalled.send(&[1; 10], false).await;
    let (code, err) = stalled.answer().await;
    assert_eq!(
        (code, err["error"].as_str()),
        (408, Some("request_timeout")),
        "{err}"
    );
    // Abandoned half-way: the partial file goes with the connection.
    let mut abandoned = RawUpload::start(&api, "acme", "gone", Some(100)).await;
    abandoned.send(&[1; 10], false).await;
    until_files(&artifacts, 1).await;
    drop(abandoned);
    until_files(&artifacts, 0).await;

    // Rolled back: acme can pay for one more build (25 credits, 10 each, 10 left after
    // one), two uploads pass the early quota check, and the saga refuses the later one.
    let (code, _) = api.upload("acme", "one", support::model_file("1")).await;
    assert_eq!(code, 202);
    let r = api
        .http
        .put(format!("{}/admin/tenants/acme/quota", api.admin))
        .bearer_auth(support::ADMIN_TOKEN)
        .json(&json!({ "credits": 10 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let late = support::model_file("late");
    let mut slow = RawUpload::start(&api, "acme", "late", Some(late.len())).await;
    slow.send(&late[..20], false).await;
    until_files(&artifacts, 2).await; // one's file, and late's partial file
    let (code, two) = api.upload("acme", "two", support::model_file("2")).await;
    assert_eq!(code, 202, "{two}");
    slow.send(&late[20..], false).await;
    let (code, refused) = slow.answer().await;
    assert_eq!(code, 402, "{refused}");
    assert_eq!(refused["saga_status"], "compensated", "{refused}");
    // Left: the files of the two registered models, nothing else.
    let mut left = files(&artifacts);
    left.sort();
    let mut want: Vec<String> = ["1", "2"]
        .iter()
        .map(|s| format!("{:x}", sha2::Sha256::digest(support::model_file(s))))
        .collect();
    want.sort();
    assert_eq!(left, want);
    let text = support::get_text(&api.http, &format!("{}/metrics", api.base)).await;
    assert!(
        text.contains(r#"maas_saga_finished_total{status="compensated"} 1"#),
        "{text}"
    );
    stop(platform, dir).await;
}
