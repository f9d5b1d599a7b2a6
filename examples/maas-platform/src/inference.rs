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

use maas_breaker::{BreakerError, CircuitBreaker, Window};
use serde::Serialize;

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

/// The backend and the breaker in front of it.
#[derive(Clone)]
pub struct Inference {
    breaker: CircuitBreaker,
    healthy: Arc<AtomicBool>,
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
        Ok(Inference {
            breaker,
            healthy: Arc::new(AtomicBool::new(true)),
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
    pub async fn infer(&self, model: &str, prompt: &str) -> Answer {
        let healthy = self.healthy.load(Ordering::Acquire);
        let call = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if healthy {
                Ok(format!(
                    "{model} says: {}",
                    prompt.chars().rev().collect::<String>()
                ))
            } else {
                Err(BackendDown)
            }
        };
        match self.breaker.call_async(call).await {
            Ok(output) => Answer {
                model: model.to_owned(),
                output,
                degraded: false,
                reason: None,
            },
            Err(e) => {
                let reason = match &e {
                    BreakerError::Rejected(_) => "circuit open".to_owned(),
                    BreakerError::Service(err) => err.to_string(),
                };
                Answer {
                    model: model.to_owned(),
                    output: format!("(fallback model) {prompt}"),
                    degraded: true,
                    reason: Some(reason),
                }
            }
        }
    }
}
