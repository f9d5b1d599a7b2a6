//! The outage policies on a Redis of this test's own (started on a free port, never the
//! shared one), stopped mid-run and started again: each policy answers as it says without
//! any request waiting longer than the deadline, and checks go through Redis again within a
//! second of its return.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_ratelimit::Quota;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter, RedisMetrics, Replicas};
use prometheus::Registry;

mod support;
use support::metric;

/// A redis-server of the test's own; killed when dropped.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = OwnRedis { port, child: None };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (`scripts/dev-services` does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok_and(|s| {
                use std::io::{Read, Write};
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 7];
                s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0)
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

const DEADLINE: Duration = Duration::from_millis(50);

/// Calls `check` `n` times; every call within the deadline plus scheduling slack.
async fn timed_checks(limiter: &RedisLimiter, key: &str, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let d = limiter.check(key, 1).await;
        let took = start.elapsed();
        assert!(
            took < DEADLINE + Duration::from_millis(150),
            "a check took {took:?}"
        );
        out.push(d.is_allowed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_answers_through_an_outage_and_redis_takes_over_again() {
    let mut redis = OwnRedis::start();
    let quota = Quota::per_minute(8);
    let policies = [
        OutagePolicy::FailOpen,
        OutagePolicy::FailClosed,
        OutagePolicy::LocalShare {
            replicas: Replicas::Fixed(4),
        },
    ];
    let registry = Registry::new();
    let metrics = RedisMetrics::register(&registry).unwrap();
    let mut limiters = Vec::new();
    for (i, policy) in policies.into_iter().enumerate() {
        let l = RedisLimiter::builder(redis.url(), RedisAlgorithm::TokenBucket(quota), policy)
            .prefix(format!("outage-{i}"))
            .metrics(&metrics)
            .deadline(DEADLINE)
            .probe_every(Duration::from_millis(100))
            .connect()
            .await
            .expect("connect to the test's redis-server");
        // Through Redis: 8 pass, the 9th does not.
        let first = timed_checks(&l, "k", 9).await;
        assert_eq!(
            first.iter().filter(|a| **a).count(),
            8,
            "{policy:?}: {first:?}"
        );
        assert!(!l.is_degraded());
        limiters.push((policy, l));
    }

    redis.stop();
    for (policy, l) in &limiters {
        // A fresh key, so only the policy decides.
        let during = timed_checks(l, "fresh", 6).await;
        assert!(l.is_degraded(), "{policy:?}");
        match policy {
            OutagePolicy::FailOpen => assert!(during.iter().all(|a| *a), "{during:?}"),
            OutagePolicy::FailClosed => assert!(during.iter().all(|a| !*a), "{during:?}"),
            // 8 / 4 replicas = 2 per key locally.
            _ => assert_eq!(during, [true, true, false, false, false, false]),
        }
    }

    // The metrics saw it: calls answered, then failed calls, policy answers, degraded.
    let ok = metric(
        &registry,
        "maas_ratelimit_redis_calls_total{limiter=\"outage-0\",outcome=\"ok\"}",
    );
    let failed = metric(
        &registry,
        "maas_ratelimit_redis_calls_total{limiter=\"outage-0\",outcome=\"error\"}",
    ) + metric(
        &registry,
        "maas_ratelimit_redis_calls_total{limiter=\"outage-0\",outcome=\"timeout\"}",
    );
    assert_eq!(ok, 9.0);
    assert!(failed >= 1.0, "no failed call counted");
    assert!(
        metric(
            &registry,
            "maas_ratelimit_redis_policy_answers_total{limiter=\"outage-0\"}"
        ) >= 6.0
    );
    assert_eq!(
        metric(
            &registry,
            "maas_ratelimit_redis_degraded{limiter=\"outage-0\"}"
        ),
        1.0
    );

    redis.spawn();
    let back = Instant::now();
    for (policy, l) in &limiters {
        while l.is_degraded() {
            let _ = l.check("k", 1).await;
            assert!(
                back.elapsed() < Duration::from_secs(1),
                "{policy:?}: still degraded {:?} after Redis returned",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Answered by Redis: the restarted server is empty, so the key is full again.
        let d = l.try_check("again", 1).await.expect("through Redis");
        assert_eq!(d.remaining(), 7, "{policy:?}");
    }
    assert_eq!(
        metric(
            &registry,
            "maas_ratelimit_redis_degraded{limiter=\"outage-0\"}"
        ),
        0.0
    );
}
