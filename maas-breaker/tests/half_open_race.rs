//! Many tasks race through a half-open breaker, some cancelled mid-call: never more than
//! the permitted number of probes run at once, and no cancelled probe leaks its slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use maas_breaker::clock::ManualClock;
use maas_breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

const PROBES: usize = 3;

/// A call in progress: counted from its first poll until it returns or is dropped.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn enter(running: &Arc<AtomicUsize>, peak: &AtomicUsize) -> Self {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        Running(running.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

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
            // Counts the call as running until it finishes or is dropped (cancelled).
            let _running = Running::enter(&running, &peak);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::convert::Infallible>(())
        }
    }));

    let passed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..1_000u64 {
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

/// While a cancelled probe's inner call is being dropped, its slot is still taken: no other
/// probe can start beside it. (Before, the slot was given back first, and a 1,000-task race
/// briefly saw 4 probes run with 3 permitted.)
#[tokio::test]
async fn a_cancelled_probe_holds_its_slot_until_its_call_is_gone() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_wait(Duration::from_secs(1))
        .half_open(1, 1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let _ = breaker.call(|| Err::<(), _>("trip"));
    clock.advance(Duration::from_secs(1));

    /// Tries to take a probe slot while the call it belongs to is dropped.
    struct Probe(CircuitBreaker<ManualClock>, Arc<AtomicUsize>);
    impl Drop for Probe {
        fn drop(&mut self) {
            if self.0.try_acquire().is_ok() {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    let second_probe = Arc::new(AtomicUsize::new(0));
    let (b, s) = (breaker.clone(), second_probe.clone());
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(move |(): ()| {
        let probe = Probe(b.clone(), s.clone());
        async move {
            let _probe = probe;
            std::future::pending::<Result<(), std::convert::Infallible>>().await
        }
    }));
    let call = svc.ready().await.unwrap().call(());
    assert!(
        tokio::time::timeout(Duration::from_millis(5), call)
            .await
            .is_err()
    );
    assert_eq!(
        second_probe.load(Ordering::SeqCst),
        0,
        "a second probe started"
    );
    // And once it is gone, the slot is back.
    assert!(breaker.try_acquire().is_ok());
}
