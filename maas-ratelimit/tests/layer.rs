//! The tower layer: rejection errors, weighted costs, shared state across clones, and
//! fair waiting.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maas_ratelimit::{KeyedLimiter, Quota, RateLimitError, RateLimitLayer, TokenBucket};
use tokio::sync::Mutex;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type Echo = Result<u64, Infallible>;

async fn call<S: Service<u64, Response = u64, Error = RateLimitError<Infallible>>>(
    svc: &mut S,
    req: u64,
) -> Result<u64, RateLimitError<Infallible>> {
    svc.ready().await?.call(req).await
}

#[tokio::test]
async fn rejection_carries_retry_after_and_skips_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let limiter = TokenBucket::builder(Quota::per_second(2)).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter))
        .service(service_fn(move |n: u64| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Echo::Ok(n) }
        }));
    assert_eq!(call(&mut svc, 1).await.unwrap(), 1);
    assert_eq!(call(&mut svc, 2).await.unwrap(), 2);
    let err = call(&mut svc, 3).await.unwrap_err();
    let limited = err.as_limited().expect("a rate-limit rejection");
    let wait = limited.retry_after().expect("retry-after");
    assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "rejected request reached the inner service"
    );
    assert!(err.to_string().starts_with("rate limited: retry after"));
}

#[tokio::test]
async fn clones_and_services_from_one_layer_share_one_limit() {
    let layer = RateLimitLayer::new(TokenBucket::builder(Quota::per_minute(10)).build().unwrap());
    let inner = service_fn(|n: u64| async move { Echo::Ok(n) });
    let mut services = vec![layer.layer(inner), layer.clone().layer(inner)];
    let extra = services[0].clone();
    services.push(extra);
    let mut passed = 0;
    for i in 0..30 {
        if call(&mut services[i % 3], i as u64).await.is_ok() {
            passed += 1;
        }
    }
    assert_eq!(passed, 10);
}

#[tokio::test]
async fn weighted_costs_and_per_key_limits() {
    let limiter = KeyedLimiter::token_bucket(Quota::per_minute(100))
        .build::<u64>()
        .unwrap();
    // Request n: key n % 2, cost n.
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .key(|n: &u64| n % 2)
                .cost(|n: &u64| *n)
                .build(),
        )
        .service(service_fn(|n: u64| async move { Echo::Ok(n) }));
    assert!(call(&mut svc, 60).await.is_ok()); // key 0: 40 left
    assert!(call(&mut svc, 50).await.is_err()); // key 0: too much
    assert!(call(&mut svc, 40).await.is_ok()); // key 0: 0 left
    assert!(call(&mut svc, 99).await.is_ok()); // key 1: own bucket
    let err = call(&mut svc, 102).await.unwrap_err();
    assert_eq!(
        err.as_limited().unwrap().retry_after(),
        None,
        "cost above the limit"
    );
}

#[tokio::test]
async fn wait_mode_serves_waiters_in_arrival_order_at_the_rate() {
    // 20 per second, no burst beyond 1: one request every 50 ms.
    let limiter = TokenBucket::builder(Quota::per_second(20).with_burst(1))
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::from_secs(2))
                .build(),
        )
        .service(service_fn(move |n: u64| {
            let seen = seen.clone();
            async move {
                seen.lock().await.push(n);
                Echo::Ok(n)
            }
        }));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..8u64 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move { call(&mut svc, n).await }));
        // Make arrival order unambiguous.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    let elapsed = start.elapsed();
    assert_eq!(
        *order.lock().await,
        (0..8).collect::<Vec<_>>(),
        "served out of order"
    );
    // 7 waits of 50 ms after the first request.
    assert!(
        elapsed >= Duration::from_millis(340),
        "too fast: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "too slow: {elapsed:?}"
    );
}

