//! maas-ratelimit against governor and tower's RateLimit, in one run.
//!
//! Every check is on the allowed path (quotas far above what the loop can spend), so the
//! figures are the cost of a decision, not of waiting. maas uses its `CoarseClock` (one
//! atomic load per reading) and governor its default quanta clock (TSC); the
//! `ratelimit/clock` group shows what maas costs with the exact `MonotonicClock` instead.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use maas_benches::{once, two_threads};
use maas_ratelimit::clock::{CoarseClock, MonotonicClock};
use maas_ratelimit::{
    FixedWindow, KeyedLimiter, Quota, RateLimitLayer, SlidingWindow, TokenBucket,
};
use tower::{Layer, service_fn};

const HUGE: u64 = 1_000_000_000;

fn maas_bucket() -> TokenBucket<CoarseClock> {
    TokenBucket::builder(Quota::per_second(HUGE))
        .clock(CoarseClock::new())
        .build()
        .unwrap()
}

fn governor_direct() -> governor::DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::MAX))
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit/check");
    let maas = maas_bucket();
    g.bench_function("maas_token_bucket", |b| {
        b.iter(|| black_box(maas.check().is_allowed()))
    });
    let gov = governor_direct();
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check().is_ok())));
    g.finish();

    let mut g = c.benchmark_group("ratelimit/clock");
    let exact = TokenBucket::builder(Quota::per_second(HUGE))
        .clock(MonotonicClock::new())
        .build()
        .unwrap();
    g.bench_function("maas_token_bucket_monotonic", |b| {
        b.iter(|| black_box(exact.check().is_allowed()))
    });
    g.finish();
}

fn keyed(c: &mut Criterion) {
    const KEYS: u64 = 1_000;
    let mut g = c.benchmark_group("ratelimit/keyed_1k");
    let maas = KeyedLimiter::token_bucket(Quota::per_second(HUGE))
        .clock(CoarseClock::new())
        .build::<u64>()
        .unwrap();
    let gov = governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::MAX));
    for k in 0..KEYS {
        maas.check(&k);
        let _ = gov.check_key(&k);
    }
    let mut k = 0u64;
    g.bench_function("maas", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(maas.check(&k).is_allowed())
        })
    });
    let mut k = 0u64;
    g.bench_function("governor", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(gov.check_key(&k).is_ok())
        })
    });
    g.finish();
}

fn windows(c: &mut Criterion) {
    let sliding = SlidingWindow::builder(Quota::per_second(u64::from(u32::MAX)))
        .clock(CoarseClock::new())
        .build()
        .unwrap();
    c.benchmark_group("ratelimit/sliding_window")
        .bench_function("maas", |b| {
            b.iter(|| black_box(sliding.check().is_allowed()))
        });
    let fixed = FixedWindow::builder(Quota::per_second(u64::from(u32::MAX)))
        .clock(CoarseClock::new())
        .build()
        .unwrap();
    c.benchmark_group("ratelimit/fixed_window")
        .bench_function("maas", |b| b.iter(|| black_box(fixed.check().is_allowed())));
}

fn tower_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    let inner = service_fn(|n: u64| async move { Ok::<_, std::convert::Infallible>(n) });
    let mut g = c.benchmark_group("ratelimit/tower_layer");
    let mut bare = inner;
    g.bench_function("bare", |b| b.iter(|| black_box(once(&mut bare, 1))));
    let mut maas = RateLimitLayer::new(maas_bucket()).layer(inner);
    g.bench_function("maas", |b| b.iter(|| black_box(once(&mut maas, 1))));
    let mut tower_rl = tower::limit::RateLimitLayer::new(HUGE, Duration::from_secs(1)).layer(inner);
    g.bench_function("tower_rate_limit", |b| {
        b.iter(|| black_box(once(&mut tower_rl, 1)))
    });
    g.finish();
}

/// Two threads checking one limiter at once; reports wall time per check per thread.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit/contended_2_threads");
    let maas = maas_bucket();
    let maas = Arc::new(move || maas.check().is_allowed());
    g.bench_function("maas_token_bucket", |b| {
        b.iter_custom(|iters| two_threads(maas.clone(), iters))
    });
    let gov = governor_direct();
    let gov = Arc::new(move || gov.check().is_ok());
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| two_threads(gov.clone(), iters))
    });
    g.finish();
}

criterion_group!(benches, check, keyed, windows, tower_layer, contended);
criterion_main!(benches);
