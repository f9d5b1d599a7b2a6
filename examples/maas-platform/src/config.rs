//! The platform's settings: embedded defaults, each overridable by an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A setting that cannot work, named after its variable.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    /// The environment variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
}

/// Everything the platform needs to start.
#[derive(Clone)]
pub struct Config {
    /// The public listener: `/v1`, `/health`, `/metrics` (`MAAS_ADDR`, default
    /// `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// The admin listener: `/admin/*` and `/health`, never exposed by the Ingress
    /// (`MAAS_ADMIN_ADDR`, default `127.0.0.1:8081`).
    pub admin_addr: SocketAddr,
    /// The token the admin routes require as `Authorization: Bearer <token>`
    /// (`MAAS_ADMIN_TOKEN`, at least 16 characters; a Kubernetes Secret). Unset: in embedded
    /// mode the platform makes one and prints it once; with `MAAS_DATABASE_URL` the admin
    /// routes answer 503 until one is set.
    pub admin_token: Option<String>,
    /// Where the SQLite files live (`MAAS_DATA_DIR`). Unset: a new directory under the
    /// system's temporary directory each run, removed at shutdown, so every walkthrough
    /// starts fresh.
    pub data_dir: Option<PathBuf>,
    /// Where uploaded model files are stored, by SHA-256 (`MAAS_ARTIFACT_DIR`). Unset:
    /// `<data_dir>/artifacts`. Replicas must share it (in Kubernetes a `ReadWriteMany`
    /// volume): the builder that checks a file may run on another replica than the upload.
    pub artifact_dir: Option<PathBuf>,
    /// The largest model file an upload may send (`MAAS_MAX_MODEL_BYTES`, default 16 GiB);
    /// past it the answer is 413 and nothing is kept.
    pub max_model_bytes: u64,
    /// PostgreSQL for models, quota and sagas, shared by replicas (`MAAS_DATABASE_URL`,
    /// libpq style: `host=db user=maas dbname=maas`); none: SQLite files in `data_dir`.
    pub database_url: Option<String>,
    /// With `sslmode=require` in `MAAS_DATABASE_URL`: a PEM file of the certificate
    /// authorities that may sign the server's certificate (`MAAS_DATABASE_CA`), trusted besides
    /// the system's. The certificate and the host name are always verified.
    pub database_ca: Option<PathBuf>,
    /// Connections the platform's own pool may open to PostgreSQL (`MAAS_DATABASE_POOL`,
    /// default 10); the saga store has six more and the outbox relay one.
    pub database_pool: usize,
    /// This instance's name, which owns its sagas so that a restart recovers them
    /// (`MAAS_INSTANCE`, else `HOSTNAME` — the pod name in Kubernetes — else `maas-platform`).
    pub instance: String,
    /// Kafka brokers (`MAAS_KAFKA_BROKERS`, comma-separated); none: the in-memory broker.
    pub kafka_brokers: Option<Vec<String>>,
    /// The topic of build tasks (`MAAS_BUILD_TOPIC`, default `model-build-tasks`); its
    /// dead-letter topic is `<topic>.dlq`. Both are created if missing.
    pub build_topic: String,
    /// The builders' consumer group (`MAAS_BUILD_GROUP`, default `model-builders`).
    pub build_group: String,
    /// Requests per minute per API key on `/v1` (`MAAS_RATE_PER_MINUTE`, default 600).
    pub rate_per_minute: u32,
    /// Redis holding the per-tenant limit, so it is one limit for all replicas
    /// (`MAAS_REDIS_URL`, `redis://[:password@]host:port[/db]`; no TLS yet); none: each
    /// replica limits on its own, in memory. A secret when it carries a password.
    pub redis_url: Option<String>,
    /// What the limit does while Redis is down (`MAAS_REDIS_OUTAGE`: `local-share`, the
    /// default — each replica allows its share of the limit, by the replicas seen —
    /// `fail-open` or `fail-closed`).
    pub redis_outage: maas_ratelimit::redis::OutagePolicy,
    /// Tokens (prompt + answer) per minute per API key on `/v1/chat/completions`
    /// (`MAAS_TOKENS_PER_MINUTE`, default 100,000; in Redis for all replicas with
    /// `MAAS_REDIS_URL`, else each replica counts on its own).
    pub tokens_per_minute: u64,
    /// Quota credits each new tenant starts with (`MAAS_TENANT_QUOTA`, default 100).
    pub tenant_quota: i64,
    /// Credits one model build costs (`MAAS_BUILD_COST`, default 10).
    pub build_cost: i64,
    /// How long a build takes (`MAAS_BUILD_MILLIS`, default 300).
    pub build_time: Duration,
    /// Members of the `model-builders` group (`MAAS_BUILDERS`, default 3).
    pub builders: usize,
    /// How long the inference breaker stays open (`MAAS_BREAKER_OPEN_SECS`, default 5).
    pub breaker_open: Duration,
    /// An OpenAI-compatible server that answers chat completions (`MAAS_UPSTREAM_URL`, its
    /// base URL up to `/v1`, e.g. `http://vllm:8000/v1`); none: the built-in simulated
    /// backend. Tenants' models are asked for under their upload names.
    pub upstream_url: Option<String>,
    /// The upstream's API key (`MAAS_UPSTREAM_KEY`, a secret), sent as a bearer token.
    pub upstream_key: Option<String>,
    /// The model that answers when the primary backend cannot (`MAAS_FALLBACK_MODEL`,
    /// default `maas-fallback`; served by the simulated backend, listed for every tenant).
    pub fallback_model: String,
    /// The simulated backend's pause before each token (`MAAS_TOKEN_MILLIS`, default 20).
    pub token_delay: Duration,
    /// How long a request may take until its response starts (`MAAS_REQUEST_TIMEOUT_SECS`,
    /// default 30); past it the answer is a JSON 504. A model upload is not limited as a
    /// whole: it fails (408) only when its body stops arriving for this long.
    pub request_timeout: Duration,
    /// How long the listeners keep serving after the shutdown starts, `/health/ready`
    /// answering 503 and every answer closing its connection, so that load balancers take the
    /// replica out before it stops (`MAAS_DRAIN_SECS`, default 0; the chart sets it).
    pub drain: Duration,
    /// How long requests in flight may take to finish once the listeners stop, before their
    /// connections are cut — idle keep-alive connections and long streams included
    /// (`MAAS_SHUTDOWN_DEADLINE_SECS`, default 20).
    pub shutdown_deadline: Duration,
    /// Alert robots: `MAAS_DINGTALK_WEBHOOK` (+ `MAAS_DINGTALK_SECRET`), `MAAS_WECOM_WEBHOOK`.
    pub robots: crate::alerts::Robots,
}

