//! What a breaker tells the world: state transitions and rejections.
//!
//! Subscribe with [`CircuitBreakerBuilder::on_event`](crate::CircuitBreakerBuilder::on_event);
//! every event is also emitted as a `tracing` event (target `maas_breaker`): transitions at
//! `INFO` (`WARN` when opening), rejections at `DEBUG`. Subscribers run on the thread that
//! caused the event, transitions under the breaker's transition lock (so they arrive in
//! order): keep them short.

use std::sync::Arc;

use crate::BreakerState;

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum TransitionCause {
    /// The failure rate over the window reached the threshold.
    FailureRate {
        /// Failures as a percentage of calls.
        rate: f64,
        /// Calls in the window.
        calls: u64,
    },
    /// The slow-call rate over the window reached the threshold.
    SlowCallRate {
        /// Slow calls as a percentage of calls.
        rate: f64,
        /// Calls in the window.
        calls: u64,
    },
    /// That many failures in a row.
    ConsecutiveFailures(u32),
    /// The open wait is over: probes may go.
    OpenWaitElapsed,
    /// A half-open probe failed (or was slow).
    ProbeFailed,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// Half-open lasted longer than its maximum.
    HalfOpenTimeout,
    /// An operator forced the breaker open.
    ForcedOpen,
    /// An operator disabled the breaker.
    Disabled,
    /// An operator reset the breaker to closed.
    Reset,
}

/// Something a breaker did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker moved from one state to another.
    Transition {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
        /// Why.
        cause: TransitionCause,
    },
    /// A call was refused.
    Rejected {
        /// The breaker's name.
        breaker: Arc<str>,
        /// The state that refused it.
        state: BreakerState,
    },
}

/// A subscriber to a breaker's events.
pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

pub(crate) fn trace(event: &Event) {
    match event {
        Event::Transition {
            breaker,
            from,
            to,
            cause,
        } => {
            if *to == BreakerState::Open {
                tracing::warn!(target: "maas_breaker", breaker = &**breaker, %from, %to, ?cause, "circuit breaker opened");
            } else {
                tracing::info!(target: "maas_breaker", breaker = &**breaker, %from, %to, ?cause, "circuit breaker state changed");
            }
        }
        Event::Rejected { breaker, state } => {
            tracing::debug!(target: "maas_breaker", breaker = &**breaker, %state, "call rejected by circuit breaker");
        }
    }
}
