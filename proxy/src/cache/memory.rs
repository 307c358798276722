//! The embedded cache store (no `[redis]`): complete objects in memory, bounded by
//! `cache.memory_bytes` with least-recently-used eviction. An entry becomes visible only once
//! its body is complete. One short mutex section per lookup or insert; never held across an
//! `.await`.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheMeta;
use pingora::Result;

use super::stats::CacheStats;

/// `CacheMeta` as serialized by pingora-cache: (internal, header).
type BinaryMeta = (Vec<u8>, Vec<u8>);

/// An entry's key: the cache key's combined hash (`CacheHashKey::combined_bin`). Its hex form
/// (`combined()`) cost about 4,600 instructions per lookup to format (callgrind, a hit).
type Key = [u8; 16];

/// One stored response.
struct Entry {
    /// The cache key's primary string (scheme://host/path?query), for pattern purges.
    url: String,
    /// Its tags, for tag purges.
    tags: Vec<String>,
    /// Its metadata, deserialized once when stored: each hit gets a copy (deserializing on
    /// every hit cost about 20,700 instructions, a third of a hit: zstd, httparse, a new map).
    /// The copy is what a lookup deserializing the stored bytes would give. Shared with lookups
    /// in flight, so a hit copies nothing under the lock.
    meta: Arc<CacheMeta>,
    /// The serialized metadata's size, counted against the bound.
    meta_bytes: usize,
    body: Bytes,
    /// LRU position.
    tick: u64,
    /// When the entry stops being served ([`super::freshness::retention`] from its last
    /// write), as Redis expires it.
    expires: std::time::Instant,
}

impl Entry {
    fn size(&self) -> u64 {
        (self.url.len() + self.meta_bytes + self.body.len()) as u64 + 64
    }
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Key, Entry>,
    order: BTreeMap<u64, Key>,
    bytes: u64,
}

impl Lru {
    fn remove(&mut self, key: &Key) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.bytes -= e.size();
                true
            }
            None => false,
        }
    }
}

/// The embedded store.
pub struct MemoryStore {
    lru: Mutex<Lru>,
    capacity: u64,
    tick: AtomicU64,
    /// The cache's metrics (entries stored).
    stats: Arc<CacheStats>,
    /// How long stale entries with a validator are kept for revalidation.
    stale_retention: std::time::Duration,
}

impl MemoryStore {
    /// A store holding at most `capacity` bytes (metadata, headers and bodies), keeping stale
    /// entries with a validator for `stale_retention`.
    pub fn new(
        capacity: u64,
        stale_retention: std::time::Duration,
        stats: Arc<CacheStats>,
    ) -> Self {
        MemoryStore {
            stats,
            stale_retention,
            lru: Mutex::new(Lru::default()),
            capacity,
            tick: AtomicU64::new(0),
        }
    }

    /// Entries and bytes stored.
    pub fn usage(&self) -> (u64, u64) {
        let lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        (lru.entries.len() as u64, lru.bytes)
    }

    /// Remove every entry.
    pub fn clear(&self) -> u64 {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let n = lru.entries.len() as u64;
        *lru = Lru::default();
        n
    }

    /// Remove every entry whose URL matches `glob`; returns how many.
    pub fn purge_matching(&self, glob: &globset::GlobMatcher) -> u64 {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<Key> = lru
            .entries
            .iter()
            .filter(|(_, e)| glob.is_match(&e.url))
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            lru.remove(k);
        }
        doomed.len() as u64
    }

    /// Remove every entry carrying one of `tags`, in one critical section (atomic for
    /// readers); returns how many.
    pub fn purge_tags(&self, tags: &[String]) -> u64 {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let doomed: Vec<Key> = lru
            .entries
            .iter()
            .filter(|(_, e)| e.tags.iter().any(|t| tags.contains(t)))
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            lru.remove(k);
        }
        doomed.len() as u64
    }

    fn insert(
        &self,
        key: Key,
        url: String,
        tags: Vec<String>,
        meta: BinaryMeta,
        body: Bytes,
        keep: std::time::Duration,
    ) {
        // The same round trip a store that keeps bytes makes on every lookup, made once.
        let Ok(parsed) = CacheMeta::deserialize(&meta.0, &meta.1) else {
            return;
        };
        let tick = self.tick.fetch_add(1, Relaxed);
        let entry = Entry {
            url,
            tags,
            meta: Arc::new(parsed),
            meta_bytes: meta.0.len() + meta.1.len(),
            body,
            tick,
            expires: std::time::Instant::now() + keep,
        };
        let size = entry.size();
        if size > self.capacity {
            return;
        }
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.remove(&key);
        while lru.bytes + size > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.entries.remove(&oldest) {
                lru.bytes -= e.size();
            }
        }
        lru.bytes += size;
        lru.order.insert(tick, key);
        lru.entries.insert(key, entry);
    }

    fn get(&self, key: &Key) -> Option<(Arc<CacheMeta>, Bytes)> {
        let tick = self.tick.fetch_add(1, Relaxed);
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        let lru = &mut *lru;
        let e = lru.entries.get_mut(key)?;
        if e.expires <= std::time::Instant::now() {
            lru.remove(key);
            return None;
        }
        lru.order.remove(&e.tick);
        e.tick = tick;
        lru.order.insert(tick, *key);
        Some((e.meta.clone(), e.body.clone()))
    }
}

