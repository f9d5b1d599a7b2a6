//! The per-API-key request limit on `/v1`: one limit for all replicas in Redis when
//! `MAAS_REDIS_URL` is set, else each replica's own, in memory.

use maas_ratelimit::redis::{RedisAlgorithm, RedisLimiter, RedisMetrics};
use maas_ratelimit::{Answer, AsyncLimiter, KeyedLimiter, Limiter, Quota};
use prometheus::Registry;

use crate::PlatformError;
use crate::config::{Config, ConfigError};

/// The request limiter the `/v1` layer asks (keyed by API key id).
pub(crate) enum TenantLimiter {
    /// This replica's own limit.
    Local(KeyedLimiter<String>),
    /// One limit in Redis for all replicas (leases for busy keys).
    Redis(RedisLimiter),
}

impl AsyncLimiter<String> for TenantLimiter {
    fn check_async(&self, key: &String, cost: u64) -> Answer {
        match self {
            TenantLimiter::Local(l) => Answer::Ready(l.check_key(key, cost)),
            TenantLimiter::Redis(r) => r.check_async(key, cost),
        }
    }

    fn as_sync(&self) -> Option<&dyn Limiter<String>> {
        match self {
            TenantLimiter::Local(l) => Some(l),
            TenantLimiter::Redis(_) => None,
        }
    }
}

/// Builds the limiter `config` asks for; the Redis one connects now.
pub(crate) async fn key_limiter(
    config: &Config,
    registry: &Registry,
    local_metrics: &maas_ratelimit::metrics::RateLimitMetrics,
) -> Result<TenantLimiter, PlatformError> {
    let quota = Quota::per_minute(config.rate_per_minute.into());
    let Some(url) = &config.redis_url else {
        let limiter = KeyedLimiter::token_bucket(quota)
            .metrics(local_metrics, "api")
            .build::<String>()
            .map_err(|e| rate_error(config, e.to_string()))?;
        return Ok(TenantLimiter::Local(limiter));
    };
    let metrics = RedisMetrics::register(registry).map_err(crate::metrics_err)?;
    let limiter = RedisLimiter::builder(
        url.as_str(),
        RedisAlgorithm::TokenBucket(quota),
        config.redis_outage,
    )
    .prefix("maas:platform:keys")
    .metrics(&metrics)
    .connect()
    .await
    .map_err(|e| {
        PlatformError::Config(ConfigError {
            name: "MAAS_REDIS_URL",
            value: "<hidden>".into(),
            reason: format!("cannot use Redis: {e}"),
        })
    })?;
    Ok(TenantLimiter::Redis(limiter))
}

fn rate_error(config: &Config, reason: String) -> PlatformError {
    PlatformError::Config(ConfigError {
        name: "MAAS_RATE_PER_MINUTE",
        value: config.rate_per_minute.to_string(),
        reason,
    })
}
