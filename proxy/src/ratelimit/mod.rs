//! Rate limiting: `check(key, policy) -> Decision` against Redis (shared by every instance) or the
//! embedded store, with the Redis failure policy (`local`, `open`, `closed`) and a circuit
//! breaker. Knows nothing of sessions or responses: `edge/` asks and answers.

mod algo;
mod identity;
mod local;
mod redis;

pub use algo::Decision;
pub use identity::{client_ip, identify, Identity, JwtVerifier, Reject};
pub use local::LocalStore;
pub use redis::{RedisStore, StoreError};

use std::sync::{Arc, Weak};

use pingora::http::StaticHeaderName;
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::config::{LimitPolicy, OnRedisError, RateLimitSpec, RedisSpec};
use crate::metrics::{registered, Metrics};
use crate::store::{register_breaker_metrics, Component};
use crate::util::clock::now_ms;

/// Which store decided (or why none did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis answered.
    Redis,
    /// The embedded store answered (no Redis configured, or the `local` fallback).
    Local,
    /// Redis failed and the policy is `open`: allowed without counting.
    FailOpen,
    /// Redis failed and the policy is `closed`: rejected.
    FailClosed,
}

/// Process-wide limiter state: the stores (the Redis one behind its breaker). Survives config
/// reloads.
pub struct RateLimiter {
    redis: Option<RedisStore>,
    local: LocalStore,
    /// Requests already counted in Redis and not yet used, by key (see [`Lease`]).
    leases: std::sync::Mutex<std::collections::HashMap<String, Lease>>,
    /// Failed Redis checks, by [`REDIS_ERROR_KINDS`].
    redis_errors: [IntCounter; REDIS_ERROR_KINDS.len()],
}

/// Redis failure kinds of rate-limit checks (see `StoreError::kind`; a skipped call is not a
/// failure).
const REDIS_ERROR_KINDS: [&str; 3] = ["timeout", "connection", "response"];

/// Requests counted in Redis ahead of use for one key: a large limit far from exhaustion is
/// checked once per `lease_batch` requests instead of once per request. A lease lives at most
/// [`LEASE_TTL_MS`] and within its window, and is only granted while at least
/// `lease_batch × instances` would remain, so near the limit every request is checked again and
/// the combined limit stays exact; far from it, at most `lease_batch` requests per instance
/// are counted before use.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Requests left to hand out.
    left: u64,
    /// `remaining` as Redis reported it when granting (the whole lease already counted).
    remaining: u64,
    /// When the window resets (local ms clock).
    reset_at_ms: u64,
    /// When the lease stops being used (local ms clock).
    expires_ms: u64,
}

/// Longest a lease is used.
pub const LEASE_TTL_MS: u64 = 100;

/// Bound of the lease table; expired leases are swept when it is reached.
const MAX_LEASES: usize = 10_000;

/// Limits below `LEASE_MIN_FACTOR × lease_batch` are never leased.
const LEASE_MIN_FACTOR: u64 = 100;

impl RateLimiter {
    /// A limiter using Redis when `redis` is given, the embedded store otherwise, with its
    /// metrics (Redis errors by kind, its breaker) registered on `metrics`.
    pub fn new(
        redis: Option<&RedisSpec>,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, crate::metrics::Error> {
        let errors = registered(
            metrics.registry(),
            IntCounterVec::new(
                Opts::new(
                    "sluice_ratelimit_redis_errors_total",
                    "Failed rate-limit Redis calls by kind.",
                ),
                &["kind"],
            )?,
        )?;
        let limiter = Arc::new(RateLimiter {
            redis: redis.cloned().map(RedisStore::new),
            local: LocalStore::default(),
            leases: std::sync::Mutex::new(std::collections::HashMap::new()),
            redis_errors: REDIS_ERROR_KINDS.map(|k| errors.with_label_values(&[k])),
        });
        let weak: Weak<RateLimiter> = Arc::downgrade(&limiter);
        register_breaker_metrics(metrics, Component::RateLimit, move || {
            let limiter = weak.upgrade()?;
            let redis = limiter.redis.as_ref()?;
            Some((redis.breaker_state(), redis.breaker_transitions()))
        })?;
        Ok(limiter)
    }

    /// The Redis store, for API-key lookups.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_ref()
    }

