//! Errors: invalid configuration, and calls the breaker refused.

use std::time::Duration;

use crate::BreakerState;

/// A breaker configuration that cannot work. Returned by `build()`; never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate threshold outside 0–100 %.
    #[error("{name} must be a percentage in (0, 100], got {value}")]
    RateOutOfRange {
        /// Which threshold.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// A window of zero calls, zero length or zero slices.
    #[error("the sliding window is empty: {0}")]
    EmptyWindow(&'static str),
    /// Half-open needs at least one probe.
    #[error("half-open needs at least one permitted probe call")]
    ZeroProbes,
    /// Half-open must close after at least one success.
    #[error("half-open must close after at least one success")]
    ZeroSuccessesToClose,
    /// A zero duration where a wait is needed.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// A count above what the breaker can hold.
    #[error("{name} of {value} is above the maximum of {max}")]
    TooLarge {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: u64,
        /// The largest accepted.
        max: u64,
    },
    /// Nothing can trip the breaker: configure a failure rate, a slow-call rate or a
    /// number of consecutive failures.
    #[error("no trip condition: set a failure rate, a slow-call rate or consecutive failures")]
    NoTripCondition,
    /// A slow-call rate needs the duration above which a call is slow.
    #[error("a slow-call rate threshold needs a slow-call duration")]
    SlowCallDurationMissing,
    /// The backoff multiplier must be at least 1.
    #[error("the open-wait backoff multiplier must be at least 1, got {0}")]
    BackoffBelowOne(f64),
    /// Tripping after zero consecutive failures would trip on nothing.
    #[error("consecutive failures must be at least 1")]
    ZeroConsecutiveFailures,
    /// A count window smaller than the minimum number of calls could never trip on a rate.
    #[error(
        "minimum_calls({minimum_calls}) is above the window of {window} calls, so the rates could never trip the breaker"
    )]
    MinimumCallsAboveWindow {
        /// The minimum number of calls given.
        minimum_calls: u32,
        /// The count window's size.
        window: u32,
    },
    /// A keyed breaker needs room for at least one key.
    #[error("a keyed breaker needs room for at least one key")]
    ZeroMaxKeys,
}

/// A call the breaker did not let through: the inner service was not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self))]
pub struct Rejected {
    pub(crate) breaker: std::sync::Arc<str>,
    pub(crate) state: BreakerState,
    pub(crate) remaining: Option<Duration>,
}

fn describe(r: &Rejected) -> String {
    match (r.state, r.remaining) {
        (BreakerState::Open, Some(d)) => format!(
            "circuit breaker `{}` is open; retry in {:.3} s",
            r.breaker,
            d.as_secs_f64()
        ),
        (BreakerState::HalfOpen, _) => format!(
            "circuit breaker `{}` is half-open and all probe calls are in flight",
            r.breaker
        ),
        (BreakerState::ForcedOpen, _) => {
            format!(
                "circuit breaker `{}` is held open by an operator",
                r.breaker
            )
        }
        (state, _) => format!(
            "circuit breaker `{}` rejected the call ({state})",
            r.breaker
        ),
    }
}

impl Rejected {
    /// The breaker's name.
    pub fn breaker(&self) -> &str {
        &self.breaker
    }

    /// The state that refused the call: `Open`, `HalfOpen` (probes busy) or `ForcedOpen`.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the breaker will let a probe through (open state), if known. `None` for a
    /// forced-open breaker or busy half-open probes.
    pub fn retry_after(&self) -> Option<Duration> {
        self.remaining
    }
}

/// The error of a call through a breaker: refused, or failed in the service.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call; the service was not called.
    #[error(transparent)]
    Rejected(Rejected),
    /// The service returned an error (already recorded by the breaker).
    #[error("{0}")]
    Service(E),
}

impl<E> BreakerError<E> {
    /// The refusal, when the breaker refused the call.
    pub fn as_rejected(&self) -> Option<&Rejected> {
        match self {
            BreakerError::Rejected(r) => Some(r),
            BreakerError::Service(_) => None,
        }
    }

    /// The service's error, when the service failed.
    pub fn into_service_error(self) -> Option<E> {
        match self {
            BreakerError::Rejected(_) => None,
            BreakerError::Service(e) => Some(e),
        }
    }
}
