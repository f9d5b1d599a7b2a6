//! The Lua scripts the Redis limiter runs: one atomic call per check or lease, the time
//! taken from the server (`TIME`), the key's expiry set in the same call.
//!
//! Each algorithm is one chunk of Lua defining the same functions over the key's state
//! (`load`, `avail`, `verdict`, `take`, `refund`, `stamp`, `restamp`, `save`); a script is a
//! prelude, one algorithm chunk and one of two bodies: [`PER_REQUEST`] (decide one check)
//! or [`LEASE`] (decide one check and hand the replica a share of what is left, or take a
//! share back). So the per-request and the leased forms cannot drift apart.
//!
//! Arithmetic is in whole microseconds. Lua numbers are doubles, exact up to 2^53: the
//! server's time in microseconds (≈ 1.8 × 10^15 in 2026) and periods up to years stay far
//! inside that, and every value a script returns is an integer, so nothing is truncated on
//! the way back (a fractional retry delay read as a Redis integer would become 0).

use std::time::Duration;

use crate::Decision;

/// The server's time; `A` is the index of the last common argument (the algorithm's own
/// arguments follow it).
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"#;

/// GCRA, as the local [`TokenBucket`](crate::TokenBucket) computes it: the key holds the
/// theoretical arrival time (TAT, µs). Arguments: interval µs (one token's refill), capacity.
const TOKEN_BUCKET: &str = r#"
local interval = tonumber(ARGV[A + 1])
local capacity = tonumber(ARGV[A + 2])
local tau = interval * capacity
local debt = 0
local dirty = false
local function load()
  debt = tonumber(redis.call('GET', KEYS[1]) or '0') - now
  if debt < 0 then debt = 0 end
  if debt > tau then debt = tau end
end
local function avail() return math.floor((tau - debt) / interval) end
local function verdict(cost, consume)
  if cost > capacity then return {0, avail(), debt, -1} end
  local new_debt = debt + cost * interval
  if new_debt <= tau then return {1, math.floor((tau - new_debt) / interval), new_debt, 0} end
  return {0, avail(), debt, new_debt - tau}
end
local function take(n) debt = debt + n * interval; dirty = true end
local function refund(n, _)
  debt = debt - n * interval
  if debt < 0 then debt = 0 end
  dirty = true
end
local function give(n) refund(n, 0) end
local function stamp() return 0 end
local function restamp(_, _) return true end
local function lease_span(ttl) return ttl end
local function save()
  if not dirty then return end
  if debt > 0 then
    redis.call('SET', KEYS[1], string.format('%d', now + debt), 'PX', math.ceil(debt / 1000))
  else
    redis.call('DEL', KEYS[1])
  end
end
"#;

/// A fixed window, as the local [`FixedWindow`](crate::FixedWindow): the key is a hash of
/// the window's number (`w`) and its count (`n`). Arguments: period µs, limit. A lease ends
/// with its window, so leased units are always spent in the window that counted them.
const FIXED_WINDOW: &str = r#"
local period = tonumber(ARGV[A + 1])
local limit = tonumber(ARGV[A + 2])
local window = math.floor(now / period)
local ends = (window + 1) * period - now
local used = 0
local dirty = false
local function load()
  local stored = redis.call('HMGET', KEYS[1], 'w', 'n')
  if tonumber(stored[1]) == window then used = tonumber(stored[2]) or 0 end
end
local function avail()
  if used >= limit then return 0 end
  return limit - used
end
local function verdict(cost, consume)
  if cost > limit then return {0, avail(), ends, -1} end
  if used + cost <= limit then return {1, limit - used - cost, ends, 0} end
  return {0, avail(), ends, ends}
end
local function take(n) used = used + n; dirty = true end
local function refund(n, w)
  if w ~= window then return end
  used = used - n
  if used < 0 then used = 0 end
  dirty = true
end
local function give(n) refund(n, window) end
local function stamp() return window end
local function restamp(_, w) return w == window end
local function lease_span(ttl) return math.min(ttl, ends) end
local function save()
  if not dirty then return end
  redis.call('HSET', KEYS[1], 'w', string.format('%d', window), 'n', used)
  redis.call('PEXPIRE', KEYS[1], math.ceil(ends / 1000))
