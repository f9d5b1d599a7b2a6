//! Degradation: answer from a fallback when the breaker refuses (or chosen errors occur).
//!
//! A [`FallbackLayer`] sits in front of a breaker-protected service. When the call fails
//! with an error the layer is told to handle — by default, only the breaker's refusals —
//! it calls a fallback service instead: a smaller model, a cached answer, a static default.
//! The fallback needs something from the request, but the request is gone by the time the
//! inner call fails; so the layer first extracts what the fallback needs (the model name,
//! the prompt, a cache key) with a function you give it.
//!
//! ```
//! use maas_breaker::{BreakerError, CircuitBreaker, CircuitBreakerLayer, FallbackLayer, fallback_fn};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::builder().consecutive_failures(1).build()?;
//! breaker.force_open();
//! let mut answer = ServiceBuilder::new()
//!     // Keep the prompt for the fallback; answer from a small local model.
//!     .layer(FallbackLayer::new(
//!         |prompt: &String| prompt.clone(),
//!         fallback_fn(|prompt: String, _err: BreakerError<std::io::Error>| async move {
//!             Ok(format!("(small model) {prompt}"))
//!         }),
//!     ))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .service(service_fn(|prompt: String| async move {
//!         Ok::<_, std::io::Error>(format!("(large model) {prompt}"))
//!     }));
//! let reply = answer.ready().await?.call("hello".to_owned()).await?;
//! assert_eq!(reply, "(small model) hello");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{BreakerError, Rejected};

/// Errors that say "the breaker refused the call".
pub trait IsRejection {
    /// Whether this error is a breaker's refusal.
    fn is_rejection(&self) -> bool;
}

impl<E> IsRejection for BreakerError<E> {
    fn is_rejection(&self) -> bool {
        matches!(self, BreakerError::Rejected(_))
    }
}

impl IsRejection for Box<dyn std::error::Error + Send + Sync> {
    fn is_rejection(&self) -> bool {
        self.downcast_ref::<Rejected>().is_some()
            || self
                .source()
                .is_some_and(|s| s.downcast_ref::<Rejected>().is_some())
    }
}

/// Which errors the fallback answers.
pub trait FallbackWhen<E>: Send + Sync + 'static {
    /// Whether `error` should be answered by the fallback.
    fn applies(&self, error: &E) -> bool;
}

/// The default: only breaker refusals.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnRejection;

impl<E: IsRejection> FallbackWhen<E> for OnRejection {
    fn applies(&self, error: &E) -> bool {
        error.is_rejection()
    }
}

impl<E, F: Fn(&E) -> bool + Send + Sync + 'static> FallbackWhen<E> for F {
    fn applies(&self, error: &E) -> bool {
        self(error)
    }
}

/// A fallback service from a closure `Fn(input, error) -> Future<Output = Result<..>>`.
pub fn fallback_fn<F>(f: F) -> FallbackFn<F> {
    FallbackFn(f)
}

/// A fallback made by [`fallback_fn`].
#[derive(Debug, Clone, Copy)]
pub struct FallbackFn<F>(F);

impl<F, I, E, Fut, T, E2> Service<(I, E)> for FallbackFn<F>
where
    F: Fn(I, E) -> Fut,
    Fut: Future<Output = Result<T, E2>>,
{
    type Response = T;
    type Error = E2;
    type Future = Fut;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E2>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (input, error): (I, E)) -> Fut {
        (self.0)(input, error)
    }
}

/// A tower layer answering chosen errors (by default, breaker refusals) from a fallback
/// service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FallbackLayer<X, F, P = OnRejection> {
    extract: X,
    fallback: F,
    when: P,
}

impl<X, F> FallbackLayer<X, F> {
    /// Answers breaker refusals with `fallback`, called with `extract(&request)` and the
    /// error.
    pub fn new(extract: X, fallback: F) -> Self {
        FallbackLayer {
            extract,
            fallback,
            when: OnRejection,
        }
    }
}

impl<X, F, P> FallbackLayer<X, F, P> {
    /// Answers the errors for which `when` is true instead (e.g. refusals *and* timeouts).
    pub fn when<P2>(self, when: P2) -> FallbackLayer<X, F, P2> {
        FallbackLayer {
            extract: self.extract,
            fallback: self.fallback,
            when,
        }
    }
}

impl<S, X: Clone, F: Clone, P: Clone> Layer<S> for FallbackLayer<X, F, P> {
    type Service = Fallback<S, X, F, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            extract: self.extract.clone(),
            fallback: self.fallback.clone(),
            when: self.when.clone(),
        }
    }
}

/// The service made by [`FallbackLayer`].
#[derive(Debug, Clone)]
pub struct Fallback<S, X, F, P> {
    inner: S,
    extract: X,
    fallback: F,
    when: P,
}

impl<S, X, F, P, R, I> Service<R> for Fallback<S, X, F, P>
where
    S: Service<R>,
    X: Fn(&R) -> I,
    F: Service<(I, S::Error), Response = S::Response, Error = S::Error> + Clone,
    P: FallbackWhen<S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = FallbackFuture<S::Future, F, P, I, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let input = (self.extract)(&request);
        FallbackFuture {
            state: FallbackState::Inner {
                future: self.inner.call(request),
                input: Some(input),
                fallback: Some(self.fallback.clone()),
                when: self.when.clone(),
            },
        }
    }
}

/// The response future of [`Fallback`].
#[pin_project]
pub struct FallbackFuture<Fut, F: Service<(I, E)>, P, I, E> {
    #[pin]
    state: FallbackState<Fut, F, P, I, E>,
}

#[pin_project(project = StateProj)]
enum FallbackState<Fut, F: Service<(I, E)>, P, I, E> {
    Inner {
        #[pin]
        future: Fut,
        input: Option<I>,
        fallback: Option<F>,
        when: P,
    },
    Ready {
        fallback: F,
        input: Option<(I, E)>,
    },
    Fallback {
        #[pin]
        future: F::Future,
    },
}

impl<Fut, F: Service<(I, E)>, P, I, E> std::fmt::Debug for FallbackFuture<Fut, F, P, I, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackFuture").finish_non_exhaustive()
    }
}

impl<Fut, F, P, I, T, E> Future for FallbackFuture<Fut, F, P, I, E>
where
    Fut: Future<Output = Result<T, E>>,
    F: Service<(I, E), Response = T, Error = E>,
    P: FallbackWhen<E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner {
                    future,
                    input,
                    fallback,
                    when,
                } => match std::task::ready!(future.poll(cx)) {
                    Err(e) if when.applies(&e) => {
                        let (Some(input), Some(fallback)) = (input.take(), fallback.take()) else {
                            return Poll::Ready(Err(e));
                        };
                        state.set(FallbackState::Ready {
                            fallback,
                            input: Some((input, e)),
                        });
                    }
                    other => return Poll::Ready(other),
                },
                StateProj::Ready { fallback, input } => {
                    if let Err(e) = std::task::ready!(fallback.poll_ready(cx)) {
                        return Poll::Ready(Err(e));
                    }
                    let Some(args) = input.take() else {
                        panic!("FallbackFuture polled after completion");
                    };
                    let future = fallback.call(args);
                    state.set(FallbackState::Fallback { future });
                }
                StateProj::Fallback { future } => return future.poll(cx),
            }
        }
    }
}
