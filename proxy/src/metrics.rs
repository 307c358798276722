//! Prometheus metrics: lock-free counters and histograms updated on the request path, and the
//! text exposition rendered on scrape (`GET /metrics` on the admin listener).
//!
//! Labels come only from closed sets: route and upstream names from the config, backends as
//! configured, methods and status classes from fixed enums, tiers from the config. Per-route and
//! per-pool series live in a registry keyed by name (like [`crate::balancer::StateRegistry`]),
//! so a reload keeps their counts. Per-backend counters live in
//! [`crate::balancer::BackendState`]; gauges are read from live state at scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;
use crate::store::BreakerState;

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// Upper bounds of the latency histogram buckets, in microseconds (rendered in seconds).
const BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = match BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Request methods as metric labels (anything else is `OTHER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// OPTIONS
    Options,
    /// Any other method.
    Other,
}

impl Method {
    const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
        Method::Other,
    ];

    /// The label for `m`.
    pub fn of(m: &http::Method) -> Method {
        match *m {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::DELETE => Method::Delete,
            http::Method::PATCH => Method::Patch,
            http::Method::OPTIONS => Method::Options,
            _ => Method::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// Status classes as labels; `none` when no response was sent (the client left first).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => (status / 100) as usize,
        _ => 0,
    }
}

/// Counters of one route (and the upstream it sends to).
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    upstream: String,
    requests: [[AtomicU64; CLASSES.len()]; Method::ALL.len()],
    /// Whole-request duration, first byte in to last byte out.
    pub duration: Histogram,
}

impl RouteMetrics {
    fn new(route: &str, upstream: &str) -> Self {
        RouteMetrics {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            requests: Default::default(),
            duration: Histogram::default(),
        }
    }

    /// Count one finished request (`status` 0 when nothing was answered).
    pub fn record(&self, method: Method, status: u16, took: Duration) {
        self.requests[method as usize][class_index(status)].fetch_add(1, Relaxed);
        self.duration.observe(took);
    }
}

/// Series of one pool.
#[derive(Debug)]
pub struct PoolMetrics {
    upstream: String,
    /// Time from sending a request to a backend to its response header, per attempt.
    pub upstream_duration: Histogram,
}

/// Rate-limit counters of one tier (or `route` for routes with their own limit).
#[derive(Debug)]
pub struct TierMetrics {
    tier: String,
    allowed: AtomicU64,
    limited: AtomicU64,
    shadow_limited: AtomicU64,
    near_limit: AtomicU64,
}

/// A rate-limit outcome, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitResult {
    /// Under the limit.
    Allowed,
    /// Over the limit and rejected.
    Limited,
    /// Over the limit, let through because the mode is `shadow`.
    ShadowLimited,
}

impl LimitResult {
    /// The label of this result.
    pub fn label(self) -> &'static str {
        match self {
            LimitResult::Allowed => "allowed",
            LimitResult::Limited => "limited",
            LimitResult::ShadowLimited => "shadow_limited",
        }
    }
}

impl TierMetrics {
    /// Count one check; `near` when an allowed request left under 10% of the limit.
    pub fn record(&self, result: LimitResult, near: bool) {
        match result {
            LimitResult::Allowed => &self.allowed,
            LimitResult::Limited => &self.limited,
            LimitResult::ShadowLimited => &self.shadow_limited,
        }
        .fetch_add(1, Relaxed);
        if near {
            self.near_limit.fetch_add(1, Relaxed);
        }
    }
}

/// What a reload attempt ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config serves.
    Ok,
    /// The file had problems; the old config serves.
    Invalid,
    /// A restart-only setting changed; the old config serves.
    Refused,
}

/// Redis failure kinds of rate-limit checks (see `StoreError::kind`).
const REDIS_ERROR_KINDS: [&str; 3] = ["timeout", "connection", "response"];

/// `X-Cache` results, as counted.
pub const CACHE_RESULTS: [&str; 6] = ["HIT", "MISS", "EXPIRED", "STALE", "REVALIDATED", "BYPASS"];
/// Kinds of cache purges.
pub const CACHE_PURGES: [&str; 5] = ["invalidation", "url", "pattern", "tag", "flush"];
/// Redis calls of the cache store.
pub const CACHE_CALLS: [&str; 10] = [
    "lookup",
    "read chunk",
    "write chunk",
    "publish entry",
    "purge",
    "update meta",
    "lock",
    "unlock",
    "wait",
    "tag",
];

/// Every metric of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Per tier (hot, warm, cold), per result.
    cache_results: [[AtomicU64; CACHE_RESULTS.len()]; 3],
    cache_purges: [AtomicU64; CACHE_PURGES.len()],
    cache_calls: [Histogram; CACHE_CALLS.len()],
    cache_call_errors: [AtomicU64; CACHE_CALLS.len()],
    cache_stored: AtomicU64,
    cache_stored_bytes: AtomicU64,
    routes: Mutex<HashMap<(String, String), Arc<RouteMetrics>>>,
    pools: Mutex<HashMap<String, Arc<PoolMetrics>>>,
    tiers: Mutex<HashMap<String, Arc<TierMetrics>>>,
    unrouted: OnceLock<Arc<RouteMetrics>>,
    /// Requests between their header arriving and their end (an upgraded WebSocket counts until
    /// it closes).
    pub in_flight: AtomicI64,
    /// Upgraded connections open.
    pub websockets: AtomicI64,
    redis_errors: [AtomicU64; REDIS_ERROR_KINDS.len()],
    reloads: [AtomicU64; 3],
    generation: AtomicU64,
}

impl Metrics {
    /// The series of route `route` sending to `upstream` (created on first use; cold path).
    pub fn route(&self, route: &str, upstream: &str) -> Arc<RouteMetrics> {
        let mut m = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((route.to_owned(), upstream.to_owned()))
            .or_insert_with(|| Arc::new(RouteMetrics::new(route, upstream)))
            .clone()
    }

    /// Requests that matched no route.
    pub fn unrouted(&self) -> &Arc<RouteMetrics> {
        self.unrouted
            .get_or_init(|| Arc::new(RouteMetrics::new("none", "none")))
    }

    /// The series of pool `upstream`.
    pub fn pool(&self, upstream: &str) -> Arc<PoolMetrics> {
        let mut m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(upstream.to_owned())
            .or_insert_with(|| {
                Arc::new(PoolMetrics {
                    upstream: upstream.to_owned(),
                    upstream_duration: Histogram::default(),
                })
            })
            .clone()
    }

    /// The rate-limit series of `tier`.
    pub fn tier(&self, tier: &str) -> Arc<TierMetrics> {
        let mut m = self.tiers.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(tier.to_owned())
            .or_insert_with(|| {
                Arc::new(TierMetrics {
                    tier: tier.to_owned(),
                    allowed: AtomicU64::new(0),
                    limited: AtomicU64::new(0),
                    shadow_limited: AtomicU64::new(0),
                    near_limit: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Count one cache outcome of a route of `tier` by its `X-Cache` label.
    pub fn cache_result(&self, tier: crate::config::CacheTier, label: &str) {
        if let Some(i) = CACHE_RESULTS.iter().position(|k| *k == label) {
            self.cache_results[tier as usize][i].fetch_add(1, Relaxed);
        }
    }

    /// The cache outcomes of `tier` so far, by `X-Cache` label.
    pub fn cache_results(
        &self,
        tier: crate::config::CacheTier,
    ) -> [(&'static str, u64); CACHE_RESULTS.len()] {
        std::array::from_fn(|i| {
            (
                CACHE_RESULTS[i],
                self.cache_results[tier as usize][i].load(Relaxed),
            )
        })
    }

    /// Count `n` entries removed by a purge of `kind`.
    pub fn cache_purged(&self, kind: &str, n: u64) {
        if let Some(i) = CACHE_PURGES.iter().position(|k| *k == kind) {
            self.cache_purges[i].fetch_add(n, Relaxed);
        }
    }

    /// The entries purged so far, by kind.
    pub fn cache_purges(&self) -> [(&'static str, u64); CACHE_PURGES.len()] {
        std::array::from_fn(|i| (CACHE_PURGES[i], self.cache_purges[i].load(Relaxed)))
    }

    /// Record one Redis call of the cache store.
    pub fn cache_call(&self, call: &str, took: Duration, ok: bool) {
        if let Some(i) = CACHE_CALLS.iter().position(|k| *k == call) {
            self.cache_calls[i].observe(took);
            if !ok {
                self.cache_call_errors[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// Count an entry stored (`bytes` of body).
    pub fn cache_stored(&self, bytes: u64) {
        self.cache_stored.fetch_add(1, Relaxed);
        self.cache_stored_bytes.fetch_add(bytes, Relaxed);
    }

    /// Entries and body bytes stored so far.
    pub fn cache_stored_totals(&self) -> (u64, u64) {
        (
            self.cache_stored.load(Relaxed),
            self.cache_stored_bytes.load(Relaxed),
        )
    }

    /// Count a failed rate-limit Redis call by its kind label.
    pub fn redis_error(&self, kind: &str) {
        if let Some(i) = REDIS_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.redis_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Count a reload attempt.
    pub fn reload(&self, result: ReloadResult) {
        self.reloads[result as usize].fetch_add(1, Relaxed);
    }

    /// Record the generation now serving.
    pub fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(
        &self,
        snapshot: &Snapshot,
        limiter: &RateLimiter,
        cache: &crate::cache::CacheLayer,
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let o = &mut out;

        family(o, "sluice_build_info", "gauge", "Build information.");
        let _ = writeln!(
            o,
            "sluice_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            o,
            "sluice_config_generation",
            "gauge",
            "Generation of the config now serving (1 at start, +1 per applied reload).",
        );
        let _ = writeln!(
            o,
            "sluice_config_generation {}",
            self.generation.load(Relaxed)
        );
        family(
            o,
            "sluice_config_reloads_total",
            "counter",
            "Config reload attempts by result.",
        );
        for (i, r) in ["ok", "invalid", "refused"].iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_config_reloads_total{{result=\"{r}\"}} {}",
                self.reloads[i].load(Relaxed)
            );
        }

        let mut routes: Vec<Arc<RouteMetrics>> = self
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        routes.push(self.unrouted().clone());
        routes.sort_by(|a, b| (&a.route, &a.upstream).cmp(&(&b.route, &b.upstream)));
        family(
            o,
            "sluice_requests_total",
            "counter",
            "Finished requests by route, upstream, method and status class.",
        );
        for r in &routes {
            for m in Method::ALL {
                for (c, class) in CLASSES.iter().enumerate() {
                    let n = r.requests[m as usize][c].load(Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            o,
                            "sluice_requests_total{{route=\"{}\",upstream=\"{}\",method=\"{}\",status_class=\"{class}\"}} {n}",
                            escape(&r.route),
                            escape(&r.upstream),
                            m.label()
                        );
                    }
                }
            }
        }
        family(
            o,
            "sluice_request_duration_seconds",
            "histogram",
            "Whole-request duration by route.",
        );
        for r in &routes {
            let labels = format!(
                "route=\"{}\",upstream=\"{}\"",
                escape(&r.route),
                escape(&r.upstream)
            );
            r.duration
                .render(o, "sluice_request_duration_seconds", &labels);
        }
        let mut pools: Vec<Arc<PoolMetrics>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        pools.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        family(
            o,
            "sluice_upstream_duration_seconds",
            "histogram",
            "Time from sending a request to a backend to its response header, per attempt.",
        );
        for p in &pools {
            let labels = format!("upstream=\"{}\"", escape(&p.upstream));
            p.upstream_duration
                .render(o, "sluice_upstream_duration_seconds", &labels);
        }

        family(
            o,
            "sluice_requests_in_flight",
            "gauge",
            "Requests being served (upgraded WebSockets count until they close).",
        );
        let _ = writeln!(
            o,
            "sluice_requests_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        family(
            o,
            "sluice_websockets_open",
            "gauge",
            "Upgraded (WebSocket) connections open.",
        );
        let _ = writeln!(
            o,
            "sluice_websockets_open {}",
            self.websockets.load(Relaxed)
        );
        let listen_ports = snapshot.listen_ports.as_slice();
        if let Some(n) = open_connections(listen_ports) {
            family(
                o,
                "sluice_client_connections_open",
                "gauge",
                "Established client connections on the proxy listeners.",
            );
            let _ = writeln!(o, "sluice_client_connections_open {n}");
        }

        backends(o, snapshot);

        family(
            o,
            "sluice_ratelimit_checks_total",
            "counter",
            "Rate-limit checks by tier and result.",
        );
        let mut tiers: Vec<Arc<TierMetrics>> = self
            .tiers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        tiers.sort_by(|a, b| a.tier.cmp(&b.tier));
        for t in &tiers {
            for (result, n) in [
                ("allowed", &t.allowed),
                ("limited", &t.limited),
                ("shadow_limited", &t.shadow_limited),
            ] {
                let _ = writeln!(
                    o,
                    "sluice_ratelimit_checks_total{{tier=\"{}\",result=\"{result}\"}} {}",
                    escape(&t.tier),
                    n.load(Relaxed)
                );
            }
        }
        family(
            o,
            "sluice_ratelimit_near_limit_total",
            "counter",
            "Allowed requests that left less than 10% of their limit.",
        );
        for t in &tiers {
            let _ = writeln!(
                o,
                "sluice_ratelimit_near_limit_total{{tier=\"{}\"}} {}",
                escape(&t.tier),
                t.near_limit.load(Relaxed)
            );
        }
        family(
            o,
            "sluice_ratelimit_redis_errors_total",
            "counter",
            "Failed rate-limit Redis calls by kind.",
        );
        for (i, k) in REDIS_ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_ratelimit_redis_errors_total{{kind=\"{k}\"}} {}",
                self.redis_errors[i].load(Relaxed)
            );
        }
        family(
            o,
            "sluice_ratelimit_breaker_open",
            "gauge",
            "1 while the rate-limit circuit breaker skips Redis.",
        );
        let open = u8::from(limiter.breaker_state() == BreakerState::Open);
        let _ = writeln!(o, "sluice_ratelimit_breaker_open {open}");
        family(
            o,
            "sluice_redis_breaker_transitions_total",
            "counter",
            "Circuit breaker openings and closings, by component.",
        );
        let (rl_open, rl_closed) = limiter.breaker_transitions();
        let (c_open, c_closed) = cache.redis.map_or((0, 0), |r| r.breaker_transitions());
        for (component, to, n) in [
            ("ratelimit", "open", rl_open),
            ("ratelimit", "closed", rl_closed),
            ("cache", "open", c_open),
            ("cache", "closed", c_closed),
        ] {
            let _ = writeln!(
                o,
                "sluice_redis_breaker_transitions_total{{component=\"{component}\",to=\"{to}\"}} {n}"
            );
        }
        self.render_cache(o, cache);
        out
    }

    fn render_cache(&self, o: &mut String, cache: &crate::cache::CacheLayer) {
        family(
            o,
            "sluice_cache_requests_total",
            "counter",
            "Requests on caching routes by tier and X-Cache result (hit, miss, expired, stale, revalidated, bypass).",
        );
        for tier in crate::config::CacheTier::ALL {
            for (label, n) in self.cache_results(tier) {
                let _ = writeln!(
                    o,
                    "sluice_cache_requests_total{{tier=\"{}\",result=\"{}\"}} {n}",
                    tier.name(),
                    label.to_ascii_lowercase()
                );
            }
        }
        family(
            o,
            "sluice_cache_purged_total",
            "counter",
            "Entries removed by kind (invalidation by unsafe methods, url, pattern, flush).",
        );
        for (kind, n) in self.cache_purges() {
            let _ = writeln!(o, "sluice_cache_purged_total{{kind=\"{kind}\"}} {n}");
        }
        let (stored, bytes) = self.cache_stored_totals();
        family(
            o,
            "sluice_cache_stored_total",
            "counter",
            "Entries written to the cache store by this instance.",
        );
        let _ = writeln!(o, "sluice_cache_stored_total {stored}");
        family(
            o,
            "sluice_cache_stored_bytes_total",
            "counter",
            "Body bytes written to the cache store by this instance.",
        );
        let _ = writeln!(o, "sluice_cache_stored_bytes_total {bytes}");
        if let Some(m) = cache.memory {
            let (entries, bytes) = m.usage();
            family(
                o,
                "sluice_cache_entries",
                "gauge",
                "Entries in the embedded cache store.",
            );
            let _ = writeln!(o, "sluice_cache_entries {entries}");
            family(
                o,
                "sluice_cache_bytes",
                "gauge",
                "Bytes held by the embedded cache store.",
            );
            let _ = writeln!(o, "sluice_cache_bytes {bytes}");
        }
        family(
            o,
            "sluice_cache_redis_duration_seconds",
            "histogram",
            "Redis calls of the cache store, by call.",
        );
        for (i, call) in CACHE_CALLS.iter().enumerate() {
            let labels = format!("call=\"{}\"", call.replace(' ', "_"));
            self.cache_calls[i].render(o, "sluice_cache_redis_duration_seconds", &labels);
        }
        family(
            o,
            "sluice_cache_redis_errors_total",
            "counter",
            "Failed or timed-out Redis calls of the cache store (each one served as a miss).",
        );
        for (i, call) in CACHE_CALLS.iter().enumerate() {
            let _ = writeln!(
                o,
                "sluice_cache_redis_errors_total{{call=\"{}\"}} {}",
                call.replace(' ', "_"),
                self.cache_call_errors[i].load(Relaxed)
            );
        }
        let open = u8::from(cache.redis.is_some_and(|r| r.breaker_open()));
        family(
            o,
            "sluice_cache_breaker_open",
            "gauge",
            "1 while the cache's circuit breaker skips Redis.",
        );
        let _ = writeln!(o, "sluice_cache_breaker_open {open}");
    }
}

/// Per-backend series, read from the live state of the current snapshot's pools.
fn backends(o: &mut String, snapshot: &Snapshot) {
    type Read = fn(&crate::balancer::BackendState, u64) -> u64;
    let families: [(&str, &str, &str, Read); 6] = [
        (
            "sluice_backend_up",
            "gauge",
            "1 when the backend is in rotation (active checks pass and not ejected).",
            |s, now| u64::from(s.probe_up() && !s.ejected(now)),
        ),
        (
            "sluice_backend_in_flight",
            "gauge",
            "Requests (and WebSockets) in flight on the backend.",
            |s, _| s.inflight() as u64,
        ),
        (
            "sluice_backend_selections_total",
            "counter",
            "Times the balancer picked the backend.",
            |s, _| s.counters().selections,
        ),
        (
            "sluice_backend_failures_total",
            "counter",
            "Failed attempts (connect, timeout, error, counted status).",
            |s, _| s.counters().failures,
        ),
        (
            "sluice_backend_ejections_total",
            "counter",
            "Passive-health ejections.",
            |s, _| s.counters().ejections,
        ),
        (
            "sluice_backend_retries_total",
            "counter",
            "Failed attempts on the backend that were retried elsewhere.",
            |s, _| s.counters().retries,
        ),
    ];
    let now = crate::util::clock::now_ns();
    for (name, kind, help, read) in families {
        family(o, name, kind, help);
        for pool in &snapshot.pools {
            for (i, slot) in pool.balancer.slots().iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{name}{{upstream=\"{}\",backend=\"{}\"}} {}",
                    escape(&pool.name),
                    escape(&pool.names[i]),
                    read(&slot.state, now)
                );
            }
        }
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escape a label value (backslash, quote, newline).
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// Established TCP connections owned by this process whose local port is one of `ports`, from
/// `/proc` (Linux; `None` elsewhere). Scrape-time only.
fn open_connections(ports: &[u16]) -> Option<u64> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut n = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p)) && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    Some(n)
}

/// RAII unit of [`Metrics::in_flight`] or [`Metrics::websockets`].
#[derive(Debug)]
pub struct GaugeGuard(&'static AtomicI64);

impl GaugeGuard {
    /// One in-flight request.
    pub fn request() -> Self {
        METRICS.in_flight.fetch_add(1, Relaxed);
        GaugeGuard(&METRICS.in_flight)
    }

    /// One open WebSocket.
    pub fn websocket() -> Self {
        METRICS.websockets.fetch_add(1, Relaxed);
        GaugeGuard(&METRICS.websockets)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounded_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1_000)); // le 0.001
        h.observe(Duration::from_micros(1_001)); // le 0.0025
        h.observe(Duration::from_secs(60)); // +Inf
        let mut s = String::new();
        h.render(&mut s, "x", "a=\"b\"");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.0025\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count{a=\"b\"} 3\n"), "{s}");
        assert!(s.contains("x_sum{a=\"b\"} 60.002001\n"), "{s}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn status_classes() {
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(0)], "none");
    }
}
