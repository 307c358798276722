//! The response cache, on `pingora-cache`: HTTP semantics (freshness, revalidation, `Vary`,
//! stale serving, the per-process cache lock) come from the library; this module supplies the
//! storage (the embedded LRU store, or Redis shared by every instance: see `redis.rs`), the
//! cache key, the cacheability decision with tier defaults, and the `X-Cache` / `Cache-Status`
//! labels, tags, purge and invalidation of unsafe methods' targets. The cross-instance fill lock
//! is in `redis.rs`; warm-up is `crate::warm`. `edge/` calls it from the proxy's cache hooks
//! (see docs/caching.md).

pub mod freshness;
pub mod memory;
pub mod redis;
pub mod stats;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header;
use pingora::cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora::cache::key::{CacheKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora::cache::{CacheMeta, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::config::{CacheSpec, CacheTier, RedisSpec, RouteCache, TtlMode};
use crate::metrics::{Kind, Live, LiveFamily, Metrics};
use globset::GlobSet;
use memory::MemoryStore;
use redis::RedisCacheStore;
pub use stats::{CacheResult, CacheStats, Call, PurgeKind};

/// Process-wide cache state: the store and the lock. Built once at start (restart-only).
pub struct CacheLayer {
    /// Where entries live.
    pub storage: &'static (dyn Storage + Sync),
    /// Collapses concurrent misses for one key in this process.
    pub lock: &'static CacheKeyLockImpl,
    /// Larger responses pass through uncached.
    pub max_object_bytes: usize,
    /// How long a fill lock (in-process and across instances) holds back other requests.
    pub lock_timeout: Duration,
    /// Origin headers listing tags (stripped before clients).
    pub tag_headers: Vec<String>,
    /// How the query takes part in the key.
    pub key_rules: KeyRules,
    /// The embedded store, when it is the storage (for stats and flush).
    pub memory: Option<&'static MemoryStore>,
    /// The Redis store, when `[redis]` is configured.
    pub redis: Option<&'static RedisCacheStore>,
    /// The cache's metrics.
    pub stats: Arc<CacheStats>,
    /// The Sluice-specific targeted cache field (`cache.targeted_cache_control`, lower-case),
    /// read before `CDN-Cache-Control`.
    pub targeted: Option<String>,
}

impl CacheLayer {
    /// The layer for `spec`: on Redis when `redis` is configured, else the embedded store,
    /// with its metrics registered on `metrics`. Leaked once per process: pingora-cache wants
    /// `'static` storage.
    pub fn new(
        spec: &CacheSpec,
        redis: Option<&RedisSpec>,
        metrics: &Metrics,
    ) -> Result<Self, crate::metrics::Error> {
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(spec.lock_timeout));
        let max_object_bytes = spec.max_object_bytes as usize;
        let stats = Arc::new(CacheStats::new(metrics.registry())?);
        let layer = match redis {
            Some(r) => {
                let store: &'static RedisCacheStore =
                    Box::leak(Box::new(RedisCacheStore::new(r, spec, Arc::clone(&stats))));
                CacheLayer {
                    storage: store,
                    lock,
                    max_object_bytes,
                    lock_timeout: spec.lock_timeout,
                    tag_headers: spec.tag_headers.clone(),
                    key_rules: KeyRules::new(&spec.ignore_query_params, spec.sort_query_params),
                    memory: None,
                    redis: Some(store),
                    stats,
                    targeted: spec.targeted_cache_control.clone(),
                }
            }
            None => {
                let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(
                    spec.memory_bytes,
                    spec.stale_retention,
                    Arc::clone(&stats),
                )));
                CacheLayer {
                    storage: store,
                    lock,
                    max_object_bytes,
                    lock_timeout: spec.lock_timeout,
                    tag_headers: spec.tag_headers.clone(),
                    key_rules: KeyRules::new(&spec.ignore_query_params, spec.sort_query_params),
                    memory: Some(store),
                    redis: None,
                    stats,
                    targeted: spec.targeted_cache_control.clone(),
                }
            }
        };
        layer.register_live(metrics)?;
        Ok(layer)
    }
}

