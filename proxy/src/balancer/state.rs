//! Per-backend live state shared by every snapshot that contains the backend: in-flight count
//! (held by RAII leases) and a peak-EWMA of response latency. Kept outside the selectors so that
//! a pool rebuild (reload) keeps counts for backends that stay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};

use crate::util::clock::now_ns;
use std::time::Duration;

/// Decay time constant of the peak-EWMA latency (as in Finagle and linkerd).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Live counters and health of one backend of one pool. All atomics: the request path reads them
/// without locks, the health checker and failures write them.
#[derive(Debug)]
pub struct BackendState {
    inflight: AtomicUsize,
    /// Peak-EWMA latency in nanoseconds (0 until first observation).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, in nanoseconds since [`epoch`].
    ewma_at_ns: AtomicU64,
    /// Verdict of the active health checks (true when there are none).
    probe_up: AtomicBool,
    /// Passive health: ejected until this time ([`now_ns`]).
    ejected_until_ns: AtomicU64,
    /// Passive health: failures counted in the current window.
    fail_count: AtomicU32,
    /// Passive health: when the current failure window started.
    fail_window_start_ns: AtomicU64,
    /// When the backend last (re)entered rotation, for slow start (0: long ago).
    up_since_ns: AtomicU64,
    /// Times the balancer picked it (metrics).
    selections: AtomicU64,
    /// Failed attempts (metrics).
    failures: AtomicU64,
    /// Passive ejections (metrics).
    ejections: AtomicU64,
    /// Failed attempts retried elsewhere (metrics).
    retries: AtomicU64,
    /// An active probe has run at least once (readiness).
    probed: AtomicBool,
}

/// A backend's monotonic counters, as read for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendCounters {
    /// Times the balancer picked it.
    pub selections: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Passive ejections.
    pub ejections: u64,
    /// Failed attempts retried on another backend.
    pub retries: u64,
}

impl Default for BackendState {
    fn default() -> Self {
        Self::new(true)
    }
}

/// How the passive failure table judges a backend (nginx's `max_fails` / `fail_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct PassivePolicy {
    /// Failures within the window that eject (0: never eject).
    pub max_fails: u32,
    /// The window, and how long an ejection lasts.
    pub fail_timeout: Duration,
}

impl BackendState {
    /// A fresh state; `probe_up` is the active-check verdict before the first probe.
    pub fn new(probe_up: bool) -> Self {
        BackendState {
            inflight: AtomicUsize::new(0),
            ewma_ns: AtomicU64::new(0),
            ewma_at_ns: AtomicU64::new(0),
            probe_up: AtomicBool::new(probe_up),
            ejected_until_ns: AtomicU64::new(0),
            fail_count: AtomicU32::new(0),
            fail_window_start_ns: AtomicU64::new(0),
            up_since_ns: AtomicU64::new(0),
            selections: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            probed: AtomicBool::new(false),
        }
    }

    /// The active-check verdict.
    pub fn probe_up(&self) -> bool {
        self.probe_up.load(Relaxed)
    }

    /// Record the active-check verdict; returns whether it changed. Coming back up starts the
    /// slow-start ramp and clears any passive ejection: `rise` good probes after an outage are
    /// better evidence of recovery than the failures counted while it was down.
    pub fn set_probe_up(&self, up: bool, now: u64) -> bool {
        let was = self.probe_up.swap(up, Relaxed);
        if up && !was {
            self.up_since_ns.store(now, Relaxed);
            self.ejected_until_ns.store(0, Relaxed);
            self.fail_count.store(0, Relaxed);
        }
        was != up
    }

