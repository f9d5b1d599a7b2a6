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
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (`MAAS_ADDR`, default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// Where the SQLite files live (`MAAS_DATA_DIR`, default `<temp>/maas-platform`).
    pub data_dir: PathBuf,
    /// PostgreSQL for models, quota and sagas, shared by replicas (`MAAS_DATABASE_URL`,
    /// libpq style: `host=db user=maas dbname=maas`); none: SQLite files in `data_dir`.
    pub database_url: Option<String>,
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
    /// Requests per minute per tenant on `/v1` (`MAAS_RATE_PER_MINUTE`, default 600).
    pub rate_per_minute: u32,
    /// Redis holding the per-tenant limit, so it is one limit for all replicas
    /// (`MAAS_REDIS_URL`, `redis://[:password@]host:port[/db]`; no TLS yet); none: each
    /// replica limits on its own, in memory. A secret when it carries a password.
    pub redis_url: Option<String>,
    /// What the limit does while Redis is down (`MAAS_REDIS_OUTAGE`: `local-share`, the
    /// default — each replica allows its share of the limit, by the replicas seen —
    /// `fail-open` or `fail-closed`).
    pub redis_outage: maas_ratelimit::redis::OutagePolicy,
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
    /// Alert robots: `MAAS_DINGTALK_WEBHOOK` (+ `MAAS_DINGTALK_SECRET`), `MAAS_WECOM_WEBHOOK`.
    pub robots: crate::alerts::Robots,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: std::env::temp_dir().join("maas-platform"),
            database_url: None,
            instance: "maas-platform".to_owned(),
            kafka_brokers: None,
            build_topic: crate::builders::TOPIC.to_owned(),
            build_group: crate::builders::GROUP.to_owned(),
            rate_per_minute: 600,
            redis_url: None,
            redis_outage: maas_ratelimit::redis::OutagePolicy::LocalShare {
                replicas: maas_ratelimit::redis::Replicas::Seen,
            },
            tenant_quota: 100,
            build_cost: 10,
            build_time: Duration::from_millis(300),
            builders: 3,
            breaker_open: Duration::from_secs(5),
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
        if let Some(v) = lookup("MAAS_DATA_DIR") {
            c.data_dir = PathBuf::from(v);
        }
        c.database_url = lookup("MAAS_DATABASE_URL");
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
        for (name, slot) in [
            ("MAAS_DINGTALK_WEBHOOK", &mut c.robots.dingtalk),
            ("MAAS_WECOM_WEBHOOK", &mut c.robots.wecom),
        ] {
            if let Some(v) = lookup(name) {
                if !(v.starts_with("https://") || v.starts_with("http://")) {
                    return Err(refuse(name, &v, "expected the robot's webhook URL"));
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

        for (name, value) in [
            ("MAAS_ADDR", "nowhere"),
            ("MAAS_BUILDERS", "0"),
            ("MAAS_RATE_PER_MINUTE", "-3"),
            ("MAAS_KAFKA_BROKERS", "kafka"),
            ("MAAS_BUILD_TOPIC", "build tasks"),
        ] {
            let err = Config::from_lookup(|n| (n == name).then(|| value.to_owned())).unwrap_err();
            assert_eq!(err.name, name);
        }
    }
}