/// The embedded store's size, read at scrape time.
static MEMORY_FAMILIES: [LiveFamily; 2] = [
    LiveFamily {
        name: "sluice_cache_entries",
        help: "Entries in the embedded cache store.",
        kind: Kind::Gauge,
        labels: &[],
    },
    LiveFamily {
        name: "sluice_cache_bytes",
        help: "Bytes held by the embedded cache store.",
        kind: Kind::Gauge,
        labels: &[],
    },
];

impl CacheLayer {
    /// Register what is read at scrape time: the embedded store's size (when it is the
    /// store) and the Redis breaker (closed and never opened without Redis).
    fn register_live(&self, metrics: &Metrics) -> Result<(), crate::metrics::Error> {
        if let Some(memory) = self.memory {
            let live = Live::new(&MEMORY_FAMILIES, &[], move |s| {
                let (entries, bytes) = memory.usage();
                s.add(0, &[], entries as f64);
                s.add(1, &[], bytes as f64);
            })?;
            metrics.registry().register(Box::new(live))?;
        }
        let redis = self.redis;
        crate::store::register_breaker_metrics(metrics, crate::store::Component::Cache, move || {
            redis.map(|r| (r.breaker_state(), r.breaker_transitions()))
        })
    }
}

/// A route's resolved cache rule (in the snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRule {
    /// The route's tier.
    pub tier: CacheTier,
    /// The tier's lifetime: freshness for responses that give none (`override`), or the cap
    /// on heuristic freshness (`origin`).
    pub ttl: Duration,
    /// Whether `Set-Cookie` responses may be stored.
    pub set_cookie: bool,
    /// How `ttl` is used.
    pub ttl_mode: TtlMode,
}

impl CacheRule {
    /// The rule for `route` under `spec`, or `None` when the route does not cache.
    pub fn of(route: &RouteCache, spec: &CacheSpec) -> Option<Self> {
        let tier = route.tier?;
        let i = CacheTier::ALL
            .iter()
            .position(|t| *t == tier)
            .expect("every tier is in ALL");
        Some(CacheRule {
            tier,
            ttl: Duration::from_secs(spec.ttl_seconds[i]),
            set_cookie: route.set_cookie,
            ttl_mode: route.ttl_mode.unwrap_or(spec.ttl_mode),
        })
    }
}

/// The cache key: scheme, host (lower-case, without port) and path with query.
pub fn key(req: &RequestHeader, host: &str, tls: bool, rules: &KeyRules) -> CacheKey {
    let scheme = if tls { "https" } else { "http" };
    let pq = rules.path_and_query(req.uri.path(), req.uri.query());
    CacheKey::new(format!("{scheme}://{host}{pq}"), "")
}

/// How the query takes part in the cache key: `cache.ignore_query_params` (globs over names)
/// are dropped, and with `cache.sort_query_params` the rest are sorted.
#[derive(Debug, Clone, Default)]
pub struct KeyRules {
    /// Parameter names left out (globs, compiled once).
    ignore: GlobSet,
    /// Sort the remaining parameters.
    sort: bool,
}

impl KeyRules {
    /// The rules for the `ignore` globs (validated at config load; one that still does not
    /// compile is logged and ignores nothing) and `sort`.
    pub fn new(ignore: &[String], sort: bool) -> Self {
        let ignore = crate::util::glob::set(ignore).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cache.ignore_query_params: cannot compile; ignoring none");
            GlobSet::empty()
        });
        KeyRules { ignore, sort }
    }

    /// `path` plus the normalized `query` (`?` only when something is left).
    pub fn path_and_query(&self, path: &str, query: Option<&str>) -> String {
        let Some(q) = query else {
            return path.to_owned();
        };
        if self.ignore.is_empty() && !self.sort {
            return format!("{path}?{q}");
        }
        let mut params: Vec<&str> = q
            .split('&')
            .filter(|p| {
                let name = p.split('=').next().unwrap_or("");
                !self.ignore.is_match(name)
            })
            .collect();
        if self.sort {
            params.sort_unstable();
        }
        if params.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", params.join("&"))
        }
    }

    /// Normalize the query of an absolute `url` (admin `DELETE /cache?url=`).
    pub fn url(&self, url: &str) -> String {
        match url.split_once('?') {
            Some((base, q)) => self.path_and_query(base, Some(q)),
            None => url.to_owned(),
        }
    }
}