#[tokio::test]
async fn wait_mode_rejects_at_once_what_could_not_pass_in_time() {
    let limiter = TokenBucket::builder(Quota::per_second(1)).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::from_millis(100))
                .build(),
        )
        .service(service_fn(|n: u64| async move { Echo::Ok(n) }));
    assert!(call(&mut svc, 1).await.is_ok());
    let start = Instant::now();
    let err = call(&mut svc, 2).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "waited in vain"
    );
    assert!(err.as_limited().unwrap().retry_after().unwrap() > Duration::from_millis(100));
}

#[tokio::test]
async fn a_cancelled_waiter_frees_its_place() {
    let limiter = TokenBucket::builder(Quota::per_second(10).with_burst(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::from_secs(1))
                .build(),
        )
        .service(service_fn(|n: u64| async move { Echo::Ok(n) }));
    let mut first = svc.clone();
    assert!(call(&mut first, 0).await.is_ok());
    // A waiter that gives up after 20 ms (before its turn at ~100 ms).
    let mut quitter = svc.clone();
    let gave_up = tokio::time::timeout(Duration::from_millis(20), call(&mut quitter, 1)).await;
    assert!(gave_up.is_err());
    // The next request is not stuck behind the dropped waiter.
    let mut next = svc.clone();
    let start = Instant::now();
    assert!(call(&mut next, 2).await.is_ok());
    assert!(start.elapsed() < Duration::from_millis(300));
}

/// Spawns `n` calls through `svc`, 2 ms apart so their order is unambiguous.
async fn queue_up<S>(
    svc: &S,
    n: u64,
) -> Vec<tokio::task::JoinHandle<Result<u64, RateLimitError<Infallible>>>>
where
    S: Service<u64, Response = u64, Error = RateLimitError<Infallible>> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move { call(&mut svc, i).await }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tasks
}

/// Five calls while the queue is full are all refused: the fastest within 1 ms (the
/// rejection does not wait at all; the minimum keeps a preempted thread on a busy CI
/// machine from failing the test), none after more than 50 ms.
async fn assert_rejected_at_once<S>(svc: &S)
where
    S: Service<u64, Response = u64, Error = RateLimitError<Infallible>> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut fastest = Duration::MAX;
    for i in 0..5 {
        let start = Instant::now();
        let err = call(&mut svc.clone(), 100 + i).await.unwrap_err();
        let took = start.elapsed();
        assert!(err.as_limited().is_some());
        assert!(
            took < Duration::from_millis(50),
            "rejected only after {took:?}"
        );
        fastest = fastest.min(took);
    }
    assert!(
        fastest < Duration::from_millis(1),
        "rejected after {fastest:?} at best"
    );
}

#[tokio::test]
async fn wait_mode_rejects_at_once_a_request_that_would_wait_too_long_behind_the_queue() {
    // 1 per 200 ms, so each waiter behind the first waits 200 ms more; the maximum is 500 ms.
    let limiter = TokenBucket::builder(Quota::new(1, Duration::from_millis(200)))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::from_millis(500))
                .build(),
        )
        .service(service_fn(|n: u64| async move { Echo::Ok(n) }));
    // One passes, two wait (~200 and ~400 ms).
    let queued = queue_up(&svc, 3).await;
    // Behind them this one would wait ~600 ms: before, it waited the whole 500 ms and was
    // then rejected; now it is rejected on arrival.
    assert_rejected_at_once(&svc).await;
    for t in queued {
        assert!(
            t.await.unwrap().is_ok(),
            "a request that fit in the maximum was rejected"
        );
    }
}

#[tokio::test]
async fn wait_mode_bounds_its_waiters_and_rejects_the_excess_at_once() {
    let limiter = TokenBucket::builder(Quota::new(1, Duration::from_millis(100)))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::builder(limiter)
                .wait_up_to(Duration::from_secs(10))
                .max_waiters(2)
                .build(),
        )
        .service(service_fn(|n: u64| async move { Echo::Ok(n) }));
    let queued = queue_up(&svc, 3).await; // one passes, two wait: the queue is full
    assert_rejected_at_once(&svc).await;
    for t in queued {
        assert!(t.await.unwrap().is_ok());
    }
}
