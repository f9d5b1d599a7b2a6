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

/// Series lines (not comments) in a scrape.
fn series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

/// The value of the one series that starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    let line = series(text)
        .into_iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no series {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A breaker per key over 100,000 distinct keys (some failing, some evicted) makes no more
/// series than over ten keys: nothing is labelled by key, and evicted keys leave nothing.
#[test]
fn a_keyed_breaker_over_100_000_keys_keeps_a_bounded_number_of_series() {
    let run = |keys: usize| {
        let registry = Registry::new();
        let metrics = BreakerMetrics::register(&registry).unwrap();
        let clock = ManualClock::new();
        let keyed = maas_breaker::KeyedCircuitBreaker::<String>::builder(
            CircuitBreaker::builder()
                .name("model")
                .consecutive_failures(1)
                .open_wait(Duration::from_millis(10))
                .metrics(&metrics)
                .clock(clock.clone()),
        )
        .max_keys(1_000)
        .idle_timeout(Duration::from_millis(5))
        .build()
        .unwrap();
        for i in 0..keys {
            let b = keyed.get(&format!("m-{i}"));
            let _ = b.call(|| if i % 7 == 0 { Err(()) } else { Ok(()) });
            if i % 100 == 99 {
                clock.advance(Duration::from_millis(20));
            }
        }
        (scrape(&registry), keyed.len())
    };
    let (small, _) = run(10);
    let (large, tracked) = run(100_000);
    let (small_n, large_n) = (series(&small).len(), series(&large).len());
    assert!(
        large_n <= small_n + 6,
        "{large_n} series for 100,000 keys against {small_n} for 10:\n{large}"
    );
    assert!(large_n < 40, "{large_n} series:\n{large}");
    assert!(!large.contains("m-"), "a key reached a label:\n{large}");
    // The census matches the keys held, and the counters add up over all keys.
    assert!(tracked <= 1_000, "{tracked} keys held");
    let held = value(&large, "maas_breaker_tracked_keys{breaker=\"model\"}");
    assert_eq!(held, tracked as f64);
    let by_state: f64 = series(&large)
        .into_iter()
        .filter(|l| l.starts_with("maas_breaker_keys{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // The overflow breaker is counted too.
    assert_eq!(by_state, held + 1.0, "{large}");
    let calls = value(
        &large,
        "maas_breaker_calls_total{breaker=\"model\",outcome=\"success\"}",
    ) + value(
        &large,
        "maas_breaker_calls_total{breaker=\"model\",outcome=\"failure\"}",
    );
    let rejected = large
        .lines()
        .find(|l| l.starts_with("maas_breaker_rejections_total{breaker=\"model\"}"))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap());
    assert_eq!(calls + rejected, 100_000.0);
}