/// URIs whose stored responses a successful unsafe request invalidates (RFC 9111 §4.4): the
/// target URI, and `Location` / `Content-Location` when they point to the same host.
pub fn invalidated_keys(
    req: &RequestHeader,
    resp: &ResponseHeader,
    host: &str,
    tls: bool,
    rules: &KeyRules,
) -> Vec<CacheKey> {
    let mut keys = vec![key(req, host, tls, rules)];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(target) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = target.parse::<http::Uri>() else {
            continue;
        };
        let same_host = uri.host().is_none_or(|h| h.eq_ignore_ascii_case(host));
        if !same_host || !uri.path().starts_with('/') {
            continue;
        }
        let pq = rules.path_and_query(uri.path(), uri.query());
        let scheme = if tls { "https" } else { "http" };
        keys.push(CacheKey::new(format!("{scheme}://{host}{pq}"), ""));
    }
    keys
}

impl CacheLayer {
    /// Remove the stored responses for `keys` (an error only means nothing was removed),
    /// counted as purges of `kind`.
    pub async fn invalidate(&self, keys: &[CacheKey], kind: PurgeKind) -> usize {
        let span = pingora::cache::trace::Span::inactive();
        let mut removed = 0;
        for k in keys {
            let compact = k.to_compact();
            if let Ok(PurgeOutcome::Purged(_)) = self
                .storage
                .purge(
                    PurgeTarget::Active(&compact),
                    PurgeType::Invalidation,
                    &span.handle(),
                )
                .await
            {
                removed += 1;
            }
        }
        self.stats.purged(kind, removed as u64);
        removed
    }
}

