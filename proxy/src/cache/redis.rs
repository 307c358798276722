//! The Redis cache store, shared by every Sluice instance.
//!
//! Layout for an entry whose key hashes to `HASH`, all under the hash tag `{NS:HASH}` so one
//! entry lives in one Redis Cluster slot:
//! - `{NS:HASH}:m`, a hash: `p` (the body version, chunk count, body length and chunk size, the
//!   serialized `CacheMeta`, and the body when it is inline: [`pack`]), and beside it `v` (the
//!   body version), `n` (number of body chunks; 0 when the body is inline) and `u` (the URL);
//! - `{NS:HASH}:b:V:I`, chunk `I` of body version `V`.
//!
//! Chunks are written while the body streams; the meta hash is written last, so an entry is
//! visible only once complete, and a new version never mixes with an old one. Every key expires:
//! TTL = freshness + how long a stale copy stays useful (its stale windows, or as long again as
//! it was fresh, so it can be revalidated). Every call is bounded by `command_timeout_ms`; a
//! failure is a miss (never an error to the client) and a circuit breaker stops calling a
//! failing Redis for a cool-down.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::cache::key::{CacheHashKey, CacheKey};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::CacheMeta;
use pingora::{Error, ErrorType, Result};
use redis::RedisResult;

use super::stats::{CacheStats, Call};
use crate::config::{CacheSpec, RedisSpec, RedisTarget};
use crate::store::{BreakerState, Component, Conn, Guarded};

/// Add an entry to a tag set and keep the set alive as long as the entry.
static TAG_ADD: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "redis.call('SADD', KEYS[1], ARGV[1]) \
         if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then \
           redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1",
    )
});

/// Remove every entry of a tag set, and the set, in one atomic step (single node).
static TAG_PURGE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        "local n = 0 \
         for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
           n = n + redis.call('DEL', p .. ':m') end \
         redis.call('DEL', KEYS[1]) return n",
    )
});

/// Refresh an entry's metadata (`update_meta`): only an existing entry in the packed layout
/// (never resurrect a purged one). Its [`PACKED`] value keeps its shape (the first
/// [`PACKED_SHAPE`] bytes) and inline body, and the metadata between is replaced by ARGV[1]
/// ([`pack_meta`]); every key gets the TTL ARGV[2], the body chunks (prefix ARGV[3]) too (same
/// hash tag, so the same Cluster slot). Built from the layout's constants, so the two cannot
/// drift apart.
static UPDATE_META: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        "local old = redis.call('HGET', KEYS[1], '{PACKED}') \
         if not old or #old < {PACKED_HEAD} or string.byte(old, 1) ~= {PACKED_FORMAT} then return 0 end \
         local ilen, hlen = struct.unpack('<I4I4', old, {lengths_at}) \
         redis.call('HSET', KEYS[1], '{PACKED}', \
           string.sub(old, 1, {PACKED_SHAPE}) .. ARGV[1] .. string.sub(old, {body_at} + ilen + hlen)) \
         redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
         local v = redis.call('HGET', KEYS[1], 'v') \
         local n = tonumber(redis.call('HGET', KEYS[1], 'n')) or 0 \
         for i = 0, n - 1 do redis.call('PEXPIRE', ARGV[3] .. ':b:' .. v .. ':' .. i, ARGV[2]) end \
         return 1",
        // Lua strings count from 1.
        lengths_at = PACKED_SHAPE + 1,
        body_at = PACKED_HEAD + 1,
    ))
});

/// The Redis store.
pub struct RedisCacheStore {
    /// The connection behind its breaker and the cache's command timeout.
    redis: Guarded,
    /// For admin scans: `store::conn::masters` opens a connection to every master.
    target: RedisTarget,
    namespace: String,
    chunk_bytes: usize,
    /// The cache's metrics (calls, entries stored).
    stats: Arc<CacheStats>,
    /// How long stale entries with a validator are kept for revalidation.
    stale_retention: Duration,
    /// Metadata decoded on earlier hits.
    decoded: MetaMemo,
}