    /// Count one request on `key` under `policy`.
    pub async fn check(
        &self,
        key: &str,
        policy: &LimitPolicy,
        spec: &RateLimitSpec,
    ) -> (Decision, Source) {
        let Some(redis) = &self.redis else {
            return (self.local.check(key, policy, now_ms()), Source::Local);
        };
        let batch = match policy.algorithm {
            crate::config::Algorithm::FixedWindow | crate::config::Algorithm::SlidingWindow
                if spec.lease_batch > 1 && policy.limit >= LEASE_MIN_FACTOR * spec.lease_batch =>
            {
                spec.lease_batch
            }
            _ => 1,
        };
        if batch > 1 {
            if let Some(d) = self.take_leased(key, policy) {
                return (d, Source::Redis);
            }
        }
        let floor = batch * u64::from(spec.instances.max(1));
        // Boxed: the Redis call's future (568 bytes; 3.3 KB before the work inside it was boxed,
        // see `store::Work`) would otherwise make every check's future, and so
        // `edge::limits::apply`'s, built and moved on each limited request, that large, leased
        // or not.
        match Box::pin(redis.check(key, policy, batch, floor)).await {
            Ok((d, granted)) => {
                if granted > 1 {
                    let now = now_ms();
                    let lease = Lease {
                        left: granted - 1,
                        remaining: d.remaining,
                        reset_at_ms: now + d.reset_ms,
                        expires_ms: now + LEASE_TTL_MS.min(d.reset_ms),
                    };
                    let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                    if leases.len() >= MAX_LEASES {
                        leases.retain(|_, l| l.expires_ms > now && l.left > 0);
                    }
                    leases.insert(key.to_owned(), lease);
                }
                return (d, Source::Redis);
            }
            Err(StoreError::Skipped) => {}
            Err(e) => {
                if let Some(i) = REDIS_ERROR_KINDS.iter().position(|k| *k == e.kind()) {
                    self.redis_errors[i].inc();
                }
            }
        }
        self.fallback(key, policy, spec)
    }

    /// One request from a live lease of `key`, if there is one.
    fn take_leased(&self, key: &str, policy: &LimitPolicy) -> Option<Decision> {
        let now = now_ms();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let lease = leases.get_mut(key)?;
        if lease.left == 0 || now >= lease.expires_ms {
            leases.remove(key);
            return None;
        }
        lease.left -= 1;
        // The requests counted ahead are already out of `remaining`: report it as it will be
        // once this lease is used up, never higher than the truth.
        Some(Decision {
            allowed: true,
            limit: policy.limit,
            remaining: lease.remaining,
            reset_ms: lease.reset_at_ms.saturating_sub(now),
            retry_after_ms: 0,
        })
    }

    fn fallback(
        &self,
        key: &str,
        policy: &LimitPolicy,
        spec: &RateLimitSpec,
    ) -> (Decision, Source) {
        match spec.on_redis_error {
            OnRedisError::Local => {
                // Each instance enforces its share so that together they roughly hold the limit.
                let n = u64::from(spec.instances.max(1));
                let share = LimitPolicy {
                    limit: policy.limit.div_ceil(n),
                    burst: policy.burst.div_ceil(n),
                    ..*policy
                };
                (self.local.check(key, &share, now_ms()), Source::Local)
            }
            OnRedisError::Open => (
                Decision {
                    allowed: true,
                    limit: policy.limit,
                    remaining: policy.limit,
                    reset_ms: policy.window_ms,
                    retry_after_ms: 0,
                },
                Source::FailOpen,
            ),
            OnRedisError::Closed => (
                Decision {
                    allowed: false,
                    limit: policy.limit,
                    remaining: 0,
                    reset_ms: policy.window_ms,
                    retry_after_ms: 1000,
                },
                Source::FailClosed,
            ),
        }
    }
}

/// The Redis key for `identity` under `policy` (`route`: a per-route override's route index).
/// The identity part is the hash tag, so a client's keys share a Cluster slot.
pub fn key(
    prefix: &str,
    identity: &Identity,
    policy: &LimitPolicy,
    route: Option<usize>,
) -> String {
    // Written piece by piece: through `write!` this was about 1,200 instructions per limited
    // request (callgrind), now about 150. The text is the same (`key_has_its_documented_form`).
    let mut num = itoa::Buffer::new();
    let mut k = String::with_capacity(prefix.len() + identity.key.len() + 48);
    k.push('{');
    k.push_str(prefix);
    k.push(':');
    k.push_str(&identity.key);
    k.push_str("}:");
    k.push_str(policy.algorithm.tag());
    k.push(':');
    k.push_str(num.format(policy.limit));
    k.push(':');
    k.push_str(num.format(policy.window_ms));
    if let Some(r) = route {
        k.push_str(":r");
        k.push_str(num.format(r));
    }
    k
}