end
"#;

/// A sliding window, as the local [`SlidingWindow`](crate::SlidingWindow): the window is cut
/// into `B` buckets of `bucket` µs; the key is a hash from bucket number to count, holding the
/// `B + 1` newest buckets (older fields are deleted as they leave). Arguments: bucket µs,
/// `B`, limit. A lease carried into a newer bucket moves its count along, so leased units
/// never outlive the bucket that counts them.
const SLIDING_WINDOW: &str = r#"
local bucket = tonumber(ARGV[A + 1])
local span = tonumber(ARGV[A + 2])
local limit = tonumber(ARGV[A + 3])
local epoch = math.floor(now / bucket)
local live = {}
local count = {}
local total = 0
local newest = -1
local dirty = false
local function load()
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    local e = tonumber(fields[i])
    local n = tonumber(fields[i + 1])
    if e == nil or n == nil or epoch - e > span then
      redis.call('HDEL', KEYS[1], fields[i])
    elseif n > 0 then
      live[#live + 1] = {e, n}
      count[e] = n
      total = total + n
      if e > newest then newest = e end
    end
  end
  table.sort(live, function(a, b) return a[1] < b[1] end)
end
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
local function avail()
  if total >= limit then return 0 end
  return limit - total
end
local function verdict(cost, consume)
  local empty_in = 0
  if total > 0 then empty_in = leaves(newest) end
  if cost > limit then return {0, avail(), empty_in, -1} end
  if total + cost > limit then return {0, avail(), empty_in, freed_after(total + cost - limit)} end
  local after = total
  if consume and cost > 0 then after = total + cost end
  local reset = 0
  if after > 0 then reset = leaves(epoch) end
  return {1, limit - total - cost, reset, 0}
end
local function add(e, n)
  redis.call('HINCRBY', KEYS[1], string.format('%d', e), n)
  count[e] = (count[e] or 0) + n
  total = total + n
  dirty = true
end
local function take(n) add(epoch, n) end
local function refund(n, e)
  local there = count[e] or 0
  if n > there then n = there end
  if n > 0 then add(e, -n) end
end
local function give(n)
  for i = #live, 1, -1 do
    if n <= 0 then return end
    local back = math.min(n, count[live[i][1]] or 0)
    if back > 0 then
      add(live[i][1], -back)
      n = n - back
    end
  end
end
local function stamp() return epoch end
local function restamp(n, e)
  if e == epoch then return true end
  local there = count[e] or 0
  if there < n then return false end
  add(e, -n)
  add(epoch, n)
  return true
end
local function lease_span(ttl) return math.min(ttl, leaves(epoch)) end
local function save()
  if dirty then redis.call('PEXPIRE', KEYS[1], math.ceil(leaves(epoch) / 1000)) end
end
"#;

/// One check. `ARGV`: cost, consume (1 or 0), then the algorithm's arguments. Returns
/// `{allowed, remaining, reset_after_us, retry_after_us}`, `retry_after_us` −1 when the cost
/// can never pass.
const PER_REQUEST: &str = r#"
load()
local cost = tonumber(ARGV[1])
local v = verdict(cost, ARGV[2] == '1')
if v[1] == 1 and ARGV[2] == '1' and cost > 0 then
  take(cost)
  save()
end
return v
"#;

/// One check with a lease, or a lease given back. `KEYS[2]` holds the leases outstanding:
/// a hash from replica id to `units:expires_us:stamp`. `ARGV`: mode (`t` take, `g` give
/// back), replica id, cost, want (units to lease; 0 leaves the replica's lease alone), held
/// (units the replica still holds), the most units outstanding in all leases of the key,
/// the longest lease µs, then the algorithm's arguments.
///
/// Take returns `{allowed, remaining, reset_after_us, retry_after_us, granted, lease_us,
/// carried}`: `carried` 1 when the `held` units are still counted as the replica's (0: its
/// lease had expired and it must drop them). Give back returns `{units returned}`.
const LEASE: &str = r#"
load()
local mode = ARGV[1]
local me = ARGV[2]
local cost = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local held = tonumber(ARGV[5])
local max_out = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local records = redis.call('HGETALL', KEYS[2])
local others = 0
local mine_n = nil
local mine_e = nil
for i = 1, #records, 2 do
  local n, x, e = string.match(records[i + 1], '^(%d+):(%d+):(%d+)$')
  n = tonumber(n)
  x = tonumber(x)
  e = tonumber(e)
  if n == nil or x == nil or e == nil or x <= now then
    redis.call('HDEL', KEYS[2], records[i])
  elseif records[i] == me then
    mine_n = n
    mine_e = e
  else
    others = others + n
  end
end
if mode == 'g' then
  local back = 0
  if mine_n ~= nil then
    back = math.min(held, mine_n)
    if back > 0 then refund(back, mine_e) end
    redis.call('HDEL', KEYS[2], me)
    save()
  end
  return {back}
end
local carried = 0
if want > 0 and held > 0 and mine_n ~= nil then
  if held > mine_n then held = mine_n end
  if restamp(held, mine_e) then carried = 1 end
end
if carried == 0 then held = 0 end
local v = verdict(cost, true)
local granted = 0
if v[1] == 1 then
  if cost > 0 then take(cost) end
  if want > 0 then
    granted = math.min(want, avail(), max_out - others - held)
    if granted < 0 then granted = 0 end
    if granted > 0 then take(granted) end
  end
  v[2] = avail()
end
local span_us = lease_span(ttl)
if want > 0 then
  local n = held + granted
  if n > 0 and span_us > 0 then
    redis.call('HSET', KEYS[2], me, string.format('%d:%d:%d', n, now + span_us, stamp()))
    local need = math.ceil(span_us / 1000)
    if redis.call('PTTL', KEYS[2]) < need then redis.call('PEXPIRE', KEYS[2], need) end
  else
    redis.call('HDEL', KEYS[2], me)
    granted = 0
    carried = 0
  end
end
save()
return {v[1], v[2], v[3], v[4], granted, span_us, carried}
"#;

/// Units given back to a key (an estimate that was not used): `ARGV[1]` units, taken off
/// what the key counts, newest first, never below nothing. Returns `{remaining}`.
const REFUND: &str = r#"
load()
local n = tonumber(ARGV[1])
if n > 0 then give(n) end
save()
return {avail()}
"#;

/// Which algorithm a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TokenBucket,
    FixedWindow,
    SlidingWindow,
}

