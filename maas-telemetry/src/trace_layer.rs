//! [`HttpTraceLayer`]: a server span per request that continues the caller's trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::http_metrics::route_of;

/// Wraps each request in an `INFO` span named `http_request`, exported to OpenTelemetry as a
/// server span called `{METHOD} {route}` with the `http.request.method`, `http.route`,
/// `url.path` and `http.response.status_code` attributes (5xx marks the span as an error).
/// When the request carries a W3C `traceparent`, the span joins that trace; logs written
/// while handling the request carry its trace id.
///
/// With axum, add it with `Router::layer` so that the route template is known:
///
/// ```
/// use axum::{Router, routing::get};
/// use maas_telemetry::HttpTraceLayer;
///
/// let app: Router = Router::new()
///     .route("/models/{id}", get(|| async { "ok" }))
///     .layer(HttpTraceLayer::new());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTraceLayer {
    _private: (),
}

impl HttpTraceLayer {
    /// The layer.
    pub fn new() -> Self {
        HttpTraceLayer::default()
    }
}

impl<S> Layer<S> for HttpTraceLayer {
    type Service = HttpTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpTrace { inner }
    }
}

/// The service made by [`HttpTraceLayer`].
#[derive(Debug, Clone)]
pub struct HttpTrace<S> {
    inner: S,
}

impl<S, B, ResB> Service<Request<B>> for HttpTrace<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = TracedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().as_str();
        let route = route_of(&req);
        let span = tracing::info_span!(
            "http_request",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            http.request.method = %method,
            http.route = route.as_deref(),
            url.path = %req.uri().path(),
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // Naming the span and reading the caller's context cost an allocation and a header
        // parse: only for spans that are recorded.
        if !span.is_disabled() {
            match &route {
                Some(r) => span.record("otel.name", format!("{method} {}", &**r)),
                None => span.record("otel.name", method),
            };
            let parent = crate::propagation::extract(req.headers());
            crate::propagation::continue_trace(&span, parent);
        }
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TracedResponse {
            inner: future,
            span,
        }
    }
}

/// The response future of [`HttpTrace`]: runs in the request's span and records the status.
#[pin_project::pin_project]
pub struct TracedResponse<F> {
    #[pin]
    inner: F,
    span: tracing::Span,
}

impl<F, ResB, E> Future for TracedResponse<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        match &result {
            Ok(response) => {
                let status = response.status();
                this.span
                    .record("http.response.status_code", i64::from(status.as_u16()));
                if status.is_server_error() {
                    this.span.record("otel.status_code", "ERROR");
                }
            }
            Err(_) => {
                this.span.record("otel.status_code", "ERROR");
            }
        }
        Poll::Ready(result)
    }
}
