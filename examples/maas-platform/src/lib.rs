//! The reference MaaS platform: every `maas` crate assembled into one running service.
//!
//! * Tenants call `/v1` with an **API key** (`Authorization: Bearer maas_…`), which decides
//!   the tenant; operators call `/admin/*` on a separate admin listener with the admin
//!   token: keys (created, listed, revoked), quotas, the backend switch, the alert relay.
//! * `POST /v1/models?name=…` streams a model file (safetensors or GGUF) into the
//!   content-addressed [`artifacts`] store, then registers the model and charges the
//!   tenant's quota in one **saga** (`maas-saga`): both happen, or — when the quota is
//!   spent — the registration is compensated and the answer is `402`. The build task goes
//!   through a transactional outbox onto `model-build-tasks`, keyed by model id
//!   (`maas-queue`).
//! * The `model-builders` **consumer group** builds models: it reads the file's header and
//!   records its format, tensors, parameters and dtypes; a refused file or a failing build
//!   is dead-lettered to `model-build-tasks.dlq` with the reason, and refunded.
//! * `/v1` is **rate limited** per API key (`maas-ratelimit`, `429` with `Retry-After`).
//! * **OpenAI-compatible inference** ([`chat`]): `GET /v1/models`, `POST /v1/chat/completions`
//!   (whole or streamed as server-sent events) on a simulated backend or an upstream server,
//!   through a **circuit breaker** with **degradation** (`maas-breaker`): when the backend
//!   fails before answering, a fallback model answers and says so.
//! * **Telemetry** (`maas-telemetry`): RED metrics by route, every crate's metrics on one
//!   `/metrics`, a server span per request, JSON logs carrying trace ids; Alertmanager's
//!   notifications are relayed to DingTalk and WeCom robots ([`alerts`]).
//!
//! On embedded defaults it needs nothing else: an in-memory Kafka broker and SQLite files in
//! a fresh temporary directory, a `demo` tenant with a key, and an admin token made for the
//! run ([`Platform::demo_key`], [`Platform::made_admin_token`]). `MAAS_KAFKA_BROKERS` switches to a real Kafka cluster and
//! `MAAS_DATABASE_URL` to PostgreSQL, which several replicas share; see [`Config`] for every
//! setting.

mod admin;
pub mod alerts;
mod api;
pub mod artifacts;
mod auth;
mod builders;
pub mod chat;
mod config;
mod database;
mod hardening;
pub mod keys;
mod lifecycle;
mod limits;
mod outbox;
mod refunds;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use maas_queue::{Cluster, ConsumerHandle, GroupConsumer, MemoryBroker, Producer};
use maas_ratelimit::RateLimitLayer;
use maas_saga::Engine;
use maas_saga::store::{PgStore, SagaStore, SqliteStore};
use maas_telemetry::{HttpMetricsLayer, HttpTraceLayer, metrics_router};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::task::JoinHandle;

