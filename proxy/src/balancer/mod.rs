//! Backend selection strategies over one pool: round-robin, smooth weighted round-robin,
//! least-connections, consistent IP hash, weighted random and P2C with peak-EWMA.
//!
//! A [`Balancer`] is immutable apart from its rotation counters and is rebuilt with the pool;
//! live per-backend state ([`BackendState`]) lives outside it and is shared across rebuilds.
//! Selection takes an `eligible` filter (health, already tried) and never allocates.

mod budget;
mod ring;
mod state;
mod strategy;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

pub use budget::RetryBudget;
pub use ring::HashRing;
pub use state::{BackendCounters, BackendState, Lease, PassivePolicy, StateRegistry, EWMA_DECAY};

use crate::util::hash::hash64;

pub use strategy::Strategy;

/// What a strategy needs to know about one pool member.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Stable identity used for hashing (the address as configured).
    pub key: String,
    /// Relative share of traffic, at least 1.
    pub weight: u32,
    /// Live counters shared with leases.
    pub state: Arc<BackendState>,
    /// Only picked while no primary is available.
    pub backup: bool,
}

/// Pool-level rules applied around the strategy by [`Balancer::pick`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PickPolicy {
    /// Slow-start ramp in nanoseconds (0: none).
    pub slow_start_ns: u64,
    /// With nothing available, pick among all untried members anyway.
    pub panic_mode: bool,
}

/// The selection state of one pool.
#[derive(Debug)]
pub struct Balancer {
    slots: Vec<Slot>,
    algo: Algo,
}

#[derive(Debug)]
enum Algo {
    RoundRobin(AtomicUsize),
    /// nginx's smooth weighted round-robin: current weights per slot. The lock is held only for
    /// one pass over the pool, never across an await.
    Weighted(Mutex<Vec<i64>>),
    /// Rotation offset so that ties spread evenly.
    LeastConn(AtomicUsize),
    IpHash(HashRing),
    Random,
    P2c,
}

impl Balancer {
    /// A balancer for `slots` using `strategy`.
    pub fn new(strategy: Strategy, slots: Vec<Slot>) -> Self {
        let algo = match strategy {
            Strategy::RoundRobin => Algo::RoundRobin(AtomicUsize::new(0)),
            Strategy::Weighted => Algo::Weighted(Mutex::new(vec![0; slots.len()])),
            Strategy::LeastConn => Algo::LeastConn(AtomicUsize::new(0)),
            Strategy::IpHash => Algo::IpHash(HashRing::new(&slots)),
            Strategy::Random => Algo::Random,
            Strategy::P2c => Algo::P2c,
        };
        Balancer { slots, algo }
    }

    /// The pool members.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Pick a member for a request that has already tried `tried`, at time `now` ([`now_ns`]):
    /// an available primary (probes up, not ejected), else an available backup, else (in panic
    /// mode) any untried member. A member in slow start is admitted with a probability equal to
    /// its ramp fraction while others are available. `None`: nothing may be tried.
    pub fn pick(
        &self,
        hash_key: &[u8],
        tried: &Tried,
        now: u64,
        policy: PickPolicy,
    ) -> Option<usize> {
        let avail = |i: usize, backup: bool| {
            let s = &self.slots[i];
            s.backup == backup && !tried.contains(i) && s.state.available(now)
        };
        // One draw per pick, so every call of the filter within one selection agrees.
        let draw = if policy.slow_start_ns > 0 {
            rand::random::<u64>()
        } else {
            0
        };
        for backup in [false, true] {
            if policy.slow_start_ns > 0 {
                let ramped = self.select(hash_key, |i| {
                    avail(i, backup) && self.ramp_admits(i, now, policy.slow_start_ns, draw)
                });
                if ramped.is_some() {
                    return ramped;
                }
            }
            if let Some(i) = self.select(hash_key, |i| avail(i, backup)) {
                return Some(i);
            }
        }
        if policy.panic_mode {
            return self.select(hash_key, |i| !tried.contains(i));
        }
        None
    }

