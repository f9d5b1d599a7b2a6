//! [`Telemetry::builder`]: the process's `tracing` subscriber, OpenTelemetry tracer and OTLP
//! exporter, set up in one call.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;

use crate::TelemetryError;
use crate::exporter::Isolated;
use crate::json_log::JsonLayer;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line with `trace_id` and `span_id` (the default; for production).
    #[default]
    Json,
    /// Multi-line, human-friendly text (for development).
    Pretty,
    /// One line of text per event.
    Compact,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318 by convention; path `/v1/traces`).
    HttpProtobuf,
}

impl OtlpProtocol {
    fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}

/// Settings of [`Telemetry`]; each one not set in code is read from the standard OpenTelemetry
/// environment variable, then defaulted. Invalid settings fail at [`build`](Self::build).
pub struct TelemetryBuilder {
    service_name: Option<String>,
    endpoint: Option<String>,
    protocol: Option<OtlpProtocol>,
    export_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    log_format: LogFormat,
    filter: Option<String>,
    writer: Option<BoxMakeWriter>,
    sample_ratio: f64,
    attributes: Vec<KeyValue>,
    log_panics: bool,
    env: fn(&str) -> Option<String>,
}

impl std::fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("service_name", &self.service_name)
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("log_format", &self.log_format)
            .field("filter", &self.filter)
            .field("sample_ratio", &self.sample_ratio)
            .field("log_panics", &self.log_panics)
            .finish_non_exhaustive()
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl TelemetryBuilder {
    /// The `service.name` of exported spans (else `OTEL_SERVICE_NAME`, else
    /// `unknown_service`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Where spans go, e.g. `http://jaeger:4317` (gRPC) or `http://collector:4318` (HTTP; the
    /// `/v1/traces` path is added). Else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is),
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT`; with none, spans are still created (so logs carry
    /// trace ids and traces propagate) but nothing is exported.
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The OTLP transport (else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf`; else HTTP when the endpoint's
    /// port is 4318 and gRPC otherwise).
    pub fn otlp_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Time limit of one export (else `OTEL_EXPORTER_OTLP_TIMEOUT` in milliseconds, else 10 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.export_timeout = Some(timeout);
        self
    }

    /// How long shutting down may wait for the last spans to be exported (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The log line format (default [`LogFormat::Json`]).
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = format;
        self
    }

    /// Which spans and events are recorded, in `RUST_LOG` syntax (else `RUST_LOG`, else
    /// `info`). It applies to exported spans as well as to logs.
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = Some(directives.into());
        self
    }

    /// Where log lines are written (default standard output); any `tracing_subscriber`
    /// `MakeWriter`, e.g. `std::io::stderr` or a non-blocking file appender.
    pub fn log_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// The share of new traces that are sampled, 0 to 1 (default 1). A request that arrives
    /// with a `traceparent` follows the caller's decision.
    pub fn sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = ratio;
        self
    }

    /// An extra resource attribute on every exported span (e.g. `deployment.environment`).
    pub fn resource_attribute(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push(KeyValue::new(key, value.into()));
        self
    }

    /// Whether [`build`](Self::build) makes every panic one `ERROR` log event with its
    /// message, location, thread and backtrace — and the trace id, inside a span — instead
    /// of the default hook's lines on standard error (default: yes). Dropping the
    /// [`Telemetry`] puts the previous hook back. [`build_subscriber`](Self::build_subscriber)
    /// never installs it.
    pub fn log_panics(mut self, on: bool) -> Self {
        self.log_panics = on;
        self
    }

    /// Sets everything up and installs it for the whole process: the global `tracing`
    /// subscriber, OpenTelemetry's global tracer provider, the W3C trace-context
    /// propagator and (see [`log_panics`](Self::log_panics)) the panic hook. Keep the
    /// returned [`Telemetry`] alive; dropping it flushes and shuts down.
    pub fn build(self) -> Result<Telemetry, TelemetryError> {
        let log_panics = self.log_panics;
        let (mut telemetry, subscriber) = self.build_subscriber()?;
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| TelemetryError::AlreadyInitialized)?;
        opentelemetry::global::set_tracer_provider(telemetry.provider.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        if log_panics {
            telemetry.previous_hook = Some(HookSlot(crate::panic_log::install()));
        }
        Ok(telemetry)
    }

    /// Like [`build`](Self::build) but installs nothing: returns the subscriber for the
    /// caller to install (for instance with `tracing::subscriber::with_default` in a test).
    pub fn build_subscriber(
        self,
    ) -> Result<(Telemetry, impl Subscriber + Send + Sync + 'static), TelemetryError> {
        let settings = self.resolve()?;
        let filter =
            EnvFilter::try_new(&settings.filter).map_err(|e| TelemetryError::InvalidFilter {
                filter: settings.filter.clone(),
                reason: e.to_string(),
            })?;
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes(self.attributes)
            .build();
        let sampler = if self.sample_ratio >= 1.0 {
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
        } else {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.sample_ratio)))
        };
        let mut provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler);
        let mut runtime = None;
        if let Some(export) = &settings.export {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("maas-telemetry")
                .enable_all()
                .build()?;
            let exporter = {
                let _context = rt.enter();
                let built = match export.protocol {
                    OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(&export.endpoint)
                        .with_timeout(settings.export_timeout)
                        .build(),
                    OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .with_endpoint(&export.endpoint)
                        .with_timeout(settings.export_timeout)
                        .build(),
                };
                built.map_err(|e| TelemetryError::Exporter(e.to_string()))?
            };
            provider = provider.with_batch_exporter(Isolated::new(
                exporter,
                rt.handle().clone(),
                &export.endpoint,
                settings.export_timeout,
            ));
            runtime = Some(rt);
        }
        let provider = provider.build();
        let tracer = provider.tracer(settings.service_name.clone());
        let writer = self
            .writer
            .unwrap_or_else(|| BoxMakeWriter::new(std::io::stdout));
        let (json, pretty, compact) = match self.log_format {
            LogFormat::Json => (JsonLayer::new(Some(writer)), None, None),
            LogFormat::Pretty => (
                JsonLayer::new(None),
                Some(
                    tracing_subscriber::fmt::layer()
                        .pretty()
                        .with_writer(writer),
                ),
                None,
            ),
            LogFormat::Compact => (
                JsonLayer::new(None),
                None,
                Some(
                    tracing_subscriber::fmt::layer()
                        .compact()
                        .with_writer(writer),
                ),
            ),
        };
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Busy/idle time and thread names on every span cost a clock read per
                    // poll and say little that the span's duration does not.
                    .with_tracked_inactivity(false)
                    .with_threads(false),
            )
            .with(json)
            .with(pretty)
            .with(compact);
        let telemetry = Telemetry {
            provider,
            runtime,
            endpoint: settings.export.map(|e| e.endpoint),
            shutdown_timeout: self.shutdown_timeout,
            previous_hook: None,
        };
        Ok((telemetry, subscriber))
    }

    /// Settings from code, then environment, then defaults; checked.
    fn resolve(&self) -> Result<Settings, TelemetryError> {
        let env = self.env;
        let service_name = match &self.service_name {
            Some(n) => n.clone(),
            None => env("OTEL_SERVICE_NAME").unwrap_or_else(|| "unknown_service".to_owned()),
        };
        if service_name.trim().is_empty() {
            return Err(TelemetryError::EmptyServiceName);
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(TelemetryError::InvalidSampleRatio(self.sample_ratio));
        }
        let filter = match &self.filter {
            Some(f) => f.clone(),
            None => env("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
        };
        let export_timeout = match self.export_timeout {
            Some(t) => t,
            None => match env("OTEL_EXPORTER_OTLP_TIMEOUT") {
                Some(v) => Duration::from_millis(v.trim().parse().map_err(|_| {
                    TelemetryError::InvalidEnv {
                        name: "OTEL_EXPORTER_OTLP_TIMEOUT",
                        value: v.clone(),
                        reason: "expected milliseconds".to_owned(),
                    }
                })?),
                None => Duration::from_secs(10),
            },
        };
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        // (endpoint, whether it is a base URL to which HTTP adds `/v1/traces`)
        let endpoint = match &self.endpoint {
            Some(e) => Some((e.clone(), true)),
            None if disabled => None,
            None => env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .map(|e| (e, false))
                .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT").map(|e| (e, true))),
        };
        let export = match endpoint {
            None => None,
            Some((endpoint, base)) => {
                let uri = check_endpoint(&endpoint)?;
                let protocol = match self.protocol {
                    Some(p) => p,
                    None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
                        .or_else(|| {
                            env("OTEL_EXPORTER_OTLP_PROTOCOL")
                                .map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v))
                        }) {
                        Some((_, v)) => OtlpProtocol::parse(&v)
                            .ok_or_else(|| TelemetryError::UnsupportedProtocol(v.clone()))?,
                        None if uri.port_u16() == Some(4318) => OtlpProtocol::HttpProtobuf,
                        None => OtlpProtocol::Grpc,
                    },
                };
                let endpoint = if protocol == OtlpProtocol::HttpProtobuf
                    && base
                    && !uri.path().ends_with("/v1/traces")
                {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                } else {
                    endpoint
                };
                Some(Export { endpoint, protocol })
            }
        };
        Ok(Settings {
            service_name,
            filter,
            export_timeout,
            export,
        })
    }
}

