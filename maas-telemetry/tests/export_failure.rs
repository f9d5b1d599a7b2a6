//! A collector that is down: requests keep being served, the failure is logged once (not once
//! per batch), and shutdown stays bounded. Installs the global subscriber, so it is the only
//! test in this binary.

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use maas_telemetry::{HttpTraceLayer, Telemetry};

#[test]
fn a_down_collector_is_reported_once_and_never_fails_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logs = support::Captured::default();
    let telemetry = Telemetry::builder()
        .service_name("export-failure-test")
        .otlp_endpoint(format!("http://127.0.0.1:{port}"))
        .export_timeout(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_secs(2))
        .filter("info")
        .log_writer(logs.clone())
        .build()
        .expect("an unreachable endpoint is not a configuration error");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(async {
        let app = Router::new()
            .route("/ping", get(|| async { "pong" }))
            .layer(HttpTraceLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    });
    let http = reqwest::Client::new();
    for round in 0..3 {
        let body = rt.block_on(async {
            http.get(format!("{base}/ping"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        assert_eq!(body, "pong", "round {round}");
        assert!(
            telemetry.flush().is_err(),
            "round {round}: export must fail"
        );
    }
    let failures: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("span export failed"))
        })
        .collect();
    assert_eq!(failures.len(), 1, "reported once: {failures:#?}");
    assert_eq!(failures[0]["level"], "WARN");
    assert!(
        failures[0]["endpoint"]
            .as_str()
            .is_some_and(|e| e.contains(&port.to_string())),
        "{:?}",
        failures[0]
    );

    let started = Instant::now();
    rt.block_on(async move { drop(telemetry) });
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