/// Answer `session` from the stored entry for `key` (filled by another instance). `Ok(false)`
/// when there is no such entry after all (the caller then goes to the origin).
pub async fn serve_stored(
    session: &mut pingora::proxy::Session,
    storage: &'static (dyn Storage + Sync),
    key: &CacheKey,
    extra: &[(&'static str, http::HeaderValue)],
) -> pingora::Result<bool> {
    let span = pingora::cache::trace::Span::inactive();
    let Some((meta, mut hit)) = storage.lookup(key, &span.handle()).await? else {
        return Ok(false);
    };
    let mut resp = meta.response_header_copy();
    let age = SystemTime::now()
        .duration_since(meta.created())
        .unwrap_or_default()
        .as_secs();
    resp.insert_header(header::AGE, age)?;
    resp.remove_header(TAGS_HEADER);
    resp.insert_header("x-cache", "HIT")?;
    resp.insert_header("cache-status", "sluice; hit; detail=filled-by-peer")?;
    for (k, v) in extra {
        resp.insert_header(*k, v.clone())?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        while let Some(chunk) = hit.read_body().await? {
            session.write_response_body(Some(chunk), false).await?;
        }
        session.write_response_body(None, true).await?;
    }
    Ok(true)
}

/// The stored response `stored` updated with the header fields of the `304` that revalidated
/// it (RFC 9111 §4.3.4), except those describing the body or the connection.
pub fn merge_304(stored: &ResponseHeader, fields: &http::HeaderMap) -> ResponseHeader {
    const KEEP: [&str; 11] = [
        "content-length",
        "content-encoding",
        "content-type",
        "content-range",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ];
    let mut merged = stored.clone();
    for name in fields.keys() {
        if KEEP.contains(&name.as_str()) {
            continue;
        }
        merged.remove_header(name);
        for v in fields.get_all(name) {
            let _ = merged.append_header(name.clone(), v.clone());
        }
    }
    merged
}

/// Internal header carrying an entry's tags inside its stored metadata (never sent to clients).
pub const TAGS_HEADER: &str = "x-sluice-cache-tags";

/// Record on `meta` the tags of an entry: `route_tags` plus the values of the origin's
/// `tag_headers` (comma- or space-separated, as `Cache-Tag` and `Surrogate-Key` are).
pub fn tag_entry(meta: &mut CacheMeta, route_tags: &[String], tag_headers: &[String]) {
    let mut tags: Vec<String> = route_tags.to_vec();
    for h in tag_headers {
        for v in meta.headers().get_all(h.as_str()) {
            if let Ok(s) = v.to_str() {
                tags.extend(
                    s.split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned),
                );
            }
        }
    }
    tags.sort();
    tags.dedup();
    if !tags.is_empty() {
        let _ = meta
            .response_header_mut()
            .insert_header(TAGS_HEADER, tags.join(" "));
    }
}

/// The tags recorded by [`tag_entry`].
pub fn entry_tags(meta: &CacheMeta) -> Vec<String> {
    meta.headers()
        .get(TAGS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Statuses cacheable by default (RFC 9110 §15.1): only these get a tier TTL when the origin
/// gives no freshness.
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Whether and how long to store `resp` (to a request with `authorization` present) under
/// `rule`, with `targeted` the Sluice-specific targeted cache field, if configured.
///
/// RFC 9111 for a shared cache: the directives come from a targeted field (RFC 9213: the
/// configured one, then `CDN-Cache-Control`) when the origin sent one, else from
/// `Cache-Control`; `no-store`, `private`, `Vary: *`, `Set-Cookie` (unless the route allows it)
/// and `Authorization` (without `public`, `s-maxage` or `must-revalidate`) are never stored.
/// The lifetime is the origin's explicit one when it gives any (an invalid one means stale);
/// otherwise the route's `ttl_mode` decides (see [`TtlMode`]). The response's age when it
/// arrives (its `Age`, or the time since its `Date`) is counted against the lifetime, and
/// the `Age` sent on hits continues from it.
pub fn cacheability(
    resp: &ResponseHeader,
    authorization: bool,
    rule: &CacheRule,
    targeted: Option<&str>,
) -> RespCacheable {
    let uncacheable = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    if resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |s| s.split(',').any(|p| p.trim() == "*"))
    }) {
        // `Vary: *` never matches a later request.
        return uncacheable;
    }
    if !rule.set_cookie && resp.headers.contains_key(header::SET_COOKIE) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    let targeted_cc = freshness::targeted(resp, targeted);
    let is_targeted = targeted_cc.is_some();
    let cc = targeted_cc.or_else(|| CacheControl::from_resp_headers(resp));
    if cc
        .as_ref()
        .is_some_and(|c| c.is_cacheable() == Cacheable::No)
        || (authorization
            && !cc
                .as_ref()
                .is_some_and(|c| c.allow_caching_authorized_req()))
    {
        return uncacheable;
    }
    let now = SystemTime::now();
    let lifetime = match freshness::explicit_lifetime(cc.as_ref(), is_targeted, resp, now) {
        Some(d) => d,
        None => {
            // A 304 revalidating a stored 200 is judged as that 200.
            let status = match resp.status.as_u16() {
                304 => 200,
                s => s,
            };
            if !heuristically_cacheable(status) {
                return uncacheable;
            }
            match rule.ttl_mode {
                TtlMode::Override => rule.ttl,
                TtlMode::Origin => match freshness::heuristic(resp, now, rule.ttl) {
                    Some(d) => d,
                    // A validator alone: stored stale, revalidated before each use.
                    None if resp.headers.contains_key(header::ETAG) => Duration::ZERO,
                    None => return uncacheable,
                },
            }
        }
    };
    let age = freshness::initial_age(resp, now);
    // Already stale on arrival: one second in the past, as pingora-cache marks "always stale".
    let fresh_until = match lifetime.checked_sub(age).filter(|d| !d.is_zero()) {
        Some(left) => now + left,
        None => now - Duration::from_secs(1),
    };
    let secs = |d: Option<Duration>| d.map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32);
    let (swr, sie) = cc.as_ref().map_or((0, 0), |c| {
        (
            secs(c.serve_stale_while_revalidate_duration()),
            secs(c.serve_stale_if_error_duration()),
        )
    });
    let mut header = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut header);
    }
    let mut meta = CacheMeta::new(fresh_until, now, swr, sie, header);
    if !age.is_zero() {
        // Ages on hits continue from the age the response arrived with (an absurd `Age`
        // would put that before 1970, which the stored meta cannot encode: it is stale
        // anyway).
        let epoch = now
            .checked_sub(age)
            .filter(|t| *t > SystemTime::UNIX_EPOCH)
            .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        meta.set_epoch_override(epoch);
    }
    RespCacheable::Cacheable(meta)
}

