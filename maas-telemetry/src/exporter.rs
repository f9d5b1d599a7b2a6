//! The OTLP exporter, run on a runtime of its own.
//!
//! OpenTelemetry's batch processor exports from a plain thread with a minimal executor, while
//! the tonic and reqwest clients behind OTLP need a tokio runtime. Borrowing the application's
//! runtime is what makes exporters hang on shutdown (a current-thread runtime blocked in
//! `drop` cannot drive the export it waits for) or panic ("no reactor running"). So the
//! exporter lives on a one-thread runtime owned by [`Telemetry`](crate::Telemetry): whatever
//! the application's runtime flavour, or none, an export makes progress and the shutdown
//! ends within its timeout.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// An exporter whose exports run on `runtime`; reports the first failure of a streak once.
#[derive(Debug)]
pub(crate) struct Isolated<E> {
    inner: Arc<tokio::sync::Mutex<E>>,
    runtime: tokio::runtime::Handle,
    endpoint: Arc<str>,
    timeout: Duration,
    failing: Arc<AtomicBool>,
}

impl<E> Isolated<E> {
    pub(crate) fn new(
        inner: E,
        runtime: tokio::runtime::Handle,
        endpoint: &str,
        timeout: Duration,
    ) -> Self {
        Isolated {
            inner: Arc::new(tokio::sync::Mutex::new(inner)),
            runtime,
            endpoint: endpoint.into(),
            timeout,
            failing: Arc::default(),
        }
    }
}

impl<E: SpanExporter + 'static> SpanExporter for Isolated<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        // The exporter has its own timeout; this one only guards against one that has none.
        let limit = self.timeout + Duration::from_secs(1);
        let task = self.runtime.spawn(async move {
            let exporter = inner.lock().await;
            match tokio::time::timeout(limit, exporter.export(batch)).await {
                Ok(result) => result,
                Err(_) => Err(OTelSdkError::Timeout(limit)),
            }
        });
        let failing = self.failing.clone();
        let endpoint = self.endpoint.clone();
        async move {
            let result = match task.await {
                Ok(result) => result,
                Err(e) => Err(OTelSdkError::InternalFailure(format!(
                    "the export task ended: {e}"
                ))),
            };
            match &result {
                Ok(()) => {
                    if failing.swap(false, Ordering::AcqRel) {
                        tracing::info!(target: "maas_telemetry", %endpoint, "span export works again");
                    }
                }
                Err(error) => {
                    if !failing.swap(true, Ordering::AcqRel) {
                        tracing::warn!(
                            target: "maas_telemetry",
                            %endpoint,
                            %error,
                            "span export failed; spans are dropped until it works again \
                             (reported once per streak)"
                        );
                    }
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let _context = self.runtime.enter();
        match self.inner.try_lock() {
            Ok(exporter) => exporter.shutdown_with_timeout(timeout),
            // An export is still running: the runtime's shutdown will end it.
            Err(_) => Ok(()),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let _context = self.runtime.enter();
        match self.inner.try_lock() {
            Ok(exporter) => exporter.force_flush(),
            Err(_) => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.get_mut().set_resource(resource);
        }
    }
}
