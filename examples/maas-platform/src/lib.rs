//! The reference MaaS platform: every `maas` crate assembled into one running service.
//!
//! * `POST /v1/models` registers a model and charges the tenant's quota in one **saga**
//!   (`maas-saga`, SQLite store): both happen, or — when the quota is spent — the
//!   registration is compensated and the answer is `402`. The build is then queued on
//!   `model-build-tasks`, keyed by model id (`maas-queue`).
//! * The `model-builders` **consumer group** builds models; failing builds are retried, then
//!   dead-lettered to `model-build-tasks.dlq` with the reason.
//! * `/v1` is **rate limited** per tenant (`maas-ratelimit`, `429` with `Retry-After`).
//! * Inference goes through a **circuit breaker** with **degradation** (`maas-breaker`): when
//!   the model backend fails, a fallback model answers and says so.
//! * **Telemetry** (`maas-telemetry`): RED metrics by route, every crate's metrics on one
//!   `/metrics`, a server span per request, JSON logs carrying trace ids; Alertmanager's
//!   notifications are relayed to DingTalk and WeCom robots ([`alerts`]).
//!
//! On embedded defaults it needs nothing else: an in-memory Kafka broker and SQLite files in
//! a temporary directory. `MAAS_KAFKA_BROKERS` switches to a real Kafka cluster and
//! `MAAS_DATABASE_URL` to PostgreSQL, which several replicas share; see [`Config`] for every
//! setting.

pub mod alerts;
mod api;
mod builders;
mod config;
mod inference;
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
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::tenant;
pub use builders::{GROUP, PARTITIONS, TOPIC};
pub use config::{Config, ConfigError};
pub use store::Model;

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
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    builders: Vec<ConsumerHandle>,
    producer: Producer,
    engine: Arc<Engine>,
    /// The tenant limit in Redis, when it is there: its leases go back at shutdown.
    redis_limiter: Option<maas_ratelimit::redis::RedisLimiter>,
    /// The build tasks' outbox relay.
    relay: Option<outbox::Relay>,
}

impl Platform {
    /// Starts everything and listens on `config.addr`; every crate's metrics register in
    /// `registry`, which `/metrics` serves.
    pub async fn start(config: Config, registry: Registry) -> Result<Platform, PlatformError> {
        // Models, quota and sagas: PostgreSQL when replicas share them, else SQLite files.
        let (store, sagas): (store::Store, Arc<dyn SagaStore>) = match &config.database_url {
            Some(url) => (
                store::Store::Postgres(store::PgApp::connect(url).await.map_err(db_err)?),
                Arc::new(PgStore::connect(url).await.map_err(saga_err)?),
            ),
            None => {
                std::fs::create_dir_all(&config.data_dir).map_err(|source| PlatformError::Io {
                    what: format!("creating {}", config.data_dir.display()),
                    source,
                })?;
                (
                    store::Store::Sqlite(store::SqliteApp::open(&config.data_dir).map_err(db_err)?),
                    Arc::new(
                        SqliteStore::open(config.data_dir.join("sagas.db"))
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
        let (relay, wake) = outbox::start(&config, &store, &producer, &outbox_metrics);
        let builder = builders::Builder {
            store: store.clone(),
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

        let inference =
            inference::Inference::new(config.breaker_open, &breaker_metrics).map_err(|e| {
                PlatformError::Config(ConfigError {
                    name: "MAAS_BREAKER_OPEN_SECS",
                    value: config.breaker_open.as_secs().to_string(),
                    reason: e.to_string(),
                })
            })?;
        let limiter = limits::tenant_limiter(&config, &registry, &limit_metrics).await?;
        let redis_limiter = match &limiter {
            limits::TenantLimiter::Redis(r) => Some(r.clone()),
            limits::TenantLimiter::Local(_) => None,
        };
        let state = api::AppState {
            store,
            engine: engine.clone(),
            outbox: wake,
            refusals,
            inference,
            build_cost: config.build_cost,
            tenant_quota: config.tenant_quota,
            topic: config.build_topic.clone(),
            robots: config.robots.clone(),
            http: reqwest::Client::new(),
        };
        let (v1, ops) = api::routes(state);
        let v1 = v1.layer(
            RateLimitLayer::builder(limiter)
                .key(api::tenant_of)
                .metrics(&limit_metrics, "api")
                .build_http(),
        );
        let app = axum::Router::new()
            .nest("/v1", v1)
            .merge(ops)
            .merge(metrics_router(registry.clone()))
            .layer(
                HttpMetricsLayer::builder()
                    .exclude("/metrics")
                    .exclude("/health")
                    .build(&registry)
                    .map_err(metrics_err)?,
            )
            .layer(HttpTraceLayer::new());

        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| PlatformError::Io {
                what: format!("listening on {}", config.addr),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| PlatformError::Io {
            what: "reading the listen address".into(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        tracing::info!(%addr, instance = %config.instance,
            database = if config.database_url.is_some() { "postgres" } else { "sqlite" },
            data_dir = %config.data_dir.display(),
            broker = if cluster.memory().is_some() { "in-memory" } else { "kafka" },
            tenant_limit = if redis_limiter.is_some() { "redis" } else { "local" },
            builders = config.builders, "maas-platform listening");
        Ok(Platform {
            addr,
            stop: Some(stop),
            server,
            builders: members,
            producer,
            engine,
            redis_limiter,
            relay: Some(relay),
        })
    }

    /// Where the platform listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests, lets those in progress finish, then stops the builders (they
    /// commit what they handled), flushes the producer and stops the saga engine.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.server).await {
            tracing::warn!(error = %e, "HTTP server task ended abnormally");
        }
        if let Some(limiter) = &self.redis_limiter {
            let units = limiter.give_back_leases().await;
            tracing::info!(units, "tenant-limit leases given back to Redis");
        }
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
        for b in self.builders.drain(..) {
            b.shutdown().await;
        }
        self.producer.shutdown().await;
        self.engine.shutdown(Duration::from_secs(5)).await;
        tracing::info!("maas-platform stopped");
    }
}