fn storage_error(what: &str, e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(
        ErrorType::Custom("cache storage"),
        format!("redis cache {what}: {e}"),
    )
}

impl RedisCacheStore {
    /// A store on `redis` for `spec`; nothing is connected yet.
    pub fn new(redis: &RedisSpec, spec: &CacheSpec, stats: Arc<CacheStats>) -> Self {
        RedisCacheStore {
            stats,
            stale_retention: spec.stale_retention,
            redis: Guarded::new(redis, spec.command_timeout, Component::Cache),
            target: redis.target.clone(),
            namespace: spec.namespace.clone(),
            chunk_bytes: spec.chunk_bytes as usize,
            decoded: MetaMemo::new(),
        }
    }

    /// `{NS:HASH}` for `key`. Built from the hash's bytes: `key.combined()` formats its hex
    /// form a byte at a time through `write!`, which cost about 7,000 instructions per hit here
    /// (callgrind, a Redis hit), and the `format!` around it more.
    fn prefix(&self, key: &CacheKey) -> String {
        prefix_of(&self.namespace, &key.combined_bin())
    }

    /// Run `work` under the timeout and the breaker ([`Guarded::call`]), counting it as the
    /// cache call `what`. `None` when Redis is skipped or failed: a miss.
    async fn call<T>(&self, what: Call, work: crate::store::Work<'_, T>) -> Option<T> {
        let started = std::time::Instant::now();
        let result = self.redis.call(work).await;
        if !matches!(result, Err(crate::store::CallError::Skipped)) {
            self.stats.call(what, started.elapsed(), result.is_ok());
        }
        result.ok()
    }

    /// Try to become the one instance that fetches `key` from the origin: `SET NX PX` on
    /// `{NS:HASH}:lock` for `ttl`.
    pub async fn acquire_fill_lock(&self, key: &CacheKey, ttl: Duration) -> FillLock {
        let lock = format!("{}:lock", self.prefix(key));
        let token: u64 = rand::random();
        let conn = self.redis.conn();
        let set: Option<Option<String>> = self
            .call(
                Call::Lock,
                Box::pin(async {
                    conn.get()
                        .await?
                        .query(
                            redis::cmd("SET")
                                .arg(&lock)
                                .arg(token)
                                .arg("NX")
                                .arg("PX")
                                .arg(ttl.as_millis() as u64),
                        )
                        .await
                }),
            )
            .await;
        match set {
            Some(Some(_)) => FillLock::Acquired(token),
            Some(None) => FillLock::HeldElsewhere,
            None => FillLock::Unavailable,
        }
    }

    /// Release a fill lock taken with `token` (only if it is still ours).
    pub async fn release_fill_lock(&self, key: &CacheKey, token: u64) {
        let lock = format!("{}:lock", self.prefix(key));
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let conn = self.redis.conn();
        self.call(
            Call::Unlock,
            Box::pin(async {
                let mut inv = script.key(&lock);
                inv.arg(token.to_string());
                conn.get().await?.invoke::<i64>(&inv).await
            }),
        )
        .await;
    }

    /// Wait while another instance fills `key`: `true` once the entry is stored, `false` when
    /// the lock went away without an entry (uncacheable, failed) or `deadline` passed.
    pub async fn wait_for_entry(&self, key: &CacheKey, deadline: std::time::Instant) -> bool {
        let prefix = self.prefix(key);
        let (meta, lock) = (format!("{prefix}:m"), format!("{prefix}:lock"));
        let conn = self.redis.conn();
        while std::time::Instant::now() < deadline {
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(&meta).cmd("EXISTS").arg(&lock);
            let state: Option<(u8, u8)> = self
                .call(
                    Call::Wait,
                    Box::pin(async { conn.get().await?.pipe(&pipe).await }),
                )
                .await;
            match state {
                Some((1, _)) => return true,
                Some((0, 1)) => tokio::time::sleep(Duration::from_millis(10)).await,
                _ => return false,
            }
        }
        false
    }

    /// The set indexing the entries tagged `tag`.
    fn tag_key(&self, tag: &str) -> String {
        format!("{{{}:tag:{tag}}}", self.namespace)
    }

