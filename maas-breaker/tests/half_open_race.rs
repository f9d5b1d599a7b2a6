//! Many tasks race through a half-open breaker, some cancelled mid-call: never more than
//! the permitted number of probes run at once, and no cancelled probe leaks its slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const PROBES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_n_probes_and_no_leaks() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_wait(Duration::from_secs(1))
        .half_open(PROBES as u32, 60_000) // stays half-open for the whole test
        .max_half_open(None)
        .clock(clock.clone())
        .build()
        .unwrap();
    let _ = breaker.call(|| Err::<(), _>("trip"));
    clock.advance(Duration::from_secs(1));

    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(move |ms: u64| {
        let (running, peak) = (r.clone(), p.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(())
        }
    }));

    let passed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let mut svc = svc.clone();
        let passed = passed.clone();
        tasks.push(tokio::spawn(async move {
            let call = async {
                let result = svc.ready().await.unwrap().call(1 + i % 7).await;
                if result.is_ok() {
                    passed.fetch_add(1, Ordering::SeqCst);
                }
            };
            if i % 3 == 0 {
                // Cancel a third of the calls part-way through.
                let _ = tokio::time::timeout(Duration::from_millis(2), call).await;
            } else {
                call.await;
            }
        }));
        if i % 16 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Probes that kept going after their caller gave up are finished by now.
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert!(
        peak.load(Ordering::SeqCst) <= PROBES,
        "{} probes ran at once",
        peak.load(Ordering::SeqCst)
    );
    assert!(passed.load(Ordering::SeqCst) > 0, "no probe ever passed");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // Every slot came back: exactly PROBES permits can be taken again.
    let permits: Vec<_> = (0..PROBES)
        .map(|_| breaker.try_acquire().expect("a leaked probe slot"))
        .collect();
    assert!(breaker.try_acquire().is_err());
    drop(permits);
}
