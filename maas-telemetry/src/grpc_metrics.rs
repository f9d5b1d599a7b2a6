//! [`GrpcMetricsLayer`]: what a gRPC server answered, by method and `grpc-status`.
//!
//! A gRPC error is an HTTP 200 whose `grpc-status` is not `0` — in the response headers
//! (trailers-only, an immediate error) or in the trailers after the messages — so
//! [`HttpMetricsLayer`](crate::HttpMetricsLayer) would count it under `status="200"`. This
//! layer reads the status where it is and records, per call:
//!
//! * `grpc_server_handled_total{service, method, code}` (counter), once the status is known;
//! * `grpc_server_handling_seconds{service, method}` (histogram), until the status is known;
//! * `grpc_server_in_flight` (gauge).
//!
//! `service` and `method` come from the path `/package.Service/Method`. The set of labels
//! stays bounded whatever clients send: calls answered `UNIMPLEMENTED` (an unknown method)
//! are labelled `method="unknown"`, at most [`MAX_METHODS`] distinct methods get labels of
//! their own (later ones are `other`), and `code` is the status name (`OK`, `UNAVAILABLE`, …;
//! a value outside the 17 codes is `INVALID`). A call whose body is dropped before its status
//! (the client cancelled) is counted as `CANCELLED`.
//!
//! ```
//! use maas_telemetry::GrpcMetricsLayer;
//! use prometheus::Registry;
//!
//! # fn main() -> Result<(), maas_telemetry::TelemetryError> {
//! let registry = Registry::new();
//! // tonic: Server::builder().layer(GrpcMetricsLayer::new(&registry)?).add_service(..)
//! let layer = GrpcMetricsLayer::new(&registry)?;
//! # let _ = layer; Ok(()) }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use tower_layer::Layer;
use tower_service::Service;

use crate::TelemetryError;
use crate::http_metrics::DEFAULT_BUCKETS;

/// Distinct `service/method` pairs that get labels of their own; later ones are `other`.
pub const MAX_METHODS: usize = 256;

/// The names of the gRPC status codes, by code.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The `code` label of a `grpc-status` header value.
fn code_name(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .and_then(|c| CODES.get(c).copied())
            .unwrap_or("INVALID"),
    )
}

/// Records the status of every gRPC call (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    handled: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    methods: Mutex<HashSet<(String, String)>>,
}

impl GrpcMetricsLayer {
    /// Creates the metrics and registers them in `registry` (an error if they already are).
    pub fn new(registry: &Registry) -> Result<Self, TelemetryError> {
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls answered, by method and grpc-status.",
            ),
            &["service", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time until a gRPC call's status was known, by method.",
            )
            .buckets(DEFAULT_BUCKETS.to_vec()),
            &["service", "method"],
        )?;
        let in_flight = IntGauge::new("grpc_server_in_flight", "gRPC calls being handled now.")?;
        registry.register(Box::new(handled.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(GrpcMetricsLayer {
            shared: Arc::new(Shared {
                handled,
                duration,
                in_flight,
                methods: Mutex::default(),
            }),
        })
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// `(service, method)` of a path `/package.Service/Method`.
fn split_path(path: &str) -> (String, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    (service.to_owned(), method.to_owned())
}

impl<S, B, ResB> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = Response<StatusBody<ResB>>;
    type Error = S::Error;
    type Future = GrpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.shared.in_flight.inc();
        let (service, method) = split_path(req.uri().path());
        GrpcMetricsFuture {
            inner: self.inner.call(req),
            call: Some(Call {
                shared: self.shared.clone(),
                service,
                method,
                start: Instant::now(),
            }),
        }
    }
}

/// One call being measured; counted exactly once, leaves the in-flight gauge when dropped.
struct Call {
    shared: Arc<Shared>,
    service: String,
    method: String,
    start: Instant,
}

impl Call {
    fn finish(self, code: &'static str) {
        let (service, method) = if code == "UNIMPLEMENTED" {
            (self.service.as_str(), "unknown")
        } else {
            let mut known = self
                .shared
                .methods
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let key = (self.service.clone(), self.method.clone());
            if known.contains(&key) || known.len() < MAX_METHODS {
                known.insert(key);
                (self.service.as_str(), self.method.as_str())
            } else {
                ("other", "other")
            }
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        self.shared
            .handled
            .with_label_values(&[service, method, code])
            .inc();
        self.shared
            .duration
            .with_label_values(&[service, method])
            .observe(elapsed);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.shared.in_flight.dec();
    }
}

/// The response future of [`GrpcMetrics`].
#[pin_project::pin_project]
pub struct GrpcMetricsFuture<F> {
    #[pin]
    inner: F,
    call: Option<Call>,
}

impl<F, ResB, E> Future for GrpcMetricsFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<StatusBody<ResB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Err(e) => {
                if let Some(call) = call {
                    call.finish("UNKNOWN");
                }
                Err(e)
            }
            Ok(response) => {
                let call = match (call, code_name(response.headers())) {
                    (Some(call), Some(code)) => {
                        call.finish(code);
                        None
                    }
                    (call, _) => call,
                };
                Ok(response.map(|body| StatusBody { inner: body, call }))
            }
        })
    }
}

/// A response body that records the call's `grpc-status` when its trailers arrive.
#[pin_project::pin_project(PinnedDrop)]
pub struct StatusBody<B> {
    #[pin]
    inner: B,
    call: Option<Call>,
}

impl<B> std::fmt::Debug for StatusBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusBody")
            .field("awaiting_status", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: http_body::Body> http_body::Body for StatusBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(f)) => f.trailers_ref().map(|t| code_name(t).unwrap_or("UNKNOWN")),
            Some(Err(_)) => Some("UNKNOWN"),
            None => Some("UNKNOWN"),
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[pin_project::pinned_drop]
impl<B> PinnedDrop for StatusBody<B> {
    fn drop(self: Pin<&mut Self>) {
        if let Some(call) = self.project().call.take() {
            call.finish("CANCELLED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/maas.v1.Models/Infer"),
            ("maas.v1.Models".to_owned(), "Infer".to_owned())
        );
        assert_eq!(split_path("/"), (String::new(), String::new()));
    }

    #[test]
    fn codes_are_named_and_bounded() {
        let mut h = HeaderMap::new();
        assert_eq!(code_name(&h), None);
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(code_name(&h), Some("UNAVAILABLE"));
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(code_name(&h), Some("INVALID"));
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(code_name(&h), Some("INVALID"));
    }
}