    /// Remove every entry carrying one of `tags`. On one node each tag goes in one Lua script
    /// (atomic: no instance sees half of it); on a Cluster the entries live in other slots, so
    /// each entry disappears at once but not all in the same instant.
    pub async fn purge_tags(&self, tags: &[String]) -> RedisResult<u64> {
        let conn = self.redis.conn().get().await?;
        let mut removed = 0u64;
        for tag in tags {
            let set = self.tag_key(tag);
            match conn {
                Conn::Single(_) => {
                    let n: u64 = conn.invoke(&TAG_PURGE.key(&set)).await?;
                    removed += n;
                }
                Conn::Cluster(_) => {
                    let members: Vec<String> = conn.query(redis::cmd("SMEMBERS").arg(&set)).await?;
                    for m in members {
                        let n: u64 = conn.query(redis::cmd("DEL").arg(format!("{m}:m"))).await?;
                        removed += n;
                    }
                    let _: u64 = conn.query(redis::cmd("DEL").arg(&set)).await?;
                }
            }
        }
        Ok(removed)
    }

    /// Round trip of a `PING` on the cache's connection (admin health).
    pub async fn ping(&self) -> Result<Duration, String> {
        self.redis.ping().await
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.redis.breaker_state()
    }

    /// Whether the breaker currently skips Redis.
    pub fn breaker_open(&self) -> bool {
        self.breaker_state() == BreakerState::Open
    }

    /// How many times the cache's breaker opened and closed.
    pub fn breaker_transitions(&self) -> (u64, u64) {
        self.redis.breaker_transitions()
    }

