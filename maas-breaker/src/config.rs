//! A breaker's configuration and its builder.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock, nanos};
use crate::events::{Event, Listener};
use crate::window::Window;
use crate::{CircuitBreaker, ConfigError};

/// Calls a window must hold before a rate can trip the breaker, unless set.
const DEFAULT_MINIMUM_CALLS: u32 = 20;

/// The validated settings of one breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) window: Window,
    pub(crate) minimum_calls: u64,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_rate: Option<f64>,
    pub(crate) slow_call: Option<u64>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) open_wait: u64,
    pub(crate) backoff: f64,
    pub(crate) max_open_wait: u64,
    pub(crate) probes: u16,
    pub(crate) successes_to_close: u16,
    pub(crate) max_half_open: Option<u64>,
}

/// Builds a [`CircuitBreaker`]. Every setting has a default; invalid combinations fail at
/// [`build`](CircuitBreakerBuilder::build) with a [`ConfigError`].
///
/// | setting | default |
/// |---|---|
/// | window | the last 100 calls |
/// | minimum calls before a rate can trip it | 20 |
/// | failure rate threshold | 50 % |
/// | slow-call rate threshold | none |
/// | consecutive failures | none |
/// | open wait | 30 s, no backoff |
/// | half-open | 3 probes at once, close after 3 successes, re-open after 60 s |
#[derive(Clone)]
pub struct CircuitBreakerBuilder<C: Clock = MonotonicClock> {
    name: Arc<str>,
    window: Window,
    minimum_calls: Option<u32>,
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    slow_call: Option<Duration>,
    consecutive_failures: Option<u32>,
    open_wait: Duration,
    backoff: f64,
    max_open_wait: Duration,
    probes: u32,
    successes_to_close: u32,
    max_half_open: Option<Duration>,
    clock: C,
    listeners: Vec<Listener>,
    #[cfg(feature = "prometheus")]
    metrics: Option<crate::metrics::BreakerMetrics>,
}

impl std::fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("name", &self.name)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        CircuitBreakerBuilder {
            name: Arc::from("default"),
            window: Window::Count(100),
            minimum_calls: None,
            failure_rate: Some(50.0),
            slow_rate: None,
            slow_call: None,
            consecutive_failures: None,
            open_wait: Duration::from_secs(30),
            backoff: 1.0,
            max_open_wait: Duration::from_secs(30),
            probes: 3,
            successes_to_close: 3,
            max_half_open: Some(Duration::from_secs(60)),
            clock: MonotonicClock,
            listeners: Vec::new(),
            #[cfg(feature = "prometheus")]
            metrics: None,
        }
    }
}

impl<C: Clock> CircuitBreakerBuilder<C> {
    /// The breaker's name, used in errors, events, logs and metric labels.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Which recent calls the rates are computed over (default: the last 100 calls).
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Calls the window must hold before a rate can trip the breaker (default 20, or the
    /// window's size when a count window is smaller). A count window must be able to hold
    /// them: `minimum_calls` above [`Window::Count`]'s size is a [`ConfigError`].
    ///
    /// The rates are evaluated when a call fails or is slow, and when a success brings the
    /// window to `minimum_calls` calls — so 5 failures then 5 successes with
    /// `minimum_calls(10)` and a 50 % threshold trip the breaker on the tenth call.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = Some(calls);
        self
    }

