//! [`HttpMetricsLayer`]: RED metrics (rate, errors, duration) of an HTTP service, labelled by
//! route template.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tower_layer::Layer;
use tower_service::Service;

use crate::TelemetryError;

/// Latency buckets, in seconds, for `http_request_duration_seconds`: from 1 ms for cheap API
/// calls to a minute for model inference, roughly ×2.5 apart.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The `path` label of requests that matched no route: one value for all of them, so that
/// scanners probing random URLs cannot grow the number of series.
pub const UNMATCHED: &str = "unmatched";

/// A route template for services that are not axum routers: insert it into the request's
/// extensions before [`HttpMetricsLayer`] and [`HttpTraceLayer`](crate::HttpTraceLayer) see the
/// request, and it becomes the `path` label. (With axum, `MatchedPath` is used.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(pub Arc<str>);

/// The route template of a request, if a router put one there.
pub(crate) enum Route {
    #[cfg(feature = "axum")]
    Axum(axum::extract::MatchedPath),
    Template(RouteTemplate),
}

impl std::ops::Deref for Route {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            #[cfg(feature = "axum")]
            Route::Axum(m) => m.as_str(),
            Route::Template(t) => &t.0,
        }
    }
}

pub(crate) fn route_of<B>(req: &Request<B>) -> Option<Route> {
    #[cfg(feature = "axum")]
    if let Some(m) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(Route::Axum(m.clone()));
    }
    req.extensions()
        .get::<RouteTemplate>()
        .map(|t| Route::Template(t.clone()))
}

/// Records, for every request it sees:
///
/// * `http_requests_total{method, path, status}` (counter), once the response is ready;
/// * `http_request_duration_seconds{method, path}` (histogram, [`DEFAULT_BUCKETS`] unless
///   set), time until the response head is ready;
/// * `http_requests_in_flight` (gauge).
///
/// `path` is the route template (`/models/{id}`), never the raw path; requests that matched no
/// route share the label [`UNMATCHED`]. `method` is the standard method name, or `_OTHER`.
/// `status` is the numeric status, or `error` when the service returned an error instead of
/// a response. Requests dropped before a response (the client went away) leave the in-flight
/// gauge and are not counted. Paths given to [`exclude`](HttpMetricsBuilder::exclude) (by
/// template, or raw path when unmatched) are not recorded at all.
///
/// With axum, add it with `Router::layer` — the route template is known only inside the router:
///
/// ```
/// use axum::{Router, routing::get};
/// use maas_telemetry::{HttpMetricsLayer, metrics_router};
/// use prometheus::Registry;
///
/// # fn main() -> Result<(), maas_telemetry::TelemetryError> {
/// let registry = Registry::new();
/// let app: Router = Router::new()
///     .route("/models/{id}", get(|| async { "ok" }))
///     .merge(metrics_router(registry.clone()))
///     .layer(HttpMetricsLayer::builder().exclude("/metrics").build(&registry)?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    exclude: Vec<String>,
    raw_paths: bool,
}

/// Settings of an [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetricsBuilder {
    buckets: Vec<f64>,
    exclude: Vec<String>,
    raw_paths: bool,
}

impl HttpMetricsLayer {
    /// The layer with default settings, its metrics registered in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, TelemetryError> {
        Self::builder().build(registry)
    }

    /// Starts configuring the layer.
    pub fn builder() -> HttpMetricsBuilder {
        HttpMetricsBuilder {
            buckets: DEFAULT_BUCKETS.to_vec(),
            exclude: Vec::new(),
            raw_paths: false,
        }
    }
}

impl HttpMetricsBuilder {
    /// Histogram bucket upper bounds in seconds, increasing (default [`DEFAULT_BUCKETS`]).
    pub fn buckets(mut self, buckets: impl Into<Vec<f64>>) -> Self {
        self.buckets = buckets.into();
        self
    }

    /// Does not record requests to `path` (a route template such as `/metrics`, or the raw
    /// path of requests that match no route). May be called several times.
    pub fn exclude(mut self, path: impl Into<String>) -> Self {
        self.exclude.push(path.into());
        self
    }

    /// Uses the raw request path as the label when no route template is known, instead of
    /// [`UNMATCHED`]. Only for services whose paths are a small fixed set — a tonic gRPC
    /// server, whose paths are `/package.Service/Method` — since every distinct path makes
    /// new series.
    pub fn raw_paths_when_unmatched(mut self, yes: bool) -> Self {
        self.raw_paths = yes;
        self
    }

    /// Creates the metrics and registers them in `registry`. Fails when the buckets are
    /// empty, not increasing or not finite, or when `registry` already has metrics of
    /// these names.
    pub fn build(self, registry: &Registry) -> Result<HttpMetricsLayer, TelemetryError> {
        if self.buckets.is_empty()
            || self.buckets.iter().any(|b| !b.is_finite())
            || self.buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(prometheus::Error::Msg(format!(
                "histogram buckets must be finite, increasing and not empty: {:?}",
                self.buckets
            ))
            .into());
        }
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route template and status.",
            ),
            &["method", "path", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time until the response head was ready, by route template.",
            )
            .buckets(self.buckets),
            &["method", "path"],
        )?;
        let in_flight = IntGauge::new(
            "http_requests_in_flight",
            "HTTP requests being handled now.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(HttpMetricsLayer {
            shared: Arc::new(Shared {
                requests,
                duration,
                in_flight,
                exclude: self.exclude,
                raw_paths: self.raw_paths,
            }),
        })
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

enum PathLabel {
    Route(Route),
    Raw(String),
    Unmatched,
}

impl PathLabel {
    fn as_str(&self) -> &str {
        match self {
            PathLabel::Route(r) => r,
            PathLabel::Raw(p) => p,
            PathLabel::Unmatched => UNMATCHED,
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

impl<S, B, ResB> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = MetricsResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = match route_of(&req) {
            Some(r) => PathLabel::Route(r),
            None if self.shared.raw_paths => PathLabel::Raw(req.uri().path().to_owned()),
            None => PathLabel::Unmatched,
        };
        let excluded = {
            let label = match &path {
                PathLabel::Unmatched => req.uri().path(),
                other => other.as_str(),
            };
            self.shared.exclude.iter().any(|e| e == label)
        };
        let recording = (!excluded).then(|| {
            self.shared.in_flight.inc();
            Recording {
                shared: self.shared.clone(),
                method: method_label(req.method()),
                path,
                start: Instant::now(),
            }
        });
        MetricsResponse {
            inner: self.inner.call(req),
            recording,
        }
    }
}

/// One request being measured; leaves the in-flight gauge when dropped, answered or not.
struct Recording {
    shared: Arc<Shared>,
    method: &'static str,
    path: PathLabel,
    start: Instant,
}

impl Recording {
    fn finish(self, status: &str) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let path = self.path.as_str();
        self.shared
            .requests
            .with_label_values(&[self.method, path, status])
            .inc();
        self.shared
            .duration
            .with_label_values(&[self.method, path])
            .observe(elapsed);
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.shared.in_flight.dec();
    }
}

/// The response future of [`HttpMetrics`].
#[pin_project::pin_project]
pub struct MetricsResponse<F> {
    #[pin]
    inner: F,
    recording: Option<Recording>,
}

impl<F, ResB, E> Future for MetricsResponse<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(recording) = this.recording.take() {
            match &result {
                Ok(response) => recording.finish(response.status().as_str()),
                Err(_) => recording.finish("error"),
            }
        }
        Poll::Ready(result)
    }
}