    /// Delete the entries whose URL matches `glob` (or every key of the namespace when `glob`
    /// is `None`), scanning every master with `SCAN` (never `KEYS`). Returns entries removed.
    pub async fn purge_scan(&self, glob: Option<&globset::GlobMatcher>) -> RedisResult<u64> {
        let pattern = match glob {
            Some(_) => format!("{{{}:*}}:m", self.namespace),
            None => format!("{{{}:*}}*", self.namespace),
        };
        let mut removed = 0;
        for mut c in crate::store::conn::masters(&self.target).await? {
            for k in scan(&mut c, &pattern).await? {
                let hit = match glob {
                    None => true,
                    Some(g) => {
                        let url: Option<String> = redis::cmd("HGET")
                            .arg(&k)
                            .arg("u")
                            .query_async(&mut c)
                            .await?;
                        url.is_some_and(|u| g.is_match(&u))
                    }
                };
                if hit {
                    let n: u64 = redis::cmd("DEL").arg(&k).query_async(&mut c).await?;
                    if k.ends_with(":m") {
                        removed += n;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Entries (meta keys) in the namespace, counted by `SCAN` on every master.
    pub async fn count_entries(&self) -> RedisResult<u64> {
        let pattern = format!("{{{}:*}}:m", self.namespace);
        let mut n = 0;
        for mut c in crate::store::conn::masters(&self.target).await? {
            n += scan(&mut c, &pattern).await?.len() as u64;
        }
        Ok(n)
    }

    /// How long an entry with `meta` is kept in Redis ([`super::freshness::retention`]).
    fn ttl(&self, meta: &CacheMeta) -> Duration {
        super::freshness::retention(meta, self.stale_retention)
    }
}

/// The outcome of [`RedisCacheStore::acquire_fill_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillLock {
    /// This instance fetches; release with the token.
    Acquired(u64),
    /// Another instance is fetching.
    HeldElsewhere,
    /// Redis did not answer: fetch without coordination.
    Unavailable,
}

/// Reads an entry's body: inline, or chunk by chunk on demand.
struct RedisHit {
    store: &'static RedisCacheStore,
    prefix: String,
    version: u64,
    chunks: u64,
    /// Chunk size the entry was written with.
    chunk_bytes: usize,
    /// Body length.
    len: usize,
    /// Next chunk to read.
    next: u64,
    /// Bytes to drop from the start of the next chunk (after a seek).
    skip: usize,
    /// Bytes still to return.
    remaining: usize,
    /// The whole body, when stored inline (one chunk or less).
    inline: Option<Bytes>,
}

#[async_trait]
impl HandleHit for RedisHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if let Some(b) = self.inline.take() {
            let end = (self.skip + self.remaining).min(b.len());
            self.remaining = 0;
            return Ok(Some(b.slice(self.skip.min(end)..end)));
        }
        if self.next >= self.chunks {
            return Ok(None);
        }
        let key = format!("{}:b:{}:{}", self.prefix, self.version, self.next);
        let conn = self.store.redis.conn();
        let chunk: Option<Vec<u8>> = self
            .store
            .call(
                Call::ReadChunk,
                Box::pin(async { conn.get().await?.query(redis::cmd("GET").arg(&key)).await }),
            )
            .await
            .flatten();
        match chunk {
            Some(c) => {
                self.next += 1;
                let c = Bytes::from(c);
                let start = self.skip.min(c.len());
                let end = (start + self.remaining).min(c.len());
                self.skip = 0;
                self.remaining -= end - start;
                Ok(Some(c.slice(start..end)))
            }
            // Evicted or expired mid-read: the response cannot be completed from the cache.
            None => Err(storage_error("read", format!("chunk {key} is gone"))),
        }
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
        let end = end.map_or(self.len, |e| e.min(self.len));
        if start >= self.len || start > end {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek {start}..{end} outside a body of {} bytes", self.len),
            );
        }
        self.remaining = end - start;
        if self.inline.is_some() {
            self.skip = start;
        } else {
            self.next = (start / self.chunk_bytes) as u64;
            self.skip = start % self.chunk_bytes;
        }
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Streams a body into chunks and publishes the meta hash when complete. Redis failures only
/// abandon the entry; the client's response is never affected.
struct RedisMiss {
    store: &'static RedisCacheStore,
    prefix: String,
    /// The key's primary string, for pattern purges.
    url: String,
    /// Tags to index the entry under.
    tags: Vec<String>,
    meta: (Vec<u8>, Vec<u8>),
    ttl_ms: u64,
    version: u64,
    buf: BytesMut,
    chunks: u64,
    len: usize,
    failed: bool,
}

impl RedisMiss {
    async fn write_chunk(&mut self, data: Bytes) {
        let key = format!("{}:b:{}:{}", self.prefix, self.version, self.chunks);
        let conn = self.store.redis.conn();
        let ttl = self.ttl_ms;
        let ok = self
            .store
            .call(
                Call::WriteChunk,
                Box::pin(async {
                    conn.get()
                        .await?
                        .query::<()>(
                            redis::cmd("SET")
                                .arg(&key)
                                .arg(&data[..])
                                .arg("PX")
                                .arg(ttl),
                        )
                        .await
                }),
            )
            .await
            .is_some();
        if ok {
            self.chunks += 1;
        } else {
            self.failed = true;
        }
    }
}

#[async_trait]
impl HandleMiss for RedisMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.failed {
            return Ok(());
        }
        self.len += data.len();
        self.buf.extend_from_slice(&data);
        while self.buf.len() >= self.store.chunk_bytes && !self.failed {
            let chunk = self.buf.split_to(self.store.chunk_bytes).freeze();
            self.write_chunk(chunk).await;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.failed {
            return Ok(MissFinishType::Created(self.len));
        }
        let inline = self.chunks == 0;
        if !inline && !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf).freeze();
            self.write_chunk(rest).await;
            if self.failed {
                return Ok(MissFinishType::Created(self.len));
            }
        }
        let meta_key = format!("{}:m", self.prefix);
        let mut pipe = redis::pipe();
        let shape = [
            self.version,
            self.chunks,
            self.len as u64,
            self.store.chunk_bytes as u64,
        ];
        let packed = pack(shape, &self.meta, if inline { &self.buf[..] } else { &[] });
        // `v` and `n` also stand alone for `update_meta`'s script (the chunks' TTLs), `u` for
        // the admin's URL purges.
        pipe.atomic()
            .cmd("DEL")
            .arg(&meta_key)
            .ignore()
            .cmd("HSET")
            .arg(&meta_key)
            .arg(PACKED)
            .arg(&packed[..])
            .arg("v")
            .arg(self.version)
            .arg("n")
            .arg(self.chunks)
            .arg("u")
            .arg(&self.url)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&meta_key).arg(self.ttl_ms).ignore();
        let conn = self.store.redis.conn();
        if self
            .store
            .call(
                Call::PublishEntry,
                Box::pin(async { conn.get().await?.pipe::<()>(&pipe).await }),
            )
            .await
            .is_some()
        {
            self.store.stats.stored(self.len as u64);
            // Index the entry under each tag: a set per tag (its own hash tag, so any slot),
            // expiring no earlier than its longest-lived member.
            for tag in &self.tags {
                let set = self.store.tag_key(tag);
                let (member, ttl) = (self.prefix.clone(), self.ttl_ms);
                self.store
                    .call(
                        Call::Tag,
                        Box::pin(async {
                            let mut inv = TAG_ADD.key(&set);
                            inv.arg(&member).arg(ttl);
                            conn.get().await?.invoke::<i64>(&inv).await
                        }),
                    )
                    .await;
            }
        }
        Ok(MissFinishType::Created(self.len))
    }
}

