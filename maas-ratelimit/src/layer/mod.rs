//! The tower layer: [`RateLimitLayer`] and its [`RateLimit`] service.
//!
//! Build a layer from any [`Limiter`](crate::Limiter); add a key extractor for per-key
//! limits, a cost extractor for weighted requests, and choose to reject (default) or to
//! wait up to a maximum delay. See [`RateLimitLayer`] for an example.

mod builder;
mod extract;
mod future;
mod service;
mod shared;
mod wait;

pub use builder::{RateLimitLayer, RateLimitLayerBuilder};
pub use extract::{CostExtractor, KeyExtractor, NoKey, UnitCost};
pub use future::ResponseFuture;
pub use service::RateLimit;
pub use shared::Mode;
#[cfg(feature = "http")]
pub(crate) use shared::{Admission, Shared};
