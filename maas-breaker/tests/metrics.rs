//! Prometheus metrics: state gauge, calls by outcome, rejections and transitions.

use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::metrics::BreakerMetrics;
use maas_breaker::{CircuitBreaker, Outcome};
use prometheus::{Encoder, Registry, TextEncoder};

fn scrape(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn breaker_activity_shows_in_the_registry() {
    let registry = Registry::new();
    let metrics = BreakerMetrics::register(&registry).unwrap();
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .name("billing")
        .consecutive_failures(2)
        .slow_calls(Duration::from_secs(1), 100.0)
        .open_wait(Duration::from_secs(5))
        .metrics(&metrics)
        .clock(clock.clone())
        .build()
        .unwrap();
    let _ = breaker.call(|| Ok::<_, ()>(()));
    breaker.try_acquire().unwrap().record(Outcome::Ignored);
    let _ = breaker.call(|| {
        clock.advance(Duration::from_secs(2));
        Err::<(), _>(())
    });
    let _ = breaker.call(|| Err::<(), _>(()));
    let _ = breaker.call(|| Ok::<_, ()>(())); // rejected: open

    let text = scrape(&registry);
    for line in [
        r#"maas_breaker_state{breaker="billing"} 1"#,
        r#"maas_breaker_calls_total{breaker="billing",outcome="success"} 1"#,
        r#"maas_breaker_calls_total{breaker="billing",outcome="failure"} 2"#,
        r#"maas_breaker_calls_total{breaker="billing",outcome="ignored"} 1"#,
        r#"maas_breaker_slow_calls_total{breaker="billing"} 1"#,
        r#"maas_breaker_rejections_total{breaker="billing"} 1"#,
        r#"maas_breaker_transitions_total{breaker="billing",from="closed",to="open"} 1"#,
        "# TYPE maas_breaker_state gauge",
        "# HELP maas_breaker_calls_total",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        BreakerMetrics::register(&registry).is_err(),
        "double registration is an error"
    );
}
