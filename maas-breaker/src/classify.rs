//! Deciding what a call's result means for the breaker.
//!
//! In the manner of tower-http's `classify`, classification is its own trait: the breaker
//! asks a [`Classify`] what each result was — a [`Success`](Outcome::Success), a
//! [`Failure`](Outcome::Failure) (counts toward tripping), or [`Ignored`](Outcome::Ignored)
//! (not counted at all, e.g. a caller's own bad request) — and, optionally, how long the
//! dependency asked to be left alone (a `Retry-After`).
//!
//! | classifier | `Ok(response)` | `Err(error)` |
//! |---|---|---|
//! | [`ErrorsAreFailures`] (default) | success | failure |
//! | [`ResultClassifier`] | failure when your predicate says so | ignored when your predicate says so, failure otherwise |
//! | any `Fn(&Result<T, E>) -> Classification` | you decide | you decide |
//! | `http::ServerErrorsAsFailures` (feature `http`) | 5xx failure (with `Retry-After`), else success | failure |
//!
//! Latency is not the classifier's business: the breaker measures each call and counts it
//! as slow when it exceeds the configured threshold.

use std::time::Duration;

/// What one call's result means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The dependency did its job.
    Success,
    /// The dependency failed; counts toward the failure rate and consecutive failures.
    Failure,
    /// Neither: not recorded (a half-open probe permit is simply returned).
    Ignored,
}

/// An [`Outcome`], plus how long the dependency asked not to be called (from a
/// `Retry-After`): when the call trips the breaker, it stays open at least that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// The outcome.
    pub outcome: Outcome,
    /// The dependency's requested pause, if it gave one.
    pub retry_after: Option<Duration>,
}

impl Classification {
    /// A success.
    pub const SUCCESS: Classification = Classification {
        outcome: Outcome::Success,
        retry_after: None,
    };
    /// A failure.
    pub const FAILURE: Classification = Classification {
        outcome: Outcome::Failure,
        retry_after: None,
    };
    /// Not counted.
    pub const IGNORED: Classification = Classification {
        outcome: Outcome::Ignored,
        retry_after: None,
    };

    /// Adds the dependency's requested pause.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }
}

impl From<Outcome> for Classification {
    fn from(outcome: Outcome) -> Self {
        Classification {
            outcome,
            retry_after: None,
        }
    }
}

/// Classifies a call's result.
pub trait Classify<T, E>: Send + Sync + 'static {
    /// What `result` means to the breaker.
    fn classify(&self, result: &Result<T, E>) -> Classification;
}

impl<T, E, F, C> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> C + Send + Sync + 'static,
    C: Into<Classification>,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Classification {
        self(result).into()
    }
}

/// The default: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<T, E> Classify<T, E> for ErrorsAreFailures {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Classification {
        match result {
            Ok(_) => Classification::SUCCESS,
            Err(_) => Classification::FAILURE,
        }
    }
}

/// Errors are failures unless `ignore` says otherwise; responses are successes unless
/// `failure` says otherwise.
///
/// ```
/// use maas_breaker::classify::{Classify, Outcome, ResultClassifier};
///
/// // A 404 from a model registry is the caller's problem, not the registry's;
/// // an empty answer is the registry failing.
/// let classify = ResultClassifier::new()
///     .ignore_errors(|e: &u16| *e == 404)
///     .failure_responses(|body: &String| body.is_empty());
/// assert_eq!(classify.classify(&Err::<String, u16>(404)).outcome, Outcome::Ignored);
/// assert_eq!(classify.classify(&Err::<String, u16>(500)).outcome, Outcome::Failure);
/// assert_eq!(classify.classify(&Ok::<String, u16>(String::new())).outcome, Outcome::Failure);
/// assert_eq!(classify.classify(&Ok::<String, u16>("ok".into())).outcome, Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ResultClassifier<R = Never, I = Never> {
    failure: R,
    ignore: I,
}

/// A predicate that is never true.
#[derive(Debug, Clone, Copy, Default)]
pub struct Never;

/// A yes/no question about a value.
pub trait Predicate<V>: Send + Sync + 'static {
    /// The answer for `value`.
    fn test(&self, value: &V) -> bool;
}

impl<V> Predicate<V> for Never {
    #[inline]
    fn test(&self, _: &V) -> bool {
        false
    }
}

impl<V, F: Fn(&V) -> bool + Send + Sync + 'static> Predicate<V> for F {
    #[inline]
    fn test(&self, value: &V) -> bool {
        self(value)
    }
}

impl ResultClassifier {
    /// Errors are failures, responses successes — until configured otherwise.
    pub fn new() -> Self {
        ResultClassifier::default()
    }
}

impl<R, I> ResultClassifier<R, I> {
    /// Responses for which `failure` is true count as failures.
    pub fn failure_responses<R2>(self, failure: R2) -> ResultClassifier<R2, I> {
        ResultClassifier {
            failure,
            ignore: self.ignore,
        }
    }

    /// Errors for which `ignore` is true are not counted.
    pub fn ignore_errors<I2>(self, ignore: I2) -> ResultClassifier<R, I2> {
        ResultClassifier {
            failure: self.failure,
            ignore,
        }
    }
}

impl<T, E, R: Predicate<T>, I: Predicate<E>> Classify<T, E> for ResultClassifier<R, I> {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Classification {
        match result {
            Ok(r) if self.failure.test(r) => Classification::FAILURE,
            Ok(_) => Classification::SUCCESS,
            Err(e) if self.ignore.test(e) => Classification::IGNORED,
            Err(_) => Classification::FAILURE,
        }
    }
}
