//! Inference behind a circuit breaker, with degradation.
//!
//! The model backend is simulated: it answers in a few milliseconds while healthy and fails
//! while an operator has marked it down (`PUT /admin/backend {"healthy": false}`), which is
//! how the demo shows the breaker at work. When the breaker is open — or a call fails — the
//! platform degrades instead of failing: a small fallback model answers and the response
//! says `"degraded": true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use maas_breaker::{
    BreakerError, CircuitBreaker, CircuitBreakerLayer, FallbackLayer, Window, fallback_fn,
};
use serde::Serialize;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The simulated backend's failure.
#[derive(Debug, thiserror::Error)]
#[error("model backend unavailable")]
pub struct BackendDown;

/// An inference answer.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The model asked.
    pub model: String,
    /// Its output.
    pub output: String,
    /// True when the fallback model answered.
    pub degraded: bool,
    /// Why, when degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A request to the backend: model and prompt.
type Ask = (String, String);

/// The backend and the breaker in front of it, as one tower service:
/// `FallbackLayer` → `CircuitBreakerLayer` → the backend.
#[derive(Clone)]
pub struct Inference {
    breaker: CircuitBreaker,
    healthy: Arc<AtomicBool>,
    service: BoxCloneSyncService<Ask, Answer, BreakerError<BackendDown>>,
}

impl Inference {
    /// A breaker named `inference` over a count window of 10 calls, opening at 50 % failures
    /// and staying open `open_for` before letting probes through.
    pub fn new(
        open_for: Duration,
        metrics: &maas_breaker::metrics::BreakerMetrics,
    ) -> Result<Inference, maas_breaker::ConfigError> {
        let breaker = CircuitBreaker::builder()
            .name("inference")
            .window(Window::Count(10))
            .minimum_calls(4)
            .failure_rate(50.0)
            .open_wait(open_for)
            .metrics(metrics)
            .build()?;
        let healthy = Arc::new(AtomicBool::new(true));
        let backend = {
            let healthy = healthy.clone();
            tower::service_fn(move |(model, prompt): Ask| {
                let healthy = healthy.load(Ordering::Acquire);
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if healthy {
                        Ok(Answer {
                            output: format!(
                                "{model} says: {}",
                                prompt.chars().rev().collect::<String>()
                            ),
                            model,
                            degraded: false,
                            reason: None,
                        })
                    } else {
                        Err(BackendDown)
                    }
                }
            })
        };
        // Degrade on a refusal and on a backend failure alike: a small fallback model
        // answers, and the answer says why.
        let fallback = fallback_fn(
            |(model, prompt): Ask, e: BreakerError<BackendDown>| async move {
                Ok::<_, BreakerError<BackendDown>>(degraded(model, &prompt, &e))
            },
        );
        let service = ServiceBuilder::new()
            .layer(
                FallbackLayer::new(|ask: &Ask| ask.clone(), fallback)
                    .when(|_: &BreakerError<BackendDown>| true),
            )
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .service(backend);
        Ok(Inference {
            breaker,
            healthy,
            service: BoxCloneSyncService::new(service),
        })
    }

    /// Marks the simulated backend up or down.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// The breaker's state, for the admin API (`closed`, `open`, `half_open`, ...).
    pub fn breaker_state(&self) -> &'static str {
        self.breaker.state().as_str()
    }

    /// Answers `prompt` with `model`, or degrades.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call; the breaker records nothing for it.
    pub async fn infer(&self, model: &str, prompt: &str) -> Answer {
        match self
            .service
            .clone()
            .oneshot((model.to_owned(), prompt.to_owned()))
            .await
        {
            Ok(answer) => answer,
            // The fallback answers every error; this only keeps the function total.
            Err(e) => degraded(model.to_owned(), prompt, &e),
        }
    }
}

/// The fallback model's answer, saying why it answered.
fn degraded(model: String, prompt: &str, e: &BreakerError<BackendDown>) -> Answer {
    let reason = match e {
        BreakerError::Rejected(_) => "circuit open".to_owned(),
        BreakerError::Service(err) => err.to_string(),
    };
    Answer {
        model,
        output: format!("(fallback model) {prompt}"),
        degraded: true,
        reason: Some(reason),
    }
}