/// Every setting, with the credentials hidden: the database and Redis URLs may hold
/// passwords, the admin token is one, and the robots' URLs carry theirs.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<hidden>");
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("admin_addr", &self.admin_addr)
            .field("admin_token", &hidden(&self.admin_token))
            .field("data_dir", &self.data_dir)
            .field("artifact_dir", &self.artifact_dir)
            .field("max_model_bytes", &self.max_model_bytes)
            .field("database_url", &hidden(&self.database_url))
            .field("database_ca", &self.database_ca)
            .field("database_pool", &self.database_pool)
            .field("instance", &self.instance)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("build_topic", &self.build_topic)
            .field("build_group", &self.build_group)
            .field("rate_per_minute", &self.rate_per_minute)
            .field("tokens_per_minute", &self.tokens_per_minute)
            .field("redis_url", &hidden(&self.redis_url))
            .field("redis_outage", &self.redis_outage)
            .field("tenant_quota", &self.tenant_quota)
            .field("build_cost", &self.build_cost)
            .field("build_time", &self.build_time)
            .field("builders", &self.builders)
            .field("breaker_open", &self.breaker_open)
            .field("upstream_url", &self.upstream_url)
            .field("upstream_key", &hidden(&self.upstream_key))
            .field("fallback_model", &self.fallback_model)
            .field("token_delay", &self.token_delay)
            .field("request_timeout", &self.request_timeout)
            .field("drain", &self.drain)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("robots", &self.robots)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_token: None,
            data_dir: None,
            artifact_dir: None,
            max_model_bytes: 16 << 30,
            database_url: None,
            database_ca: None,
            database_pool: 10,
            instance: "maas-platform".to_owned(),
            kafka_brokers: None,
            build_topic: crate::builders::TOPIC.to_owned(),
            build_group: crate::builders::GROUP.to_owned(),
            rate_per_minute: 600,
            tokens_per_minute: 100_000,
            redis_url: None,
            redis_outage: maas_ratelimit::redis::OutagePolicy::LocalShare {
                replicas: maas_ratelimit::redis::Replicas::Seen,
            },
            tenant_quota: 100,
            build_cost: 10,
            build_time: Duration::from_millis(300),
            builders: 3,
            breaker_open: Duration::from_secs(5),
            upstream_url: None,
            upstream_key: None,
            fallback_model: "maas-fallback".to_owned(),
            token_delay: Duration::from_millis(20),
            request_timeout: Duration::from_secs(30),
            drain: Duration::ZERO,
            shutdown_deadline: Duration::from_secs(20),
            robots: crate::alerts::Robots::default(),
        }
    }
}

