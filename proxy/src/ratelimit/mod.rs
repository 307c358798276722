//! Rate limiting: `check(key, policy) -> Decision` against Redis (shared by every instance) or the
//! embedded store, with the Redis failure policy (`local`, `open`, `closed`) and a circuit
//! breaker. Knows nothing of sessions or responses: `edge/` asks and answers.

mod algo;
mod identity;
mod local;
mod redis;

use std::fmt::Write as _;

pub use algo::Decision;
pub use identity::{client_ip, identify, Identity, JwtVerifier, Reject};
pub use local::LocalStore;
pub use redis::{RedisStore, StoreError};

use std::sync::{Arc, Weak};

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
        match redis.check(key, policy, batch, floor).await {
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
    let mut k = String::with_capacity(prefix.len() + identity.key.len() + 40);
    let _ = write!(
        k,
        "{{{prefix}:{}}}:{}:{}:{}",
        identity.key,
        policy.algorithm.tag(),
        policy.limit,
        policy.window_ms
    );
    if let Some(r) = route {
        let _ = write!(k, ":r{r}");
    }
    k
}

/// Seconds, rounded up, for headers.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The rate-limit response headers: `X-RateLimit-*` and the IETF draft's `RateLimit-Policy` and
/// `RateLimit` structured fields. `name` is the policy name (tier or `route`).
pub fn headers(d: &Decision, policy: &LimitPolicy, name: &str) -> [(&'static str, String); 5] {
    let reset = ceil_secs(d.reset_ms);
    [
        ("x-ratelimit-limit", d.limit.to_string()),
        ("x-ratelimit-remaining", d.remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        (
            "ratelimit-policy",
            format!(
                "\"{name}\";q={};w={}",
                policy.limit,
                ceil_secs(policy.window_ms)
            ),
        ),
        (
            "ratelimit",
            format!("\"{name}\";r={};t={reset}", d.remaining),
        ),
    ]
}
