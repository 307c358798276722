//! Rate-limit checks on Redis: one Lua script per algorithm, sent by EVALSHA (loaded on demand by
//! `redis::Script`), atomic, on the Redis server's clock (`TIME`) so instances with skewed clocks
//! agree. Each check touches exactly one key, passed as `KEYS[1]`, so it works on Redis Cluster;
//! every key gets an expiry.
//!
//! On one Redis node, checks made while another is in flight are coalesced: they wait in a queue
//! and go together, when the one in flight returns, as one EVALSHA of a script that runs each
//! check's algorithm on its own key in turn ([`BATCH`]). Alone, a check goes at once, as before;
//! under load one command, one Lua call and one reply carry many checks instead of one each. A
//! Cluster spreads keys over nodes, so there each check goes alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use tokio::sync::oneshot;

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

/// Shared prologue: `R`, an algorithm's reply table as one string of five integers separated
/// by spaces (a missing fifth is 0), the form [`parse_reply`] reads. One bulk string instead of
/// an array of integers: redis-rs parses every element of a reply through `combine`, about 600
/// instructions each, 4,000 per check (callgrind, docs/benchmarks.md).
const REPLY: &str = "local function R(r) return string.format('%d %d %d %d %d', r[1], r[2], r[3], r[4], r[5] or 0) end\n";

/// One check alone: the algorithm's script (`ALG`) as a function of `KEYS` and `ARGV`, its
/// reply through `R`.
const ALONE: &str = r#"
local function A(KEYS, ARGV) ALG end
return R(A(KEYS, ARGV))
"#;

/// Runs several checks in one call. KEYS: one per check; ARGV: five per check (the algorithm's
/// index in [`ALGORITHMS`], then that algorithm's four arguments, unused ones 0; each script
/// reads only the ones it needs). Each
/// algorithm's script above is the body of a function of `KEYS` and `ARGV`, so a check runs the
/// very same code alone or in a batch. Returns the checks' replies (see [`REPLY`]), in order,
/// joined by commas.
const BATCH: &str = r#"
local f = {}
f[0] = function(KEYS, ARGV) ALG0 end
f[1] = function(KEYS, ARGV) ALG1 end
f[2] = function(KEYS, ARGV) ALG2 end
f[3] = function(KEYS, ARGV) ALG3 end
local out, j = {}, 1
for i = 1, #KEYS do
  out[i] = R(f[tonumber(ARGV[j])]({KEYS[i]}, {ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4]}))
  j = j + 5
end
return table.concat(out, ',')
"#;

/// One check's reply: allowed (1 or 0), remaining, reset in ms, retry after in ms, and how many
/// requests were counted (0 for the algorithms that count one).
type Reply = [i64; 5];

/// A reply written by the scripts' `R`: five integers separated by single spaces.
fn parse_reply(text: &[u8]) -> Option<Reply> {
    let mut out = [0i64; 5];
    let mut parts = text.split(|b| *b == b' ');
    for slot in &mut out {
        *slot = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A reply that is not what the scripts write.
fn bad_reply() -> StoreError {
    StoreError::Redis(redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "rate-limit script: one reply of five integers per check expected",
    )))
}

/// The algorithms' scripts, by [`script_index`] (the order of `RedisStore::scripts`).
const ALGORITHMS: [&str; 4] = [SLIDING_WINDOW_LOG, FIXED_WINDOW, SLIDING_WINDOW, GCRA];

/// Where `algorithm`'s script is in [`ALGORITHMS`].
fn script_index(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::SlidingWindowLog => 0,
        Algorithm::FixedWindow => 1,
        Algorithm::SlidingWindow => 2,
        Algorithm::Gcra => 3,
    }
}

/// Most checks in one batched call; more wait for the next.
const MAX_BATCH: usize = 128;

/// The script index ([`script_index`]) and four arguments of one check.
#[derive(Clone, Copy)]
struct Args {
    script: usize,
    args: [u64; 4],
}

/// One queued check and where its reply goes.
struct Job {
    key: String,
    args: Args,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// The checks waiting for the call in flight, and whether one is in flight.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    flushing: bool,
}

/// What the task that sends batched checks needs.
struct Batcher {
    redis: Arc<Guarded>,
    script: Script,
    queue: Mutex<Queue>,
}

