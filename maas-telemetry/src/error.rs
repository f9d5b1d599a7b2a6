//! What can go wrong while setting telemetry up.

/// A telemetry setting that cannot work, reported by
/// [`TelemetryBuilder::build`](crate::TelemetryBuilder::build) or by the metrics builders.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The OTLP endpoint is not an `http://` or `https://` URL.
    #[error("invalid OTLP endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The OTLP protocol is not one this crate speaks (`grpc` or `http/protobuf`).
    #[error("unsupported OTLP protocol `{0}` (expected `grpc` or `http/protobuf`)")]
    UnsupportedProtocol(String),
    /// The service name is empty.
    #[error("the service name is empty")]
    EmptyServiceName,
    /// The sampling ratio is not a number between 0 and 1.
    #[error("sampling ratio {0} is not between 0 and 1")]
    InvalidSampleRatio(f64),
    /// The log filter does not parse (the syntax of `RUST_LOG`).
    #[error("invalid log filter `{filter}`: {reason}")]
    InvalidFilter {
        /// The filter as given.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {name}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A global `tracing` subscriber is already installed in this process.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
    /// The OTLP exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    /// The exporter's background runtime could not start.
    #[error("starting the telemetry runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A metric could not be created or registered (for instance a name already registered
    /// in the same registry, or histogram buckets that do not increase).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
