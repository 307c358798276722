//! The cache's metrics, registered by the cache itself on the process registry: outcomes per
//! tier and `X-Cache` result, purges per kind, entries and bytes stored, each Redis call's
//! latency and errors, and (read at scrape time) the embedded store's size. Every label comes
//! from the closed enums here and `CacheTier`; counting is one atomic add on a handle resolved
//! at start.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::config::CacheTier;
use crate::metrics::{registered, Error, BUCKETS};

/// A request's cache outcome, as `X-Cache` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache (a local entry or one a peer instance filled).
    Hit,
    /// Fetched from the origin.
    Miss,
    /// An expired entry, fetched again.
    Expired,
    /// A stale entry served (while revalidating, or because the origin failed).
    Stale,
    /// An entry revalidated with the origin (a 304).
    Revalidated,
    /// The cache was not consulted (an unsafe method, an upgrade, a bypass rule).
    Bypass,
}

impl CacheResult {
    const ALL: [CacheResult; 6] = [
        CacheResult::Hit,
        CacheResult::Miss,
        CacheResult::Expired,
        CacheResult::Stale,
        CacheResult::Revalidated,
        CacheResult::Bypass,
    ];

    /// The `X-Cache` value (also the access log's `cache` field and the admin status key).
    pub fn x_cache(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Expired => "EXPIRED",
            CacheResult::Stale => "STALE",
            CacheResult::Revalidated => "REVALIDATED",
            CacheResult::Bypass => "BYPASS",
        }
    }

    fn metric_label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Expired => "expired",
            CacheResult::Stale => "stale",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Bypass => "bypass",
        }
    }
}

/// Why entries were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeKind {
    /// An unsafe method's target (and its `Location`/`Content-Location`).
    Invalidation,
    /// `POST /cache/purge?url=`.
    Url,
    /// `POST /cache/purge?pattern=`.
    Pattern,
    /// `POST /cache/purge?tag=`.
    Tag,
    /// `POST /cache/flush`.
    Flush,
}

impl PurgeKind {
    const ALL: [PurgeKind; 5] = [
        PurgeKind::Invalidation,
        PurgeKind::Url,
        PurgeKind::Pattern,
        PurgeKind::Tag,
        PurgeKind::Flush,
    ];

    /// The metric label (also the admin status key).
    pub fn label(self) -> &'static str {
        match self {
            PurgeKind::Invalidation => "invalidation",
            PurgeKind::Url => "url",
            PurgeKind::Pattern => "pattern",
            PurgeKind::Tag => "tag",
            PurgeKind::Flush => "flush",
        }
    }
}

/// The Redis calls of the cache store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Read an entry's metadata.
    Lookup,
    /// Read one body chunk.
    ReadChunk,
    /// Write one body chunk.
    WriteChunk,
    /// Make a written entry visible.
    PublishEntry,
    /// Remove an entry.
    Purge,
    /// Rewrite an entry's metadata (after a revalidation).
    UpdateMeta,
    /// Take the cross-instance fill lock.
    Lock,
    /// Release it.
    Unlock,
    /// Wait for a peer's fill.
    Wait,
    /// Index an entry under its tags.
    Tag,
}

impl Call {
    const ALL: [Call; 10] = [
        Call::Lookup,
        Call::ReadChunk,
        Call::WriteChunk,
        Call::PublishEntry,
        Call::Purge,
        Call::UpdateMeta,
        Call::Lock,
        Call::Unlock,
        Call::Wait,
        Call::Tag,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Call::Lookup => "lookup",
            Call::ReadChunk => "read_chunk",
            Call::WriteChunk => "write_chunk",
            Call::PublishEntry => "publish_entry",
            Call::Purge => "purge",
            Call::UpdateMeta => "update_meta",
            Call::Lock => "lock",
            Call::Unlock => "unlock",
            Call::Wait => "wait",
            Call::Tag => "tag",
        }
    }
}

/// The cache's counters and histograms.
#[derive(Debug)]
pub struct CacheStats {
    requests: [[IntCounter; CacheResult::ALL.len()]; CacheTier::ALL.len()],
    purged: [IntCounter; PurgeKind::ALL.len()],
    stored: IntCounter,
    stored_bytes: IntCounter,
    calls: [Histogram; Call::ALL.len()],
    call_errors: [IntCounter; Call::ALL.len()],
}

