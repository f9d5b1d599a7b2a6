//! The per-API-key limits — requests on `/v1`, tokens on chat — : one limit for all replicas
//! in Redis when `MAAS_REDIS_URL` is set, else each replica's own, in memory.

use maas_ratelimit::redis::{RedisAlgorithm, RedisLimiter, RedisMetrics};
use maas_ratelimit::{Answer, AsyncLimiter, KeyedLimiter, Limiter, Quota};
use prometheus::Registry;

use crate::PlatformError;
use crate::chat::TokenLimit;
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

/// Builds the request limit and the token limit `config` asks for: in Redis when
/// `MAAS_REDIS_URL` is set (connected now), else in memory.
pub(crate) async fn key_limiters(
    config: &Config,
    registry: &Registry,
    local_metrics: &maas_ratelimit::metrics::RateLimitMetrics,
) -> Result<(TenantLimiter, TokenLimit), PlatformError> {
    let quota = Quota::per_minute(config.rate_per_minute.into());
    let tokens = Quota::per_minute(config.tokens_per_minute);
    let Some(url) = &config.redis_url else {
        let limiter = KeyedLimiter::token_bucket(quota)
            .metrics(local_metrics, "api")
            .build::<String>()
            .map_err(|e| rate_error("MAAS_RATE_PER_MINUTE", config.rate_per_minute.into(), e))?;
        let token_limit = TokenLimit::local(config.tokens_per_minute)
            .map_err(|e| rate_error("MAAS_TOKENS_PER_MINUTE", config.tokens_per_minute, e))?;
        return Ok((TenantLimiter::Local(limiter), token_limit));
    };
    let metrics = RedisMetrics::register(registry).map_err(crate::metrics_err)?;
    let connect = |quota: Quota, prefix: &'static str| {
        RedisLimiter::builder(
            url.as_str(),
            RedisAlgorithm::TokenBucket(quota),
            config.redis_outage,
        )
        .prefix(prefix)
        .metrics(&metrics)
        .connect()
    };
    let redis_error = |e: maas_ratelimit::redis::RedisLimitError| {
        PlatformError::Config(ConfigError {
            name: "MAAS_REDIS_URL",
            value: "<hidden>".into(),
            reason: format!("cannot use Redis: {e}"),
        })
    };
    let requests = connect(quota, "maas:platform:keys")
        .await
        .map_err(redis_error)?;
    let tokens = connect(tokens, "maas:platform:tokens")
        .await
        .map_err(redis_error)?;
    Ok((TenantLimiter::Redis(requests), TokenLimit::Redis(tokens)))
}

fn rate_error(name: &'static str, value: u64, e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Config(ConfigError {
        name,
        value: value.to_string(),
        reason: e.to_string(),
    })
}
