//! Alertmanager's webhook, relayed to DingTalk and WeCom robots (fakes on 127.0.0.1 that
//! answer like the real ones): markdown messages, DingTalk's signature, and a 502 when a
//! robot refuses or is down, so that Alertmanager retries — without the robots' credentials
//! (their URLs' `access_token` and `key`) in the answer. The relay is an admin route: the
//! admin listener, with the admin token.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use maas_platform::alerts::{Robots, signed};
use maas_platform::{Config, Platform};
use serde_json::{Value, json};

type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A robot that records what it receives and answers with `errcode`.
async fn robot(errcode: i64) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(
            |State((seen, errcode)): State<(Seen, i64)>,
             uri: axum::http::Uri,
             axum::Json(body): axum::Json<Value>| async move {
                seen.lock().unwrap().push((uri.to_string(), body));
                axum::Json(json!({ "errcode": errcode, "errmsg": if errcode == 0 { "ok" } else { "invalid webhook url" } }))
            },
        )
        .with_state((seen.clone(), errcode));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn notification() -> Value {
    json!({
        "version": "4", "status": "firing", "receiver": "robots",
        "groupLabels": { "alertname": "MaasCircuitOpen" },
        "commonLabels": { "alertname": "MaasCircuitOpen", "severity": "warning", "job": "maas-platform" },
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "groupKey": "{}:{}",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "MaasCircuitOpen", "severity": "warning", "breaker": "inference" },
            "annotations": { "summary": "maas-platform: circuit breaker inference is open",
                             "description": "Calls fail fast and the platform serves degraded answers." },
            "startsAt": "2026-11-26T03:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c0ffee"
        }]
    })
}

async fn platform(robots: Robots) -> (Platform, String, std::path::PathBuf) {
    let config = Config {
        builders: 1,
        robots,
        ..support::config("alerts")
    };
    let dir = config.data_dir.clone().unwrap();
    let p = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    let admin = format!("http://{}", p.admin_addr());
    (p, admin, dir)
}

/// Posts Alertmanager's notification to the relay, as Alertmanager does (with the token).
async fn notify(admin: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{admin}/admin/alerts"))
        .bearer_auth(support::ADMIN_TOKEN)
        .timeout(Duration::from_secs(20))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_both_robots_as_markdown_with_dingtalk_signed() {
    let (ding, ding_seen) = robot(0).await;
    let (wecom, wecom_seen) = robot(0).await;
    let (p, base, dir) = platform(Robots {
        dingtalk: Some(format!("{ding}/robot/send?access_token=t0k")),
        dingtalk_secret: Some("SECabc123".into()),
        wecom: Some(format!("{wecom}/cgi-bin/webhook/send?key=k3y")),
    })
    .await;
    let r = notify(&base, &notification()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["delivered"], true);

    let (url, body) = ding_seen.lock().unwrap()[0].clone();
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(body["markdown"]["title"], "[FIRING:1] MaasCircuitOpen");
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains("maas-platform: circuit breaker inference is open"),
        "{text}"
    );
    assert!(text.contains("**warning**"), "{text}");
    // The signature is DingTalk's: recomputing it for the same timestamp gives the same URL.
    let timestamp: u128 = url
        .split("timestamp=")
        .nth(1)
        .and_then(|t| t.split('&').next())
        .and_then(|t| t.parse().ok())
        .expect("a timestamp parameter");
    assert_eq!(
        url,
        signed("/robot/send?access_token=t0k", "SECabc123", timestamp)
    );

    let (url, body) = wecom_seen.lock().unwrap()[0].clone();
    assert_eq!(url, "/cgi-bin/webhook/send?key=k3y");
    assert_eq!(body["msgtype"], "markdown");
    assert!(
        body["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains("Calls fail fast")
    );

    // Not Alertmanager's payload: a JSON 400.
    let r = notify(&base, &json!({ "hello": 1 })).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_robot_makes_alertmanager_retry() {
    let (wecom, _) = robot(93000).await;
    let (p, base, dir) = platform(Robots {
        wecom: Some(format!("{wecom}/cgi-bin/webhook/send?key=wrong")),
        ..Robots::default()
    })
    .await;
    let r = notify(&base, &notification()).await;
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "delivery_failed");
    assert!(
        body["message"].as_str().unwrap().contains("93000"),
        "{body}"
    );
    assert!(!body.to_string().contains("key=wrong"), "{body}");
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Robots that cannot be reached: 502, saying what failed, and neither the answer nor the
/// error names the URLs, whose query strings are the robots' credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_robot_is_a_502_without_its_credentials() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (p, base, dir) = platform(Robots {
        dingtalk: Some(format!(
            "http://127.0.0.1:{closed}/robot/send?access_token=ding-secret-token"
        )),
        dingtalk_secret: Some("SECsigning-secret".into()),
        wecom: Some(format!(
            "http://127.0.0.1:{closed}/cgi-bin/webhook/send?key=wecom-secret-key"
        )),
    })
    .await;
    let r = notify(&base, &notification()).await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("dingtalk") && body.contains("wecom"),
        "{body}"
    );
    assert!(body.to_lowercase().contains("connect"), "{body}");
    for secret in [
        "ding-secret-token",
        "wecom-secret-key",
        "SECsigning",
        "sign=",
    ] {
        assert!(!body.contains(secret), "{secret} leaked: {body}");
    }
    p.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