/// Seconds, rounded up, for headers.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The rate-limit response headers' names, as they are sent (lowercase), pre-built so that
/// adding them parses and allocates no name.
pub static HEADER_NAMES: [StaticHeaderName; 5] = [
    StaticHeaderName::new("x-ratelimit-limit", "x-ratelimit-limit"),
    StaticHeaderName::new("x-ratelimit-remaining", "x-ratelimit-remaining"),
    StaticHeaderName::new("x-ratelimit-reset", "x-ratelimit-reset"),
    StaticHeaderName::new("ratelimit-policy", "ratelimit-policy"),
    StaticHeaderName::new("ratelimit", "ratelimit"),
];

/// Which of [HEADER_NAMES] change from one response to the next (HTTP/2 sends them never
/// indexed, [`insert_fields`]).
const CHANGES_PER_RESPONSE: [bool; 5] = [false, true, true, false, true];

/// A policy name that cannot be sent inside a header value (a control character). Tier names
/// are checked at load (`config`), and `route` is fixed, so this is a guard, not a path.
#[derive(Debug, thiserror::Error)]
#[error("a rate-limit policy name with a control character cannot be sent in a header")]
pub struct UnsendableName;

/// The rate-limit response headers' values, in the order of [HEADER_NAMES], each given to `f`
/// as the pieces of its text: `X-RateLimit-*` and the IETF draft's `RateLimit-Policy` and
/// `RateLimit` structured fields. `name` is the policy name (tier or `route`).
fn each_value(
    d: &Decision,
    policy: &LimitPolicy,
    name: &str,
    mut f: impl FnMut(usize, &[&[u8]]),
) -> Result<(), UnsendableName> {
    if name.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(UnsendableName);
    }
    let (mut num, mut num2) = (itoa::Buffer::new(), itoa::Buffer::new());
    let reset = ceil_secs(d.reset_ms);
    f(0, &[num.format(d.limit).as_bytes()]);
    f(1, &[num.format(d.remaining).as_bytes()]);
    f(2, &[num.format(reset).as_bytes()]);
    f(
        3,
        &[
            b"\"",
            name.as_bytes(),
            b"\";q=",
            num.format(policy.limit).as_bytes(),
            b";w=",
            num2.format(ceil_secs(policy.window_ms)).as_bytes(),
        ],
    );
    f(
        4,
        &[
            b"\"",
            name.as_bytes(),
            b"\";r=",
            num.format(d.remaining).as_bytes(),
            b";t=",
            num2.format(reset).as_bytes(),
        ],
    );
    Ok(())
}

/// The rate-limit response headers as HTTP/1 lines (`name: value\r\n`) appended to `raw`, a
/// response's raw fields (vendored pingora-http; the HTTP/2 server folds them into its map).
/// Written straight into the one buffer the head is sent from: five values built as
/// `HeaderValue`s and inserted into the map cost about 4,000 instructions per limited request
/// (callgrind, docs/benchmarks.md), mostly the map's inserts and regrowth. On an error `raw` is
/// unchanged.
pub fn write_h1_fields(
    raw: &mut Vec<u8>,
    d: &Decision,
    policy: &LimitPolicy,
    name: &str,
) -> Result<(), UnsendableName> {
    raw.reserve(2 * name.len() + 5 * 20 + 112);
    each_value(d, policy, name, |i, parts| {
        crate::util::push_raw_field(raw, HEADER_NAMES[i].name().as_str().as_bytes(), parts)
    })
}

/// The rate-limit response fields inserted into `resp`'s map, for an HTTP/2 client: its server
/// would fold [`write_h1_fields`]' lines into the map again, parsing each name (callgrind over
/// HTTP/2: about 1,800 instructions a line against 600 for the insert). The fields whose value
/// changes from one response to the next (remaining, reset, `RateLimit`) are marked sensitive,
/// which HPACK encodes as literals never indexed: indexed, each took an entry of the
/// connection's 4 KiB dynamic table on every response, evicting fields that repeat, and the
/// encoder compared it with every earlier value of its name there (see
/// `edge::headers::response_request_id`). On an error `resp` is unchanged.
pub fn insert_fields(
    resp: &mut pingora::http::ResponseHeader,
    d: &Decision,
    policy: &LimitPolicy,
    name: &str,
) -> Result<(), UnsendableName> {
    let mut values: [Option<http::HeaderValue>; 5] = Default::default();
    let mut buf = Vec::with_capacity(64);
    each_value(d, policy, name, |i, parts| {
        buf.clear();
        for p in parts {
            buf.extend_from_slice(p);
        }
        // Digits, fixed text and the checked name: always a valid value.
        values[i] = http::HeaderValue::from_bytes(&buf).ok().map(|mut v| {
            v.set_sensitive(CHANGES_PER_RESPONSE[i]);
            v
        });
    })?;
    resp.reserve_headers(values.len());
    for (i, v) in values.into_iter().enumerate() {
        if let Some(v) = v {
            // Appended, as the fold of the lines does (an HTTP/1 client gets both too).
            resp.append_static_header(&HEADER_NAMES[i], v);
        }
    }
    Ok(())
}

