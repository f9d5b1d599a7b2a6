//! What the Redis tests share: where the test Redis is, fresh key prefixes, a failure that
//! says how to start Redis, a raw connection, and reading a metric.
#![allow(dead_code)]

use prometheus::{Encoder, Registry, TextEncoder};

/// URL of the test Redis (override: `MAAS_TEST_REDIS`).
pub fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A prefix no other run used.
pub fn prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("maas:test:{tag}:{}:{nanos}", std::process::id())
}

/// Fails the test saying how to start Redis.
pub fn unreachable(url: &str, e: impl std::fmt::Display) -> ! {
    panic!(
        "Redis is not reachable at `{url}`: {e}; start it with `scripts/dev-services` \
         (Redis on 127.0.0.1:6379), or point MAAS_TEST_REDIS at a running server"
    )
}

/// A plain connection to the test Redis, to look at what the limiters wrote.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    match redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
    {
        Ok(c) => c,
        Err(e) => unreachable(&url, e),
    }
}

/// The sum of the series whose exposition line starts with `series` (a name, or a name
/// with its labels), 0 when absent.
pub fn metric(registry: &Registry, series: &str) -> f64 {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(series))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
