//! Alert delivery to DingTalk (钉钉) and WeCom (企业微信) group robots.
//!
//! Alertmanager has no DingTalk or WeCom receiver, so it posts its standard webhook payload
//! to `POST /admin/alerts` (see `deploy/alertmanager/alertmanager.yml`) and the platform
//! relays it to each configured robot as a markdown message. The answer is `200` when every
//! robot accepted it and `502` (JSON, with each robot's error) otherwise, so Alertmanager
//! retries. DingTalk robots with "additional signing" (加签) get the `timestamp` and `sign`
//! parameters computed from the secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

/// Where alerts go.
#[derive(Clone, Default)]
pub struct Robots {
    /// The DingTalk robot's webhook URL (`https://oapi.dingtalk.com/robot/send?access_token=...`).
    pub dingtalk: Option<String>,
    /// The DingTalk robot's signing secret (`SEC...`), when it has one.
    pub dingtalk_secret: Option<String>,
    /// The WeCom robot's webhook URL (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...`).
    pub wecom: Option<String>,
}

/// Alertmanager's webhook payload (version 4), the parts a message needs.
#[derive(Debug, Deserialize)]
pub struct Notification {
    /// `firing` or `resolved`.
    pub status: String,
    /// The alerts of this group.
    pub alerts: Vec<Alert>,
    /// Labels shared by the group (`alertname`, `severity`, ...).
    #[serde(default, rename = "commonLabels")]
    pub common_labels: std::collections::BTreeMap<String, String>,
}

/// One alert of a notification.
#[derive(Debug, Deserialize)]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// When it started (RFC 3339).
    #[serde(default, rename = "startsAt")]
    pub starts_at: String,
}

impl Notification {
    /// The message title, e.g. `[FIRING:2] MaasHighErrorRate`.
    pub fn title(&self) -> String {
        let firing = self.alerts.iter().filter(|a| a.status == "firing").count();
        let name = self
            .common_labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("alerts");
        if self.status == "firing" {
            format!("[FIRING:{firing}] {name}")
        } else {
            format!("[RESOLVED] {name}")
        }
    }

    /// The markdown body both robots accept.
    pub fn markdown(&self) -> String {
        let mut text = format!("### {}\n", self.title());
        for a in &self.alerts {
            let label = |k: &str| a.labels.get(k).map(String::as_str).unwrap_or("");
            let summary = a
                .annotations
                .get("summary")
                .map(String::as_str)
                .unwrap_or_else(|| label("alertname"));
            // A summary describes the firing state ("… is open") with the value it fired
            // at: a resolved alert says so first and quotes it as what was.
            let line = if a.status == "firing" {
                format!("🔥 {summary}")
            } else {
                format!("✅ resolved: {} (was: {summary})", label("alertname"))
            };
            text.push_str(&format!("- **{}** {line}\n", label("severity")));
            if let Some(d) = a.annotations.get("description") {
                text.push_str(&format!("  > {d}\n"));
            }
            if !a.starts_at.is_empty() {
                text.push_str(&format!("  > since {}\n", a.starts_at));
            }
        }
        text
    }
}

/// Says which robots are configured, never their URLs or secret (they are credentials).
impl std::fmt::Debug for Robots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Robots")
            .field("dingtalk", &self.dingtalk.is_some())
            .field("dingtalk_secret", &self.dingtalk_secret.is_some())
            .field("wecom", &self.wecom.is_some())
            .finish()
    }
}

impl Robots {
    /// True when at least one robot is configured.
    pub fn any(&self) -> bool {
        self.dingtalk.is_some() || self.wecom.is_some()
    }

    /// Sends `n` to every configured robot; the errors of those that refused it.
    pub async fn deliver(&self, http: &reqwest::Client, n: &Notification) -> Vec<String> {
        let text = n.markdown();
        let mut errors = Vec::new();
        if let Some(url) = &self.dingtalk {
            let url = match &self.dingtalk_secret {
                Some(secret) => signed(url, secret, now_millis()),
                None => url.clone(),
            };
            let body = json!({ "msgtype": "markdown",
                               "markdown": { "title": n.title(), "text": text } });
            if let Err(e) = post(http, &url, &body).await {
                errors.push(format!("dingtalk: {e}"));
            }
        }
        if let Some(url) = &self.wecom {
            let body = json!({ "msgtype": "markdown", "markdown": { "content": text } });
            if let Err(e) = post(http, url, &body).await {
                errors.push(format!("wecom: {e}"));
            }
        }
        errors
    }
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// DingTalk's signature: base64(HMAC-SHA256(secret, "<timestamp>\n<secret>")), URL-encoded,
/// added with the timestamp to the webhook URL.
pub fn signed(url: &str, secret: &str, timestamp_ms: u128) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return url.to_owned();
    };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sign: String =
        percent_encoding::utf8_percent_encode(&sign, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timestamp={timestamp_ms}&sign={sign}")
}

/// Posts `body`; a robot accepts with `{"errcode": 0}`. The error never holds the URL: the
/// robots' URLs carry their credentials (DingTalk's `access_token`, WeCom's `key`).
async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let r = http
        .post(url)
        .timeout(Duration::from_secs(10))
        .json(body)
        .send()
        .await
        .map_err(|e| describe(e.without_url()))?;
    let status = r.status();
    let reply: Value = r
        .json()
        .await
        .map_err(|e| format!("HTTP {status}: {}", describe(e.without_url())))?;
    match reply["errcode"].as_i64() {
        Some(0) if status.is_success() => Ok(()),
        _ => Err(format!("HTTP {status}: {reply}")),
    }
}

/// An error and its causes, e.g. "error sending request: client error (Connect): tcp
/// connect error: Connection refused".
fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolved alert's summary still reads as firing ("… is open"): the message leads
    /// with "resolved" and quotes the summary as what was.
    #[test]
    fn a_resolved_alert_says_so() {
        let n: Notification = serde_json::from_value(serde_json::json!({
            "status": "resolved",
            "commonLabels": { "alertname": "MaasCircuitOpen" },
            "alerts": [{
                "status": "resolved",
                "labels": { "alertname": "MaasCircuitOpen", "severity": "warning" },
                "annotations": { "summary": "circuit breaker inference is open" },
                "startsAt": "2026-11-26T03:00:00Z"
            }]
        }))
        .unwrap();
        assert_eq!(n.title(), "[RESOLVED] MaasCircuitOpen");
        assert!(
            n.markdown().contains(
                "- **warning** ✅ resolved: MaasCircuitOpen (was: circuit breaker inference is open)"
            ),
            "{}",
            n.markdown()
        );
    }

    /// The value DingTalk's own Python sample computes for this secret and timestamp.
    #[test]
    fn the_signature_matches_dingtalks_reference_algorithm() {
        assert_eq!(
            signed(
                "https://oapi.dingtalk.com/robot/send?access_token=t",
                "SECabc123",
                1_700_000_000_000
            ),
            "https://oapi.dingtalk.com/robot/send?access_token=t&timestamp=1700000000000\
             &sign=N5P09a4%2Bp1AMJIJWnIvQd2Yxw9%2Bfu%2FoEBnPrjCcsLXk%3D"
        );
    }
}