impl CacheStats {
    /// The cache's families, registered on `registry` with every series resolved.
    pub fn new(registry: &Registry) -> Result<Self, Error> {
        let requests = registered(registry, IntCounterVec::new(
            Opts::new(
                "sluice_cache_requests_total",
                "Requests on caching routes by tier and X-Cache result (hit, miss, expired, stale, revalidated, bypass).",
            ),
            &["tier", "result"],
        )?)?;
        let purged = registered(registry, IntCounterVec::new(
            Opts::new(
                "sluice_cache_purged_total",
                "Entries removed by kind (invalidation by unsafe methods, url, pattern, tag, flush).",
            ),
            &["kind"],
        )?)?;
        let stored = registered(
            registry,
            IntCounter::new(
                "sluice_cache_stored_total",
                "Entries written to the cache store by this instance.",
            )?,
        )?;
        let stored_bytes = registered(
            registry,
            IntCounter::new(
                "sluice_cache_stored_bytes_total",
                "Body bytes written to the cache store by this instance.",
            )?,
        )?;
        let calls = registered(
            registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "sluice_cache_redis_duration_seconds",
                    "Redis calls of the cache store, by call.",
                )
                .buckets(BUCKETS.to_vec()),
                &["call"],
            )?,
        )?;
        let call_errors = registered(registry, IntCounterVec::new(
            Opts::new(
                "sluice_cache_redis_errors_total",
                "Failed or timed-out Redis calls of the cache store (each one served as a miss).",
            ),
            &["call"],
        )?)?;
        Ok(CacheStats {
            requests: CacheTier::ALL.map(|t| {
                CacheResult::ALL.map(|r| requests.with_label_values(&[t.name(), r.metric_label()]))
            }),
            purged: PurgeKind::ALL.map(|k| purged.with_label_values(&[k.label()])),
            stored,
            stored_bytes,
            calls: Call::ALL.map(|c| calls.with_label_values(&[c.label()])),
            call_errors: Call::ALL.map(|c| call_errors.with_label_values(&[c.label()])),
        })
    }

    /// Count one outcome of a route of `tier`.
    pub fn result(&self, tier: CacheTier, result: CacheResult) {
        self.requests[tier as usize][result as usize].inc();
    }

    /// The outcomes of `tier` so far, by `X-Cache` value.
    pub fn results(&self, tier: CacheTier) -> [(&'static str, u64); CacheResult::ALL.len()] {
        CacheResult::ALL.map(|r| (r.x_cache(), self.requests[tier as usize][r as usize].get()))
    }

    /// Count `n` entries removed by a purge of `kind`.
    pub fn purged(&self, kind: PurgeKind, n: u64) {
        self.purged[kind as usize].inc_by(n);
    }

    /// The entries purged so far, by kind.
    pub fn purges(&self) -> [(&'static str, u64); PurgeKind::ALL.len()] {
        PurgeKind::ALL.map(|k| (k.label(), self.purged[k as usize].get()))
    }

    /// Count an entry stored (`bytes` of body).
    pub fn stored(&self, bytes: u64) {
        self.stored.inc();
        self.stored_bytes.inc_by(bytes);
    }

    /// Entries and body bytes stored so far.
    pub fn stored_totals(&self) -> (u64, u64) {
        (self.stored.get(), self.stored_bytes.get())
    }

    /// Record one Redis call of the cache store.
    pub fn call(&self, call: Call, took: Duration, ok: bool) {
        self.calls[call as usize].observe(took.as_secs_f64());
        if !ok {
            self.call_errors[call as usize].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_from_the_start() {
        let registry = Registry::new();
        let stats = CacheStats::new(&registry).unwrap();
        stats.result(CacheTier::Hot, CacheResult::Hit);
        stats.purged(PurgeKind::Pattern, 2);
        stats.call(Call::ReadChunk, Duration::from_millis(2), false);
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("sluice_cache_requests_total{result=\"hit\",tier=\"hot\"} 1\n"));
        assert!(text.contains("sluice_cache_requests_total{result=\"bypass\",tier=\"cold\"} 0\n"));
        assert!(text.contains("sluice_cache_purged_total{kind=\"pattern\"} 2\n"));
        assert!(text.contains("sluice_cache_redis_errors_total{call=\"read_chunk\"} 1\n"));
        assert_eq!(stats.results(CacheTier::Hot)[0], ("HIT", 1));
    }
}
