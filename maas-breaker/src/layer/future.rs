//! The response future shared by the breaker layers: it records the inner call's result
//! when it completes, and gives the permit back if it is dropped first.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::{pin_project, pinned_drop};

use crate::breaker::Ticket;
use crate::{BreakerError, Rejected};

/// Gives back the permit of a call that was cancelled.
pub trait Release {
    /// Returns `ticket`'s half-open probe slot, if it had one.
    #[doc(hidden)]
    fn release(&self, ticket: Ticket);
}

/// Whatever a future needs to record its call's result: the breaker and the classifier.
pub trait Recorder<T, E>: Release {
    /// Records `result` for the call permitted by `ticket`.
    #[doc(hidden)]
    fn complete(&self, ticket: Ticket, result: &Result<T, E>);
}

/// Resolves to the inner service's result, or to the breaker's refusal.
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<F, G: Release> {
    #[pin]
    state: State<F>,
    guard: Option<(G, Ticket)>,
}

#[pin_project(project = StateProj)]
enum State<F> {
    Called(#[pin] F),
    Rejected(Option<Rejected>),
    /// The inner future has been dropped (only while this future is dropped).
    Gone,
}

impl<F, G: Release> ResponseFuture<F, G> {
    #[inline]
    pub(crate) fn called(future: F, recorder: G, ticket: Ticket) -> Self {
        ResponseFuture {
            state: State::Called(future),
            guard: Some((recorder, ticket)),
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected(Some(rejected)),
            guard: None,
        }
    }
}

impl<F, G: Release> std::fmt::Debug for ResponseFuture<F, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.state {
            State::Called(_) => "ResponseFuture::Called",
            State::Rejected(_) => "ResponseFuture::Rejected",
            State::Gone => "ResponseFuture::Gone",
        })
    }
}

impl<F, T, E, G> Future for ResponseFuture<F, G>
where
    F: Future<Output = Result<T, E>>,
    G: Recorder<T, E>,
{
    type Output = Result<T, BreakerError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called(future) => {
                let result = std::task::ready!(future.poll(cx));
                if let Some((recorder, ticket)) = this.guard.take() {
                    recorder.complete(ticket, &result);
                }
                Poll::Ready(result.map_err(BreakerError::Service))
            }
            StateProj::Rejected(rejected) => match rejected.take() {
                Some(r) => Poll::Ready(Err(BreakerError::Rejected(r))),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Gone => panic!("ResponseFuture polled after completion"),
        }
    }
}

#[pinned_drop]
impl<F, G: Release> PinnedDrop for ResponseFuture<F, G> {
    fn drop(self: Pin<&mut Self>) {
        // Dropped before the call finished: cancelled. Nothing is recorded, and a half-open
        // probe slot is given back — only once the inner call is gone, so that a new probe
        // never runs beside the one being cancelled.
        let mut this = self.project();
        if let Some((recorder, ticket)) = this.guard.take() {
            this.state.set(State::Gone);
            recorder.release(ticket);
        }
    }
}
