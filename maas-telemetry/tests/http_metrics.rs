//! Real HTTP requests to an axum server on 127.0.0.1, then a scrape of its `/metrics`: the
//! counts, buckets and route-template labels are right, and `promtool check metrics` accepts
//! the text.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use maas_telemetry::{HttpMetricsLayer, metrics_router};
use prometheus::Registry;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn app(registry: &Registry) -> Router {
    let api = Router::new()
        .route("/models/{id}", get(|| async { "model" }))
        .route(
            "/models/{id}/builds",
            post(|| async { (StatusCode::ACCEPTED, "queued") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                "slow"
            }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    Router::new()
        .nest("/v1", api)
        .merge(metrics_router(registry.clone()))
        .layer(
            HttpMetricsLayer::builder()
                .exclude("/metrics")
                .build(registry)
                .expect("metrics layer"),
        )
}

/// The value of the sample line that starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_count_requests_by_route_template() {
    let registry = Registry::new();
    let base = serve(app(&registry)).await;
    let http = reqwest::Client::new();
    for id in ["llama-3", "mistral", "qwen"] {
        let r = http
            .get(format!("{base}/v1/models/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .post(format!("{base}/v1/models/llama-3/builds"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        http.get(format!("{base}/v1/broken"))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        http.get(format!("{base}/v1/slow"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Scanners: every unknown path lands on one label value.
    for p in ["/wp-admin", "/.env", "/v1/nope/1", "/v1/nope/2"] {
        let r = http.get(format!("{base}{p}")).send().await.unwrap();
        assert_eq!(r.status(), 404, "{p}");
    }
    // Scraped twice: the first scrape is excluded, so it must not show in the second.
    let _ = http.get(format!("{base}/metrics")).send().await.unwrap();
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();

    let count = |labels: &str| sample(&text, &format!("http_requests_total{{{labels}}}"));
    assert_eq!(
        count(r#"method="GET",path="/v1/models/{id}",status="200""#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        count(r#"method="POST",path="/v1/models/{id}/builds",status="202""#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"method="GET",path="/v1/broken",status="500""#),
        Some(1.0)
    );
    assert_eq!(
        count(r#"method="GET",path="unmatched",status="404""#),
        Some(4.0)
    );
    for raw in ["llama-3", "wp-admin", ".env", "nope", "/metrics"] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("http_") && l.contains(raw)),
            "label with raw path {raw:?} in:\n{text}"
        );
    }

    // The histogram: a real one (buckets, sum, count), cumulative buckets.
    let bucket = |path: &str, le: &str| {
        sample(
            &text,
            &format!(
                "http_request_duration_seconds_bucket{{method=\"GET\",path=\"{path}\",le=\"{le}\"}}"
            ),
        )
    };
    assert_eq!(bucket("/v1/models/{id}", "+Inf"), Some(3.0));
    assert_eq!(
        bucket("/v1/slow", "0.025"),
        Some(0.0),
        "30 ms is above 25 ms"
    );
    assert_eq!(bucket("/v1/slow", "0.05"), Some(1.0));
    assert_eq!(bucket("/v1/slow", "60"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            r#"http_request_duration_seconds_count{method="GET",path="/v1/models/{id}"}"#
        ),
        Some(3.0)
    );
    let slow_sum = sample(
        &text,
        r#"http_request_duration_seconds_sum{method="GET",path="/v1/slow"}"#,
    )
    .unwrap();
    assert!((0.03..1.0).contains(&slow_sum), "{slow_sum}");
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    // Only the scrape itself is in flight, and it is excluded.
    assert_eq!(sample(&text, "http_requests_in_flight"), Some(0.0));

    promtool_check(&text).await;
}

/// Runs `promtool check metrics` on `text`; fails with instructions when promtool is missing.
async fn promtool_check(text: &str) {
    use tokio::io::AsyncWriteExt;
    let mut child = match tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}); install it with `scripts/dev-services up` \
             (Debian package `prometheus`)"
        ),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn in_flight_gauge_counts_requests_being_handled() {
    let registry = Registry::new();
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(4);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let app = Router::new()
        .route(
            "/wait",
            get(move || {
                let entered_tx = entered_tx.clone();
                let gate = gate.clone();
                async move {
                    let _ = entered_tx.send(()).await;
                    gate.notified().await;
                    "done"
                }
            }),
        )
        .layer(HttpMetricsLayer::new(&registry).unwrap());
    let base = serve(app).await;
    let http = reqwest::Client::new();
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(http.get(format!("{base}/wait")).send()))
        .collect();
    entered.recv().await;
    entered.recv().await;
    let text = maas_telemetry::render(&registry).unwrap();
    assert_eq!(
        sample(&text, "http_requests_in_flight"),
        Some(2.0),
        "{text}"
    );
    release.notify_waiters();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().status(), 200);
    }
    let text = maas_telemetry::render(&registry).unwrap();
    assert_eq!(sample(&text, "http_requests_in_flight"), Some(0.0));
}

#[test]
fn bad_buckets_and_double_registration_are_errors() {
    let registry = Registry::new();
    for bad in [vec![], vec![0.5, 0.1], vec![0.1, f64::NAN]] {
        assert!(
            HttpMetricsLayer::builder()
                .buckets(bad.clone())
                .build(&registry)
                .is_err(),
            "{bad:?}"
        );
    }
    HttpMetricsLayer::new(&registry).expect("first registration");
    assert!(matches!(
        HttpMetricsLayer::new(&registry),
        Err(maas_telemetry::TelemetryError::Metrics(_))
    ));
}
