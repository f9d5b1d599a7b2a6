//! The alert path end to end, with the real servers: Debian's Prometheus scrapes a running
//! platform and evaluates the shipped `deploy/prometheus/alerts.yml` (its `for:` durations cut
//! to 1 s), Debian's Alertmanager routes with the shipped `deploy/alertmanager/alertmanager.yml`
//! (its receiver pointed at this platform's relay, its waits cut to 1 s), and the relay posts
//! to fake DingTalk and WeCom robots that check the message format and DingTalk's signature.
//! The model backend fails, the inference breaker opens, the firing message arrives; the
//! backend heals, the breaker closes, the resolved message arrives; a burst of 504s sets off
//! the error-rate alert, ordinary traffic resolves it (seconds printed). Before that,
//! every panel query of `deploy/grafana/maas-platform.json` must return a series from that
//! Prometheus.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use base64::Engine;
use hmac::{Hmac, Mac};
use maas_platform::alerts::Robots;
use maas_platform::{Config, Platform};
use serde_json::{Value, json};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
const DING_SECRET: &str = "SECe2e-test-secret";

/// A server process of the test's; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &'static str, args: &[String], log: &Path) -> Server {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}): install it with `scripts/dev-services up`")
        });
    Server(child)
}

/// `text` with `from` replaced by `to` — which must be there: a changed shipped file fails
/// here rather than being tested in a shape nobody ships.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in the shipped file");
    text.replace(from, to)
}