impl Batcher {
    /// Send what is queued, one call at a time, until the queue is empty.
    async fn flush(self: Arc<Self>) {
        loop {
            let jobs = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.jobs.is_empty() {
                    q.flushing = false;
                    return;
                }
                let n = q.jobs.len().min(MAX_BATCH);
                q.jobs.drain(..n).collect::<Vec<_>>()
            };
            let work = Box::pin(async {
                let conn = self.redis.conn().get().await?;
                let mut inv = self.script.prepare_invoke();
                for job in &jobs {
                    inv.key(&job.key).arg(job.args.script);
                    for a in job.args.args {
                        inv.arg(a);
                    }
                }
                conn.invoke::<Vec<u8>>(&inv).await
            });
            match self.redis.call(work).await {
                Ok(text) => {
                    let mut replies = text.split(|b| *b == b',');
                    for job in jobs {
                        let reply = replies.next().and_then(parse_reply).ok_or_else(bad_reply);
                        // The request may be gone (client hung up): nothing to tell then.
                        let _ = job.reply.send(reply);
                    }
                }
                Err(e) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(same_error(&e)));
                    }
                }
            }
        }
    }
}

/// `e` again, for each check of a failed batch (a `RedisError` is not `Clone`): the same kind,
/// so that metrics and logs tell the same story.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Skipped => StoreError::Skipped,
        StoreError::Timeout(d) => StoreError::Timeout(*d),
        StoreError::Redis(r) => {
            let kind = if r.is_io_error() || r.is_connection_dropped() {
                redis::ErrorKind::Io
            } else {
                r.kind()
            };
            StoreError::Redis(redis::RedisError::from((
                kind,
                "batched check failed",
                r.to_string(),
            )))
        }
    }
}

/// Why a Redis check gave no decision (the store's [`CallError`]).
pub type StoreError = CallError;

/// Rate-limit counters in Redis (one node or a Cluster). Connects on first use, from inside the
/// proxy's runtime, and reconnects by itself afterwards, behind the breaker (see
/// [`crate::store`]).
pub struct RedisStore {
    spec: RedisSpec,
    redis: Arc<Guarded>,
    scripts: [Script; 4],
    /// Coalesces concurrent checks (one node only).
    batcher: Option<Arc<Batcher>>,
}

impl RedisStore {
    /// A store for `spec`; nothing is connected yet.
    pub fn new(spec: RedisSpec) -> Self {
        let script = |body: &str| Script::new(&format!("{NOW}{REPLY}{body}"));
        let redis = Arc::new(Guarded::new(
            &spec,
            spec.command_timeout,
            Component::RateLimit,
        ));
        let batcher = match spec.target {
            crate::config::RedisTarget::Single(_) => {
                let mut body = BATCH.to_owned();
                for (i, alg) in ALGORITHMS.iter().enumerate() {
                    body = body.replace(&format!("ALG{i}"), alg);
                }
                Some(Arc::new(Batcher {
                    redis: redis.clone(),
                    script: script(&body),
                    queue: Mutex::new(Queue::default()),
                }))
            }
            crate::config::RedisTarget::Cluster(_) => None,
        };
        RedisStore {
            redis,
            spec,
            scripts: ALGORITHMS.map(|alg| script(&ALONE.replace("ALG", alg))),
            batcher,
        }
    }

    /// Run one check: at once when nothing is in flight (or on a Cluster), else with the next
    /// batch. The reply of the algorithm's script.
    async fn run(&self, key: &str, args: Args) -> Result<Reply, StoreError> {
        let Some(batcher) = &self.batcher else {
            return self.run_alone(key, args).await;
        };
        let rx = {
            let mut q = batcher.queue.lock().unwrap_or_else(|e| e.into_inner());
            if !q.flushing {
                // Nothing in flight: this check goes alone, now; checks arriving meanwhile
                // queue up for one batch.
                q.flushing = true;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                q.jobs.push(Job {
                    key: key.to_owned(),
                    args,
                    reply: tx,
                });
                Some(rx)
            }
        };
        match rx {
            None => {
                // Whatever happens to this request, the queue must be sent and the flag
                // cleared: a spawned task does that when this call ends (or is dropped).
                let _send_rest = SendRest(batcher.clone());
                self.run_alone(key, args).await
            }
            // The batch task always answers; a dropped sender means it panicked.
            Some(rx) => rx
                .await
                .unwrap_or(Err(StoreError::Timeout(self.spec.command_timeout))),
        }
    }

