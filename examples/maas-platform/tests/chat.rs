//! OpenAI-compatible inference over real HTTP: an OpenAI client crate (`async-openai`) lists
//! models and chats, whole and streamed; the event stream has OpenAI's shape and ends with
//! `[DONE]`; with an upstream server, answers are proxied, a failing upstream opens the
//! breaker and the fallback model answers (marked), and a stream that fails after its first
//! token is not handed to the fallback.

mod support;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs, FinishReason,
};
use futures::StreamExt;
use maas_platform::{Config, Platform};
use serde_json::{Value, json};

async fn start(config: Config) -> (Platform, String, String) {
    let platform = Platform::start(
        Config {
            token_delay: Duration::from_millis(1),
            breaker_open: Duration::from_secs(60),
            ..config
        },
        prometheus::Registry::new(),
    )
    .await
    .expect("the platform starts");
    let http = reqwest::Client::new();
    let key =
        support::create_key(&http, &format!("http://{}", platform.admin_addr()), "acme").await;
    let base = format!("http://{}", platform.addr());
    (platform, base, key)
}

/// Uploads a model named `name` and waits until it is built; its id.
async fn ready_model(base: &str, key: &str, name: &str) -> String {
    let http = reqwest::Client::new();
    let (code, model) =
        support::upload(&http, base, Some(key), name, support::model_file(name)).await;
    assert_eq!(code, 202, "{model}");
    let id = model["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = support::get_json(&http, &format!("{base}/v1/models/{id}"), key).await;
        if m["status"] == "ready" {
            return id;
        }
        assert!(Instant::now() < deadline, "not built: {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request(model: &str, prompt: &str, max_tokens: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .max_completion_tokens(max_tokens)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(prompt)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_client_lists_models_and_chats_whole_and_streamed() {
    let config = support::config("chat");
    let dir = config.data_dir.clone().unwrap();
    let (platform, base, key) = start(config).await;
    let id = ready_model(&base, &key, "tiny").await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{base}/v1"))
            .with_api_key(&key),
    );

    let models = client.models().list().await.expect("the model list");
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [id.as_str(), "maas-fallback"]);

    // The simulated backend answers with the prompt's words reversed, in 4-byte tokens:
    // "Simu" "late" "d an" "swer" " fro" "m ti" "ny: " "ther" "e he" "llo" — 10.
    let whole = client
        .chat()
        .create(request(&id, "hello there", 64))
        .await
        .expect("a completion");
    assert_eq!(whole.model, id);
    let choice = &whole.choices[0];
    assert_eq!(
        choice.message.content.as_deref(),
        Some("Simulated answer from tiny: there hello")
    );
    assert_eq!(choice.finish_reason, Some(FinishReason::Stop));
    let usage = whole.usage.expect("usage");
    // "hello there" is 11 bytes: 3 tokens, and 4 for the message.
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 10));
    assert_eq!(usage.total_tokens, 17);

    // Cut by max_tokens: three tokens, finish_reason "length".
    let short = client
        .chat()
        .create(request(&id, "hello there", 3))
        .await
        .unwrap();
    assert_eq!(
        short.choices[0].message.content.as_deref(),
        Some("Simulated an")
    );
    assert_eq!(short.choices[0].finish_reason, Some(FinishReason::Length));

    let mut stream = client
        .chat()
        .create_stream(request(&id, "hello there", 64))
        .await
        .expect("a stream");
    let (mut text, mut chunks, mut finish) = (String::new(), 0, None);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("a chunk");
        assert_eq!(chunk.model, id);
        for c in chunk.choices {
            text.push_str(c.delta.content.as_deref().unwrap_or(""));
            finish = finish.or(c.finish_reason);
        }
        chunks += 1;
    }
    assert_eq!(text, "Simulated answer from tiny: there hello");
    assert_eq!(finish, Some(FinishReason::Stop));
    assert_eq!(chunks, 12, "the head, 10 tokens, the finish");

    // An unknown model, in OpenAI's error shape.
    let err = client
        .chat()
        .create(request("m-0000000000000000", "hi", 8))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_has_openais_shape_and_ends_with_done() {
    let config = support::config("sse");
    let dir = config.data_dir.clone().unwrap();
    let (platform, base, key) = start(config).await;
    let text = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({ "model": "maas-fallback", "stream": true, "max_tokens": 2,
                       "stream_options": { "include_usage": true },
                       "messages": [{ "role": "user", "content": "ok" }] }),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 5, "head, 2 tokens, finish, usage: {text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Simu");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert_eq!(
        chunks[4]["usage"],
        json!({ "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 })
    );
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A fake OpenAI-compatible upstream: `mode` 0 answers, 1 fails with 500, 2 sends one token
/// and then breaks off. It records the model each request named.
async fn fake_upstream(mode: Arc<AtomicU8>, asked: Arc<Mutex<Vec<String>>>) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (mode, asked) = (mode.clone(), asked.clone());
            async move {
                asked
                    .lock()
                    .unwrap()
                    .push(body["model"].as_str().unwrap_or("").to_owned());
                let delta = |t: &str| {
                    format!(
                        "data: {}\n\n",
                        json!({ "choices": [{ "index": 0, "delta": { "content": t } }] })
                    )
                };
                match mode.load(Ordering::SeqCst) {
                    0 => format!("{}{}data: [DONE]\n\n", delta("Hi"), delta(" there"))
                        .into_response(),
                    1 => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "overloaded")
                        .into_response(),
                    _ => {
                        let first = futures::stream::iter([Ok::<_, std::io::Error>(delta("Hi"))]);
                        let broken = futures::stream::iter([Err(std::io::Error::other("gone"))]);
                        let body = first
                            .chain(
                                futures::stream::once(async {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                })
                                .filter_map(|_| async { None }),
                            )
                            .chain(broken);
                        axum::body::Body::from_stream(body).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_is_proxied_and_falls_back_only_before_the_first_token() {
    let (mode, asked) = (Arc::new(AtomicU8::new(0)), Arc::default());
    let upstream = fake_upstream(mode.clone(), Arc::clone(&asked)).await;
    let config = Config {
        upstream_url: Some(upstream),
        ..support::config("upstream")
    };
    let dir = config.data_dir.clone().unwrap();
    let (platform, base, key) = start(config).await;
    let id = ready_model(&base, &key, "llama").await;
    let http = reqwest::Client::new();
    let chat = |stream: bool| {
        let (http, base, key, id) = (http.clone(), base.clone(), key.clone(), id.clone());
        async move {
            http.post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({ "model": id, "stream": stream,
                               "messages": [{ "role": "user", "content": "hi" }] }))
                .send()
                .await
                .unwrap()
        }
    };

    // Proxied: the upstream is asked for the model by its upload name.
    let answer: Value = chat(false).await.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "Hi there",
        "{answer}"
    );
    assert_eq!(answer["model"], id.as_str());
    assert_eq!(
        asked.lock().unwrap().last().map(String::as_str),
        Some("llama")
    );

    // Broken off after the first token: no fallback — the stream ends with an error event.
    mode.store(2, Ordering::SeqCst);
    let r = chat(true).await;
    assert!(r.headers().get("x-maas-degraded").is_none());
    let text = r.text().await.unwrap();
    assert!(text.contains(r#""content":"Hi""#), "{text}");
    assert!(text.contains(r#""type":"server_error""#), "{text}");
    assert!(
        !text.contains("[DONE]") && !text.contains("maas-fallback"),
        "{text}"
    );

    // Failing before the first token: the fallback answers, marked; the breaker opens.
    mode.store(1, Ordering::SeqCst);
    let mut reasons = Vec::new();
    for _ in 0..6 {
        let r = chat(false).await;
        assert_eq!(r.status(), 200);
        let marked = r.headers().get("x-maas-degraded").cloned();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["model"], "maas-fallback", "{answer}");
        assert_eq!(answer["degraded"], true);
        assert_eq!(marked.unwrap().to_str().unwrap(), answer["degraded_reason"]);
        reasons.push(answer["degraded_reason"].as_str().unwrap().to_owned());
    }
    assert!(
        reasons[0].starts_with("model backend failed: upstream answered 500"),
        "{reasons:?}"
    );
    assert_eq!(reasons.last().unwrap(), "circuit open", "{reasons:?}");
    // Streamed, the fallback's answer is marked from its first event.
    let r = chat(true).await;
    assert_eq!(r.headers()["x-maas-degraded"], "circuit open");
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#""model":"maas-fallback""#) && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `x-ratelimit-remaining-tokens`, checked against the arithmetic: the bucket refills one
/// token per 600 ms (100 a minute), so a slow run may see one more.
fn remaining_tokens(r: &reqwest::Response, expected: u64) {
    let got: u64 = r.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (expected..=expected + 1).contains(&got),
        "x-ratelimit-remaining-tokens {got}, expected {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_admitted_by_estimate_and_reconciled_with_usage() {
    let config = Config {
        tokens_per_minute: 100,
        ..support::config("tokens")
    };
    let dir = config.data_dir.clone().unwrap();
    let (platform, base, key) = start(config).await;
    let http = reqwest::Client::new();
    // The fallback model on "ok": a prompt of 5 tokens (1 + 4), an answer of 10
    // ("Simulated answer from maas-fallback: ok", 39 bytes) unless max_tokens cuts it.
    let ask = |max_tokens: u64, stream: bool| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({ "model": "maas-fallback", "max_tokens": max_tokens,
                               "stream": stream,
                               "messages": [{ "role": "user", "content": "ok" }] }))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r)
        }
    };

    // Estimate 5 + 40 = 45 of 100: admitted, 55 left; it used 15, so 30 come back.
    let (status, r) = ask(40, false).await;
    assert_eq!(status, 200);
    remaining_tokens(&r, 55);
    assert_eq!(r.headers()["x-ratelimit-limit-tokens"], "100");
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "600");
    assert!(r.headers().contains_key("x-ratelimit-remaining-requests"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["usage"]["total_tokens"], 15);
    // Estimate 95 against 85 left: refused, 10 tokens short = 6 s of refill.
    let (status, r) = ask(90, false).await;
    assert_eq!(status, 429);
    assert_eq!(r.headers()["retry-after"], "6");
    assert!(r.headers().contains_key("ratelimit-remaining"));
    remaining_tokens(&r, 85);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // Estimate 85 against 85: admitted to the last token; 70 come back.
    let (status, r) = ask(80, false).await;
    assert_eq!(status, 200);
    remaining_tokens(&r, 0);
    let _ = r.bytes().await;
    // A stream: estimate 45 (25 left while it runs), reconciled when it ends: 55.
    let (status, r) = ask(40, true).await;
    assert_eq!(status, 200);
    remaining_tokens(&r, 25);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    // Estimate 6: what the stream gave back is there.
    let (status, r) = ask(1, false).await;
    assert_eq!(status, 200);
    remaining_tokens(&r, 49);
    let _ = r.bytes().await;

    // An OpenAI client gets its typed rate-limit error. (It retries a 429 after its
    // Retry-After, so the request here is one that can never pass.)
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{base}/v1"))
            .with_api_key(&key),
    );
    let err = client
        .chat()
        .create(request("maas-fallback", "ok", 200))
        .await
        .unwrap_err();
    match err {
        async_openai::error::OpenAIError::ApiError(e) => {
            assert_eq!(e.status_code.as_u16(), 429);
            assert_eq!(e.api_error.code.as_deref(), Some("rate_limit_exceeded"));
            assert_eq!(e.api_error.r#type.as_deref(), Some("tokens"));
        }
        other => panic!("not a typed API error: {other:?}"),
    }
    // More than the whole limit can never pass: said so, without a Retry-After.
    let (status, r) = ask(200, false).await;
    assert_eq!(status, 429);
    assert!(!r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lower max_tokens"),
        "{body}"
    );
    platform.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