    /// Whether the passive failure table has this backend ejected at `now`.
    pub fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ns.load(Relaxed) > now
    }

    /// Record that an active probe finished (either way).
    pub fn mark_probed(&self) {
        self.probed.store(true, Relaxed);
    }

    /// Whether an active probe has finished at least once.
    pub fn probed(&self) -> bool {
        self.probed.load(Relaxed)
    }

    /// Count one pick by the balancer.
    pub fn count_selection(&self) {
        self.selections.fetch_add(1, Relaxed);
    }

    /// Count one failed attempt that is retried on another backend.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// The monotonic counters.
    pub fn counters(&self) -> BackendCounters {
        BackendCounters {
            selections: self.selections.load(Relaxed),
            failures: self.failures.load(Relaxed),
            ejections: self.ejections.load(Relaxed),
            retries: self.retries.load(Relaxed),
        }
    }

    /// Whether the backend may be picked at `now`: the probes say up and it is not ejected.
    pub fn available(&self, now: u64) -> bool {
        self.probe_up() && !self.ejected(now)
    }

    /// Count one failure at `now`; returns true when this failure ejects the backend. `may_eject`
    /// is asked only when the count reaches `max_fails`: false (no other member available) keeps
    /// the backend in rotation and its count at the threshold, so it is ejected by the next
    /// failure once another member is back.
    pub fn record_failure(
        &self,
        now: u64,
        policy: PassivePolicy,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        self.failures.fetch_add(1, Relaxed);
        if policy.max_fails == 0 {
            return false;
        }
        let window = policy.fail_timeout.as_nanos() as u64;
        let start = self.fail_window_start_ns.load(Relaxed);
        let count = if now.saturating_sub(start) > window {
            self.fail_window_start_ns.store(now, Relaxed);
            self.fail_count.store(1, Relaxed);
            1
        } else {
            self.fail_count.fetch_add(1, Relaxed) + 1
        };
        if count >= policy.max_fails && !self.ejected(now) && may_eject() {
            let until = now + window;
            self.ejected_until_ns.store(until, Relaxed);
            // The ramp starts when the ejection ends.
            self.up_since_ns.store(until, Relaxed);
            self.fail_count.store(0, Relaxed);
            self.fail_window_start_ns.store(now, Relaxed);
            self.ejections.fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// During slow start, the fraction (0..1) of its normal share the backend gets at `now`;
    /// `None` once ramped up (or with no ramp configured).
    pub fn ramp(&self, now: u64, slow_start_ns: u64) -> Option<f64> {
        if slow_start_ns == 0 {
            return None;
        }
        let since = self.up_since_ns.load(Relaxed);
        let elapsed = now.checked_sub(since)?;
        (since != 0 && elapsed < slow_start_ns).then(|| elapsed as f64 / slow_start_ns as f64)
    }
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
        self.observe_latency_at(rtt, now_ns());
    }

    /// [`Self::observe_latency`] with the current time `now` (from [`now_ns`] or [`ns_at`]).
    pub fn observe_latency_at(&self, rtt: Duration, now: u64) {
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
    /// The state for `addr` in `pool`, created on first use with `probe_up` as its initial
    /// active-check verdict. An existing state keeps its verdict (reload keeps health).
    pub fn get(&self, pool: &str, addr: SocketAddr, probe_up: bool) -> Arc<BackendState> {
        let mut map = self.states.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (pool.to_owned(), addr);
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(BackendState::new(probe_up));
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
        let a = r.get("api", addr, false);
        let _lease = Lease::new(&a);
        let b = r.get("api", addr, true);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.inflight(), 1);
        assert!(!b.probe_up(), "an existing state keeps its health");
        assert!(!Arc::ptr_eq(&a, &r.get("other", addr, true)));
    }

    #[test]
    fn passive_ejection_follows_max_fails_within_the_window() {
        let s = BackendState::new(true);
        let p = PassivePolicy {
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
        };
        let t0 = now_ns();
        let sec = 1_000_000_000;
        assert!(!s.record_failure(t0, p, || true));
        assert!(!s.record_failure(t0 + sec, p, || true));
        // A failure after the window restarts the count.
        assert!(!s.record_failure(t0 + 12 * sec, p, || true));
        assert!(!s.record_failure(t0 + 13 * sec, p, || true));
        assert!(s.available(t0 + 13 * sec));
        assert!(
            s.record_failure(t0 + 14 * sec, p, || true),
            "third failure in the window ejects"
        );
        assert!(!s.available(t0 + 15 * sec));
        assert!(s.available(t0 + 25 * sec), "back after fail_timeout");
        // Slow start begins when the ejection ends.
        let ramp = s.ramp(t0 + 29 * sec, 10 * sec).unwrap();
        assert!((ramp - 0.5).abs() < 0.01, "{ramp}");
        assert_eq!(s.ramp(t0 + 40 * sec, 10 * sec), None);
    }

    #[test]
    fn the_last_available_member_is_not_ejected_until_another_is_back() {
        let s = BackendState::new(true);
        let p = PassivePolicy {
            max_fails: 2,
            fail_timeout: Duration::from_secs(10),
        };
        let t = now_ns();
        assert!(!s.record_failure(t, p, || false));
        assert!(!s.record_failure(t + 1, p, || false), "no other member");
        assert!(s.available(t + 2));
        assert!(
            s.record_failure(t + 3, p, || true),
            "at the threshold, the next failure ejects once another member is available"
        );
        assert!(!s.available(t + 4));
    }

    #[test]
    fn probe_verdicts_and_ramp() {
        let s = BackendState::new(false);
        assert!(!s.available(now_ns()));
        let t = now_ns();
        assert!(s.set_probe_up(true, t));
        assert!(!s.set_probe_up(true, t));
        assert!(s.available(t));
        assert!(s.ramp(t + 1, 1000).is_some());
        assert_eq!(s.ramp(t + 1, 0), None);
        // Passive ejection while up stays; a probe-confirmed return clears it.
        let p = PassivePolicy {
            max_fails: 1,
            fail_timeout: Duration::from_secs(60),
        };
        assert!(s.record_failure(t, p, || true));
        assert!(!s.available(t + 1));
        s.set_probe_up(false, t + 2);
        s.set_probe_up(true, t + 3);
        assert!(s.available(t + 4));
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
