//! Who may do what, over real HTTP on 127.0.0.1: API keys for tenants on the public
//! listener, the admin token on the admin listener, every refusal a JSON 401, 403, 404 or
//! 405 — and no key or token anywhere in the logs of the whole run. Installs the global
//! subscriber (to capture the logs), so it is the only test in this binary.

mod support;

use std::time::Duration;

use maas_platform::alerts::Robots;
use maas_platform::{Config, Platform};
use maas_telemetry::{LogFormat, Telemetry};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Captured};

/// Sends `method url` with `bearer` (if any) and `body` (if any): status, headers, JSON.
async fn call(
    http: &Client,
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = http.request(method, url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} is not JSON ({e}): {text:?}"));
    (status, headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_tokens_and_tenants_are_enforced_and_never_logged() {
    let logs = Captured::default();
    let _telemetry = Telemetry::builder()
        .service_name("maas-platform-auth-test")
        .log_format(LogFormat::Json)
        .filter("debug")
        .log_writer(logs.clone())
        .build()
        .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        build_time: Duration::from_millis(10),
        robots: Robots {
            dingtalk: Some(format!(
                "http://127.0.0.1:{closed}/robot/send?access_token=ding-secret-token"
            )),
            dingtalk_secret: Some("SECsigning-secret".into()),
            wecom: Some(format!(
                "http://127.0.0.1:{closed}/cgi-bin/webhook/send?key=wecom-secret-key"
            )),
        },
        ..support::config("auth")
    };
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    assert_eq!(platform.made_admin_token(), None, "a token was configured");
    let api = format!("http://{}", platform.addr());
    let admin = format!("http://{}", platform.admin_addr());
    let http = Client::new();
    let quota = format!("{api}/v1/tenants/acme/quota");

    // No key, a malformed one, an unknown one, another scheme: 401, JSON, WWW-Authenticate.
    let unknown = "maas_0badc0de_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for bearer in [None, Some("not-a-key"), Some(unknown)] {
        let (status, headers, body) = call(&http, Method::GET, &quota, bearer, None).await;
        assert_eq!(status, 401, "{bearer:?}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let r = http
        .get(&quota)
        .basic_auth("acme", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Keys are made through the admin listener, with the admin token, and shown once.
    let keys_url = format!("{admin}/admin/tenants/acme/keys");
    for bearer in [None, Some("wrong-admin-token-0000")] {
        let (status, _, body) = call(&http, Method::POST, &keys_url, bearer, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, _, made) = call(&http, Method::POST, &keys_url, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 201, "{made}");
    let acme = made["key"].as_str().unwrap().to_owned();
    let acme_id = made["id"].as_str().unwrap().to_owned();
    assert!(acme.starts_with(&format!("maas_{acme_id}_")), "{made}");
    let spare = support::create_key(&http, &admin, "acme").await;
    let globex = support::create_key(&http, &admin, "globex").await;
    let (status, _, bad) = call(
        &http,
        Method::POST,
        &format!("{admin}/admin/tenants/no%20spaces/keys"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (status, bad["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );

    // Listing shows ids and prefixes, never a key or its digest.
    let (status, _, listed) = call(&http, Method::GET, &keys_url, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    let listed_keys = listed["keys"].as_array().unwrap();
    assert_eq!(listed_keys.len(), 2, "{listed}");
    assert!(
        listed_keys
            .iter()
            .any(|k| k["id"] == acme_id.as_str() && k["prefix"] == format!("maas_{acme_id}_")),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&acme[14..]), "{listed}");

    // A live key acts for its tenant, and only its tenant.
    let (status, _, own) = call(&http, Method::GET, &quota, Some(&acme), None).await;
    assert_eq!(status, 200, "{own}");
    let (status, upload) = support::upload(
        &http,
        &api,
        Some(&acme),
        "acme-model",
        support::model_file("a"),
    )
    .await;
    assert_eq!(status, 202, "{upload}");
    assert_eq!(upload["tenant"], "acme");
    let model = format!("{api}/v1/models/{}", upload["id"].as_str().unwrap());
    for (method, url, body) in [
        (Method::GET, quota.clone(), None),
        (Method::GET, model.clone(), None),
    ] {
        let (status, _, refused) = call(&http, method, &url, Some(&globex), body).await;
        assert_eq!(status, 403, "{url}: {refused}");
        assert_eq!(refused["error"], "forbidden");
    }
    // Chat answers as OpenAI does: another tenant's model does not exist for this key.
    let chat = json!({ "model": upload["id"], "messages": [{ "role": "user", "content": "hi" }] });
    let completions = format!("{api}/v1/chat/completions");
    let (status, _, refused) =
        call(&http, Method::POST, &completions, Some(&globex), Some(chat)).await;
    assert_eq!(status, 404, "{refused}");
    assert_eq!(refused["error"]["code"], "model_not_found", "{refused}");
    let (status, _, own_model) = call(&http, Method::GET, &model, Some(&acme), None).await;
    assert_eq!(status, 200, "{own_model}");

    // A revoked key stops working at once; the other key of the tenant goes on.
    let spare_id = spare[5..13].to_owned();
    let revoke = format!("{admin}/admin/keys/{spare_id}");
    assert_eq!(
        call(&http, Method::GET, &quota, Some(&spare), None).await.0,
        200
    );
    let (status, _, revoked) = call(&http, Method::DELETE, &revoke, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{revoked}");
    let (status, _, body) = call(&http, Method::GET, &quota, Some(&spare), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(
        call(&http, Method::GET, &quota, Some(&acme), None).await.0,
        200
    );
    let (status, _, _) = call(
        &http,
        Method::DELETE,
        &format!("{admin}/admin/keys/00000000"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // An operator sets a quota; the tenant sees it.
    let (status, _, set) = call(
        &http,
        Method::PUT,
        &format!("{admin}/admin/tenants/acme/quota"),
        Some(ADMIN_TOKEN),
        Some(json!({ "credits": 70 })),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let (_, _, q) = call(&http, Method::GET, &quota, Some(&acme), None).await;
    assert_eq!(q["remaining"], 70, "{q}");

    // Admin routes are not on the public listener, with or without the token; tenant
    // routes are not on the admin listener.
    for bearer in [None, Some(ADMIN_TOKEN), Some(acme.as_str())] {
        let (status, _, body) = call(
            &http,
            Method::POST,
            &format!("{api}/admin/tenants/acme/keys"),
            bearer,
            None,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "not_found");
    }
    let (status, _, _) = call(
        &http,
        Method::GET,
        &format!("{admin}/v1/tenants/acme/quota"),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Unknown routes and methods: JSON 404 and 405 (with Allow); a body over the limit: 413.
    let (status, _, body) = call(&http, Method::GET, &format!("{api}/nowhere"), None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, headers, body) =
        call(&http, Method::DELETE, &format!("{api}/health"), None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    assert!(headers.contains_key("allow"), "{headers:?}");
    let big = json!({ "model": "maas-fallback",
                      "messages": [{ "role": "user", "content": "x".repeat(3 << 20) }] });
    let (status, _, body) = call(
        &http,
        Method::POST,
        &format!("{api}/v1/chat/completions"),
        Some(&acme),
        Some(big),
    )
    .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("invalid_request_error"))
    );

    // A failed alert delivery, to have its error in the logs too.
    let (status, _, body) = call(
        &http,
        Method::POST,
        &format!("{admin}/admin/alerts"),
        Some(ADMIN_TOKEN),
        Some(json!({ "status": "firing", "alerts": [], "commonLabels": {} })),
    )
    .await;
    assert_eq!(status, 502, "{body}");

    // The embedded mode without a token makes one, which works (and is never logged).
    let embedded_config = Config {
        admin_token: None,
        ..support::config("auth-embedded")
    };
    let embedded_dir = embedded_config.data_dir.clone().unwrap();
    let embedded = Platform::start(embedded_config, prometheus::Registry::new())
        .await
        .unwrap();
    let made = embedded.made_admin_token().unwrap().to_owned();
    let demo = embedded.demo_key().unwrap().to_owned();
    let embedded_admin = format!("http://{}", embedded.admin_addr());
    let (status, _, _) = call(
        &http,
        Method::GET,
        &format!("{embedded_admin}/admin/tenants/demo/keys"),
        Some(&made),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &http,
        Method::GET,
        &format!("{embedded_admin}/admin/tenants/demo/keys"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, demo_quota) = call(
        &http,
        Method::GET,
        &format!("http://{}/v1/tenants/demo/quota", embedded.addr()),
        Some(&demo),
        None,
    )
    .await;
    assert_eq!(status, 200, "{demo_quota}");
    embedded.shutdown().await;
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(embedded_dir);

    // Not one credential in the whole run's logs.
    let text = logs.text();
    assert!(text.contains("API key created"), "the logs were captured");
    assert!(
        text.contains("alert delivery failed"),
        "the logs were captured"
    );
    for secret in [
        acme.as_str(),
        &acme[14..],
        spare.as_str(),
        globex.as_str(),
        &demo,
        &made,
        ADMIN_TOKEN,
        "wrong-admin-token",
        "ding-secret-token",
        "wecom-secret-key",
        "SECsigning-secret",
        "sign=",
    ] {
        assert!(!text.contains(secret), "{secret} is in the logs");
    }
}
