//! Keyed breakers: one per key, a bound on keys, idle eviction that keeps live state.

use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::{
    BreakerState, CircuitBreaker, CircuitBreakerLayer, ConfigError, KeyedCircuitBreaker,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn keyed(clock: &ManualClock, max_keys: usize) -> KeyedCircuitBreaker<String, ManualClock> {
    KeyedCircuitBreaker::<String>::builder(
        CircuitBreaker::builder()
            .name("model")
            .consecutive_failures(1)
            .open_wait(Duration::from_secs(30))
            .clock(clock.clone()),
    )
    .max_keys(max_keys)
    .idle_timeout(Duration::from_secs(60))
    .build()
    .unwrap()
}

#[test]
fn keys_have_separate_breakers() {
    let clock = ManualClock::new();
    let k = keyed(&clock, 10);
    let _ = k.get("llama").call(|| Err::<(), _>(()));
    assert_eq!(k.get("llama").state(), BreakerState::Open);
    assert_eq!(k.get("mistral").state(), BreakerState::Closed);
    assert_eq!(k.len(), 2);
}

#[test]
fn the_bound_holds_and_overflow_takes_new_keys() {
    let clock = ManualClock::new();
    let k = keyed(&clock, 3);
    for i in 0..10 {
        k.get(&format!("m{i}"));
        assert!(k.len() <= 3);
    }
    assert_eq!(k.get("m9").name(), "model:overflow");
}

#[test]
fn idle_breakers_are_forgotten_once_nothing_is_worth_keeping() {
    let clock = ManualClock::new();
    let k = keyed(&clock, 10);
    k.get("quiet");
    let _ = k.get("broken").call(|| Err::<(), _>(()));
    clock.advance(Duration::from_secs(20));
    assert_eq!(k.evict_idle(), 0, "nothing idle for 60 s yet");
    clock.advance(Duration::from_secs(41));
    // Both idle for over 60 s; the open one's 30 s wait is over, so it holds nothing either.
    assert_eq!(k.evict_idle(), 2);
    assert!(k.is_empty());
    assert_eq!(k.get("broken").state(), BreakerState::Closed);
}

#[test]
fn an_open_breaker_within_its_wait_is_never_evicted() {
    let clock = ManualClock::new();
    let k = KeyedCircuitBreaker::<String>::builder(
        CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_wait(Duration::from_secs(600))
            .clock(clock.clone()),
    )
    .max_keys(1)
    .idle_timeout(Duration::from_secs(1))
    .build()
    .unwrap();
    let _ = k.get("broken").call(|| Err::<(), _>(()));
    clock.advance(Duration::from_secs(10));
    assert_eq!(k.evict_idle(), 0);
    // A new key cannot evict it: it goes to the overflow breaker.
    assert!(k.get("other").name().ends_with(":overflow"));
    assert_eq!(k.get("broken").state(), BreakerState::Open);
}

#[tokio::test]
async fn keyed_layer_isolates_keys() {
    let clock = ManualClock::new();
    let svc = CircuitBreakerLayer::new(keyed(&clock, 10))
        .key(|req: &(String, bool)| req.0.clone())
        .layer(service_fn(|(_, ok): (String, bool)| async move {
            if ok { Ok(()) } else { Err("boom") }
        }));
    let call = |key: &str, ok: bool| {
        let mut svc = svc.clone();
        let req = (key.to_owned(), ok);
        async move { svc.ready().await.unwrap().call(req).await }
    };
    assert!(call("a", false).await.unwrap_err().as_rejected().is_none());
    assert!(call("a", true).await.unwrap_err().as_rejected().is_some());
    assert!(call("b", true).await.is_ok());
}

#[test]
fn zero_keys_is_a_config_error() {
    let e = KeyedCircuitBreaker::<String>::builder(CircuitBreaker::builder())
        .max_keys(0)
        .build();
    assert!(matches!(e, Err(ConfigError::ZeroMaxKeys)));
}
