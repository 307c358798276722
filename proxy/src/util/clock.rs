//! Sluice's monotonic clock in nanoseconds (atomics store it; 0 means "never") and in
//! milliseconds, shared by balancing, health, rate limiting and the cache.

use std::sync::OnceLock;
use std::time::Instant;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on Sluice's monotonic clock (starts near 1 s so that 0 means "never").
pub fn now_ns() -> u64 {
    ns_at(Instant::now())
}

/// `t` on the clock of [`now_ns`], for callers that already read the clock (one read less on
/// the request path).
pub fn ns_at(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64 + 1_000_000_000
}

/// Milliseconds on the same clock (rate limiting, the circuit breaker, the cache).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}