pub use builders::{GROUP, PARTITIONS, TOPIC};
pub use config::{Config, ConfigError};
pub use store::{Artifact, Model};

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory or the listen socket.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The application database.
    #[error("application database")]
    Database(#[source] BoxError),
    /// The saga engine or its store.
    #[error("saga engine")]
    Saga(#[source] BoxError),
    /// The broker.
    #[error("queue")]
    Queue(#[source] BoxError),
    /// A metric could not be registered.
    #[error("metrics")]
    Metrics(#[source] BoxError),
}

/// An error kept as the source of a [`PlatformError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Continues `span` in the trace of `traceparent`: the hook the saga engine and the
/// consumers call (they do not depend on OpenTelemetry; `maas-telemetry` does).
fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let cx = maas_telemetry::propagation::extract_pairs([("traceparent", traceparent)]);
    maas_telemetry::propagation::continue_trace(span, cx);
}

fn db_err(e: impl Into<BoxError>) -> PlatformError {
    PlatformError::Database(e.into())
}

fn saga_err(e: impl Into<BoxError>) -> PlatformError {
    PlatformError::Saga(e.into())
}

fn queue_err(e: impl Into<BoxError>) -> PlatformError {
    PlatformError::Queue(e.into())
}

fn metrics_err(e: impl Into<BoxError>) -> PlatformError {
    PlatformError::Metrics(e.into())
}

/// The running platform.
pub struct Platform {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    admin_server: JoinHandle<std::io::Result<()>>,
    /// The admin token this run made (embedded mode without `MAAS_ADMIN_TOKEN`).
    made_admin_token: Option<String>,
    /// The demo tenant's API key (embedded mode).
    demo_key: Option<String>,
    /// The data directory this run made, removed at shutdown.
    own_data_dir: Option<std::path::PathBuf>,
    builders: Vec<ConsumerHandle>,
    producer: Producer,
    engine: Arc<Engine>,
    /// The request and token limits in Redis, when there: their leases go back at shutdown.
    redis_limiters: Vec<maas_ratelimit::redis::RedisLimiter>,
    /// The build tasks' outbox relay.
    relay: Option<outbox::Relay>,
    /// Set when the shutdown starts (see [`Platform::shutdown`]).
    draining: Arc<std::sync::atomic::AtomicBool>,
    drain: Duration,
    shutdown_deadline: Duration,
}

impl Platform {
    /// Starts everything and listens on `config.addr`; every crate's metrics register in
    /// `registry`, which `/metrics` serves.
    pub async fn start(config: Config, registry: Registry) -> Result<Platform, PlatformError> {
        let embedded = config.database_url.is_none();
        // Embedded mode without MAAS_DATA_DIR: a directory of this run's own.
        let (data_dir, own_data_dir) = match &config.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let token = keys::generate_token().map_err(|e| PlatformError::Io {
                    what: "naming the data directory".into(),
                    source: std::io::Error::other(e),
                })?;
                let dir = std::env::temp_dir().join(format!("maas-platform-{}", &token[..12]));
                (dir.clone(), embedded.then_some(dir))
            }
        };
        // Models, quota and sagas: PostgreSQL when replicas share them, else SQLite files.
        let (store, sagas): (store::Store, Arc<dyn SagaStore>) = match &config.database_url {
            Some(url) => {
                let database =
                    database::Database::new(url, config.database_ca.as_deref()).map_err(db_err)?;
                // The saga store's four batch writers, and two for claims and queries.
                let saga_pool = database.pool(6).map_err(saga_err)?;
                (
                    store::Store::Postgres(
                        store::PgApp::connect(database, config.database_pool)
                            .await
                            .map_err(db_err)?,
                    ),
                    Arc::new(PgStore::from_pool(saga_pool).await.map_err(saga_err)?),
                )
            }
            None => {
                std::fs::create_dir_all(&data_dir).map_err(|source| PlatformError::Io {
                    what: format!("creating {}", data_dir.display()),
                    source,
                })?;
                (
                    store::Store::Sqlite(store::SqliteApp::open(&data_dir).map_err(db_err)?),
                    Arc::new(
                        SqliteStore::open(data_dir.join("sagas.db"))
                            .await
                            .map_err(saga_err)?,
                    ),
                )
            }
        };

        let saga_metrics =
            maas_saga::metrics::SagaMetrics::register(&registry).map_err(metrics_err)?;
        let queue_metrics =
            maas_queue::metrics::QueueMetrics::register(&registry).map_err(metrics_err)?;
        let outbox_metrics =
            maas_queue::outbox::OutboxMetrics::register(&registry).map_err(metrics_err)?;
        let breaker_metrics =
            maas_breaker::metrics::BreakerMetrics::register(&registry).map_err(metrics_err)?;
        let limit_metrics =
            maas_ratelimit::metrics::RateLimitMetrics::register(&registry).map_err(metrics_err)?;
        let builds = IntCounterVec::new(
            Opts::new(
                "maas_platform_builds_total",
                "Model build attempts, by outcome (built, failed, skipped).",
            ),
            &["outcome"],
        )
        .map_err(metrics_err)?;
        registry
            .register(Box::new(builds.clone()))
            .map_err(metrics_err)?;
        let refunds = IntCounterVec::new(
            Opts::new(
                "maas_platform_refunds_total",
                "Dead-lettered builds handled by the refunds member, by outcome (refunded, repeat).",
            ),
            &["outcome"],
        )
        .map_err(metrics_err)?;
        registry
            .register(Box::new(refunds.clone()))
            .map_err(metrics_err)?;

        let refusals = store::Refusals::default();
        let engine = Arc::new(
            Engine::builder_arc(sagas)
                .participant("models", store.models_participant())
                .participant(
                    "billing",
                    store.billing_participant(config.tenant_quota, refusals.clone()),
                )
                .owner(config.instance.clone())
                .metrics(&saga_metrics)
                .trace_context(continue_trace)
                .start()
                .await
                .map_err(saga_err)?,
        );

        // The broker: Kafka when configured, else the in-memory one.
        let cluster = match &config.kafka_brokers {
            Some(brokers) => Cluster::kafka(brokers.clone()),
            None => Cluster::in_memory(&MemoryBroker::new()),
        };
        let producer = Producer::builder(cluster.clone())
            .build()
            .map_err(queue_err)?;
        producer
            .create_topic(&config.build_topic, PARTITIONS)
            .await
            .map_err(queue_err)?;
        producer
            .create_topic(&format!("{}.dlq", config.build_topic), PARTITIONS)
            .await
            .map_err(queue_err)?;
        let (relay, wake) = outbox::start(&data_dir, &store, &producer, &outbox_metrics);
        let artifact_dir = config
            .artifact_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("artifacts"));
        let artifacts: Arc<dyn artifacts::ArtifactStore> =
            Arc::new(artifacts::DirStore::open(&artifact_dir).map_err(|source| {
                PlatformError::Io {
                    what: format!("opening the artifact store {}", artifact_dir.display()),
                    source,
                }
            })?);
        let builder = builders::Builder {
            store: store.clone(),
            artifacts: artifacts.clone(),
            build_time: config.build_time,
            topic: config.build_topic.clone(),
            builds,
        };
        let mut members = Vec::with_capacity(config.builders);
        for i in 0..config.builders {
            let consumer = GroupConsumer::builder(cluster.clone(), config.build_group.clone());
            members.push(
                builder
                    .start(consumer, i, &queue_metrics)
                    .map_err(queue_err)?,
            );
        }
        members.push(
            refunds::start(
                GroupConsumer::builder(cluster.clone(), format!("{}-refunds", config.build_group)),
                &config.build_topic,
                store.clone(),
                refunds,
                &queue_metrics,
            )
            .map_err(queue_err)?,
        );

        let simulated = chat::Simulated {
            delay: config.token_delay,
        };
        let primary: Arc<dyn chat::Backend> = match &config.upstream_url {
            Some(url) => Arc::new(chat::Upstream::new(
                url,
                config.upstream_key.clone(),
                config.request_timeout,
            )),
            None => Arc::new(simulated.clone()),
        };
        let chat = chat::Gateway::new(
            primary,
            simulated,
            config.fallback_model.clone(),
            config.breaker_open,
            &breaker_metrics,
        )
        .map_err(|e| {
            PlatformError::Config(ConfigError {
                name: "MAAS_BREAKER_OPEN_SECS",
                value: config.breaker_open.as_secs().to_string(),
                reason: e.to_string(),
            })
        })?;
        let (limiter, token_limit) =
            limits::key_limiters(&config, &registry, &limit_metrics).await?;
        let mut redis_limiters = Vec::new();
        if let limits::TenantLimiter::Redis(r) = &limiter {
            redis_limiters.push(r.clone());
        }
        if let chat::TokenLimit::Redis(r) = &token_limit {
            redis_limiters.push(r.clone());
        }
        // The admin token: configured, made for this run (embedded), or none (admin refused).
        let made_admin_token = match (&config.admin_token, embedded) {
            (None, true) => Some(keys::generate_token().map_err(|e| PlatformError::Io {
                what: "making an admin token".into(),
                source: std::io::Error::other(e),
            })?),
            _ => None,
        };
        let admin_token = auth::AdminToken(
            config
                .admin_token
                .as_deref()
                .or(made_admin_token.as_deref())
                .map(|t| Arc::new(keys::digest(t))),
        );
        if admin_token.0.is_none() {
            tracing::warn!("MAAS_ADMIN_TOKEN is not set: the admin routes refuse every call");
        }
        let demo_key = if embedded {
            Some(
                admin::new_key(&store, "demo")
                    .await
                    .map_err(|e| db_err(format!("creating the demo tenant's key: {e:?}")))?
                    .key,
            )
        } else {
            None
        };

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopped = Stopped(stopped);
        let state = api::AppState {
            stopped: stopped.clone(),
            store: store.clone(),
            engine: engine.clone(),
            outbox: wake,
            refusals,
            chat,
            tokens: token_limit,
            artifacts,
            max_model_bytes: config.max_model_bytes,
            upload_idle: config.request_timeout,
            build_cost: config.build_cost,
            tenant_quota: config.tenant_quota,
            topic: config.build_topic.clone(),
            robots: config.robots.clone(),
            http: reqwest::Client::new(),
        };
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let health = lifecycle::Health {
            draining: draining.clone(),
            store: store.clone(),
            producer: producer.clone(),
            topic: config.build_topic.clone(),
            redis: redis_limiters.clone(),
        };
        // Authentication runs first, then the request limit keyed by the caller's key.
        let v1 = api::routes(state.clone())
            .merge(chat::routes(state.clone()))
            .layer(
                RateLimitLayer::builder(limiter)
                    .key(api::key_of)
                    .metrics(&limit_metrics, "api")
                    .build_http(),
            )
            // OpenAI's names for the request limit's headers, and its error shape on the
            // OpenAI routes.
            .layer(axum::middleware::from_fn(chat::openai_limits))
            .layer(axum::middleware::from_fn_with_state(
                store.clone(),
                auth::require_key,
            ));
        let app = axum::Router::new()
            .nest("/v1", v1)
            .route("/health", axum::routing::get(lifecycle::live))
            .route("/health/live", axum::routing::get(lifecycle::live))
            .route(
                "/health/ready",
                axum::routing::get(lifecycle::ready).with_state(health),
            )
            .merge(metrics_router(registry.clone()))
            .fallback(api::no_route)
            .method_not_allowed_fallback(api::no_method);
        let app = hardening::harden(app, config.request_timeout)
            .layer(
                HttpMetricsLayer::builder()
                    .exclude("/metrics")
                    .exclude("/health")
                    .exclude("/health/live")
                    .exclude("/health/ready")
                    .build(&registry)
                    .map_err(metrics_err)?,
            )
            .layer(HttpTraceLayer::new())
            .layer(axum::middleware::from_fn_with_state(
                draining.clone(),
                lifecycle::close_when_draining,
            ));

        let admin_app = admin::routes(state)
            .layer(axum::middleware::from_fn_with_state(
                admin_token,
                auth::require_admin,
            ))
            .route("/health", axum::routing::get(lifecycle::live))
            .fallback(api::no_route)
            .method_not_allowed_fallback(api::no_method);
        let admin_app = hardening::harden(admin_app, config.request_timeout)
            .layer(HttpTraceLayer::new())
            .layer(axum::middleware::from_fn_with_state(
                draining.clone(),
                lifecycle::close_when_draining,
            ));

        let (listener, addr) = listen(config.addr).await?;
        let (admin_listener, admin_addr) = listen(config.admin_addr).await?;
        let server = tokio::spawn({
            let stopped = stopped.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stopped.wait().await })
                    .await
            }
        });
        let admin_server = tokio::spawn(async move {
            axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(async move { stopped.wait().await })
                .await
        });
        tracing::info!(%addr, %admin_addr, instance = %config.instance,
            database = if config.database_url.is_some() { "postgres" } else { "sqlite" },
            data_dir = %data_dir.display(),
            artifact_dir = %artifact_dir.display(),
            broker = if cluster.memory().is_some() { "in-memory" } else { "kafka" },
            limits = if redis_limiters.is_empty() { "local" } else { "redis" },
            builders = config.builders, "maas-platform listening");
        Ok(Platform {
            addr,
            admin_addr,
            stop,
            server,
            admin_server,
            made_admin_token,
            demo_key,
            own_data_dir,
            builders: members,
            producer,
            engine,
            redis_limiters,
            relay: Some(relay),
            draining,
            drain: config.drain,
            shutdown_deadline: config.shutdown_deadline,
        })
    }

    /// Where the public API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The admin token this run made, when none was configured (embedded mode only): the
    /// caller shows it once.
    pub fn made_admin_token(&self) -> Option<&str> {
        self.made_admin_token.as_deref()
    }

    /// The API key of the `demo` tenant made at start (embedded mode only): the caller shows
    /// it once.
    pub fn demo_key(&self) -> Option<&str> {
        self.demo_key.as_deref()
    }

    /// Shuts down in a fixed order: `/health/ready` answers 503 and every answer closes its
    /// connection at once; the listeners keep serving for the drain delay
    /// (`MAAS_DRAIN_SECS`); then they stop taking connections and requests in flight get
    /// the shutdown deadline (`MAAS_SHUTDOWN_DEADLINE_SECS`) to finish — past it, the
    /// connections left (idle keep-alives, long streams) are cut. Then the builders stop
    /// and commit what they handled, the outbox relay and the producer flush, rate-limit
    /// leases go back to Redis, and the saga engine releases its leases.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped part-way, the steps not reached do not run.
    pub async fn shutdown(mut self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            drain_ms = self.drain.as_millis() as u64,
            "draining: not ready, connections close"
        );
        tokio::time::sleep(self.drain).await;
        self.stop.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.shutdown_deadline;
        for server in [&mut self.server, &mut self.admin_server] {
            match tokio::time::timeout_at(deadline, &mut *server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task ended abnormally"),
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = self.shutdown_deadline.as_millis() as u64,
                        "requests still in flight at the shutdown deadline: their connections are cut"
                    );
                    server.abort();
                }
            }
        }
        for b in self.builders.drain(..) {
            b.shutdown().await;
        }
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
        self.producer.shutdown().await;
        for limiter in &self.redis_limiters {
            let units = limiter.give_back_leases().await;
            tracing::info!(units, "limit leases given back to Redis");
        }
        self.engine.shutdown(Duration::from_secs(5)).await;
        if let Some(dir) = self.own_data_dir.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "data directory not removed");
        }
        tracing::info!("maas-platform stopped");
    }
}

async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), PlatformError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| PlatformError::Io {
            what: format!("listening on {addr}"),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| PlatformError::Io {
        what: "reading the listen address".into(),
        source,
    })?;
    Ok((listener, local))
}

/// The stop signal, which both listeners (and streams in progress) wait for.
#[derive(Clone)]
pub(crate) struct Stopped(tokio::sync::watch::Receiver<bool>);

impl Stopped {
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}
