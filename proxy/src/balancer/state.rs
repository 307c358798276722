//! Per-backend live state shared by every snapshot that contains the backend: in-flight count
//! (held by RAII leases) and a peak-EWMA of response latency. Kept outside the selectors so that
//! a pool rebuild (reload) keeps counts for backends that stay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Decay time constant of the peak-EWMA latency (as in Finagle and linkerd).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Live counters for one backend of one pool.
#[derive(Debug, Default)]
pub struct BackendState {
    inflight: AtomicUsize,
    /// Peak-EWMA latency in nanoseconds (0 until first observation).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since [`epoch`].
    ewma_at_ns: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl BackendState {
    /// Requests (and upgraded connections) currently held by leases on this backend.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Relaxed)
    }

    /// Current peak-EWMA latency estimate in nanoseconds.
    pub fn ewma_ns(&self) -> u64 {
        self.ewma_ns.load(Relaxed)
    }

    /// Fold one observed latency into the peak-EWMA: a slower sample is taken at once, faster
    /// ones pull the estimate down with time constant [`EWMA_DECAY`]. Races between threads can
    /// lose a sample, which a moving estimate tolerates.
    pub fn observe_latency(&self, rtt: Duration) {
        let now = epoch().elapsed().as_nanos() as u64;
        let sample = rtt.as_nanos().min(u64::MAX as u128) as u64;
        let prev = self.ewma_ns.load(Relaxed);
        let then = self.ewma_at_ns.swap(now, Relaxed);
        let next = if sample >= prev {
            sample
        } else {
            let elapsed = now.saturating_sub(then) as f64;
            let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            (prev as f64 * w + sample as f64 * (1.0 - w)) as u64
        };
        self.ewma_ns.store(next, Relaxed);
    }
}

/// Holds one unit of a backend's in-flight count; released on drop, so it covers the whole life
/// of a request, retries and upgraded WebSockets included.
#[derive(Debug)]
pub struct Lease {
    state: Arc<BackendState>,
}

impl Lease {
    /// Take one in-flight unit on `state`.
    pub fn new(state: &Arc<BackendState>) -> Self {
        state.inflight.fetch_add(1, Relaxed);
        Lease {
            state: Arc::clone(state),
        }
    }

    /// The leased backend's state.
    pub fn state(&self) -> &BackendState {
        &self.state
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.state.inflight.fetch_sub(1, Relaxed);
    }
}

/// Hands out the [`BackendState`] for `(pool, address)`, the same one to every build of the
/// pool while any snapshot still uses it. Used only when snapshots are built, never per request.
#[derive(Debug, Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<(String, SocketAddr), Weak<BackendState>>>,
}

impl StateRegistry {
    /// The state for `addr` in `pool`, created on first use.
    pub fn get(&self, pool: &str, addr: SocketAddr) -> Arc<BackendState> {
        let mut map = self.states.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (pool.to_owned(), addr);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(BackendState::default());
        map.insert(key, Arc::downgrade(&s));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_counts_for_its_life() {
        let s = Arc::new(BackendState::default());
        let a = Lease::new(&s);
        let b = Lease::new(&s);
        assert_eq!(s.inflight(), 2);
        drop(a);
        assert_eq!(s.inflight(), 1);
        drop(b);
        assert_eq!(s.inflight(), 0);
    }

    #[test]
    fn registry_keeps_state_across_rebuilds_while_used() {
        let r = StateRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = r.get("api", addr);
        let _lease = Lease::new(&a);
        let b = r.get("api", addr);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.inflight(), 1);
        assert!(!Arc::ptr_eq(&a, &r.get("other", addr)));
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once() {
        let s = BackendState::default();
        s.observe_latency(Duration::from_millis(10));
        assert_eq!(s.ewma_ns(), 10_000_000);
        s.observe_latency(Duration::from_millis(50));
        assert_eq!(s.ewma_ns(), 50_000_000);
        s.observe_latency(Duration::from_millis(1));
        assert!(s.ewma_ns() <= 50_000_000 && s.ewma_ns() > 1_000_000);
    }
}