fn check_endpoint(endpoint: &str) -> Result<http::Uri, TelemetryError> {
    let refuse = |reason: &str| TelemetryError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: http::Uri = endpoint
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| refuse(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(refuse(
                "https needs TLS, which this build does not include; send to a collector \
                 on the local network over http",
            ));
        }
        _ => return Err(refuse("expected an http:// URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(refuse("no host"));
    }
    Ok(uri)
}

struct Settings {
    service_name: String,
    filter: String,
    export_timeout: Duration,
    export: Option<Export>,
}

struct Export {
    endpoint: String,
    protocol: OtlpProtocol,
}

/// The running telemetry. Dropping it (or calling [`shutdown`](Self::shutdown)) exports the
/// spans still buffered, waiting at most the shutdown timeout, then stops the exporter; this
/// never hangs, on a current-thread or multi-thread runtime or outside any.
///
/// ```no_run
/// use maas_telemetry::{LogFormat, Telemetry};
///
/// # fn main() -> Result<(), maas_telemetry::TelemetryError> {
/// let _telemetry = Telemetry::builder()
///     .service_name("model-api")
///     .otlp_endpoint("http://localhost:4317")
///     .log_format(LogFormat::Json)
///     .build()?;
/// tracing::info!("started");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: Option<String>,
    shutdown_timeout: Duration,
    previous_hook: Option<HookSlot>,
}

