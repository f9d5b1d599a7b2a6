//! maas-breaker against failsafe and recloser, in one run: the cost a closed breaker adds
//! to a call that succeeds.
//!
//! Each breaker runs with its defaults (maas: the last 100 calls, 50 % failure rate);
//! the call is a closure returning `Ok`. The target is that maas adds no more over `bare`
//! than failsafe does.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use maas_benches::{once, two_threads};
use maas_breaker::{CircuitBreaker, CircuitBreakerLayer};
use tower::{Layer, service_fn};

#[inline(never)]
fn work(n: u64) -> Result<u64, ()> {
    Ok(black_box(n))
}

fn closed_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker/closed_call");
    g.bench_function("bare", |b| b.iter(|| black_box(work(1))));
    let maas = CircuitBreaker::builder().build().unwrap();
    g.bench_function("maas", |b| {
        b.iter(|| black_box(maas.call(|| work(1)).is_ok()))
    });
    let failsafe = failsafe::Config::new().build();
    g.bench_function("failsafe", |b| {
        b.iter(|| black_box(failsafe.call(|| work(1)).is_ok()))
    });
    let recloser = recloser::Recloser::custom().build();
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(recloser.call(|| work(1)).is_ok()))
    });
    g.finish();
}

/// Two threads calling through one breaker; wall time per call per thread.
fn closed_call_2_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker/closed_call_2_threads");
    let maas = CircuitBreaker::builder().build().unwrap();
    let maas = Arc::new(move || maas.call(|| work(1)).is_ok());
    g.bench_function("maas", |b| {
        b.iter_custom(|iters| two_threads(maas.clone(), iters))
    });
    let recloser = recloser::Recloser::custom().build();
    let recloser = Arc::new(move || recloser.call(|| work(1)).is_ok());
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| two_threads(recloser.clone(), iters))
    });
    g.finish();
}

fn tower_layer(c: &mut Criterion) {
    let inner = service_fn(|n: u64| async move { work(n) });
    let mut g = c.benchmark_group("breaker/tower_layer");
    let mut bare = inner;
    g.bench_function("bare", |b| b.iter(|| black_box(once(&mut bare, 1))));
    let mut maas =
        CircuitBreakerLayer::new(CircuitBreaker::builder().build().unwrap()).layer(inner);
    g.bench_function("maas", |b| b.iter(|| black_box(once(&mut maas, 1))));
    g.finish();
}

criterion_group!(benches, closed_call, closed_call_2_threads, tower_layer);
criterion_main!(benches);
