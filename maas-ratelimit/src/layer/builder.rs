//! `RateLimitLayer` and its builder.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::extract::{NoKey, UnitCost};
use super::service::RateLimit;
use super::shared::{Mode, Shared};
use super::wait::WaitQueue;

/// A tower layer that rate-limits the services it wraps.
///
/// **One state, shared.** Every service the layer makes, and every clone of those services,
/// checks the same limiter through one `Arc`. That matters under axum, which clones a
/// service for each connection and request: with a limiter per clone (as with tower's own
/// `RateLimit`), the limit would silently apply per connection instead of per service.
///
/// ```
/// use std::time::Duration;
/// use maas_ratelimit::clock::ManualClock;
/// use maas_ratelimit::{KeyedLimiter, Quota, RateLimitLayer};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // 2 requests per second per tenant; the tenant is the request's first word.
/// // (A manual clock keeps the example exact; leave it out in real code.)
/// let limiter = KeyedLimiter::token_bucket(Quota::per_second(2))
///     .clock(ManualClock::new())
///     .build::<String>()?;
/// let layer = RateLimitLayer::builder(limiter)
///     .key(|req: &String| req.split(' ').next().unwrap_or_default().to_owned())
///     .build();
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|req: String| async move { Ok::<_, std::convert::Infallible>(req.len()) });
///
/// assert!(svc.ready().await?.call("acme hello".into()).await.is_ok());
/// assert!(svc.ready().await?.call("acme again".into()).await.is_ok());
/// let err = svc.ready().await?.call("acme third".into()).await.unwrap_err();
/// assert_eq!(err.as_limited().unwrap().retry_after(), Some(Duration::from_millis(500)));
/// // Another tenant has its own quota.
/// assert!(svc.ready().await?.call("globex hi".into()).await.is_ok());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RateLimitLayer<L, KF = NoKey, CF = UnitCost> {
    shared: Arc<Shared<L, KF, CF>>,
}

impl<L, KF, CF> Clone for RateLimitLayer<L, KF, CF> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<L> RateLimitLayer<L> {
    /// A layer limiting every request under one key, each costing 1, rejecting over the
    /// limit. Use [`builder`](RateLimitLayer::builder) for keys, costs and waiting.
    pub fn new(limiter: L) -> Self {
        Self::builder(limiter).build()
    }

    /// Starts configuring a layer around `limiter`.
    pub fn builder(limiter: L) -> RateLimitLayerBuilder<L> {
        RateLimitLayerBuilder {
            limiter,
            key: NoKey,
            cost: UnitCost,
            mode: Mode::Reject,
            max_waiters: super::wait::DEFAULT_MAX_WAITERS,
            #[cfg(feature = "prometheus")]
            counters: None,
        }
    }
}

impl<L, KF, CF> RateLimitLayer<L, KF, CF> {
    /// The limiter, e.g. to change its quota at runtime.
    pub fn limiter(&self) -> &L {
        &self.shared.limiter
    }

    /// What happens to requests over the limit.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    #[cfg(feature = "http")]
    pub(crate) fn shared(&self) -> &Arc<Shared<L, KF, CF>> {
        &self.shared
    }
}

impl<S, L, KF, CF> Layer<S> for RateLimitLayer<L, KF, CF> {
    type Service = RateLimit<S, L, KF, CF>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}

/// Configures a [`RateLimitLayer`]: key and cost extractors, and the mode.
#[derive(Debug)]
pub struct RateLimitLayerBuilder<L, KF = NoKey, CF = UnitCost> {
    limiter: L,
    key: KF,
    cost: CF,
    mode: Mode,
    max_waiters: usize,
    #[cfg(feature = "prometheus")]
    counters: Option<Arc<crate::metrics::Counters>>,
}

impl<L, KF, CF> RateLimitLayerBuilder<L, KF, CF> {
    /// Limits each request under the key `key(&request)` (an API key, a tenant, a model).
    /// The limiter must accept that key type: use a [`KeyedLimiter`](crate::KeyedLimiter).
    pub fn key<KF2>(self, key: KF2) -> RateLimitLayerBuilder<L, KF2, CF> {
        RateLimitLayerBuilder {
            limiter: self.limiter,
            key,
            cost: self.cost,
            mode: self.mode,
            max_waiters: self.max_waiters,
            #[cfg(feature = "prometheus")]
            counters: self.counters,
        }
    }

    /// Charges each request `cost(&request)` units instead of 1 (e.g. the tokens a model
    /// call asks for). A request costing more than the whole limit is always rejected.
    pub fn cost<CF2>(self, cost: CF2) -> RateLimitLayerBuilder<L, KF, CF2> {
        RateLimitLayerBuilder {
            limiter: self.limiter,
            key: self.key,
            cost,
            mode: self.mode,
            max_waiters: self.max_waiters,
            #[cfg(feature = "prometheus")]
            counters: self.counters,
        }
    }

    /// Over the limit, wait up to `max` for quota instead of rejecting at once. Waiters of
    /// one key are served in arrival order; a request that could not pass within `max` —
    /// projected behind the cost already queued for its key — is rejected immediately,
    /// without waiting in vain. Requires a tokio runtime.
    pub fn wait_up_to(mut self, max: Duration) -> Self {
        self.mode = Mode::Wait(max);
        self
    }

    /// In wait mode, the most requests waiting at once (default 1,024); more are rejected on
    /// arrival. Bounds the memory and the tasks a burst can pin. (The bound is checked on
    /// arrival against the requests already waiting, so a burst admitted in the same instant,
    /// before any of it has started to wait, can exceed it by that burst.)
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.max_waiters = n;
        self
    }

    /// Over the limit, reject at once (the default).
    pub fn reject(mut self) -> Self {
        self.mode = Mode::Reject;
        self
    }

    /// Counts allowed and rejected requests under the label `limiter="<name>"` in
    /// `metrics`. (A [`KeyedLimiter`](crate::KeyedLimiter) reports its tracked keys under
    /// the same name when built with the same `metrics`.)
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::RateLimitMetrics, name: &str) -> Self {
        self.counters = Some(metrics.counters(name));
        self
    }

    /// Builds the layer. Every service it makes shares this one limiter.
    pub fn build(self) -> RateLimitLayer<L, KF, CF> {
        RateLimitLayer {
            shared: Arc::new(Shared {
                limiter: self.limiter,
                key: self.key,
                cost: self.cost,
                mode: self.mode,
                queue: WaitQueue::new(self.max_waiters),
                #[cfg(feature = "prometheus")]
                counters: self.counters,
            }),
        }
    }
}