/// The panic hook [`TelemetryBuilder::build`] replaced, put back on drop.
struct HookSlot(crate::panic_log::PreviousHook);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PanicHook")
    }
}

impl Telemetry {
    /// Starts configuring.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder {
            service_name: None,
            endpoint: None,
            protocol: None,
            export_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            log_format: LogFormat::Json,
            filter: None,
            writer: None,
            sample_ratio: 1.0,
            attributes: Vec::new(),
            log_panics: true,
            env: process_env,
        }
    }

    /// The tracer provider (to create OpenTelemetry tracers directly).
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The OTLP endpoint spans are exported to, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Exports the spans finished so far, blocking until done (or failed); the error says
    /// why. Meant for short-lived processes and tests; a server needs no flushing.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))
    }

    /// Flushes and stops, waiting at most the shutdown timeout. Same as dropping.
    pub fn shutdown(self) {}

    fn stop(&mut self) {
        if let Some(HookSlot(previous)) = self.previous_hook.take() {
            crate::panic_log::restore(previous);
        }
        if let Err(e) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::debug!(target: "maas_telemetry", error = %e, "telemetry shutdown");
        }
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so it is allowed inside an async context.
            rt.shutdown_background();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn builder() -> TelemetryBuilder {
        TelemetryBuilder {
            env: no_env,
            ..Telemetry::builder()
        }
    }

    #[test]
    fn endpoints_are_checked_and_completed() {
        let s = builder()
            .otlp_endpoint("http://collector:4318")
            .resolve()
            .unwrap();
        let e = s.export.unwrap();
        assert_eq!(e.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(e.endpoint, "http://collector:4318/v1/traces");
        let e = builder()
            .otlp_endpoint("http://jaeger:4317")
            .resolve()
            .unwrap()
            .export
            .unwrap();
        assert_eq!(e.protocol, OtlpProtocol::Grpc);
        assert_eq!(e.endpoint, "http://jaeger:4317");
        for bad in ["not a url", "ftp://x:1", "https://secure:4317", "http://"] {
            let err = builder().otlp_endpoint(bad).resolve().err();
            assert!(
                matches!(err, Some(TelemetryError::InvalidEndpoint { .. })),
                "{bad}: {err:?}"
            );
        }
        assert!(builder().resolve().unwrap().export.is_none());
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        assert!(matches!(
            builder().service_name(" ").resolve(),
            Err(TelemetryError::EmptyServiceName)
        ));
        assert!(matches!(
            builder().sample_ratio(1.5).resolve(),
            Err(TelemetryError::InvalidSampleRatio(_))
        ));
        assert!(matches!(
            builder().filter("info,[[[").build_subscriber(),
            Err(TelemetryError::InvalidFilter { .. })
        ));
    }

    #[test]
    fn environment_fills_what_code_leaves_unset() {
        fn env(name: &str) -> Option<String> {
            match name {
                "OTEL_SERVICE_NAME" => Some("from-env".into()),
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:9999".into()),
                "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
                "OTEL_EXPORTER_OTLP_TIMEOUT" => Some("2500".into()),
                _ => None,
            }
        }
        let s = TelemetryBuilder {
            env,
            ..Telemetry::builder()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.service_name, "from-env");
        assert_eq!(s.export_timeout, Duration::from_millis(2500));
        let e = s.export.unwrap();
        assert_eq!(e.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(e.endpoint, "http://c:9999/v1/traces");

        fn bad(name: &str) -> Option<String> {
            match name {
                "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://c:4317".into()),
                "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/json".into()),
                _ => None,
            }
        }
        assert!(matches!(
            TelemetryBuilder {
                env: bad,
                ..Telemetry::builder()
            }
            .resolve(),
            Err(TelemetryError::UnsupportedProtocol(_))
        ));
    }
}
