//! Criterion benchmarks for the `maas` crates, and the few helpers they share.
//!
//! Every benchmark in `benches/` runs a `maas` crate and the crate a Rust engineer would
//! otherwise pick (its *anchor*) side by side in one run, so their figures are comparable.
//! Run one with `cargo bench -p maas-benches --bench <name>`; results and the machine they
//! were measured on are recorded in `docs/benchmarks.md`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tower::{Service, ServiceExt};

/// Runs `op` `iters` times on each of two threads started together; returns the wall time,
/// so criterion reports the time per operation per thread under contention.
pub fn two_threads<F: Fn() -> bool + Send + Sync + 'static>(op: Arc<F>, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (op, barrier) = (op.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    black_box(op());
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().expect("benchmark thread");
    }
    start.elapsed()
}

/// One request through a service that is ready at once and answers at once: `ready()` then
/// `call()`, each polled once. Panics if either would have to wait.
pub fn once<S: Service<R>, R>(svc: &mut S, request: R) -> bool {
    let ready = svc.ready().now_or_never().expect("ready at once").is_ok();
    let done = svc
        .call(request)
        .now_or_never()
        .expect("answers at once")
        .is_ok();
    ready && done
}
