//! Rate limiting for tower, axum and tonic services.
//!
//! `maas-ratelimit` protects a service from bursts. Three algorithms, each a small
//! lock-free core driven by a [`Clock`](clock::Clock):
//!
//! | limiter | lets through | state | pick it when |
//! |---|---|---|---|
//! | [`TokenBucket`] | bursts up to a capacity, then a steady rate | 8 bytes | you want smooth average rates with some burst (most APIs) |
//! | [`SlidingWindow`] | at most N in **any** span W | 8 × (B + 3) bytes | "N per minute" must hold for every minute, not just calendar ones |
//! | [`FixedWindow`] | at most N per calendar window | 8 bytes | cheapest counting, and a 2N burst at window edges is acceptable |
//!
//! They share one [`Decision`] (allowed, limit, remaining, reset, retry-after) and the same
//! operations: `check`, `check_n` (weighted, all or nothing), `peek` (consumes nothing) and
//! `set_quota` (at runtime, without handing out a fresh burst). A [`KeyedLimiter`] runs one
//! per key — API key, tenant, model — with per-key quotas and a hard bound on memory.
//!
//! [`RateLimitLayer`] puts any of them in front of a tower service. Its state is shared
//! through an `Arc` by all the services it makes and their clones, so under axum (which
//! clones services per connection) one limit holds for everybody. Over the limit it rejects
//! with a [`RateLimited`] error, or waits up to a maximum delay in FIFO order. With the
//! `http` feature, [`HttpRateLimitLayer`](http::HttpRateLimitLayer) answers
//! `429 Too Many Requests` with `Retry-After` and `RateLimit-*` headers.
//!
//! # Example
//!
//! ```
//! use maas_ratelimit::{KeyedLimiter, Quota, TokenBucket};
//!
//! // One stream: 100 per second, bursts of 20.
//! let limiter = TokenBucket::builder(Quota::per_second(100).with_burst(20)).build()?;
//! let decision = limiter.check();
//! assert!(decision.is_allowed());
//! assert_eq!(decision.remaining(), 19);
//!
//! // Per API key, at most 10,000 keys in memory, a bigger quota for one customer.
//! let per_key = KeyedLimiter::token_bucket(Quota::per_minute(600))
//!     .max_keys(10_000)
//!     .build::<String>()?;
//! per_key.set_key_quota("enterprise-key".to_owned(), Quota::per_minute(60_000))?;
//! assert!(per_key.check("some-key").is_allowed());
//! # Ok::<(), maas_ratelimit::ConfigError>(())
//! ```
//!
//! Invalid configuration (a zero rate, capacity or window; more sub-buckets than the clock
//! can tell apart) is a [`ConfigError`] from `build()`, never a panic.
//!
//! # Feature flags
//!
//! * `http` — [`http::HttpRateLimitLayer`]: 429 responses and `RateLimit-*` headers (axum 0.8,
//!   hyper 1, anything on `http` 1).
//! * `prometheus` — [`metrics::RateLimitMetrics`]: allowed / rejected counters and a
//!   tracked-keys gauge per limiter name.
//! * `redis` — [`redis::RedisLimiter`]: the token bucket, fixed or sliding window kept in
//!   Redis, one limit for every replica (atomic scripts on the server's clock; hot keys
//!   answered from local leases within a bounded overshoot; a typed outage policy). It goes
//!   into [`RateLimitLayer`] as it is: the layer takes any [`AsyncLimiter`].
//!
//! The crate emits `tracing` events (target `maas_ratelimit`) for rejections.
//!
//! The guide in `docs/ratelimit.md` covers choosing an algorithm, accuracy, the memory bound,
//! waiting and headers.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod algorithm;
pub mod clock;
mod decision;
mod error;
pub mod fixed_window;
#[cfg(feature = "http")]
pub mod http;
pub mod keyed;
pub mod layer;
mod limiter;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod quota;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sliding_window;
pub mod token_bucket;
mod versioned;

pub use decision::Decision;
pub use error::{ConfigError, RateLimitError, RateLimited};
pub use fixed_window::FixedWindow;
pub use keyed::{KeyedLimiter, WhenFull};
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
pub use limiter::{Answer, AsyncLimiter, Limiter};
pub use quota::Quota;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;

/// The README's example, compiled as a doctest.
#[cfg(all(doctest, feature = "http", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