/// The per-request script of `kind`: `ARGV` cost, consume, the algorithm's arguments.
pub(crate) fn per_request(kind: Kind) -> String {
    assemble(kind, 2, PER_REQUEST)
}

/// The refund script of `kind` (see [`REFUND`]).
pub(crate) fn refund(kind: Kind) -> String {
    assemble(kind, 1, REFUND)
}

/// The lease script of `kind` (see [`LEASE`]).
pub(crate) fn lease(kind: Kind) -> String {
    assemble(kind, 7, LEASE)
}

fn assemble(kind: Kind, common_args: usize, body: &str) -> String {
    let chunk = match kind {
        Kind::TokenBucket => TOKEN_BUCKET,
        Kind::FixedWindow => FIXED_WINDOW,
        Kind::SlidingWindow => SLIDING_WINDOW,
    };
    format!("{PRELUDE}local A = {common_args}\n{chunk}{body}")
}

/// Turns a script's `{allowed, remaining, reset_after_us, retry_after_us, ..}` into a
/// [`Decision`]; `None` when the reply has another shape.
pub(crate) fn decision(limit: u64, reply: &[i64]) -> Option<Decision> {
    let [allowed, remaining, reset_us, retry_us, ..] = *reply else {
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

    #[test]
    fn every_script_declares_the_argument_offset_before_its_chunk() {
        for kind in [Kind::TokenBucket, Kind::FixedWindow, Kind::SlidingWindow] {
            let (p, l) = (per_request(kind), lease(kind));
            assert!(p.contains("local A = 2\n") && l.contains("local A = 7\n"));
            assert!(p.find("local A").unwrap() < p.find("ARGV[A + 1]").unwrap());
        }
    }
}
