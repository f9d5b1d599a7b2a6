//! The Lua scripts the Redis limiter runs: one atomic call per check, the time taken from
//! the server (`TIME`), the key's expiry set in the same call.
//!
//! Arithmetic is in whole microseconds. Lua numbers are doubles, exact up to 2^53: the
//! server's time in microseconds (≈ 1.8 × 10^15 in 2026) and periods up to years stay far
//! inside that, and every value a script returns is an integer, so nothing is truncated on
//! the way back (a fractional retry delay read as a Redis integer would become 0).

use std::time::Duration;

use crate::Decision;

/// GCRA, as the local [`TokenBucket`](crate::TokenBucket) computes it: the key holds the
/// theoretical arrival time (TAT, µs). `ARGV`: interval µs (one token's refill), capacity,
/// cost, consume (1 or 0). Returns `{allowed, remaining, reset_after_us, retry_after_us}`,
/// `retry_after_us` −1 when the cost exceeds the capacity.
pub(crate) const TOKEN_BUCKET: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local consume = ARGV[4] == '1'
local tau = interval * capacity
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local debt = tat - now
if debt < 0 then debt = 0 end
if debt > tau then debt = tau end
local available = math.floor((tau - debt) / interval)
if cost > capacity then
  return {0, available, debt, -1}
end
local new_debt = debt + cost * interval
if new_debt <= tau then
  if consume and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%d', now + new_debt), 'PX', math.ceil(new_debt / 1000))
  end
  return {1, math.floor((tau - new_debt) / interval), new_debt, 0}
end
return {0, available, debt, new_debt - tau}
"#;

/// A fixed window, as the local [`FixedWindow`](crate::FixedWindow): the key is a hash of
/// the window's number (`w`) and its count (`n`). `ARGV`: period µs, limit, cost, consume.
/// Returns `{allowed, remaining, reset_after_us, retry_after_us}` (−1: never).
pub(crate) const FIXED_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local consume = ARGV[4] == '1'
local window = math.floor(now / period)
local ends = (window + 1) * period - now
local stored = redis.call('HMGET', KEYS[1], 'w', 'n')
local used = 0
if tonumber(stored[1]) == window then used = tonumber(stored[2]) or 0 end
local left = limit - used
if left < 0 then left = 0 end
if cost > limit then
  return {0, left, ends, -1}
end
if used + cost <= limit then
  if consume and cost > 0 then
    redis.call('HSET', KEYS[1], 'w', string.format('%d', window), 'n', used + cost)
    redis.call('PEXPIRE', KEYS[1], math.ceil(ends / 1000))
  end
  return {1, limit - used - cost, ends, 0}
end
return {0, left, ends, ends}
"#;

/// A sliding window, as the local [`SlidingWindow`](crate::SlidingWindow): the window is cut
/// into `B` buckets of `bucket` µs; the key is a hash from bucket number to count, holding the
/// `B + 1` newest buckets (older fields are deleted as they leave). `ARGV`: bucket µs, `B`,
/// limit, cost, consume. Returns `{allowed, remaining, reset_after_us, retry_after_us}`.
pub(crate) const SLIDING_WINDOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local bucket = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local consume = ARGV[5] == '1'
local epoch = math.floor(now / bucket)
local fields = redis.call('HGETALL', KEYS[1])
local live = {}
local total = 0
local newest = -1
for i = 1, #fields, 2 do
  local e = tonumber(fields[i])
  local n = tonumber(fields[i + 1])
  if e == nil or n == nil or epoch - e > span then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif n > 0 then
    live[#live + 1] = {e, n}
    total = total + n
    if e > newest then newest = e end
  end
end
table.sort(live, function(a, b) return a[1] < b[1] end)
local function leaves(e)
  local at = (e + span + 1) * bucket - now
  if at < 0 then return 0 end
  return at
end
local function freed_after(need)
  local freed = 0
  for _, b in ipairs(live) do
    freed = freed + b[2]
    if freed >= need then return leaves(b[1]) end
  end
  return leaves(epoch)
end
local empty_in = 0
if total > 0 then empty_in = leaves(newest) end
local left = limit - total
if left < 0 then left = 0 end
if cost > limit then
  return {0, left, empty_in, -1}
end
if total + cost > limit then
  return {0, left, empty_in, freed_after(total + cost - limit)}
end
local after = total
if consume and cost > 0 then
  redis.call('HINCRBY', KEYS[1], string.format('%d', epoch), cost)
  redis.call('PEXPIRE', KEYS[1], math.ceil(leaves(epoch) / 1000))
  after = total + cost
end
local reset = 0
if after > 0 then reset = leaves(epoch) end
return {1, limit - total - cost, reset, 0}
"#;

/// Turns a script's `{allowed, remaining, reset_after_us, retry_after_us}` into a
/// [`Decision`]; `None` when the reply has another shape.
pub(crate) fn decision(limit: u64, reply: &[i64]) -> Option<Decision> {
    let [allowed, remaining, reset_us, retry_us] = *reply else {
        return None;
    };
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let remaining = u64::try_from(remaining).unwrap_or(0);
    Some(match allowed {
        1 => Decision::allowed(limit, remaining, micros(reset_us)),
        _ if retry_us < 0 => Decision::rejected(limit, remaining, micros(reset_us), None),
        _ => Decision::rejected(limit, remaining, micros(reset_us), Some(micros(retry_us))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_decisions() {
        let d = decision(5, &[1, 4, 200_000, 0]).unwrap();
        assert!(d.is_allowed());
        assert_eq!((d.limit(), d.remaining()), (5, 4));
        assert_eq!(d.reset_after(), Duration::from_millis(200));
        let d = decision(5, &[0, 0, 1_000_000, 400_000]).unwrap();
        assert_eq!(d.retry_after(), Some(Duration::from_millis(400)));
        assert!(decision(5, &[0, 5, 0, -1]).unwrap().can_never_pass());
        assert!(decision(5, &[1, 2]).is_none());
    }
}
