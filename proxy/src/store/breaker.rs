//! A circuit breaker for Redis: after `failures` consecutive failed calls it opens and Sluice
//! stops calling Redis for `cooldown`; then one call probes it (half-open) and success closes it.
//! An outage thus costs one timeout per cool-down, not one per request. Lock-free.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Breaker state.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    failures: AtomicU32,
    /// 0 when closed; otherwise when the next probe may go (ms on the caller's clock).
    open_until_ms: AtomicU64,
    /// Times it opened (metrics).
    opened: AtomicU64,
    /// Times it closed again (metrics).
    closed: AtomicU64,
}

/// Closed, open or half-open, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to Redis.
    Closed,
    /// Calls are skipped.
    Open,
}

impl Breaker {
    /// Open after `threshold` consecutive failures, for `cooldown_ms`.
    pub fn new(threshold: u32, cooldown_ms: u64) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown_ms,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    /// Whether a call may go to Redis at `now_ms`. When the cool-down is over exactly one caller
    /// gets `true` (the probe); the others keep skipping until it reports.
    pub fn allow(&self, now_ms: u64) -> bool {
        let until = self.open_until_ms.load(Relaxed);
        if until == 0 {
            return true;
        }
        now_ms >= until
            && self
                .open_until_ms
                .compare_exchange(until, now_ms + self.cooldown_ms, Relaxed, Relaxed)
                .is_ok()
    }

    /// A call succeeded: close. Returns true when this closed an open breaker (log it).
    pub fn success(&self) -> bool {
        self.failures.store(0, Relaxed);
        // The load keeps the common (closed) case to a read: no write to a shared line.
        if self.open_until_ms.load(Relaxed) != 0 && self.open_until_ms.swap(0, Relaxed) != 0 {
            self.closed.fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// How many times it opened and closed since start.
    pub fn transitions(&self) -> (u64, u64) {
        (self.opened.load(Relaxed), self.closed.load(Relaxed))
    }

    /// A call failed at `now_ms`; returns true when this failure opened the breaker.
    pub fn failure(&self, now_ms: u64) -> bool {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= self.threshold {
            let was = self.open_until_ms.swap(now_ms + self.cooldown_ms, Relaxed);
            if was == 0 {
                self.opened.fetch_add(1, Relaxed);
            }
            return was == 0;
        }
        false
    }

    /// Current state.
    pub fn state(&self) -> BreakerState {
        if self.open_until_ms.load(Relaxed) == 0 {
            BreakerState::Closed
        } else {
            BreakerState::Open
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once_per_cooldown() {
        let b = Breaker::new(3, 1000);
        assert!(b.allow(0));
        assert!(!b.failure(0));
        assert!(!b.failure(1));
        assert!(b.failure(2), "third failure opens");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(500));
        assert!(b.allow(1002), "one probe after the cool-down");
        assert!(!b.allow(1003), "only one");
        b.failure(1003);
        assert!(!b.allow(1500));
        assert!(b.allow(2100));
        assert!(b.success(), "the probe's success closes it");
        assert!(!b.success(), "closing twice is one transition");
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(2101) && b.allow(2102));
        assert_eq!(b.transitions(), (1, 1));
    }
}
