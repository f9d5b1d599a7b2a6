//! The `RateLimit` service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::extract::{CostExtractor, KeyExtractor};
use super::future::ResponseFuture;
use super::shared::{Admission, Shared};
use crate::{AsyncLimiter, RateLimitError, RateLimited};

/// A service that checks each request against a shared limiter before calling the inner
/// service. Made by [`RateLimitLayer`](crate::RateLimitLayer); clones share the limiter.
///
/// Readiness is the inner service's; the limit is applied in `call`, which never panics:
/// a rejected request resolves to [`RateLimitError::Limited`] without reaching the inner
/// service. In wait mode the inner service is cloned (tower's usual pattern) so the ready
/// one can be called once the wait is over.
pub struct RateLimit<S, L, KF, CF> {
    inner: S,
    shared: Arc<Shared<L, KF, CF>>,
}

impl<S, L, KF, CF> RateLimit<S, L, KF, CF> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<L, KF, CF>>) -> Self {
        RateLimit { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.shared.limiter
    }
}

impl<S: Clone, L, KF, CF> Clone for RateLimit<S, L, KF, CF> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, L: fmt::Debug, KF, CF> fmt::Debug for RateLimit<S, L, KF, CF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.limiter)
            .field("mode", &self.shared.mode)
            .finish()
    }
}

impl<S, L, KF, CF, R> Service<R> for RateLimit<S, L, KF, CF>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
    KF: KeyExtractor<R>,
    CF: CostExtractor<R>,
    L: AsyncLimiter<KF::Key>,
{
    type Response = S::Response;
    type Error = RateLimitError<S::Error>;
    type Future = ResponseFuture<S::Future, S::Response, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(RateLimitError::Service)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let key = self.shared.key.key(&request);
        let cost = self.shared.cost.cost(&request);
        match self.shared.admit(&key, cost) {
            Admission::Pass(_) => ResponseFuture::called(self.inner.call(request)),
            Admission::Reject(d) => ResponseFuture::limited(RateLimited::new(d)),
            Admission::Wait => {
                // Keep the service that was made ready; leave a fresh clone in its place.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                ResponseFuture::waiting(Box::pin(async move {
                    match shared.wait_turn(key, cost).await {
                        Ok(_) => ready.call(request).await.map_err(RateLimitError::Service),
                        Err(d) => Err(RateLimitError::Limited(RateLimited::new(d))),
                    }
                }))
            }
            Admission::Pending(answer) => {
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                let shared = self.shared.clone();
                ResponseFuture::waiting(Box::pin(async move {
                    let admission = Shared::<L, KF, CF>::verdict(answer.await);
                    shared.record(&admission);
                    match admission {
                        Admission::Reject(d) => Err(RateLimitError::Limited(RateLimited::new(d))),
                        _ => ready.call(request).await.map_err(RateLimitError::Service),
                    }
                }))
            }
        }
    }
}
