// SLUICE PATCH: this whole file is new (see vendor/README.md, "Idle connection pool").
//
//! The keep-alive pool of idle upstream streams used by [super::TransportConnector].
//!
//! Stock Pingora 0.9.1 spawns one watcher task per released connection (an `Arc<Mutex<Stream>>`,
//! a `Notify`, a `oneshot` and an LRU entry), and wakes that task again on reuse before the
//! stream can be taken back. That is a task spawn, two wake-ups and a `getpeername` syscall per
//! proxied request. This pool keeps idle streams in plain per-peer stacks behind one short
//! `parking_lot` lock (never held across an `.await`):
//! - `take` pops the most recently released stream for the peer and checks it without blocking
//!   (`reusable`): a stream the server closed, or that has unexpected bytes, is dropped and the
//!   next one is tried;
//! - `put` checks the stream the same way and pushes it; when the pool is full the oldest idle
//!   stream goes (of the same peer when it has one, else the oldest overall);
//! - one sweeper task per pool (spawned on the first `put`, ended when the pool is dropped)
//!   closes, every [SWEEP_INTERVAL], streams whose idle timeout passed or that the server
//!   closed, so closed sockets do not linger in CLOSE_WAIT.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use log::{debug, warn};
use parking_lot::Mutex;
use tokio::io::AsyncReadExt;

use super::PoolCallback;
use crate::protocols::Stream;

/// How often the sweeper closes expired and server-closed idle streams.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    since: Instant,
    /// When the stream's idle timeout passes (`None`: kept until used or evicted).
    deadline: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// Hashes the pool's keys, which are already hashes ([crate::upstreams::peer::Peer::reuse_hash]):
/// one multiply spreads a key's bits over the high ones the table's control bytes use, instead
/// of `HashMap`'s default SipHash, about 140 instructions per `take` and per `put` (callgrind,
/// two per proxied request). A peer whose reuse hash is a poor one (small integers) still
/// hashes apart.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u64` keys; kept correct for any other.
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the golden-ratio multiplier, then the high bits folded down.
        let m = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = m ^ (m >> 32);
    }
}

#[derive(Default)]
struct Inner {
    /// Idle streams per peer reuse hash, oldest first.
    by_key: HashMap<u64, Vec<Idle>, BuildHasherDefault<KeyHasher>>,
    total: usize,
}

/// The pool. Shared between the connector and its sweeper (which holds a `Weak`).
pub(crate) struct IdlePool {
    inner: Mutex<Inner>,
    capacity: usize,
    sweeper_started: AtomicBool,
    callback: Option<PoolCallback>,
}

/// Whether an idle stream can carry another request: nothing to read and not closed. Polls the
/// stream once without waiting.
pub(crate) fn reusable(stream: &mut Stream, unexpected_data: &AtomicU64) -> bool {
    let mut buf = [0; 1];
    // tokio::task::unconstrained because now_or_never may yield None when the future is ready
    match tokio::task::unconstrained(stream.read(&mut buf[..])).now_or_never() {
        None => true,
        Some(Ok(0)) => {
            debug!("Idle connection is closed");
            false
        }
        Some(Ok(_)) => {
            warn!("Unexpected data read in idle connection");
            unexpected_data.fetch_add(1, Ordering::Relaxed);
            false
        }
        Some(Err(e)) => {
            debug!("Idle connection is broken: {e:?}");
            false
        }
    }
}

impl IdlePool {
    pub(crate) fn new(capacity: usize, callback: Option<PoolCallback>) -> Self {
        IdlePool {
            inner: Mutex::new(Inner::default()),
            capacity,
            sweeper_started: AtomicBool::new(false),
            callback,
        }
    }

    /// A reusable idle stream for the peer with reuse hash `key`, newest first.
    pub(crate) fn take(&self, key: u64, unexpected_data: &AtomicU64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut inner = self.inner.lock();
                let stack = inner.by_key.get_mut(&key)?;
                let idle = stack.pop()?;
                inner.total -= 1;
                idle
            };
            if idle.expired(now) {
                continue; // dropped: closes the socket
            }
            let mut stream = idle.stream;
            if reusable(&mut stream, unexpected_data) {
                return Some(stream);
            }
        }
    }

    /// Keep `stream` for the peer with reuse hash `key` for at most `idle_timeout`.
    pub(crate) fn put(
        self: &Arc<Self>,
        key: u64,
        mut stream: Stream,
        idle_timeout: Option<Duration>,
        unexpected_data: &AtomicU64,
    ) {
        if self.capacity == 0 || !reusable(&mut stream, unexpected_data) {
            return;
        }
        self.start_sweeper();
        let now = Instant::now();
        let idle = Idle {
            stream,
            since: now,
            deadline: idle_timeout.map(|t| now + t),
        };
        let evicted = {
            let mut inner = self.inner.lock();
            let evicted = if inner.total >= self.capacity {
                inner.evict_oldest(key)
            } else {
                None
            };
            inner.by_key.entry(key).or_default().push(idle);
            inner.total += 1;
            evicted
        };
        // Closed outside the lock.
        if let (Some(old), Some(cb)) = (evicted, &self.callback) {
            cb(old.since.elapsed());
        }
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.load(Ordering::Relaxed)
            || self.sweeper_started.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let weak = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(sweep_forever(weak));
    }

    /// Close expired and closed idle streams; returns how many were closed.
    fn sweep(&self, unexpected_data: &AtomicU64) -> usize {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut inner = self.inner.lock();
            let mut removed = 0;
            inner.by_key.retain(|_, stack| {
                let before = stack.len();
                let mut i = 0;
                while i < stack.len() {
                    let keep = !stack[i].expired(now)
                        && reusable(&mut stack[i].stream, unexpected_data);
                    if keep {
                        i += 1;
                    } else {
                        closed.push(stack.remove(i));
                    }
                }
                removed += before - stack.len();
                !stack.is_empty()
            });
            inner.total -= removed;
        }
        let n = closed.len();
        drop(closed); // closes the sockets outside the lock
        n
    }

}

impl Inner {
    /// Remove the oldest idle stream of `key`, or else the oldest of any peer.
    fn evict_oldest(&mut self, key: u64) -> Option<Idle> {
        let victim_key = match self.by_key.get(&key) {
            Some(stack) if !stack.is_empty() => key,
            _ => *self
                .by_key
                .iter()
                .filter_map(|(k, s)| s.first().map(|i| (k, i.since)))
                .min_by_key(|(_, since)| *since)?
                .0,
        };
        let stack = self.by_key.get_mut(&victim_key)?;
        let old = stack.remove(0);
        if stack.is_empty() {
            self.by_key.remove(&victim_key);
        }
        self.total -= 1;
        Some(old)
    }
}

/// The sweeper: runs while the pool lives. Unexpected data found while sweeping is not counted
/// again in the connector's counter (the stream is closed either way).
async fn sweep_forever(pool: Weak<IdlePool>) {
    let ignored = AtomicU64::new(0);
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let n = pool.sweep(&ignored);
        if n > 0 {
            debug!("closed {n} idle upstream connections");
        }
    }
}
