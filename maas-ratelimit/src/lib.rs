//! Rate limiting for tower, axum and tonic services.
//!
//! `maas-ratelimit` protects a service from bursts. It offers three algorithms, each a
//! small lock-free core driven by a clock:
//!
//! * **token bucket**: allows bursts up to a capacity while holding a steady average rate;
//! * **sliding window**: at most N requests in any window W, counted over sub-buckets;
//! * **fixed window**: at most N requests per calendar window, cheapest, with a known
//!   boundary burst of up to 2N.
//!
//! They share one decision type (allowed, limit, remaining, reset, retry-after), support
//! keyed limiting with a bounded memory footprint, and plug into any tower stack through a
//! layer that shares its state across clones, so axum's per-connection clones enforce one
//! limit. Over-limit HTTP requests are answered `429 Too Many Requests` with `Retry-After`
//! and `RateLimit-*` headers.
//!
//! The crate is young: the items described here land one by one, and this page lists the
//! ones that exist.
