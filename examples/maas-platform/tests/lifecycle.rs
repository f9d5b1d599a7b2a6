//! The lifecycle over real HTTP: `/health/live` and `/health/ready`; on shutdown, ready
//! answers 503 at once and every answer says `Connection: close` while the listeners keep
//! serving for the drain delay; a long stream in progress ends when they stop, an idle
//! connection that never sends a request does not hold the shutdown, and the whole shutdown
//! takes the drain delay plus at most the deadline.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use maas_platform::{Config, Platform};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_stops_within_its_deadline() {
    let drain = Duration::from_millis(800);
    let deadline = Duration::from_secs(1);
    let config = Config {
        drain,
        shutdown_deadline: deadline,
        token_delay: Duration::from_millis(50),
        ..support::config("lifecycle")
    };
    let dir = config.data_dir.clone().unwrap();
    let platform = Platform::start(config, prometheus::Registry::new())
        .await
        .unwrap();
    let base = format!("http://{}", platform.addr());
    let http = reqwest::Client::new();
    let key =
        support::create_key(&http, &format!("http://{}", platform.admin_addr()), "life").await;
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            // A new connection each time, as a kubelet probe makes.
            let r = reqwest::Client::new().get(url).send().await.unwrap();
            let close = r.headers().get("connection").cloned();
            (r.status().as_u16(), close, r.json::<Value>().await.unwrap())
        }
    };
    let (status, close, body) = get("/health/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    assert!(close.is_none());
    assert_eq!(get("/health/live").await.0, 200);

    // A client that connects and never sends a request.
    let idle = tokio::net::TcpStream::connect(platform.addr())
        .await
        .unwrap();
    // A stream that would run for about 20 s (400 tokens, 50 ms each).
    let words = vec!["word"; 400].join(" ");
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(
            &json!({ "model": "maas-fallback", "stream": true, "max_tokens": 400,
                       "messages": [{ "role": "user", "content": words }] }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = r.bytes_stream();
    let first = events.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("chat.completion.chunk"));

    let started = Instant::now();
    let shutdown = tokio::spawn(platform.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Draining: not ready, still serving, every answer closing its connection.
    let (status, close, body) = get("/health/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("draining")),
        "{body}"
    );
    assert_eq!(close.unwrap(), "close");
    let (status, close, _) = get("/health/live").await;
    assert_eq!((status, close.unwrap().to_str().unwrap()), (200, "close"));

    // The stream ends when the listeners stop, without [DONE].
    let mut rest = String::new();
    while let Some(chunk) = events.next().await {
        match chunk {
            Ok(c) => rest.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => break,
        }
    }
    assert!(!rest.contains("[DONE]"), "the stream ran to its end");
    let ended = started.elapsed();
    assert!(
        ended >= drain,
        "the stream ended before the drain was over: {ended:?}"
    );
    shutdown.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < drain + deadline + Duration::from_millis(500),
        "the shutdown took {took:?} (drain {drain:?}, deadline {deadline:?})"
    );
    println!("lifecycle: stream ended {ended:?} after SIGTERM-equivalent, shutdown took {took:?}");
    drop(idle);
    let _ = std::fs::remove_dir_all(dir);
}
