//! `/metrics`: a Prometheus registry in the text exposition format.

use prometheus::{Encoder, Registry, TextEncoder};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric family of `registry` in the text format (with `# HELP` and `# TYPE`
/// lines, which `promtool check metrics` requires).
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::with_capacity(4096);
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// An axum handler answering with [`render`]'s output; a rendering failure is a `500` with a
/// JSON body `{"error": "..."}`.
///
/// # Cancel safety
///
/// Cancel safe: it only reads the registry.
#[cfg(feature = "axum")]
pub async fn metrics_handler(
    axum::extract::State(registry): axum::extract::State<Registry>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match render(&registry) {
        Ok(text) => ([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            let body = serde_json::json!({ "error": format!("rendering metrics: {e}") });
            (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                [(http::header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

/// A router serving `GET /metrics` from `registry`; merge it into the application's router.
#[cfg(feature = "axum")]
pub fn metrics_router<S>(registry: Registry) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .with_state(registry)
}
