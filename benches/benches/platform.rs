//! The platform's whole production layer against a bare axum route, in one run: chat
//! completions on the same simulated backend (no token delay), an in-process server and a
//! keep-alive client at concurrency 64, requests per second.
//!
//! `bare_axum` is one route that runs the simulated backend and answers in OpenAI's shape.
//! `maas_stack` is the platform on embedded defaults: API key lookup, the request limit and
//! the token limit (set far above the load), the breaker and its fallback layer, RED metrics
//! and a server span per request. Target: `maas_stack` ≥ 0.8 × `bare_axum`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use maas_platform::chat::{Backend, Completion, Simulated};
use serde_json::{Value, json};

const CONCURRENCY: usize = 64;

fn body() -> Value {
    json!({ "model": "maas-fallback", "max_tokens": 16,
            "messages": [{ "role": "user", "content": "hello there" }] })
}

/// The bare route: the simulated backend, whole answers, OpenAI's shape.
async fn bare_chat(Json(req): Json<Value>) -> Json<Value> {
    let backend = Simulated {
        delay: Duration::ZERO,
    };
    let completion = Completion {
        model: req["model"].as_str().unwrap_or("").to_owned(),
        messages: vec![(
            "user".to_owned(),
            req["messages"][0]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )],
        max_tokens: req["max_tokens"].as_u64().unwrap_or(16),
    };
    let mut tokens = backend.start(completion).await.unwrap();
    let mut content = String::new();
    let mut n = 0;
    while let Some(Ok(t)) = tokens.next().await {
        content.push_str(&t);
        n += 1;
    }
    Json(json!({ "object": "chat.completion", "model": req["model"],
                 "choices": [{ "index": 0, "message": { "role": "assistant", "content": content },
                               "finish_reason": "stop" }],
                 "usage": { "completion_tokens": n } }))
}

/// Sends `n` requests, `CONCURRENCY` at a time, over keep-alive connections.
async fn load(http: &reqwest::Client, url: &str, key: &str, n: u64) -> Duration {
    let body = Arc::new(body());
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|_| {
            let body = body.clone();
            async move {
                let r = http
                    .post(url)
                    .bearer_auth(key)
                    .json(&*body)
                    .send()
                    .await
                    .expect("the server answers");
                assert_eq!(r.status(), 200);
                r.bytes().await.expect("the body");
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

fn chat_c64(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();

    let bare = rt.block_on(async {
        let app = axum::Router::new().route("/v1/chat/completions", post(bare_chat));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/chat/completions")
    });

    let dir = std::env::temp_dir().join(format!("maas-bench-platform-{}", std::process::id()));
    let platform = rt.block_on(async {
        let config = maas_platform::Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: Some(dir.clone()),
            rate_per_minute: 1_000_000_000,
            tokens_per_minute: 1 << 32,
            token_delay: Duration::ZERO,
            ..maas_platform::Config::default()
        };
        maas_platform::Platform::start(config, prometheus::Registry::new())
            .await
            .expect("the platform starts on embedded defaults")
    });
    let stack = format!("http://{}/v1/chat/completions", platform.addr());
    let key = platform.demo_key().expect("a demo key").to_owned();

    let mut g = c.benchmark_group("platform/chat_c64");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.bench_function("bare_axum", |b| {
        b.iter_custom(|n| rt.block_on(load(&http, &bare, "unused", n)))
    });
    g.bench_function("maas_stack", |b| {
        b.iter_custom(|n| rt.block_on(load(&http, &stack, &key, n)))
    });
    g.finish();
    rt.block_on(platform.shutdown());
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, chat_c64);
criterion_main!(benches);