/// Serves a stored body in one piece (or a seeked range of it).
struct MemoryHit {
    body: Bytes,
    done: bool,
    range: (usize, usize),
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                format!("seek start {start} beyond body of {len} bytes"),
            );
        }
        self.range = (start, end.map_or(len, |e| e.min(len)));
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Buffers a response body and stores it when complete.
struct MemoryMiss {
    store: &'static MemoryStore,
    key: Key,
    url: String,
    tags: Vec<String>,
    meta: BinaryMeta,
    body: BytesMut,
    /// How long the entry is kept once written.
    keep: std::time::Duration,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let len = self.body.len();
        self.store.stats.stored(len as u64);
        self.store.insert(
            self.key,
            self.url,
            self.tags,
            self.meta,
            self.body.freeze(),
            self.keep,
        );
        Ok(MissFinishType::Created(len))
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some((meta, body)) = self.get(&key.combined_bin()) else {
            return Ok(None);
        };
        let meta = CacheMeta::clone(&meta);
        let len = body.len();
        let hit = MemoryHit {
            body,
            done: false,
            range: (0, len),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            store: self,
            key: key.combined_bin(),
            url: key.primary_key_str().unwrap_or_default().to_owned(),
            tags: super::entry_tags(meta),
            meta: meta.serialize()?,
            body: BytesMut::new(),
            keep: super::freshness::retention(meta, self.stale_retention),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let removed = self
            .lru
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&target.key().combined_bin());
        Ok(if removed {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let key = key.combined_bin();
        let keep = super::freshness::retention(meta, self.stale_retention);
        let (internal, header) = meta.serialize()?;
        let parsed = CacheMeta::deserialize(&internal, &header)?;
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        match lru.entries.get_mut(&key) {
            Some(e) => {
                let before = e.size();
                e.meta = Arc::new(parsed);
                e.meta_bytes = internal.len() + header.len();
                e.expires = std::time::Instant::now() + keep;
                let after = e.size();
                lru.bytes = lru.bytes + after - before;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    /// A key from a short name.
    fn key(name: &str) -> Key {
        let mut k = [0u8; 16];
        k[..name.len()].copy_from_slice(name.as_bytes());
        k
    }

    /// A real serialized meta (a lookup must be able to read it back).
    fn meta() -> BinaryMeta {
        let now = std::time::SystemTime::now();
        let header = pingora::http::ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now + HOUR, now, 0, 0, header)
            .serialize()
            .unwrap()
    }

    /// What an entry with `body` bytes and no URL counts against the bound.
    fn entry_size(body: u64) -> u64 {
        let (a, b) = meta();
        64 + body + (a.len() + b.len()) as u64
    }

    fn test_stats() -> Arc<CacheStats> {
        Arc::new(CacheStats::new(&prometheus::Registry::new()).unwrap())
    }

    #[test]
    fn least_recently_used_entries_are_evicted_first() {
        let s = MemoryStore::new(3 * entry_size(100), HOUR, test_stats());
        for k in ["a", "b", "c"] {
            s.insert(
                key(k),
                String::new(),
                vec![],
                meta(),
                Bytes::from(vec![0u8; 100]),
                HOUR,
            );
        }
        assert!(s.get(&key("a")).is_some()); // a is now the most recent
        s.insert(
            key("d"),
            String::new(),
            vec![],
            meta(),
            Bytes::from(vec![0u8; 100]),
            HOUR,
        );
        assert!(s.get(&key("b")).is_none(), "b was least recently used");
        assert!(
            s.get(&key("a")).is_some() && s.get(&key("c")).is_some() && s.get(&key("d")).is_some()
        );
        assert_eq!(s.usage(), (3, 3 * entry_size(100)));
    }

    #[test]
    fn a_hit_gets_the_meta_as_stored_and_unreadable_meta_is_not_kept() {
        let s = MemoryStore::new(10 * entry_size(10), HOUR, test_stats());
        let (internal, header) = meta();
        let expected = CacheMeta::deserialize(&internal, &header).unwrap();
        s.insert(
            key("ok"),
            String::new(),
            vec![],
            (internal, header),
            Bytes::from_static(b"0123456789"),
            HOUR,
        );
        let (got, body) = s.get(&key("ok")).unwrap();
        assert_eq!(got.response_header().status, 200);
        assert_eq!(got.fresh_until(), expected.fresh_until());
        assert_eq!(got.created(), expected.created());
        assert_eq!(&body[..], b"0123456789");
        s.insert(
            key("bad"),
            String::new(),
            vec![],
            (vec![1, 2], vec![3]),
            Bytes::new(),
            HOUR,
        );
        assert!(s.get(&key("bad")).is_none());
        assert_eq!(s.usage().0, 1);
    }

    #[test]
    fn an_object_larger_than_the_store_is_not_kept() {
        let s = MemoryStore::new(100, HOUR, test_stats());
        s.insert(
            key("big"),
            String::new(),
            vec![],
            meta(),
            Bytes::from(vec![0u8; 200]),
            HOUR,
        );
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn an_entry_past_its_retention_is_gone_as_in_redis() {
        let s = MemoryStore::new(10 * entry_size(0), HOUR, test_stats());
        let put =
            |k: &str, keep| s.insert(key(k), String::new(), vec![], meta(), Bytes::new(), keep);
        put("kept", HOUR);
        put("expired", std::time::Duration::ZERO);
        assert!(s.get(&key("kept")).is_some());
        assert!(s.get(&key("expired")).is_none());
        assert_eq!(s.usage().0, 1, "an expired entry is removed when found");
    }
}