/// The variance key of a stored response for `req`: the values of the request headers its
/// `Vary` names (`None` when it has no `Vary`).
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut vb = VarianceBuilder::new();
    for n in names {
        let value = req
            .headers
            .get_all(n.as_str())
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect::<Vec<_>>()
            .join(&b","[..]);
        vb.add_owned_name_value(n, value);
    }
    vb.finalize()
}

/// What the cross-instance fill lock decided for one request ([`CacheLayer::fill_from_peer`]).
#[derive(Debug)]
pub enum PeerFill {
    /// Fetch from the origin; holding the Redis fill lock (key, token) when one was taken,
    /// which [`CacheLayer::release_fill_lock`] gives back when the request ends.
    Fetch(Option<(CacheKey, u64)>),
    /// Another instance stored the entry while this one waited: the response was served.
    Served,
}

impl CacheLayer {
    /// Across instances, one origin fetch per key: a true miss that holds this process's cache
    /// lock also takes the Redis fill lock; when another instance holds it, wait (up to
    /// `lock_timeout`) for the entry it stores and answer from it, with the `extra` field (the
    /// request id), built only then.
    /// Anything else (no Redis, a hit, a stale entry being revalidated, caching disabled by
    /// Pingora for this request) fetches as usual.
    pub async fn fill_from_peer(
        &self,
        session: &mut pingora::proxy::Session,
        extra: Option<(&'static str, &http::HeaderValue)>,
    ) -> pingora::Result<PeerFill> {
        let Some(redis) = self.redis else {
            return Ok(PeerFill::Fetch(None));
        };
        // Only a true miss waits for a peer: a stale entry being revalidated must not be
        // answered as fresh just because a peer holds the lock. Pingora disables caching for a
        // request under us (lock retry limit, lock timeout, give-up), and its lock accessors
        // unwrap state it cleared then: check `enabled()` and the phase before asking.
        if !session.cache.enabled()
            || !matches!(session.cache.phase(), CachePhase::Miss)
            || !session.cache.is_cache_lock_writer()
        {
            return Ok(PeerFill::Fetch(None));
        }
        let key = session.cache.cache_key().clone();
        match redis.acquire_fill_lock(&key, self.lock_timeout).await {
            redis::FillLock::Acquired(token) => Ok(PeerFill::Fetch(Some((key, token)))),
            redis::FillLock::Unavailable => Ok(PeerFill::Fetch(None)),
            redis::FillLock::HeldElsewhere => {
                let deadline = std::time::Instant::now() + self.lock_timeout;
                if redis.wait_for_entry(&key, deadline).await
                    && serve_stored(
                        session,
                        self.storage,
                        &key,
                        &extra
                            .map(|(k, v)| (k, v.clone()))
                            .into_iter()
                            .collect::<Vec<_>>(),
                    )
                    .await?
                {
                    return Ok(PeerFill::Served);
                }
                Ok(PeerFill::Fetch(None))
            }
        }
    }

    /// Give back a Redis fill lock taken by [`Self::fill_from_peer`].
    pub async fn release_fill_lock(&self, (key, token): (CacheKey, u64)) {
        if let Some(redis) = self.redis {
            redis.release_fill_lock(&key, token).await;
        }
    }

    /// After an unsafe method's success (2xx, 3xx), remove what it may have changed: the
    /// target and its `Location`/`Content-Location` (RFC 9111 §4.4). Before the client has its
    /// answer, so its next read sees the write; a Redis call here is bounded by the cache's
    /// command timeout and fails to "nothing removed".
    pub async fn invalidate_after(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        host: &str,
        tls: bool,
    ) {
        if is_safe(&req.method) || !(200..400).contains(&resp.status.as_u16()) {
            return;
        }
        let keys = invalidated_keys(req, resp, host, tls, &self.key_rules);
        self.invalidate(&keys, PurgeKind::Invalidation).await;
    }

    /// Make a response from a caching route ready for the client: tag fields removed (they
    /// are for the cache) and `X-Cache` / `Cache-Status` set for `phase`.
    pub fn label_response(
        &self,
        resp: &mut ResponseHeader,
        phase: CachePhase,
    ) -> pingora::Result<()> {
        resp.remove_header(TAGS_HEADER);
        for h in &self.tag_headers {
            resp.remove_header(h.as_str());
        }
        if let (Some(x), Some(status)) = (result(phase), cache_status(phase)) {
            resp.insert_header("x-cache", x.x_cache())?;
            resp.insert_header("cache-status", status)?;
        }
        Ok(())
    }
}

/// Label a response that bypassed the cache of a caching route (an unsafe method, an upgrade).
pub fn label_bypass(resp: &mut ResponseHeader) -> pingora::Result<()> {
    resp.insert_header("x-cache", "BYPASS")?;
    resp.insert_header("cache-status", "sluice; fwd=bypass")
}

/// The cache result of one request for metrics and the access log: `HIT` when a peer's entry
/// answered it, else its phase's result.
pub fn request_result(phase: CachePhase, peer_filled: bool) -> Option<CacheResult> {
    if peer_filled {
        Some(CacheResult::Hit)
    } else {
        result(phase)
    }
}

/// Methods that do not change state (RFC 9110 §9.2.1).
pub fn is_safe(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// The result (`X-Cache`) of a finished cache phase, `None` when caching was off for the
/// request.
pub fn result(phase: CachePhase) -> Option<CacheResult> {
    Some(match phase {
        CachePhase::Hit => CacheResult::Hit,
        CachePhase::Miss => CacheResult::Miss,
        CachePhase::Expired => CacheResult::Expired,
        CachePhase::Stale | CachePhase::StaleUpdating => CacheResult::Stale,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheResult::Revalidated,
        CachePhase::Bypass => CacheResult::Bypass,
        CachePhase::Disabled(NoCacheReason::NeverEnabled) => return None,
        // Fetched from the origin, which did not allow storing it (or it was too large).
        CachePhase::Disabled(_) => CacheResult::Miss,
        CachePhase::Uninit | CachePhase::CacheKey => CacheResult::Bypass,
    })
}

/// RFC 9211 `Cache-Status` for a phase (`sluice` is the cache's name).
pub fn cache_status(phase: CachePhase) -> Option<&'static str> {
    Some(match result(phase)? {
        CacheResult::Hit => "sluice; hit",
        CacheResult::Stale => "sluice; hit; fwd=stale",
        CacheResult::Miss => "sluice; fwd=miss",
        CacheResult::Expired => "sluice; fwd=stale",
        CacheResult::Revalidated => "sluice; hit; fwd=stale; fwd-status=304",
        CacheResult::Bypass => "sluice; fwd=bypass",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 with `headers` (also used by `freshness`'s tests).
    pub(super) fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const WARM: CacheRule = CacheRule {
        tier: CacheTier::Warm,
        ttl: Duration::from_secs(300),
        set_cookie: false,
        ttl_mode: TtlMode::Override,
    };

    const ORIGIN: CacheRule = CacheRule {
        ttl_mode: TtlMode::Origin,
        ..WARM
    };

    #[test]
    fn rfc9111_4_2_2_origin_mode_gives_heuristic_freshness_only_with_last_modified() {
        let now = SystemTime::now();
        let date = |ago: u64| httpdate::fmt_http_date(now - Duration::from_secs(ago));
        let with = |modified: String| resp(&[("date", &date(0)), ("last-modified", &modified)]);
        // Modified 1000 s ago: fresh for 100 s (a tenth), under the 300 s cap.
        let ttl_of = |r: ResponseHeader| ttl(cacheability(&r, false, &ORIGIN));
        assert!(matches!(ttl_of(with(date(1000))), Some(99..=100)));
        // Modified a year ago: capped by the tier's lifetime.
        assert!(matches!(ttl_of(with(date(365 * 86_400))), Some(299..=300)));
        // Modified after its own Date: no heuristic, and no other validator: not stored.
        let future = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        assert_eq!(ttl_of(with(future)), None);
    }

    #[test]
    fn rfc9111_3_origin_mode_stores_nothing_without_freshness_or_a_validator() {
        assert_eq!(ttl(cacheability(&resp(&[]), false, &ORIGIN)), None);
        // An ETag alone: stored, already stale, so every use is revalidated.
        let etag = resp(&[("etag", "\"v1\"")]);
        assert_eq!(ttl(cacheability(&etag, false, &ORIGIN)), Some(0));
        // The origin's own freshness is the same in both modes.
        let explicit = resp(&[("cache-control", "max-age=7")]);
        assert_eq!(ttl(cacheability(&explicit, false, &ORIGIN)), Some(7));
        // Override mode keeps the seeds' behaviour: the tier lifetime.
        assert_eq!(ttl(cacheability(&resp(&[]), false, &WARM)), Some(300));
    }

    /// [`super::cacheability`] without a Sluice-specific targeted field.
    fn cacheability(r: &ResponseHeader, authorization: bool, rule: &CacheRule) -> RespCacheable {
        super::cacheability(r, authorization, rule, None)
    }

    /// Seconds of freshness left (0 when stored stale).
    fn ttl(r: RespCacheable) -> Option<u64> {
        match r {
            RespCacheable::Cacheable(m) => Some(
                m.fresh_until()
                    .duration_since(m.created())
                    .unwrap_or_default()
                    .as_secs(),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn query_rules_shape_the_key() {
        let r = KeyRules::new(&["utm_*".into(), "fbclid".into(), "f[x]".into()], true);
        assert_eq!(
            r.path_and_query("/p", Some("b=2&utm_source=x&a=1&fbclid=z&f[x]=1&fx=2")),
            "/p?a=1&b=2&fx=2"
        );
        assert_eq!(r.path_and_query("/p", Some("utm_medium=y")), "/p");
        assert_eq!(r.path_and_query("/p", None), "/p");
        let none = KeyRules::default();
        assert_eq!(none.path_and_query("/p", Some("b=2&a=1")), "/p?b=2&a=1");
        assert_eq!(r.url("http://h/p?z=1&utm_x=2&y=3"), "http://h/p?y=3&z=1");
    }

    #[test]
    fn origin_freshness_wins_and_the_tier_fills_in() {
        assert_eq!(
            ttl(cacheability(
                &resp(&[("cache-control", "max-age=7")]),
                false,
                &WARM
            )),
            Some(7)
        );
        assert_eq!(
            ttl(cacheability(
                &resp(&[("cache-control", "public, s-maxage=9, max-age=7")]),
                false,
                &WARM
            )),
            Some(9)
        );
        assert_eq!(ttl(cacheability(&resp(&[]), false, &WARM)), Some(300));
    }

    #[test]
    fn a_304_updates_every_stored_field_but_the_body_ones() {
        let stored = resp(&[
            ("content-length", "10"),
            ("x-version", "1"),
            ("cache-control", "max-age=1"),
        ]);
        let mut fields = http::HeaderMap::new();
        fields.insert("x-version", "2".parse().unwrap());
        fields.insert("cache-control", "max-age=60".parse().unwrap());
        fields.insert("content-length", "0".parse().unwrap());
        let m = merge_304(&stored, &fields);
        assert_eq!(m.headers["x-version"], "2");
        assert_eq!(m.headers["cache-control"], "max-age=60");
        assert_eq!(m.headers["content-length"], "10");
        assert_eq!(m.status, 200);
    }

    #[test]
    fn a_304_without_freshness_renews_the_tier_ttl() {
        let mut r = ResponseHeader::build(304, None).unwrap();
        r.append_header("etag", "\"v1\"").unwrap();
        assert_eq!(ttl(cacheability(&r, false, &WARM)), Some(300));
    }

    #[test]
    fn what_is_never_stored() {
        for h in [
            ("cache-control", "no-store"),
            ("cache-control", "private"),
            ("vary", "*"),
            ("set-cookie", "a=b"),
        ] {
            assert_eq!(ttl(cacheability(&resp(&[h]), false, &WARM)), None, "{h:?}");
        }
        // Authorization: only when the response says so.
        assert_eq!(ttl(cacheability(&resp(&[]), true, &WARM)), None);
        assert_eq!(
            ttl(cacheability(
                &resp(&[("cache-control", "public, max-age=5")]),
                true,
                &WARM
            )),
            Some(5)
        );
        // Set-Cookie when the route allows it.
        let allow = CacheRule {
            set_cookie: true,
            ..WARM
        };
        assert_eq!(
            ttl(cacheability(&resp(&[("set-cookie", "a=b")]), false, &allow)),
            Some(300)
        );
    }
}