/// Every `for: <n>m` cut to 1 s.
fn fast_rules(rules: &str) -> String {
    rules
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with("for: ") && t.ends_with('m') {
                format!("{}for: 1s", &l[..l.len() - t.len()])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

type Seen = Arc<Mutex<Vec<(String, Value, Instant)>>>;

/// A fake robot: DingTalk (checks `timestamp` and `sign`) or WeCom; records what it accepts.
async fn robot(dingtalk: bool) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(
            move |State(seen): State<Seen>,
                  Query(q): Query<std::collections::HashMap<String, String>>,
                  axum::Json(body): axum::Json<Value>| async move {
                let mut problems = Vec::new();
                if dingtalk {
                    match (q.get("timestamp"), q.get("sign")) {
                        (Some(ts), Some(sign)) => {
                            let mut mac =
                                Hmac::<sha2::Sha256>::new_from_slice(DING_SECRET.as_bytes())
                                    .unwrap();
                            mac.update(format!("{ts}\n{DING_SECRET}").as_bytes());
                            let expected = base64::engine::general_purpose::STANDARD
                                .encode(mac.finalize().into_bytes());
                            if *sign != expected {
                                problems.push("bad sign");
                            }
                        }
                        _ => problems.push("unsigned"),
                    }
                    if q.get("access_token").map(String::as_str) != Some("t0k") {
                        problems.push("access_token");
                    }
                    if body["msgtype"] != "markdown"
                        || !body["markdown"]["title"].is_string()
                        || !body["markdown"]["text"].is_string()
                    {
                        problems.push("not DingTalk markdown");
                    }
                } else if body["msgtype"] != "markdown" || !body["markdown"]["content"].is_string()
                {
                    problems.push("not WeCom markdown");
                }
                if problems.is_empty() {
                    let text = body["markdown"]["text"]
                        .as_str()
                        .or(body["markdown"]["content"].as_str())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push((text, body, Instant::now()));
                    axum::Json(json!({ "errcode": 0, "errmsg": "ok" }))
                } else {
                    axum::Json(json!({ "errcode": 310000, "errmsg": problems.join(", ") }))
                }
            },
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

/// Waits until `seen` holds a message containing every one of `parts`; when it arrived.
async fn message(seen: &Seen, parts: &[&str], within: Duration, what: &str) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if let Some((_, _, at)) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(text, _, _)| parts.iter().all(|p| text.contains(p)))
        {
            return *at;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} message within {within:?}; received: {:?}",
            seen.lock()
                .unwrap()
                .iter()
                .map(|m| m.0.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn query(http: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<Value> {
    let r: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "success", "{expr}: {r}");
    r["data"]["result"].as_array().cloned().unwrap_or_default()
}

async fn breaker_state(http: &reqwest::Client, base: &str) -> Option<f64> {
    let text = support::get_text(http, &format!("{base}/metrics")).await;
    text.lines()
        .find(|l| l.starts_with("maas_breaker_state{") && l.contains("breaker=\"inference\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_robots_and_every_dashboard_panel_has_data() {
    let dir: PathBuf = std::env::temp_dir().join(format!("maas-alerts-e2e-{}", support::random()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ding, ding_seen) = robot(true).await;
    let (wecom, wecom_seen) = robot(false).await;
    let platform = Platform::start(
        Config {
            robots: Robots {
                dingtalk: Some(format!("{ding}/robot/send?access_token=t0k")),
                dingtalk_secret: Some(DING_SECRET.into()),
                wecom: Some(format!("{wecom}/cgi-bin/webhook/send?key=k3y")),
            },
            token_delay: Duration::from_millis(1),
            breaker_open: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            rate_per_minute: 120,
            tokens_per_minute: 10_000_000,
            builders: 1,
            build_time: Duration::from_millis(5),
            ..support::config("alerts-e2e")
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts");
    let base = format!("http://{}", platform.addr());
    let admin = format!("http://{}", platform.admin_addr());

    // Alertmanager with the shipped routes, pointed at this platform's relay.
    let am_port = free_port();
    std::fs::write(dir.join("admin-token"), support::ADMIN_TOKEN).unwrap();
    let am = std::fs::read_to_string(format!("{DEPLOY}/alertmanager/alertmanager.yml")).unwrap();
    let am = edit(
        &am,
        "http://maas-platform-admin:8081/admin/alerts",
        &format!("{admin}/admin/alerts"),
    );
    let am = edit(
        &am,
        "/etc/alertmanager/secrets/maas-admin-token",
        dir.join("admin-token").to_str().unwrap(),
    );
    let am = edit(&am, "group_wait: 30s", "group_wait: 1s");
    let am = edit(&am, "group_interval: 5m", "group_interval: 1s");
    std::fs::write(dir.join("alertmanager.yml"), am).unwrap();
    let _alertmanager = spawn(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.join("alertmanager.log"),
    );

    // Prometheus with the shipped rules, scraping this platform every second.
    let prom_port = free_port();
    let rules = std::fs::read_to_string(format!("{DEPLOY}/prometheus/alerts.yml")).unwrap();
    std::fs::write(dir.join("alerts.yml"), fast_rules(&rules)).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [alerts.yml]\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: maas-platform\n    static_configs:\n      - targets: ['{}']\n",
            platform.addr()
        ),
    )
    .unwrap();
    let _prometheus = spawn(
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = match http
            .get(format!("{prom}/api/v1/query"))
            .query(&[("query", "up")])
            .send()
            .await
        {
            Ok(r) => r.json::<Value>().await.ok(),
            Err(_) => None,
        };
        if up.is_some_and(|v| v["data"]["result"][0]["value"][1] == "1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the platform; its log: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Traffic for every panel: uploads and builds, chats, a 404, a burst past the limit,
    // a completion that outlives the request time limit (504).
    let key = support::create_key(&http, &admin, "e2e").await;
    let noisy = support::create_key(&http, &admin, "e2e-noisy").await;
    let (code, model) =
        support::upload(&http, &base, Some(&key), "e2e", support::model_file("e2e")).await;
    assert_eq!(code, 202, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    while support::get_json(&http, &format!("{base}/v1/models/{id}"), &key).await["status"]
        != "ready"
    {
        assert!(Instant::now() < deadline, "not built");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The simulated model answers with the prompt's words: a long prompt, a long answer.
    let chat = |words: usize| {
        let (http, base, key, id) = (http.clone(), base.clone(), key.clone(), id.clone());
        async move {
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({ "model": id, "max_tokens": 8000,
                               "messages": [{ "role": "user", "content": "hello ".repeat(words) }] }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(chat(1).await, 200);
    }
    let missing = http
        .get(format!("{base}/v1/models/m-0000000000000000"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let mut limited = 0;
    for _ in 0..150 {
        let r = http
            .get(format!("{base}/v1/models"))
            .bearer_auth(&noisy)
            .send()
            .await
            .unwrap();
        limited += usize::from(r.status() == 429);
    }
    assert!(limited > 0, "the burst was never limited");
    assert_eq!(chat(3_000).await, 504, "a completion past the time limit");

    // The backend fails: the breaker opens, and the robots hear of it.
    let r = http
        .put(format!("{admin}/admin/backend"))
        .bearer_auth(support::ADMIN_TOKEN)
        .json(&json!({ "healthy": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while breaker_state(&http, &base).await != Some(1.0) {
        assert!(Instant::now() < deadline, "the breaker never opened");
        assert_eq!(chat(1).await, 200, "the fallback answers");
    }
    let opened = Instant::now();
    // A call while open is rejected by the breaker (the fallback answers it).
    assert_eq!(chat(1).await, 200);
    let firing = ["MaasCircuitOpen", "🔥", "circuit breaker inference is open"];
    let ding_firing = message(&ding_seen, &firing, Duration::from_secs(60), "firing").await;
    let wecom_firing = message(&wecom_seen, &firing, Duration::from_secs(60), "firing").await;
    let fired_after = ding_firing.max(wecom_firing) - opened;

    // Every dashboard panel's query has data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DEPLOY}/grafana/maas-platform.json")).unwrap(),
    )
    .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr.replace("$job", ".+");
            let result = query(&http, &prom, &expr).await;
            assert!(
                !result.is_empty(),
                "the panel {:?} has no data: {expr}",
                panel["title"]
            );
            queries += 1;
        }
    }

    // The backend heals: the breaker closes, and the robots hear that too.
    let r = http
        .put(format!("{admin}/admin/backend"))
        .bearer_auth(support::ADMIN_TOKEN)
        .json(&json!({ "healthy": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while breaker_state(&http, &base).await != Some(0.0) {
        assert!(Instant::now() < deadline, "the breaker never closed");
        chat(1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = Instant::now();
    let resolved = ["[RESOLVED] MaasCircuitOpen", "✅ resolved: MaasCircuitOpen"];
    let ding_resolved = message(&ding_seen, &resolved, Duration::from_secs(60), "resolved").await;
    let wecom_resolved = message(&wecom_seen, &resolved, Duration::from_secs(60), "resolved").await;
    let resolved_after = ding_resolved.max(wecom_resolved) - closed;

    // An error burst: 5xx answers pass 5% of the requests, and MaasHighErrorRate (critical)
    // reaches the robots; then ordinary traffic (requests for unknown paths, 404) brings them
    // back under 5%, and its resolved message does.
    let burst = futures::future::join_all((0..25).map(|_| chat(3_000))).await;
    assert!(burst.iter().all(|c| *c == 504), "{burst:?}");
    let burst_at = Instant::now();
    let firing = ["MaasHighErrorRate", "🔥", "of requests fail with 5xx"];
    let ding_burst = message(
        &ding_seen,
        &firing,
        Duration::from_secs(60),
        "error-rate firing",
    )
    .await;
    let wecom_burst = message(
        &wecom_seen,
        &firing,
        Duration::from_secs(60),
        "error-rate firing",
    )
    .await;
    let burst_after = ding_burst.max(wecom_burst) - burst_at;
    // Spread over several scrapes: a series' first sample already holds what came before it,
    // which `rate()` cannot see (hence one request, and a scrape, first).
    let not_found = || async {
        let r = http.get(format!("{base}/no-such-page")).send().await;
        assert!(r.is_ok_and(|r| r.status() == 404));
    };
    not_found().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let diluting = Instant::now();
    for _ in 0..40 {
        futures::future::join_all((0..50).map(|_| not_found())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resolved = [
        "[RESOLVED] MaasHighErrorRate",
        "✅ resolved: MaasHighErrorRate",
    ];
    let ding_calm = message(
        &ding_seen,
        &resolved,
        Duration::from_secs(60),
        "error-rate resolved",
    )
    .await;
    let wecom_calm = message(
        &wecom_seen,
        &resolved,
        Duration::from_secs(60),
        "error-rate resolved",
    )
    .await;
    let calm_after = ding_calm.max(wecom_calm) - diluting;
    println!(
        "alerts end to end: MaasCircuitOpen reached both robots {:.1} s after the breaker \
         opened, resolved {:.1} s after it closed; MaasHighErrorRate {:.1} s after a burst of \
         25 answers 504, resolved {:.1} s after ordinary traffic began; {queries} dashboard \
         queries answered",
        fired_after.as_secs_f64(),
        resolved_after.as_secs_f64(),
        burst_after.as_secs_f64(),
        calm_after.as_secs_f64()
    );
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
