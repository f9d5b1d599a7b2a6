//! maas-ratelimit's Redis limiter against a GCRA script of the kind redis_rate runs, in one
//! run, on the same Redis: one round trip per check for both.
//!
//! * `ratelimit_redis/hot_key`: every check on one key. `maas_leased` is
//!   `RedisLimiter::check` with leases (the default): most checks answered from the local
//!   lease, topped up in the background; `maas_per_request` is a limiter built with
//!   `per_request()` (one `EVALSHA` per check); `gcra_lua` a float-seconds GCRA script
//!   written below (one `EVALSHA` per check), the anchor. Targets: `maas_leased` ≥ 20 ×
//!   `gcra_lua`'s checks per second; `maas_per_request` ≤ 1.1 × `gcra_lua`'s time.
//! * `ratelimit_redis/keys_10k`: 10,000 keys round robin, the same three (no key is hot
//!   there, so the leased limiter runs one call per check too).
//!
//! The runtime has two worker threads, where the leased limiter's background refills run;
//! the measuring loop drives all three the same way. Needs Redis (`scripts/dev-services`;
//! override with `MAAS_TEST_REDIS`).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use maas_ratelimit::Quota;
use maas_ratelimit::redis::{OutagePolicy, RedisAlgorithm, RedisLimiter};
use redis::aio::ConnectionManager;

fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A GCRA in the style of redis_rate: times in float seconds from `TIME`, the TAT stored
/// as a float, one script per check. `ARGV`: burst, rate, period s, cost.
const GCRA_LUA: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local emission = period / rate
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission * cost
local diff = now - (new_tat - emission * burst)
if diff < 0 then
  return {0, 0, tostring(-diff)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'EX', math.max(1, math.ceil(new_tat - now)))
return {cost, math.floor(diff / emission), '0'}
"#;

/// The burst of both sides' quota (see `bench`).
const BURST: u64 = 1_000_000_000;

async fn gcra_check(conn: &mut ConnectionManager, script: &redis::Script, key: &str) -> i64 {
    let reply: (i64, i64, String) = script
        .key(key)
        .arg(BURST)
        .arg(1_000_000u64)
        .arg(1)
        .arg(1)
        .invoke_async(conn)
        .await
        .expect("the anchor's script");
    reply.0
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = redis_url();
    let run = std::process::id();
    // A quota no check here exhausts: a million per second (the finest a microsecond
    // arithmetic can refill per key) with a burst of a billion, so every side takes the
    // allowing path even when the leased one answers faster than the refill rate. (At a
    // billion per second the anchor's float seconds lose the increment entirely against
    // today's clock: 1e-9 s vanishes next to 1.8e9 s.)
    let quota = Quota::per_second(1_000_000).with_burst(BURST);
    let connect = |leased: bool| {
        let b = RedisLimiter::builder(
            url.as_str(),
            RedisAlgorithm::TokenBucket(quota),
            OutagePolicy::FailClosed,
        )
        .prefix(format!("bench:maas:{run}:{leased}"))
        .deadline(Duration::from_secs(1));
        let b = if leased { b } else { b.per_request() };
        rt.block_on(b.connect()).unwrap_or_else(|e| {
            panic!("no Redis at {url} ({e}): start it with `scripts/dev-services`, or set MAAS_TEST_REDIS")
        })
    };
    let maas = connect(false);
    let leased = connect(true);
    let mut anchor = rt
        .block_on(ConnectionManager::new(
            redis::Client::open(url.as_str()).unwrap(),
        ))
        .expect("Redis");
    let script = redis::Script::new(GCRA_LUA);

    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    for (group, spread) in [
        ("ratelimit_redis/hot_key", 1usize),
        ("ratelimit_redis/keys_10k", keys.len()),
    ] {
        let mut g = c.benchmark_group(group);
        g.bench_function("maas_leased", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let key = &keys[i as usize % spread];
                        assert!(leased.check(key, 1).await.is_allowed());
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function("maas_per_request", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let key = &keys[i as usize % spread];
                        let d = maas.try_check(key, 1).await.expect("through Redis");
                        assert!(d.is_allowed());
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_function("gcra_lua", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let key = format!("bench:gcra:{run}:{{{}}}", keys[i as usize % spread]);
                        assert_eq!(gcra_check(&mut anchor, &script, &key).await, 1);
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
