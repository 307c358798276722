//! Rate-limit checks on Redis: one Lua script per algorithm, sent by EVALSHA (loaded on demand by
//! `redis::Script`), one atomic round trip per check, on the Redis server's clock (`TIME`) so
//! instances with skewed clocks agree. Each check touches exactly one key, passed as `KEYS[1]`,
//! so it works on Redis Cluster; every key gets an expiry.

use std::time::Duration;

use redis::Script;

use super::algo::Decision;
use crate::config::{Algorithm, LimitPolicy, RedisSpec};
use crate::store::{BreakerState, CallError, Component, Guarded};

/// Shared prologue: the server's clock in ms.
const NOW: &str = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// ARGV: limit, window_ms, want, floor. Returns {allowed, remaining, reset_ms,
/// retry_after_ms, granted}: `want` requests are counted at once (a lease) only while at least
/// `floor` would remain; otherwise one.
const FIXED_WINDOW: &str = r#"
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local want, floor = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = now - (now % window)
local h = redis.call('HMGET', key, 's', 'c')
local count = 0
if tonumber(h[1]) == start then count = tonumber(h[2]) end
local reset = start + window - now
if count >= limit then return {0, 0, reset, math.max(reset, 1), 0} end
local n = 1
if want > 1 and limit - count - want >= floor then n = want end
count = count + n
redis.call('HSET', key, 's', start, 'c', count)
redis.call('PEXPIRE', key, math.max(reset, 1))
return {1, limit - count, reset, 0, n}
"#;

/// ARGV: limit, window_ms, want, floor (see `FIXED_WINDOW`).
const SLIDING_WINDOW: &str = r#"
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local want, floor = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = now - (now % window)
local h = redis.call('HMGET', key, 's', 'c', 'p')
local s, cur, prev = tonumber(h[1]), 0, 0
if s == start then cur = tonumber(h[2]); prev = tonumber(h[3])
elseif s ~= nil and s + window == start then prev = tonumber(h[2]) end
local elapsed = now - start
local weighted = prev * (window - elapsed) / window + cur
local reset = window - elapsed
if weighted + 1 > limit then
  local retry = reset
  if cur + 1 <= limit and prev > 0 then
    retry = math.min(math.ceil((weighted + 1 - limit) / prev * window), reset)
  end
  return {0, 0, reset, math.max(retry, 1), 0}
end
local n = 1
if want > 1 and limit - weighted - want >= floor then n = want end
redis.call('HSET', key, 's', start, 'c', cur + n, 'p', prev)
redis.call('PEXPIRE', key, 2 * window)
return {1, math.floor(limit - weighted - n), reset, 0, n}
"#;

/// ARGV: limit, window_ms, unique member suffix.
const SLIDING_WINDOW_LOG: &str = r#"
local key, limit, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local n = redis.call('ZCARD', key)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
if n >= limit then return {0, 0, reset, math.max(reset, 1)} end
redis.call('ZADD', key, now, now .. '-' .. ARGV[3])
redis.call('PEXPIRE', key, window)
if n == 0 then reset = window end
return {1, limit - n - 1, reset, 0}
"#;

/// ARGV: limit, window_ms, burst.
const GCRA: &str = r#"
local key, limit, window, burst = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local emission = window / limit
local tolerance = emission * burst
local tat = tonumber(redis.call('GET', key))
if tat == nil or tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - tolerance
if allow_at > now then return {0, 0, math.ceil(tat - now), math.max(math.ceil(allow_at - now), 1)} end
redis.call('SET', key, tostring(new_tat), 'PX', math.max(math.ceil(new_tat - now), 1))
return {1, math.max(math.floor((tolerance - (new_tat - now)) / emission), 0), math.ceil(new_tat - now), 0}
"#;

/// Why a Redis check gave no decision (the store's [`CallError`]).
pub type StoreError = CallError;

/// Rate-limit counters in Redis (one node or a Cluster). Connects on first use, from inside the
/// proxy's runtime, and reconnects by itself afterwards, behind the breaker (see
/// [`crate::store`]).
pub struct RedisStore {
    spec: RedisSpec,
    redis: Guarded,
    scripts: [Script; 4],
}

impl RedisStore {
    /// A store for `spec`; nothing is connected yet.
    pub fn new(spec: RedisSpec) -> Self {
        let script = |body: &str| Script::new(&format!("{NOW}{body}"));
        RedisStore {
            redis: Guarded::new(&spec, spec.command_timeout, Component::RateLimit),
            spec,
            scripts: [
                script(SLIDING_WINDOW_LOG),
                script(FIXED_WINDOW),
                script(SLIDING_WINDOW),
                script(GCRA),
            ],
        }
    }

    /// Run the check for `policy` on `key`, counting `want` requests at once (fixed and sliding
    /// windows only; `want = 1` is one request) while at least `floor` would remain; returns the
    /// decision and how many were granted (0 when denied). Skipped while the breaker is open;
    /// bounded by the command timeout (connecting counts).
    pub async fn check(
        &self,
        key: &str,
        policy: &LimitPolicy,
        want: u64,
        floor: u64,
    ) -> Result<(Decision, u64), StoreError> {
        let work = async {
            let conn = self.redis.conn().get().await?;
            let script = &self.scripts[match policy.algorithm {
                Algorithm::SlidingWindowLog => 0,
                Algorithm::FixedWindow => 1,
                Algorithm::SlidingWindow => 2,
                Algorithm::Gcra => 3,
            }];
            let mut inv = script.key(key);
            inv.arg(policy.limit).arg(policy.window_ms);
            match policy.algorithm {
                Algorithm::Gcra => {
                    inv.arg(policy.burst);
                }
                Algorithm::SlidingWindowLog => {
                    inv.arg(rand::random::<u64>());
                }
                Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                    inv.arg(want).arg(floor);
                }
            }
            conn.invoke::<Vec<i64>>(&inv).await
        };
        // Every call, the first one (which also connects) included, is bounded by the
        // configured timeout (issue 12: 150 ms per request with a 50 ms timeout at start).
        let v = self.redis.call(work).await?;
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        let allowed = at(0) == 1;
        let decision = Decision {
            allowed,
            limit: policy.limit,
            remaining: at(1),
            reset_ms: at(2),
            retry_after_ms: at(3),
        };
        // GCRA and the log count one request per call.
        let granted = if allowed { at(4).max(1) } else { 0 };
        Ok((decision, granted))
    }

    /// Round-trip time of a `PING` (admin status), bounded like API-key lookups.
    pub async fn ping(&self) -> Result<Duration, String> {
        self.redis.ping().await
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.redis.breaker_state()
    }

    /// How many times the breaker opened and closed.
    pub fn breaker_transitions(&self) -> (u64, u64) {
        self.redis.breaker_transitions()
    }

    /// `HGET hash field` for API keys kept in Redis, bounded by the command timeout.
    pub async fn hget(&self, hash: &str, field: &str) -> Result<Option<String>, StoreError> {
        let t = self.spec.command_timeout.max(Duration::from_millis(250));
        let work = async {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(hash).arg(field);
            self.redis.conn().get().await?.query(&cmd).await
        };
        self.redis.unguarded(t, work).await
    }
}