/// The rate-limit response headers as name and text (for a 429 answered here).
pub fn headers(
    d: &Decision,
    policy: &LimitPolicy,
    name: &str,
) -> Result<Vec<(&'static str, String)>, UnsendableName> {
    let mut out = Vec::with_capacity(HEADER_NAMES.len());
    each_value(d, policy, name, |i, parts| {
        let mut text = String::new();
        for p in parts {
            // Every piece is ASCII digits, fixed text or the (checked) UTF-8 name.
            text.push_str(&String::from_utf8_lossy(p));
        }
        out.push((HEADER_NAMES[i].name().as_str(), text));
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::algo::tests::policy;
    use super::*;
    use crate::config::Algorithm;

    #[test]
    fn key_has_its_documented_form() {
        // Instances of different versions share counters only if they build the same key: this
        // is the text `write!` produced before the key was written piece by piece.
        let id = Identity {
            key: "ip:203.0.113.7".into(),
            tier: Cow::Borrowed("anonymous"),
        };
        let p = policy(Algorithm::SlidingWindow, 100, 60_000);
        assert_eq!(
            key("sluice:rl", &id, &p, None),
            "{sluice:rl:ip:203.0.113.7}:sw:100:60000"
        );
        let p = policy(Algorithm::Gcra, u64::MAX, 1);
        assert_eq!(
            key("p", &id, &p, Some(12)),
            format!("{{p:ip:203.0.113.7}}:gcra:{}:1:r12", u64::MAX)
        );
    }

    #[test]
    fn response_headers_carry_the_decision_and_the_policy() {
        let d = Decision {
            allowed: true,
            limit: 500,
            remaining: 499,
            reset_ms: 59_001,
            retry_after_ms: 0,
        };
        let p = policy(Algorithm::FixedWindow, 500, 60_000);
        let mut raw = b"x-a: 1\r\n".to_vec();
        write_h1_fields(&mut raw, &d, &p, "free").unwrap();
        assert_eq!(
            std::str::from_utf8(&raw).unwrap(),
            "x-a: 1\r\n\
             x-ratelimit-limit: 500\r\n\
             x-ratelimit-remaining: 499\r\n\
             x-ratelimit-reset: 60\r\n\
             ratelimit-policy: \"free\";q=500;w=60\r\n\
             ratelimit: \"free\";r=499;t=60\r\n"
        );
        let named = headers(&d, &p, "free").unwrap();
        let text: Vec<&str> = named.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            text,
            [
                "500",
                "499",
                "60",
                "\"free\";q=500;w=60",
                "\"free\";r=499;t=60"
            ]
        );
        assert_eq!(named[0], ("x-ratelimit-limit", "500".to_owned()));
        assert_eq!(named[4], ("ratelimit", "\"free\";r=499;t=60".to_owned()));
        // A policy name that cannot be sent is an error, not a malformed header, and writes
        // nothing.
        let mut raw = Vec::new();
        assert!(write_h1_fields(&mut raw, &d, &p, "bad\nname").is_err());
        assert!(raw.is_empty());
        assert!(headers(&d, &p, "bad\rname").is_err());
        // The HTTP/2 form: the same fields in the map, after any of the backend's (as the
        // lines are, folded).
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-ratelimit-limit", "7").unwrap();
        insert_fields(&mut resp, &d, &p, "free").unwrap();
        assert!(resp.raw_h1_fields().is_empty());
        let limits: Vec<_> = resp.headers.get_all("x-ratelimit-limit").iter().collect();
        assert_eq!(limits, ["7", "500"]);
        for (name, value) in &named[1..] {
            let all: Vec<_> = resp.headers.get_all(*name).iter().collect();
            assert_eq!(all, [value.as_str()], "{name}");
            // What changes on every response is never indexed by HPACK; the rest may be.
            let changes = !matches!(*name, "x-ratelimit-limit" | "ratelimit-policy");
            assert_eq!(all[0].is_sensitive(), changes, "{name}");
        }
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        assert!(insert_fields(&mut resp, &d, &p, "bad\nname").is_err());
        assert!(resp.headers.is_empty());
    }
}