impl Config {
    /// The defaults, overridden by whichever `MAAS_*` variables are set.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = lookup("MAAS_ADDR") {
            c.addr = parse("MAAS_ADDR", &v, "expected host:port, e.g. 0.0.0.0:8080")?;
        }
        if let Some(v) = lookup("MAAS_ADMIN_ADDR") {
            c.admin_addr = parse(
                "MAAS_ADMIN_ADDR",
                &v,
                "expected host:port, e.g. 0.0.0.0:8081",
            )?;
        }
        if let Some(v) = lookup("MAAS_ADMIN_TOKEN") {
            if v.trim().len() < 16 {
                return Err(refuse(
                    "MAAS_ADMIN_TOKEN",
                    "<hidden>",
                    "too short to be a secret: use at least 16 random characters",
                ));
            }
            c.admin_token = Some(v.trim().to_owned());
        }
        if let Some(v) = lookup("MAAS_DATA_DIR") {
            c.data_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("MAAS_ARTIFACT_DIR") {
            c.artifact_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("MAAS_MAX_MODEL_BYTES") {
            c.max_model_bytes = positive("MAAS_MAX_MODEL_BYTES", &v)?;
        }
        c.database_url = lookup("MAAS_DATABASE_URL");
        if let Some(v) = lookup("MAAS_DATABASE_CA") {
            c.database_ca = Some(PathBuf::from(v));
        }
        if let Some(v) = lookup("MAAS_DATABASE_POOL") {
            c.database_pool = positive::<u32>("MAAS_DATABASE_POOL", &v)? as usize;
        }
        if let Some(v) = lookup("MAAS_INSTANCE").or_else(|| lookup("HOSTNAME")) {
            c.instance = v;
        }
        if let Some(v) = lookup("MAAS_KAFKA_BROKERS") {
            let brokers: Vec<String> = v.split(',').map(|b| b.trim().to_owned()).collect();
            if brokers.iter().any(|b| b.rsplit_once(':').is_none()) {
                return Err(refuse(
                    "MAAS_KAFKA_BROKERS",
                    &v,
                    "expected host:port[,host:port]",
                ));
            }
            c.kafka_brokers = Some(brokers);
        }
        if let Some(v) = lookup("MAAS_BUILD_TOPIC") {
            // Kafka's topic rules, leaving room for the `.dlq` suffix.
            let legal = v.len() <= 245
                && v != "."
                && v != ".."
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !legal {
                return Err(refuse(
                    "MAAS_BUILD_TOPIC",
                    &v,
                    "a Kafka topic name: up to 245 letters, digits, '.', '_' or '-'",
                ));
            }
            c.build_topic = v;
        }
        if let Some(v) = lookup("MAAS_BUILD_GROUP") {
            c.build_group = v;
        }
        if let Some(v) = lookup("MAAS_RATE_PER_MINUTE") {
            c.rate_per_minute = positive("MAAS_RATE_PER_MINUTE", &v)?;
        }
        if let Some(v) = lookup("MAAS_TOKENS_PER_MINUTE") {
            c.tokens_per_minute = positive("MAAS_TOKENS_PER_MINUTE", &v)?;
        }
        if let Some(v) = lookup("MAAS_REDIS_URL") {
            if !v.starts_with("redis://") {
                // The value may hold a password: not echoed.
                return Err(refuse(
                    "MAAS_REDIS_URL",
                    "<hidden>",
                    "expected redis://host:port (TLS is not built in)",
                ));
            }
            c.redis_url = Some(v);
        }
        if let Some(v) = lookup("MAAS_REDIS_OUTAGE") {
            use maas_ratelimit::redis::{OutagePolicy, Replicas};
            c.redis_outage = match v.trim() {
                "local-share" => OutagePolicy::LocalShare {
                    replicas: Replicas::Seen,
                },
                "fail-open" => OutagePolicy::FailOpen,
                "fail-closed" => OutagePolicy::FailClosed,
                _ => {
                    return Err(refuse(
                        "MAAS_REDIS_OUTAGE",
                        &v,
                        "expected local-share, fail-open or fail-closed",
                    ));
                }
            };
        }
        if let Some(v) = lookup("MAAS_TENANT_QUOTA") {
            c.tenant_quota = parse("MAAS_TENANT_QUOTA", &v, "expected a whole number")?;
        }
        if let Some(v) = lookup("MAAS_BUILD_COST") {
            c.build_cost = positive::<u32>("MAAS_BUILD_COST", &v)?.into();
        }
        if let Some(v) = lookup("MAAS_BUILD_MILLIS") {
            c.build_time = Duration::from_millis(parse("MAAS_BUILD_MILLIS", &v, "milliseconds")?);
        }
        if let Some(v) = lookup("MAAS_BUILDERS") {
            c.builders = positive::<u32>("MAAS_BUILDERS", &v)? as usize;
        }
        if let Some(v) = lookup("MAAS_BREAKER_OPEN_SECS") {
            c.breaker_open =
                Duration::from_secs(positive::<u32>("MAAS_BREAKER_OPEN_SECS", &v)?.into());
        }
        if let Some(v) = lookup("MAAS_UPSTREAM_URL") {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                // It may carry credentials: not echoed.
                return Err(refuse(
                    "MAAS_UPSTREAM_URL",
                    "<hidden>",
                    "expected the upstream's base URL, e.g. http://vllm:8000/v1",
                ));
            }
            c.upstream_url = Some(v);
        }
        c.upstream_key = lookup("MAAS_UPSTREAM_KEY");
        if let Some(v) = lookup("MAAS_FALLBACK_MODEL") {
            if crate::api::valid_name("MAAS_FALLBACK_MODEL", &v).is_err() {
                return Err(refuse(
                    "MAAS_FALLBACK_MODEL",
                    &v,
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            c.fallback_model = v;
        }
        if let Some(v) = lookup("MAAS_TOKEN_MILLIS") {
            c.token_delay = Duration::from_millis(parse("MAAS_TOKEN_MILLIS", &v, "milliseconds")?);
        }
        if let Some(v) = lookup("MAAS_REQUEST_TIMEOUT_SECS") {
            c.request_timeout =
                Duration::from_secs(positive::<u32>("MAAS_REQUEST_TIMEOUT_SECS", &v)?.into());
        }
        if let Some(v) = lookup("MAAS_DRAIN_SECS") {
            c.drain = Duration::from_secs(parse("MAAS_DRAIN_SECS", &v, "whole seconds")?);
        }
        if let Some(v) = lookup("MAAS_SHUTDOWN_DEADLINE_SECS") {
            c.shutdown_deadline =
                Duration::from_secs(positive::<u32>("MAAS_SHUTDOWN_DEADLINE_SECS", &v)?.into());
        }
        for (name, slot) in [
            ("MAAS_DINGTALK_WEBHOOK", &mut c.robots.dingtalk),
            ("MAAS_WECOM_WEBHOOK", &mut c.robots.wecom),
        ] {
            if let Some(v) = lookup(name) {
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    // The value may hold the robot's credential: not echoed.
                    return Err(refuse(name, "<hidden>", "expected the robot's webhook URL"));
                }
                *slot = Some(v);
            }
        }
        c.robots.dingtalk_secret = lookup("MAAS_DINGTALK_SECRET");
        Ok(c)
    }
}

fn refuse(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse<T: std::str::FromStr>(
    name: &'static str,
    value: &str,
    what: &str,
) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| refuse(name, value, what))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    name: &'static str,
    value: &str,
) -> Result<T, ConfigError> {
    let n: T = parse(name, value, "expected a positive whole number")?;
    if n <= T::default() {
        return Err(refuse(name, value, "must be at least 1"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_override_defaults_and_bad_values_are_named() {
        let c = Config::from_lookup(|n| match n {
            "MAAS_ADDR" => Some("0.0.0.0:9000".into()),
            "MAAS_KAFKA_BROKERS" => Some("a:9092, b:9092".into()),
            "MAAS_BUILDERS" => Some("5".into()),
            "MAAS_REDIS_URL" => Some("redis://:pw@cache:6379/0".into()),
            "MAAS_REDIS_OUTAGE" => Some("fail-closed".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://:pw@cache:6379/0"));
        assert_eq!(
            c.redis_outage,
            maas_ratelimit::redis::OutagePolicy::FailClosed
        );
        let e = Config::from_lookup(|n| (n == "MAAS_REDIS_URL").then(|| "cache:6379".into()))
            .unwrap_err();
        assert!(!e.to_string().contains("cache"), "{e}");
        assert_eq!(c.addr.port(), 9000);
        assert_eq!(c.kafka_brokers.unwrap(), ["a:9092", "b:9092"]);
        assert_eq!(c.builders, 5);
        assert_eq!(c.tenant_quota, 100);
        // Credentials stay out of the settings' debug output.
        let shown = format!(
            "{:?}",
            Config::from_lookup(|n| match n {
                "MAAS_ADMIN_TOKEN" => Some("admin-0123456789abcdef".into()),
                "MAAS_DATABASE_URL" => Some("host=db password=pg-secret".into()),
                "MAAS_WECOM_WEBHOOK" => Some("https://qyapi/send?key=wecom-secret".into()),
                "MAAS_REDIS_URL" => Some("redis://:redis-secret@cache:6379".into()),
                "MAAS_UPSTREAM_KEY" => Some("upstream-secret".into()),
                _ => None,
            })
            .unwrap()
        );
        for secret in [
            "admin-0123",
            "pg-secret",
            "wecom-secret",
            "redis-secret",
            "upstream-secret",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let e =
            Config::from_lookup(|n| (n == "MAAS_ADMIN_TOKEN").then(|| "short".into())).unwrap_err();
        assert!(!e.to_string().contains("short\""), "{e}");

        for (name, value) in [
            ("MAAS_ADDR", "nowhere"),
            ("MAAS_ADMIN_ADDR", "8081"),
            ("MAAS_BUILDERS", "0"),
            ("MAAS_MAX_MODEL_BYTES", "0"),
            ("MAAS_UPSTREAM_URL", "vllm:8000"),
            ("MAAS_FALLBACK_MODEL", "no spaces"),
            ("MAAS_RATE_PER_MINUTE", "-3"),
            ("MAAS_KAFKA_BROKERS", "kafka"),
            ("MAAS_BUILD_TOPIC", "build tasks"),
        ] {
            let err = Config::from_lookup(|n| (n == name).then(|| value.to_owned())).unwrap_err();
            assert_eq!(err.name, name);
        }
    }
}