/// Every key of one node matching `pattern`, by `SCAN` (never `KEYS`). Admin-only.
async fn scan(
    c: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> RedisResult<Vec<String>> {
    let (mut cursor, mut all) = (0u64, Vec::new());
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(c)
            .await?;
        all.extend(keys);
        if next == 0 {
            return Ok(all);
        }
        cursor = next;
    }
}

/// `{NS:HASH}`: the hash tag every key of one entry shares (see the module's layout).
fn prefix_of(namespace: &str, hash: &[u8; 16]) -> String {
    let mut hex = [0u8; 32];
    // Cannot fail: the output is exactly twice the input's length.
    let _ = hex::encode_to_slice(hash, &mut hex);
    let mut s = String::with_capacity(namespace.len() + 36);
    s.push('{');
    s.push_str(namespace);
    s.push(':');
    // Hex digits are ASCII.
    s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    s.push('}');
    s
}

/// The meta hash's field holding everything a lookup reads, packed by [`pack`].
const PACKED: &str = "p";
/// The first byte of a [`PACKED`] value: its layout. An entry in another layout (an older
/// Sluice's seven fields, a later format) is a miss here, refetched and written anew.
const PACKED_FORMAT: u8 = 1;
/// Bytes before the serialized metadata: the format byte, the body version, the chunk count,
/// the body length and the chunk size (little-endian `u64`s), then the lengths of the two
/// serialized `CacheMeta` parts (little-endian `u32`s). `update_meta`'s script keeps the first
/// [`PACKED_SHAPE`] bytes and the inline body, and replaces what lies between.
const PACKED_HEAD: usize = 41;
/// The format byte and the four `u64`s.
const PACKED_SHAPE: usize = 33;

/// An entry's [`PACKED`] value: `PACKED_HEAD` bytes, the serialized `CacheMeta`'s two parts,
/// then the body when it is inline (no chunks). One field instead of seven, so that a hit
/// reads one bulk string: redis-rs parses each value of a reply through `combine` (about 700
/// instructions and an allocation each), and the seven values of the `HMGET` this replaced
/// were about 6,000 of a Redis hit's 55,000 instructions (callgrind).
fn pack(shape: [u64; 4], meta: &(Vec<u8>, Vec<u8>), inline: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PACKED_HEAD + meta.0.len() + meta.1.len() + inline.len());
    p.push(PACKED_FORMAT);
    for n in shape {
        p.extend_from_slice(&n.to_le_bytes());
    }
    put_meta(&mut p, &meta.0, &meta.1);
    p.extend_from_slice(inline);
    p
}

/// The part of a [`PACKED`] value after its shape: both lengths, then both parts of a
/// serialized `CacheMeta` (what `update_meta` replaces).
fn pack_meta(internal: &[u8], header: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + internal.len() + header.len());
    put_meta(&mut p, internal, header);
    p
}

