//! [`Upstream`]: an OpenAI-compatible server (vLLM, llama.cpp's server, …) that the
//! platform proxies, always streaming, with a time limit on the first byte and on each
//! pause after it.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::{Value, json};

use super::backend::{Backend, BackendError, Completion, Tokens};

/// An OpenAI-compatible upstream.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    /// The base URL, up to and including `/v1` (as OpenAI clients' `base_url`).
    base: String,
    /// Its API key, sent as a bearer token (never logged).
    key: Option<String>,
    /// How long the first byte of the answer may take, and each pause after it.
    timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream at `base` (e.g. `http://vllm:8000/v1`), with its API key if it wants
    /// one, waiting at most `timeout` for the first byte and for each pause after it.
    pub fn new(base: &str, key: Option<String>, timeout: Duration) -> Upstream {
        Upstream {
            http: reqwest::Client::builder()
                .connect_timeout(timeout)
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
            key,
            timeout,
        }
    }
}

/// A reqwest error without its URL (which may carry credentials).
fn failed(what: &str, e: reqwest::Error) -> BackendError {
    let e = e.without_url();
    if e.is_timeout() {
        BackendError::Timeout(format!("{what}: {e}"))
    } else {
        BackendError::Failed(format!("{what}: {e}"))
    }
}

impl Backend for Upstream {
    fn start(&self, c: Completion) -> BoxFuture<'static, Result<Tokens, BackendError>> {
        let this = self.clone();
        Box::pin(async move {
            let messages: Vec<Value> = c
                .messages
                .iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect();
            let body = json!({ "model": c.model, "messages": messages,
                               "max_tokens": c.max_tokens, "stream": true });
            let mut req = this
                .http
                .post(format!("{}/chat/completions", this.base))
                .json(&body);
            if let Some(key) = &this.key {
                req = req.bearer_auth(key);
            }
            let response = tokio::time::timeout(this.timeout, req.send())
                .await
                .map_err(|_| {
                    BackendError::Timeout(format!("no answer in {} ms", this.timeout.as_millis()))
                })?
                .map_err(|e| failed("calling the upstream", e))?;
            let status = response.status();
            if !status.is_success() {
                // The body stays in the log: the tenant sees only the status.
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                tracing::warn!(%status, body = %text, "the upstream refused a completion");
                return Err(BackendError::Failed(format!("upstream answered {status}")));
            }
            Ok(events(response.bytes_stream().boxed(), this.timeout))
        })
    }
}

/// What the parser holds between chunks.
struct Sse {
    bytes: BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: Vec<u8>,
    ready: VecDeque<Result<String, BackendError>>,
    done: bool,
}

/// The content deltas of an OpenAI event stream, ending at `data: [DONE]`.
fn events(bytes: BoxStream<'static, reqwest::Result<axum::body::Bytes>>, idle: Duration) -> Tokens {
    let sse = Sse {
        bytes,
        buffer: Vec::new(),
        ready: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(sse, move |mut sse| async move {
        loop {
            if let Some(item) = sse.ready.pop_front() {
                if item.is_err() {
                    sse.done = true;
                }
                return Some((item, sse));
            }
            if sse.done {
                return None;
            }
            match tokio::time::timeout(idle, sse.bytes.next()).await {
                Err(_) => {
                    sse.ready.push_back(Err(BackendError::Timeout(format!(
                        "the upstream paused for {} ms",
                        idle.as_millis()
                    ))));
                }
                Ok(None) => {
                    sse.ready.push_back(Err(BackendError::Failed(
                        "the upstream's stream ended without [DONE]".into(),
                    )));
                }
                Ok(Some(Err(e))) => sse.ready.push_back(Err(failed("reading the upstream", e))),
                Ok(Some(Ok(chunk))) => {
                    sse.buffer.extend_from_slice(&chunk);
                    while let Some(end) = sse.buffer.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = sse.buffer.drain(..=end).collect();
                        let line = String::from_utf8_lossy(&line);
                        let Some(data) = line.trim().strip_prefix("data:") else {
                            continue; // comments, event names, blank lines
                        };
                        match data.trim() {
                            "[DONE]" => {
                                sse.done = true;
                                break;
                            }
                            data => sse.ready.push_back(delta(data)),
                        }
                    }
                }
            }
        }
    })
    .filter(|t| std::future::ready(!matches!(t, Ok(s) if s.is_empty())))
    .boxed()
}

/// The content of one chunk (empty when it has none: the role, the finish reason, usage).
fn delta(data: &str) -> Result<String, BackendError> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| BackendError::Failed(format!("an event that is not JSON: {e}")))?;
    if let Some(e) = v.get("error") {
        return Err(BackendError::Failed(format!("upstream error: {e}")));
    }
    Ok(v["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}