    /// Whether [`Balancer::pick`] could find a member, without picking (no rotation moves).
    pub fn has_candidate(&self, tried: &Tried, now: u64, policy: PickPolicy) -> bool {
        self.slots
            .iter()
            .enumerate()
            .any(|(i, s)| !tried.contains(i) && (policy.panic_mode || s.state.available(now)))
    }

    /// Whether slow start lets member `i` take this request (always, once ramped up).
    fn ramp_admits(&self, i: usize, now: u64, slow_start_ns: u64, draw: u64) -> bool {
        match self.slots[i].state.ramp(now, slow_start_ns) {
            None => true,
            Some(fraction) => {
                let r = hash64(&(draw ^ i as u64).to_le_bytes()) >> 11;
                (r as f64 / (1u64 << 53) as f64) < fraction.max(0.01)
            }
        }
    }

    /// Pick a member among those for which `eligible(index)` holds. `hash_key` (the client IP) is
    /// used by `ip_hash` only. `None` when no member is eligible.
    pub fn select(&self, hash_key: &[u8], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.slots.len();
        match &self.algo {
            Algo::RoundRobin(next) => {
                let start = next.fetch_add(1, Relaxed);
                (0..n).map(|i| (start + i) % n).find(|&i| eligible(i))
            }
            Algo::Weighted(current) => {
                let mut cw = current.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in 0..n {
                    if !eligible(i) {
                        continue;
                    }
                    let w = i64::from(self.slots[i].weight);
                    cw[i] += w;
                    total += w;
                    if best.is_none_or(|b| cw[i] > cw[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    cw[b] -= total;
                }
                best
            }
            Algo::LeastConn(offset) => {
                let start = offset.fetch_add(1, Relaxed);
                let mut best: Option<usize> = None;
                for i in (0..n).map(|k| (start + k) % n) {
                    if eligible(i) && best.is_none_or(|b| self.less_loaded(i, b)) {
                        best = Some(i);
                    }
                }
                best
            }
            Algo::IpHash(ring) => ring.select(hash64(hash_key), eligible),
            Algo::Random => {
                let total: u64 = (0..n)
                    .filter(|&i| eligible(i))
                    .map(|i| u64::from(self.slots[i].weight))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut r = rand::random::<u64>() % total;
                (0..n).filter(|&i| eligible(i)).find(|&i| {
                    let w = u64::from(self.slots[i].weight);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
            }
            Algo::P2c => {
                let r = rand::random::<u64>();
                let a = self.eligible_from((r as usize) % n, &eligible)?;
                let b = self
                    .eligible_from(((r >> 32) as usize) % n, &eligible)
                    .filter(|&b| b != a)
                    .or_else(|| self.eligible_from((a + 1) % n, &eligible))
                    .unwrap_or(a);
                if self.less_loaded(b, a)
                    || (!self.less_loaded(a, b)
                        && self.slots[b].state.ewma_ns() < self.slots[a].state.ewma_ns())
                {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    /// First eligible member at or after `start`, wrapping around.
    fn eligible_from(&self, start: usize, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.slots.len();
        (0..n).map(|i| (start + i) % n).find(|&i| eligible(i))
    }

    /// Whether `a` has fewer in-flight requests than `b` relative to their weights.
    fn less_loaded(&self, a: usize, b: usize) -> bool {
        let (sa, sb) = (&self.slots[a], &self.slots[b]);
        (sa.state.inflight() as u64) * u64::from(sb.weight)
            < (sb.state.inflight() as u64) * u64::from(sa.weight)
    }
}

/// The members a request has already tried, as a fixed bitset (pools hold at most
/// [`crate::config::MAX_BACKENDS`] members), so retries never pick them again and the request
/// path does not allocate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried([u64; 4]);

impl Tried {
    /// Mark member `i` tried.
    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Make member `i` eligible again (a retry that was not the member's fault).
    pub fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    /// Whether member `i` was tried.
    pub fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// How many members were tried.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether nothing was tried yet.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

#[cfg(test)]
mod tests;
