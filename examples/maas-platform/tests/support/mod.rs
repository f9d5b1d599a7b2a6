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

/// The Kafka-API broker's address (`MAAS_TEST_KAFKA`, default 127.0.0.1:9092), after checking
/// that it answers — a failure says how to start one.
pub fn require_kafka() -> String {
    let broker = std::env::var("MAAS_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(broker.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok()
        });
    assert!(
        reachable,
        "no Kafka-API broker on {broker}; start one with `scripts/dev-services up`, or point \
         MAAS_TEST_KAFKA at a running broker"
    );
    broker
}
