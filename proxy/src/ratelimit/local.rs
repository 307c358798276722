//! The embedded store: the same algorithms in process memory, for a single instance without
//! Redis and as the fallback when Redis fails. Sharded maps, each lock held for one check only;
//! entries past their window are swept as shards are used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Mutex;

use super::algo::{self, Decision, State};
use crate::config::LimitPolicy;
use crate::util::hash::hash64;

const SHARDS: usize = 16;
/// Sweep a shard's expired entries once every this many checks on it.
const SWEEP_EVERY: u32 = 4096;

struct Shard {
    entries: Mutex<HashMap<String, (State, u64)>>,
    ops: AtomicU32,
}

/// In-process counters.
pub struct LocalStore {
    shards: Vec<Shard>,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    entries: Mutex::new(HashMap::new()),
                    ops: AtomicU32::new(0),
                })
                .collect(),
        }
    }
}

impl LocalStore {
    /// Check one request on `key` at `now_ms`.
    pub fn check(&self, key: &str, policy: &LimitPolicy, now_ms: u64) -> Decision {
        let shard = &self.shards[(hash64(key.as_bytes()) % SHARDS as u64) as usize];
        let sweep = shard.ops.fetch_add(1, Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let mut map = shard.entries.lock().unwrap_or_else(|e| e.into_inner());
        if sweep {
            map.retain(|_, (_, expires)| *expires > now_ms);
        }
        match map.get_mut(key) {
            Some((state, expires)) => {
                let mut s = (*expires > now_ms).then(|| state.clone());
                let d = algo::check(&mut s, policy, now_ms);
                if let Some(s) = s {
                    *expires = s.expires_at(policy);
                    *state = s;
                }
                d
            }
            None => {
                let mut s = None;
                let d = algo::check(&mut s, policy, now_ms);
                if let Some(s) = s {
                    let expires = s.expires_at(policy);
                    map.insert(key.to_owned(), (s, expires));
                }
                d
            }
        }
    }

    /// Entries held (for tests and status).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.entries.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