    /// One check in its own EVALSHA.
    async fn run_alone(&self, key: &str, a: Args) -> Result<Reply, StoreError> {
        let work = Box::pin(async {
            let conn = self.redis.conn().get().await?;
            let mut inv = self.scripts[a.script].key(key);
            for arg in a.args {
                inv.arg(arg);
            }
            conn.invoke::<Vec<u8>>(&inv).await
        });
        // Every call, the first one (which also connects) included, is bounded by the
        // configured timeout (issue 12: 150 ms per request with a 50 ms timeout at start).
        let text = self.redis.call(work).await?;
        parse_reply(&text).ok_or_else(bad_reply)
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
        let (limit, window) = (policy.limit, policy.window_ms);
        let args = Args {
            script: script_index(policy.algorithm),
            args: match policy.algorithm {
                Algorithm::SlidingWindowLog => [limit, window, rand::random::<u64>(), 0],
                Algorithm::FixedWindow | Algorithm::SlidingWindow => [limit, window, want, floor],
                Algorithm::Gcra => [limit, window, policy.burst, 0],
            },
        };
        let v = self.run(key, args).await?;
        let at = |i: usize| v[i].max(0) as u64;
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
        let work = Box::pin(async {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(hash).arg(field);
            self.redis.conn().get().await?.query(&cmd).await
        });
        self.redis.unguarded(t, work).await
    }
}

/// Held by a check that went alone: when it ends (or its request is dropped), the checks that
/// queued meanwhile are sent by a task of their own, or the flag is cleared if there are none.
struct SendRest(Arc<Batcher>);

impl Drop for SendRest {
    fn drop(&mut self) {
        let pending = {
            let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.jobs.is_empty() {
                q.flushing = false;
            }
            !q.jobs.is_empty()
        };
        if pending {
            // A rate-limited request runs on a Pingora worker, inside its runtime.
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(self.0.clone().flush());
                }
                Err(_) => {
                    // No runtime (cannot happen on the request path): fail the queued checks
                    // rather than leave them waiting.
                    let mut q = self.0.queue.lock().unwrap_or_else(|e| e.into_inner());
                    q.flushing = false;
                    q.jobs.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisTarget;

    /// A store on a "Redis" that accepts connections and never answers: every call waits for
    /// the command timeout.
    async fn silent_store() -> Arc<RedisStore> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Arc::new(RedisStore::new(RedisSpec {
            target: RedisTarget::Single(format!("redis://{addr}/")),
            command_timeout: Duration::from_millis(200),
            breaker_failures: 1000,
            breaker_cooldown: Duration::from_secs(1),
        }))
    }

    #[test]
    fn replies_are_five_integers_and_nothing_else() {
        assert_eq!(parse_reply(b"1 499 59001 0 1"), Some([1, 499, 59001, 0, 1]));
        assert_eq!(parse_reply(b"0 0 12 -3 0"), Some([0, 0, 12, -3, 0]));
        for bad in [
            &b""[..],
            b"1 2 3 4",
            b"1 2 3 4 5 6",
            b"1 2 3 4 x",
            b"1  2 3 4 5",
            b"1 2 3 4 5 ",
            b"1 2 3 4 1e+14",
            b"1 2 3 4 99999999999999999999",
        ] {
            assert_eq!(parse_reply(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn queue(store: &RedisStore) -> std::sync::MutexGuard<'_, Queue> {
        store.batcher.as_ref().unwrap().queue.lock().unwrap()
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A client hanging up while its own check is in flight drops that check's future: the
    /// checks queued behind it must still be sent (and fail within their timeout here), not
    /// wait for an answer nobody will send.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_check_in_flight_does_not_strand_the_checks_queued_behind_it() {
        let store = silent_store().await;
        let args = Args {
            script: script_index(Algorithm::FixedWindow),
            args: [10, 60_000, 1, 0],
        };
        let s = store.clone();
        let first = tokio::spawn(async move { s.run("k0", args).await });
        until("the first check goes alone", || queue(&store).flushing).await;
        let queued: Vec<_> = (1..=5)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move { s.run(&format!("k{i}"), args).await })
            })
            .collect();
        until("five checks queue", || queue(&store).jobs.len() == 5).await;
        first.abort();
        for q in queued {
            let r = tokio::time::timeout(Duration::from_secs(3), q)
                .await
                .expect("a queued check was stranded")
                .unwrap();
            assert!(r.is_err(), "a silent Redis gave an answer: {r:?}");
        }
        until("the queue is idle again", || {
            let q = queue(&store);
            !q.flushing && q.jobs.is_empty()
        })
        .await;
    }
}
