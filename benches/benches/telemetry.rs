//! maas-telemetry's `HttpMetricsLayer` against axum-prometheus, in one run.
//!
//! `telemetry/http_layer`: one `GET /models/42` through an axum router in-process (no
//! network), with no metrics layer (`bare`), with maas's layer, and with axum-prometheus's
//! `PrometheusMetricLayer`. Each metrics layer records a counter, a histogram and an
//! in-flight gauge labelled by route template; the difference from `bare` is its overhead.

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::Request;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use maas_benches::once;
use maas_telemetry::HttpMetricsLayer;

async fn model(Path(id): Path<u32>) -> String {
    id.to_string()
}

fn router() -> Router {
    Router::new()
        .route("/models/{id}", get(model))
        .route("/health", get(|| async { "ok" }))
}

fn request() -> Request<Body> {
    Request::get("/models/42").body(Body::empty()).unwrap()
}

fn http_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let mut g = c.benchmark_group("telemetry/http_layer");

    let mut bare = router();
    g.bench_function("bare", |b| b.iter(|| black_box(once(&mut bare, request()))));

    let registry = prometheus::Registry::new();
    let mut maas = router().layer(HttpMetricsLayer::new(&registry).unwrap());
    g.bench_function("maas", |b| b.iter(|| black_box(once(&mut maas, request()))));

    let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
    let mut anchor = router().layer(layer);
    g.bench_function("axum_prometheus", |b| {
        b.iter(|| black_box(once(&mut anchor, request())))
    });
    g.finish();

    // Both recorded what they saw, under the route template.
    let ours = maas_telemetry::render(&registry).unwrap();
    assert!(ours.contains(r#"path="/models/{id}""#), "{ours}");
    let theirs = handle.render();
    assert!(theirs.contains("/models/{id}"), "{theirs}");
}

criterion_group!(benches, http_layer);
criterion_main!(benches);
