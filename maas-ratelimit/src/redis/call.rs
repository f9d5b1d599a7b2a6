//! The calls a Redis limiter makes: one script invocation each, under the deadline, timed
//! into the metrics.

use std::time::{Duration, Instant};

use ::redis::Script;
use ::redis::aio::ConnectionManager;

use super::lease::Reply;
use super::observer::{CallOutcome, Observer};
use super::{Params, RedisLimitError};

/// Announces a replica and counts the replicas seen in the last 5 s. `KEYS[1]`: the
/// prefix's replica set; `ARGV[1]`: the replica id.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 5000)
redis.call('PEXPIRE', KEYS[1], 10000)
return redis.call('ZCARD', KEYS[1])
"#;

/// The scripts and the connection one limiter calls through.
pub(crate) struct Caller {
    pub(crate) conn: ConnectionManager,
    pub(crate) per_request: Script,
    pub(crate) lease: Script,
    pub(crate) refund: Script,
    pub(crate) heartbeat: Script,
    pub(crate) deadline: Duration,
    pub(crate) observer: Observer,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

pub(crate) fn heartbeat_script() -> Script {
    Script::new(HEARTBEAT)
}

/// Pushes the algorithm's arguments (`step`, sub-buckets, capacity) and returns the call.
fn algorithm_args(call: &mut ::redis::ScriptInvocation<'_>, p: &Params) {
    call.arg(p.step_us);
    if let Some(b) = p.buckets {
        call.arg(b);
    }
    call.arg(p.capacity);
}

/// A cost beyond the capacity can never pass; sent capped, so Lua's doubles never see a
/// number they cannot hold exactly.
fn capped(cost: u64, p: &Params) -> u64 {
    cost.min(p.capacity.saturating_add(1))
}

impl Caller {
    async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        call: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisLimitError> {
        let mut conn = self.conn.clone();
        let start = Instant::now();
        let answered = tokio::time::timeout(self.deadline, call.invoke_async(&mut conn)).await;
        let (outcome, reply) = match answered {
            Err(_) => (
                CallOutcome::Timeout,
                Err(RedisLimitError::Timeout(self.deadline)),
            ),
            Ok(Err(e)) => (CallOutcome::Error, Err(RedisLimitError::Redis(e))),
            Ok(Ok(r)) => (CallOutcome::Ok, Ok(r)),
        };
        self.observer.call(outcome, start.elapsed());
        reply
    }

    /// One check without a lease: `{allowed, remaining, reset_us, retry_us}`.
    pub(crate) async fn check(
        &self,
        redis_key: String,
        p: &Params,
        cost: u64,
        consume: bool,
    ) -> Result<Vec<i64>, RedisLimitError> {
        let mut call = self.per_request.prepare_invoke();
        call.key(redis_key)
            .arg(capped(cost, p))
            .arg(u8::from(consume));
        algorithm_args(&mut call, p);
        self.invoke(&call).await
    }

    /// One check that may lease `want` units to `replica`, which still holds `held`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn take(
        &self,
        keys: (String, String),
        p: &Params,
        replica: &str,
        cost: u64,
        want: u64,
        held: u64,
        lifetime: Duration,
    ) -> Result<(Vec<i64>, Reply), RedisLimitError> {
        let mut call = self.lease.prepare_invoke();
        call.key(keys.0)
            .key(keys.1)
            .arg("t")
            .arg(replica)
            .arg(capped(cost, p))
            .arg(want)
            .arg(held)
            .arg(p.max_overshoot)
            .arg(micros(lifetime));
        algorithm_args(&mut call, p);
        let raw: Vec<i64> = self.invoke(&call).await?;
        let reply = lease_reply(&raw).ok_or_else(|| RedisLimitError::Reply(raw.clone()))?;
        Ok((raw, reply))
    }

    /// Gives `units` back to the key; returns the units it has left.
    pub(crate) async fn refund(
        &self,
        redis_key: String,
        p: &Params,
        units: u64,
    ) -> Result<u64, RedisLimitError> {
        let mut call = self.refund.prepare_invoke();
        call.key(redis_key).arg(capped(units, p));
        algorithm_args(&mut call, p);
        let raw: Vec<i64> = self.invoke(&call).await?;
        match raw[..] {
            [n] => Ok(u64::try_from(n).unwrap_or(0)),
            _ => Err(RedisLimitError::Reply(raw)),
        }
    }

    /// Gives `held` units of `replica`'s lease back; returns the units Redis took back.
    pub(crate) async fn give_back(
        &self,
        keys: (String, String),
        p: &Params,
        replica: &str,
        held: u64,
    ) -> Result<u64, RedisLimitError> {
        let mut call = self.lease.prepare_invoke();
        call.key(keys.0)
            .key(keys.1)
            .arg("g")
            .arg(replica)
            .arg(0)
            .arg(0)
            .arg(held)
            .arg(p.max_overshoot)
            .arg(0);
        algorithm_args(&mut call, p);
        let raw: Vec<i64> = self.invoke(&call).await?;
        match raw[..] {
            [n] => Ok(u64::try_from(n).unwrap_or(0)),
            _ => Err(RedisLimitError::Reply(raw)),
        }
    }

    /// Announces `replica` under `set` and returns the replicas seen recently.
    pub(crate) async fn heartbeat(
        &self,
        set: String,
        replica: &str,
    ) -> Result<u64, RedisLimitError> {
        let mut call = self.heartbeat.prepare_invoke();
        call.key(set).arg(replica);
        let n: i64 = self.invoke(&call).await?;
        Ok(u64::try_from(n).unwrap_or(1))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Reads a take's `{allowed, remaining, reset_us, retry_us, granted, lease_us, carried}`.
pub(crate) fn lease_reply(raw: &[i64]) -> Option<Reply> {
    let [
        allowed,
        remaining,
        reset_us,
        retry_us,
        granted,
        lease_us,
        carried,
    ] = *raw
    else {
        return None;
    };
    let ns = |us: i64| u64::try_from(us).unwrap_or(0).saturating_mul(1_000);
    Some(Reply {
        allowed: allowed == 1,
        remaining: u64::try_from(remaining).unwrap_or(0),
        reset_after_ns: ns(reset_us),
        retry_after_ns: (retry_us >= 0).then(|| ns(retry_us)),
        granted: u64::try_from(granted).unwrap_or(0),
        lease_ns: ns(lease_us),
        carried: carried == 1,
    })
}
