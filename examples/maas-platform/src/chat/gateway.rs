//! The primary backend behind the `inference` circuit breaker, with the fallback model in
//! front: `FallbackLayer` → `CircuitBreakerLayer` → the backend. A call counts as a success
//! once the first token arrives, so a backend that fails or stalls before answering opens
//! the breaker; after the first token there is no going back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use maas_breaker::{
    BreakerError, CircuitBreaker, CircuitBreakerLayer, FallbackLayer, Window, fallback_fn,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use super::backend::{Backend, BackendError, Completion, Simulated, Tokens};

/// A completion to answer: the model as the caller named it, and what its backend gets.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The model id the caller asked for.
    pub id: String,
    /// The completion for the backend.
    pub completion: Completion,
}

/// An answer under way: which model answers, why it is degraded if it is, its first token
/// (already received) and the rest.
pub struct Answer {
    /// The model that answers: the one asked for, or the fallback.
    pub model: String,
    /// Why the fallback answers (`None`: the model asked for does).
    pub degraded: Option<String>,
    /// The first token (`None` for an empty answer).
    pub first: Option<String>,
    /// The tokens after it.
    pub rest: Tokens,
}

/// The backends and the breaker between them.
#[derive(Clone)]
pub struct Gateway {
    breaker: CircuitBreaker,
    down: Arc<AtomicBool>,
    fallback_model: String,
    service: BoxCloneSyncService<Ask, Answer, BreakerError<BackendError>>,
}

/// Starts `completion` on `backend` and waits for its first token.
async fn first_token(
    backend: &dyn Backend,
    completion: Completion,
) -> Result<(Option<String>, Tokens), BackendError> {
    let mut tokens = backend.start(completion).await?;
    match tokens.next().await {
        Some(Ok(first)) => Ok((Some(first), tokens)),
        Some(Err(e)) => Err(e),
        None => Ok((None, tokens)),
    }
}

impl Gateway {
    /// `primary` behind a breaker named `inference` (a window of 10 calls, open at 50 %
    /// failures, for `open_for`), with `fallback` answering as `fallback_model`.
    pub fn new(
        primary: Arc<dyn Backend>,
        fallback: Simulated,
        fallback_model: String,
        open_for: Duration,
        metrics: &maas_breaker::metrics::BreakerMetrics,
    ) -> Result<Gateway, maas_breaker::ConfigError> {
        let breaker = CircuitBreaker::builder()
            .name("inference")
            .window(Window::Count(10))
            .minimum_calls(4)
            .failure_rate(50.0)
            .open_wait(open_for)
            .metrics(metrics)
            .build()?;
        let down = Arc::new(AtomicBool::new(false));
        let backend = {
            let down = down.clone();
            tower::service_fn(move |ask: Ask| {
                let (primary, down) = (primary.clone(), down.load(Ordering::Acquire));
                async move {
                    if down {
                        return Err(BackendError::MarkedDown);
                    }
                    let (first, rest) = first_token(&*primary, ask.completion).await?;
                    Ok(Answer {
                        model: ask.id,
                        degraded: None,
                        first,
                        rest,
                    })
                }
            })
        };
        let fallback = {
            let model = fallback_model.clone();
            fallback_fn(move |ask: Ask, e: BreakerError<BackendError>| {
                let (fallback, model) = (fallback.clone(), model.clone());
                async move {
                    let reason = match &e {
                        BreakerError::Rejected(_) => "circuit open".to_owned(),
                        BreakerError::Service(err) => err.to_string(),
                    };
                    let completion = Completion {
                        model: model.clone(),
                        ..ask.completion
                    };
                    let (first, rest) = first_token(&fallback, completion)
                        .await
                        .map_err(BreakerError::Service)?;
                    Ok::<_, BreakerError<BackendError>>(Answer {
                        model,
                        degraded: Some(reason),
                        first,
                        rest,
                    })
                }
            })
        };
        let service = ServiceBuilder::new()
            .layer(
                FallbackLayer::new(|ask: &Ask| ask.clone(), fallback)
                    .when(|_: &BreakerError<BackendError>| true),
            )
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .service(backend);
        Ok(Gateway {
            breaker,
            down,
            fallback_model,
            service: BoxCloneSyncService::new(service),
        })
    }

    /// The model that answers when the primary cannot.
    pub fn fallback_model(&self) -> &str {
        &self.fallback_model
    }

    /// Marks the primary backend up or down (an operator's switch, and the demo's).
    pub fn set_healthy(&self, healthy: bool) {
        self.down.store(!healthy, Ordering::Release);
    }

    /// The breaker's state, for the admin API (`closed`, `open`, `half_open`, ...).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state().as_str()
    }

    /// Asks the primary, or the fallback when the breaker is open or the primary fails
    /// before its first token.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call; the breaker records nothing for it.
    pub async fn ask(&self, ask: Ask) -> Result<Answer, BreakerError<BackendError>> {
        self.service.clone().oneshot(ask).await
    }
}
