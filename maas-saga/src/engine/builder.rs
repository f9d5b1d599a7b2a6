//! [`EngineBuilder`]: participants and settings, validated before anything starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::error::EngineError;
use super::handle::Engine;
use super::runtime::Runtime;
use super::settings::Settings;
use super::supervisor::Supervisor;
use crate::observer::Observer;
use crate::participant::{Participant, Registry};
use crate::store::{Lease, SagaStore};

impl Engine {
    /// Starts configuring an engine on `store`.
    pub fn builder(store: impl SagaStore) -> EngineBuilder {
        Self::builder_arc(Arc::new(store))
    }

    /// Like [`builder`](Engine::builder), for a store shared with other code.
    pub fn builder_arc(store: Arc<dyn SagaStore>) -> EngineBuilder {
        EngineBuilder {
            store,
            participants: HashMap::new(),
            owner: None,
            settings: Settings::default(),
            trace_context: None,
            #[cfg(feature = "postgres")]
            xa: Vec::new(),
            #[cfg(feature = "prometheus")]
            metrics: None,
        }
    }
}

/// Configures and starts an [`Engine`].
///
/// ```
/// use std::time::Duration;
/// use maas_saga::{ConfigError, Engine, EngineError, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let refused = Engine::builder(MemoryStore::new())
///     .lease(Duration::ZERO)
///     .start()
///     .await;
/// assert!(matches!(
///     refused,
///     Err(EngineError::Config(ConfigError::Zero { setting: "lease" }))
/// ));
/// # }
/// ```
pub struct EngineBuilder {
    store: Arc<dyn SagaStore>,
    participants: HashMap<String, Participant>,
    owner: Option<String>,
    settings: Settings,
    trace_context: Option<super::trace::TraceContext>,
    #[cfg(feature = "postgres")]
    xa: Vec<(String, crate::xa::XaBranch)>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::SagaMetrics>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field(
                "participants",
                &self.participants.keys().collect::<Vec<_>>(),
            )
            .field("owner", &self.owner)
            .field("settings", &self.settings)
            .finish()
    }
}

impl EngineBuilder {
    /// Registers a participant under the name steps refer to.
    pub fn participant(mut self, name: impl Into<String>, participant: Participant) -> Self {
        self.participants.insert(name.into(), participant);
        self
    }

    /// Registers an XA branch database under the name the branches of [`Xa`](crate::Xa)
    /// transactions refer to (feature `postgres`). [`start`](EngineBuilder::start) checks
    /// that it can prepare transactions and creates its marker table; each recovery pass
    /// resolves the prepared transactions a crash left in it (see [`xa`](crate::xa)).
    #[cfg(feature = "postgres")]
    pub fn xa_branch(mut self, name: impl Into<String>, branch: crate::xa::XaBranch) -> Self {
        let name = name.into();
        self.participants
            .insert(name.clone(), crate::participant(branch.clone()));
        self.xa.retain(|(n, _)| *n != name);
        self.xa.push((name, branch));
        self
    }

    /// The engine's name in leases. Give each live engine its own stable name (a pod or
    /// host name): after a restart under the same name, the engine recovers what it held at
    /// once. Default: a random name, so recovery waits for lease expiry.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long a lease lasts without renewal (default 5 s; zero is a [`ConfigError`]).
    /// Leases are renewed every third of this; a crashed engine's transactions are
    /// recovered by others after at most this long (and by the same engine, restarted
    /// under the same owner name, at once).
    ///
    /// [`ConfigError`]: crate::ConfigError
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How often to look for transactions to recover (default 1 s; zero is a
    /// [`ConfigError`](crate::ConfigError)).
    pub fn recovery_interval(mut self, every: Duration) -> Self {
        self.settings.recovery_interval = every;
        self
    }

    /// At most this many transactions claimed per recovery pass (default 64; zero is a
    /// [`ConfigError`](crate::ConfigError)).
    pub fn recovery_batch(mut self, at_most: usize) -> Self {
        self.settings.recovery_batch = at_most;
        self
    }

    /// Keep finished transactions this long before deleting them (default 7 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.retention = retention;
        self
    }

    /// How often to delete old finished transactions (default 10 min; zero is a
    /// [`ConfigError`](crate::ConfigError)).
    pub fn gc_interval(mut self, every: Duration) -> Self {
        self.settings.gc_interval = every;
        self
    }

    /// After this many failed attempts of a compensation, confirm or cancel, emit a warning
    /// and count it as stuck (it keeps being retried). Default 10; 0 never warns.
    pub fn alert_after(mut self, attempts: u32) -> Self {
        self.settings.alert_after = attempts;
        self
    }

    /// How to continue a `tracing` span in a W3C trace: called with the span of a
    /// transaction recovered after a crash and the `traceparent` stored with its intent
    /// (see [`SagaBuilder::traceparent`](crate::SagaBuilder::traceparent)), so recovery
    /// lands in the caller's trace too. A transaction submitted in this process needs no
    /// hook: its span is a child of the submitting span. With `maas-telemetry`:
    /// `|span, tp| { propagation::continue_trace(span, propagation::extract_pairs([("traceparent", tp)])); }`.
    pub fn trace_context(
        mut self,
        f: impl Fn(&tracing::Span, &str) + Send + Sync + 'static,
    ) -> Self {
        self.trace_context = Some(std::sync::Arc::new(f));
        self
    }

    /// Reports metrics into `metrics`.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::SagaMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Validates the settings and the XA branch databases, then starts the engine: an
    /// immediate recovery pass, then background recovery, lease renewal and garbage
    /// collection. Needs a tokio runtime.
    ///
    /// Durations longer than [`MAX_DURATION`](crate::MAX_DURATION) are clamped to it; a
    /// setting that cannot work is [`EngineError::Config`], returned before the store is
    /// touched; an XA branch database that cannot prepare transactions is
    /// `EngineError::Xa`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves starts nothing; transactions the first
    /// recovery pass had claimed are recovered after their new lease expires.
    pub async fn start(self) -> Result<Engine, EngineError> {
        let settings = self.settings.validated()?;
        #[cfg(feature = "postgres")]
        for (name, branch) in &self.xa {
            branch.install(name).await.map_err(|e| EngineError::Xa {
                branch: name.clone(),
                error: Arc::new(e),
            })?;
        }
        let owner = self
            .owner
            .unwrap_or_else(|| format!("engine-{}", uuid::Uuid::new_v4().simple()));
        let runtime = Arc::new(Runtime {
            store: self.store,
            registry: Registry::new(self.participants),
            lease: Lease {
                owner,
                incarnation: uuid::Uuid::new_v4().simple().to_string(),
                duration: settings.lease,
            },
            alert_after: settings.alert_after,
            trace_context: self.trace_context,
            #[cfg(feature = "postgres")]
            xa: self.xa,
            #[cfg(feature = "prometheus")]
            observer: Observer::new(self.metrics),
            #[cfg(not(feature = "prometheus"))]
            observer: Observer::default(),
        });
        let supervisor = Arc::new(Supervisor::new(runtime, settings));
        supervisor.recover().await?;
        let background = supervisor.start_background();
        Ok(Engine::from_parts(supervisor, background))
    }
}
