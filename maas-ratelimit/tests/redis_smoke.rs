//! Proves the Redis the tests use is real: values, counters and expiry make a round trip.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::timeout;

/// URL of the test Redis (override: `MAAS_TEST_REDIS`).
fn redis_url() -> String {
    std::env::var("MAAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// Connects, or fails the test saying how to start Redis.
async fn connect() -> MultiplexedConnection {
    let url = redis_url();
    let how = "start it with `scripts/dev-services` (Redis on 127.0.0.1:6379), \
               or point MAAS_TEST_REDIS at a running server";
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("MAAS_TEST_REDIS `{url}` is not a Redis URL: {e}"));
    match timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => panic!("Redis is not reachable at `{url}`: {e}; {how}"),
        Err(_) => panic!("Redis did not answer within 5 s at `{url}`; {how}"),
    }
}

#[tokio::test]
async fn redis_round_trip_with_counter_and_expiry() {
    let mut con = connect().await;
    let key = format!("maas:smoke:{}", std::process::id());
    let counter = format!("{key}:hits");

    let () = redis::cmd("SET")
        .arg(&key)
        .arg("tenant-a")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut con)
        .await
        .expect("SET");
    let value: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(value.as_deref(), Some("tenant-a"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("PTTL");
    assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");

    for expected in 1..=5_i64 {
        let n: i64 = redis::cmd("INCR")
            .arg(&counter)
            .query_async(&mut con)
            .await
            .expect("INCR");
        assert_eq!(n, expected);
    }

    let removed: i64 = redis::cmd("DEL")
        .arg(&key)
        .arg(&counter)
        .query_async(&mut con)
        .await
        .expect("DEL");
    assert_eq!(removed, 2);
    let gone: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(gone, None);
}
