//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use crate::{RateLimitError, RateLimited};

type Waiting<T, E> = Pin<Box<dyn Future<Output = Result<T, RateLimitError<E>>> + Send>>;

/// Resolves to the inner service's response, or to the rejection.
#[pin_project]
pub struct ResponseFuture<F, T, E> {
    #[pin]
    state: State<F, T, E>,
}

#[pin_project(project = StateProj)]
enum State<F, T, E> {
    /// The request passed; the inner service is handling it.
    Called(#[pin] F),
    /// The request was rejected.
    Limited(Option<RateLimited>),
    /// The request is waiting for quota (the inner call follows inside).
    Waiting(Waiting<T, E>),
}

impl<F, T, E> ResponseFuture<F, T, E> {
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            state: State::Called(future),
        }
    }

    pub(crate) fn limited(rejection: RateLimited) -> Self {
        ResponseFuture {
            state: State::Limited(Some(rejection)),
        }
    }

    pub(crate) fn waiting(future: Waiting<T, E>) -> Self {
        ResponseFuture {
            state: State::Waiting(future),
        }
    }
}

impl<F, T, E> std::fmt::Debug for ResponseFuture<F, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Called(_) => "called",
            State::Limited(_) => "limited",
            State::Waiting(_) => "waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, RateLimitError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called(f) => f.poll(cx).map_err(RateLimitError::Service),
            StateProj::Limited(rejection) => match rejection.take() {
                Some(r) => Poll::Ready(Err(RateLimitError::Limited(r))),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Waiting(f) => f.as_mut().poll(cx),
        }
    }
}