/// Append [`pack_meta`]'s bytes to `p`.
fn put_meta(p: &mut Vec<u8>, internal: &[u8], header: &[u8]) {
    // Serialized metadata is a few KiB; the bound only keeps a length from wrapping.
    p.extend_from_slice(
        &u32::try_from(internal.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    p.extend_from_slice(
        &u32::try_from(header.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    p.extend_from_slice(internal);
    p.extend_from_slice(header);
}

/// A [`PACKED`] value read back, its parts as ranges of `bytes`.
struct Packed {
    bytes: Bytes,
    version: u64,
    chunks: u64,
    len: usize,
    chunk_bytes: usize,
    internal: std::ops::Range<usize>,
    header: std::ops::Range<usize>,
    /// The inline body (empty for a chunked entry).
    body: std::ops::Range<usize>,
}

impl Packed {
    /// `None` for anything [`pack`] did not write: another format, a short or cut value.
    fn parse(bytes: Bytes) -> Option<Packed> {
        let head = bytes.get(..PACKED_HEAD)?;
        if head[0] != PACKED_FORMAT {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap_or_default());
        let (ilen, hlen) = (
            u32_at(PACKED_SHAPE) as usize,
            u32_at(PACKED_SHAPE + 4) as usize,
        );
        let internal = PACKED_HEAD..PACKED_HEAD.checked_add(ilen)?;
        let header = internal.end..internal.end.checked_add(hlen)?;
        if header.end > bytes.len() {
            return None;
        }
        Some(Packed {
            version: u64_at(1),
            chunks: u64_at(9),
            len: usize::try_from(u64_at(17)).ok()?,
            chunk_bytes: usize::try_from(u64_at(25)).ok()?,
            body: header.end..bytes.len(),
            internal,
            header,
            bytes,
        })
    }
}

/// Metadata already deserialized in this process, so a hot entry read from Redis is not decoded
/// again on every hit. `CacheMeta::deserialize` (zstd on the stored header, httparse, a new
/// header map) cost about 22,500 of a Redis hit's 101,000 instructions (callgrind).
///
/// Each slot keeps one entry's serialized bytes beside what they decode to, and a lookup uses
/// the decoded copy only when the bytes it just read from Redis are the same: the result is
/// exactly what deserializing them would give, so entries written or revalidated by another
/// instance are seen at once and nothing here can be stale. Direct-mapped by the key's hash
/// (a slot holds the last entry that mapped to it), a mutex per slot held only to compare and
/// copy an `Arc`; bounded to [`MetaMemo::SLOTS`] entries of at most [`MetaMemo::MAX_BYTES`]
/// serialized bytes each.
struct MetaMemo {
    slots: Box<[std::sync::Mutex<Option<MemoSlot>>]>,
}

struct MemoSlot {
    internal: Vec<u8>,
    header: Vec<u8>,
    meta: Arc<CacheMeta>,
}

impl MetaMemo {
    /// Slots in the table (a power of two).
    const SLOTS: usize = 1024;
    /// Larger serialized metadata is decoded on every hit rather than kept.
    const MAX_BYTES: usize = 8 * 1024;

    fn new() -> Self {
        MetaMemo {
            slots: (0..Self::SLOTS)
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
        }
    }

    fn slot(&self, key: &[u8; 16]) -> &std::sync::Mutex<Option<MemoSlot>> {
        let i = u16::from_le_bytes([key[0], key[1]]) as usize & (Self::SLOTS - 1);
        &self.slots[i]
    }

    /// The metadata `internal` and `header` deserialize to, decoded at most once while they
    /// stay the same for `key`. What is decoded depends on the bytes alone, so the key only
    /// picks the slot.
    fn decode(&self, key: &[u8; 16], internal: &[u8], header: &[u8]) -> Result<CacheMeta> {
        let slot = self.slot(key);
        let known = slot.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|m| m.internal == internal && m.header == header)
                .map(|m| m.meta.clone())
        });
        if let Some(meta) = known {
            return Ok(CacheMeta::clone(&meta));
        }
        let meta = CacheMeta::deserialize(internal, header)?;
        if internal.len() + header.len() <= Self::MAX_BYTES {
            if let Ok(mut s) = slot.lock() {
                *s = Some(MemoSlot {
                    internal: internal.to_vec(),
                    header: header.to_vec(),
                    meta: Arc::new(meta.clone()),
                });
            }
        }
        Ok(meta)
    }
}

#[async_trait]
impl Storage for RedisCacheStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let prefix = prefix_of(&self.namespace, &hash);
        let mut meta_key = String::with_capacity(prefix.len() + 2);
        meta_key.push_str(&prefix);
        meta_key.push_str(":m");
        let conn = self.redis.conn();
        let packed: Option<Option<Vec<u8>>> = self
            .call(
                Call::Lookup,
                Box::pin(async {
                    conn.get()
                        .await?
                        .query(redis::cmd("HGET").arg(&meta_key).arg(PACKED))
                        .await
                }),
            )
            .await;
        let Some(f) = packed.flatten().map(Bytes::from).and_then(Packed::parse) else {
            return Ok(None);
        };
        let meta = self
            .decoded
            .decode(&hash, &f.bytes[f.internal], &f.bytes[f.header])?;
        let hit = RedisHit {
            store: self,
            prefix,
            version: f.version,
            chunks: f.chunks,
            chunk_bytes: f.chunk_bytes.max(1),
            len: f.len,
            next: 0,
            skip: 0,
            remaining: f.len,
            inline: (f.chunks == 0).then(|| f.bytes.slice(f.body)),
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(RedisMiss {
            store: self,
            prefix: self.prefix(key),
            url: key.primary_key_str().unwrap_or_default().to_owned(),
            tags: super::entry_tags(meta),
            meta: meta.serialize()?,
            ttl_ms: self.ttl(meta).as_millis() as u64,
            version: rand::random(),
            buf: BytesMut::new(),
            chunks: 0,
            len: 0,
            failed: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let meta_key = format!(
            "{}:m",
            prefix_of(&self.namespace, &target.key().combined_bin())
        );
        let conn = self.redis.conn();
        let removed: Option<u64> = self
            .call(
                Call::Purge,
                Box::pin(async {
                    conn.get()
                        .await?
                        .query(redis::cmd("DEL").arg(&meta_key))
                        .await
                }),
            )
            .await;
        Ok(match removed {
            Some(n) if n > 0 => PurgeOutcome::Purged(None),
            _ => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let meta_key = format!("{}:m", self.prefix(key));
        let (internal, header) = meta.serialize()?;
        let ttl = self.ttl(meta).as_millis() as u64;
        let prefix = self.prefix(key);
        let conn = self.redis.conn();
        let updated: Option<i64> = self
            .call(
                Call::UpdateMeta,
                Box::pin(async {
                    let mut inv = UPDATE_META.key(&meta_key);
                    inv.arg(&pack_meta(&internal, &header)[..])
                        .arg(ttl)
                        .arg(&prefix);
                    conn.get().await?.invoke(&inv).await
                }),
            )
            .await;
        Ok(updated == Some(1))
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A real serialized meta whose response carries `etag`.
    fn meta(etag: &str) -> (Vec<u8>, Vec<u8>) {
        let now = std::time::SystemTime::now();
        let mut header = pingora::http::ResponseHeader::build(200, None).unwrap();
        header.insert_header("etag", etag).unwrap();
        CacheMeta::new(now + HOUR, now, 0, 0, header)
            .serialize()
            .unwrap()
    }

    fn etag(m: &CacheMeta) -> &str {
        m.headers()["etag"].to_str().unwrap()
    }

    #[test]
    fn the_prefix_is_the_hash_tag_the_stored_entries_use() {
        // The layout other instances (and older versions) read and write: `{NS:HEX}`, as
        // `format!("{{{ns}:{}}}", key.combined())` built it.
        let key = CacheKey::new("https://example.com/a?b=1", "");
        assert_eq!(
            prefix_of("sluice:cache", &key.combined_bin()),
            format!("{{sluice:cache:{}}}", key.combined())
        );
    }

    #[test]
    fn decoded_metadata_is_reused_only_while_the_stored_bytes_stay_the_same() {
        let memo = MetaMemo::new();
        let key = [7u8; 16];
        let (i1, h1) = meta("\"v1\"");
        let first = memo.decode(&key, &i1, &h1).unwrap();
        assert_eq!(etag(&first), "\"v1\"");
        let kept = memo
            .slot(&key)
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .meta
            .clone();
        let again = memo.decode(&key, &i1, &h1).unwrap();
        assert_eq!(etag(&again), "\"v1\"");
        assert_eq!(again.fresh_until(), first.fresh_until());
        assert_eq!(again.created(), first.created());
        assert!(
            Arc::ptr_eq(
                &kept,
                &memo.slot(&key).lock().unwrap().as_ref().unwrap().meta
            ),
            "the same bytes are not decoded again"
        );

        // Another instance revalidated the entry: new bytes for the same key are decoded,
        // never answered with the copy decoded before.
        let (i2, h2) = meta("\"v2\"");
        assert_eq!(etag(&memo.decode(&key, &i2, &h2).unwrap()), "\"v2\"");

        // Another key mapping to the same slot replaces it and is not confused with it.
        let mut other = key;
        other[15] = 8;
        assert_eq!(etag(&memo.decode(&other, &i1, &h1).unwrap()), "\"v1\"");

        // Unreadable bytes are an error, as from `deserialize`, and are not kept.
        assert!(memo.decode(&key, &[1, 2], &[3]).is_err());
        assert!(memo.decode(&other, &[1, 2], &[3]).is_err());
    }

    #[test]
    fn large_metadata_is_decoded_but_not_kept() {
        let memo = MetaMemo::new();
        let key = [9u8; 16];
        // Random hex, so that compression cannot bring it under the bound.
        let big: String = (0..MetaMemo::MAX_BYTES / 8)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        let (i, h) = meta(&big);
        assert!(i.len() + h.len() > MetaMemo::MAX_BYTES);
        let m = memo.decode(&key, &i, &h).unwrap();
        assert_eq!(etag(&m).len(), MetaMemo::MAX_BYTES * 2);
        assert!(memo.slot(&key).lock().unwrap().is_none());
    }

    #[test]
    fn a_packed_entry_reads_back_and_anything_else_is_a_miss() {
        let meta = (b"internal".to_vec(), b"header!".to_vec());
        let p = pack([5, 0, 3, 1024], &meta, b"abc");
        let f = Packed::parse(Bytes::from(p.clone())).unwrap();
        assert_eq!(&f.bytes[f.internal.clone()], b"internal");
        assert_eq!(&f.bytes[f.header.clone()], b"header!");
        assert_eq!(&f.bytes[f.body.clone()], b"abc");
        assert_eq!((f.version, f.chunks, f.len, f.chunk_bytes), (5, 0, 3, 1024));
        // What update_meta's script keeps and replaces.
        assert_eq!(f.internal.start, PACKED_HEAD);
        assert_eq!(
            &p[PACKED_SHAPE..f.header.end],
            &pack_meta(&meta.0, &meta.1)[..]
        );
        // A chunked entry has no inline body.
        let f = Packed::parse(Bytes::from(pack([9, 4, 10, 3], &meta, b""))).unwrap();
        assert!(f.body.is_empty());
        assert_eq!((f.version, f.chunks, f.len, f.chunk_bytes), (9, 4, 10, 3));
        // Cut anywhere inside its head or metadata: not an entry (never a panic).
        for cut in 0..PACKED_HEAD + 15 {
            assert!(
                Packed::parse(Bytes::copy_from_slice(&p[..cut])).is_none(),
                "{cut}"
            );
        }
        // Another format, or lengths pointing past the end.
        let mut other = p.clone();
        other[0] = 2;
        assert!(Packed::parse(Bytes::from(other)).is_none());
        let mut long = p;
        long[33..37].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Packed::parse(Bytes::from(long)).is_none());
    }
}