    /// Trip when failures reach `percent` of the calls in the window (default 50).
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.failure_rate = Some(percent);
        self
    }

    /// Do not trip on the failure rate (use slow calls or consecutive failures instead).
    pub fn without_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Calls taking `threshold` or longer are slow; trip when slow calls reach `percent` of
    /// the calls in the window. A slow half-open probe counts as a failed probe.
    pub fn slow_calls(mut self, threshold: Duration, percent: f64) -> Self {
        self.slow_call = Some(threshold);
        self.slow_rate = Some(percent);
        self
    }

    /// Trip after `n` failures in a row, whatever the window says.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self
    }

    /// How long the breaker stays open before letting probes through (default 30 s).
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        if self.max_open_wait < wait {
            self.max_open_wait = wait;
        }
        self
    }

    /// Multiplies the open wait by `multiplier` on each consecutive trip (a trip right after
    /// a failed half-open test), up to `max`. Closing resets it.
    pub fn backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.backoff = multiplier;
        self.max_open_wait = max;
        self
    }

    /// Half-open lets `probes` calls through at once and closes after `successes`
    /// successful probes (defaults 3 and 3).
    pub fn half_open(mut self, probes: u32, successes: u32) -> Self {
        self.probes = probes;
        self.successes_to_close = successes;
        self
    }

    /// Re-open when half-open has not decided within `max` (default 60 s); `None` for never.
    pub fn max_half_open(mut self, max: Option<Duration>) -> Self {
        self.max_half_open = max;
        self
    }

    /// Calls `listener` with every event (transitions, rejections).
    pub fn on_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Reports this breaker in `metrics` under its name.
    #[cfg(feature = "prometheus")]
    pub fn metrics(mut self, metrics: &crate::metrics::BreakerMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Uses another clock.
    pub fn clock<C2: Clock>(self, clock: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            name: self.name,
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate: self.failure_rate,
            slow_rate: self.slow_rate,
            slow_call: self.slow_call,
            consecutive_failures: self.consecutive_failures,
            open_wait: self.open_wait,
            backoff: self.backoff,
            max_open_wait: self.max_open_wait,
            probes: self.probes,
            successes_to_close: self.successes_to_close,
            max_half_open: self.max_half_open,
            clock,
            listeners: self.listeners,
            #[cfg(feature = "prometheus")]
            metrics: self.metrics,
        }
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let rate = |name, value: Option<f64>| match value {
            Some(v) if !(v > 0.0 && v <= 100.0) => {
                Err(ConfigError::RateOutOfRange { name, value: v })
            }
            _ => Ok(value),
        };
        let failure_rate = rate("the failure rate threshold", self.failure_rate)?;
        let slow_rate = rate("the slow-call rate threshold", self.slow_rate)?;
        match self.window {
            Window::Count(0) => return Err(ConfigError::EmptyWindow("a window of zero calls")),
            Window::Count(n) if n > 1 << 24 => {
                return Err(ConfigError::TooLarge {
                    name: "the window",
                    value: u64::from(n),
                    max: 1 << 24,
                });
            }
            Window::Time { length, .. } if length.is_zero() => {
                return Err(ConfigError::EmptyWindow("a window of zero length"));
            }
            Window::Time { buckets: 0, .. } => {
                return Err(ConfigError::EmptyWindow("a window of zero slices"));
            }
            Window::Time { buckets, .. } if buckets > 10_000 => {
                return Err(ConfigError::TooLarge {
                    name: "window slices",
                    value: u64::from(buckets),
                    max: 10_000,
                });
            }
            _ => {}
        }
        let minimum_calls = match (self.minimum_calls, self.window) {
            (Some(m), Window::Count(n)) if m > n => {
                return Err(ConfigError::MinimumCallsAboveWindow {
                    minimum_calls: m,
                    window: n,
                });
            }
            (Some(m), _) => m,
            (None, Window::Count(n)) => DEFAULT_MINIMUM_CALLS.min(n),
            (None, Window::Time { .. }) => DEFAULT_MINIMUM_CALLS,
        };
        if self.probes == 0 {
            return Err(ConfigError::ZeroProbes);
        }
        if self.successes_to_close == 0 {
            return Err(ConfigError::ZeroSuccessesToClose);
        }
        for (name, value) in [
            ("half-open probes", self.probes),
            ("half-open successes", self.successes_to_close),
        ] {
            if value > u32::from(u16::MAX) {
                return Err(ConfigError::TooLarge {
                    name,
                    value: u64::from(value),
                    max: u64::from(u16::MAX),
                });
            }
        }
        if self.open_wait.is_zero() {
            return Err(ConfigError::ZeroDuration("the open wait"));
        }
        if self.max_half_open.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration("the maximum half-open time"));
        }
        if self.slow_call.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration("the slow-call duration"));
        }
        if slow_rate.is_some() && self.slow_call.is_none() {
            return Err(ConfigError::SlowCallDurationMissing);
        }
        if self.backoff.is_nan() || self.backoff < 1.0 {
            return Err(ConfigError::BackoffBelowOne(self.backoff));
        }
        if failure_rate.is_none() && slow_rate.is_none() && self.consecutive_failures.is_none() {
            return Err(ConfigError::NoTripCondition);
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::ZeroConsecutiveFailures);
        }
        Ok(Config {
            name: self.name.clone(),
            window: self.window,
            minimum_calls: u64::from(minimum_calls.max(1)),
            failure_rate,
            slow_rate,
            slow_call: self.slow_call.map(nanos),
            consecutive_failures: self.consecutive_failures,
            open_wait: nanos(self.open_wait),
            backoff: self.backoff,
            max_open_wait: nanos(self.max_open_wait.max(self.open_wait)),
            probes: self.probes as u16,
            successes_to_close: self.successes_to_close as u16,
            max_half_open: self.max_half_open.map(nanos),
        })
    }

    pub(crate) fn current_name(&self) -> &str {
        &self.name
    }

    /// A copy of this builder under another name (keyed breakers name theirs per key).
    pub(crate) fn named(&self, name: String) -> Self
    where
        C: Clone,
    {
        let mut copy = self.clone();
        copy.name = Arc::from(name);
        copy
    }

    /// Validates the configuration and builds a closed breaker.
    pub fn build(self) -> Result<CircuitBreaker<C>, ConfigError> {
        self.build_reporting_as(None)
    }

    /// Builds one key's breaker of the keyed breaker `base`: its metrics go under `base`,
    /// with no series of its own.
    pub(crate) fn build_member(self, base: &str) -> Result<CircuitBreaker<C>, ConfigError> {
        self.build_reporting_as(Some(base))
    }

    /// The gauge of tracked keys of the keyed breaker `base`, when metrics are on.
    #[cfg(feature = "prometheus")]
    pub(crate) fn tracked_keys_gauge(&self, base: &str) -> Option<prometheus::IntGauge> {
        self.metrics.as_ref().map(|m| m.tracked_keys(base))
    }

    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))]
    fn build_reporting_as(self, member_of: Option<&str>) -> Result<CircuitBreaker<C>, ConfigError> {
        let config = self.validate()?;
        #[cfg(feature = "prometheus")]
        let metrics = self.metrics.as_ref().map(|m| match member_of {
            Some(base) => m.member_handles(base),
            None => m.handles(&config.name),
        });
        Ok(CircuitBreaker::from_parts(
            config,
            self.clock,
            self.listeners.into_boxed_slice(),
            #[cfg(feature = "prometheus")]
            metrics,
        ))
    }
}
