//! HTTP helpers shared by the platform's tests.
#![allow(dead_code)]

use serde_json::Value;

/// `GET url`, the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// `GET url`, the body as text (a `/metrics` scrape).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// `POST url` with a JSON body (and `x-tenant` when given): the status and the JSON answer.
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    tenant: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = http.post(url).json(body);
    if let Some(t) = tenant {
        req = req.header("x-tenant", t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}
