//! `[cache]`: the response cache's store settings, tiers, key rules and warm-up. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use super::*;

/// `[cache]`: the shared response cache.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    /// Prefix of every cache key in Redis.
    pub namespace: Option<String>,
    /// Larger responses stream through uncached.
    pub max_object_bytes: Option<i64>,
    /// Body chunk size in Redis.
    pub chunk_bytes: Option<i64>,
    /// Bound of the embedded store (without `[redis]`).
    pub memory_bytes: Option<i64>,
    /// Bound on each Redis cache call.
    pub command_timeout_ms: Option<i64>,
    /// How long concurrent misses wait for the one fetching.
    pub lock_timeout_ms: Option<i64>,
    /// Default TTLs by tier.
    pub tiers: Option<std::collections::BTreeMap<String, FileCacheTier>>,
    /// Origin response headers listing an entry's tags (removed before the client).
    pub tag_headers: Option<Vec<String>>,
    /// URLs fetched through Sluice at start and after each reload.
    pub warm_urls: Option<Vec<String>>,
    /// How many warm-up fetches run at once.
    pub warm_concurrency: Option<i64>,
    /// Query parameters left out of the cache key (globs).
    pub ignore_query_params: Option<Vec<String>>,
    /// Sort query parameters in the cache key.
    pub sort_query_params: Option<bool>,
    /// `origin` (RFC 9111, default) or `override` (tier lifetime without origin freshness).
    pub ttl_mode: Option<String>,
    /// A Sluice-specific targeted cache field name (RFC 9213), e.g. `Sluice-Cache-Control`.
    pub targeted_cache_control: Option<String>,
    /// How long stale entries with a validator stay for revalidation (default 3600).
    pub stale_retention_seconds: Option<i64>,
}

/// `[cache.tiers.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheTier {
    /// Freshness when the origin gives none.
    pub ttl_seconds: Option<i64>,
}

impl Validator {
    pub(super) fn cache(&mut self, c: Option<FileCache>) -> Option<CacheSpec> {
        let FileCache {
            namespace,
            max_object_bytes,
            chunk_bytes,
            memory_bytes,
            command_timeout_ms,
            lock_timeout_ms,
            tiers,
            tag_headers,
            warm_urls,
            warm_concurrency,
            ignore_query_params,
            sort_query_params,
            ttl_mode,
            targeted_cache_control,
            stale_retention_seconds,
        } = c.unwrap_or_default();
        let stale_retention = self.int_in(
            "cache.stale_retention_seconds",
            stale_retention_seconds,
            3600,
            0,
            7 * 86_400,
        );
        let targeted_cache_control = targeted_cache_control.map(|n| n.to_ascii_lowercase());
        if let Some(n) = &targeted_cache_control {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err()
                || ["cache-control", "cdn-cache-control"].contains(&n.as_str())
            {
                self.problem(
                    "cache.targeted_cache_control",
                    format!("`{n}`: expected a header name of Sluice's own, such as `Sluice-Cache-Control`"),
                );
            }
        }
        let ttl_mode = self.one_of(
            "cache.ttl_mode",
            ttl_mode.as_deref(),
            "origin",
            &TtlMode::NAMES,
        );
        let warm_urls = self.warm_urls(warm_urls.unwrap_or_default());
        let warm_concurrency = self.int_in("cache.warm_concurrency", warm_concurrency, 4, 1, 256);
        let tag_headers = self.tag_headers(tag_headers);
        let namespace = namespace.unwrap_or_else(|| DEFAULT_CACHE_NAMESPACE.to_owned());
        if namespace.is_empty() || namespace.contains(['{', '}', '*', '?', '[', ']']) {
            self.problem(
                "cache.namespace",
                format!("`{namespace}` must be non-empty, without braces or glob characters"),
            );
        }
        let max_object = self.int_in(
            "cache.max_object_bytes",
            max_object_bytes,
            DEFAULT_MAX_OBJECT_BYTES as i64,
            1,
            1 << 30,
        );
        let chunk = self.int_in(
            "cache.chunk_bytes",
            chunk_bytes,
            DEFAULT_CHUNK_BYTES as i64,
            1024,
            64 << 20,
        );
        let memory = self.int_in(
            "cache.memory_bytes",
            memory_bytes,
            DEFAULT_CACHE_MEMORY_BYTES as i64,
            0,
            1 << 40,
        );
        let timeout = self.ms(
            "cache.command_timeout_ms",
            command_timeout_ms,
            DEFAULT_CACHE_COMMAND_TIMEOUT_MS,
        );
        let lock = self.ms(
            "cache.lock_timeout_ms",
            lock_timeout_ms,
            DEFAULT_CACHE_LOCK_TIMEOUT_MS,
        );
        let ttl = self.tier_ttls(tiers.unwrap_or_default());
        Some(CacheSpec {
            namespace,
            max_object_bytes: max_object? as u64,
            chunk_bytes: chunk? as u64,
            memory_bytes: memory? as u64,
            command_timeout: timeout?,
            lock_timeout: lock?,
            ttl_seconds: ttl,
            tag_headers,
            warm_urls,
            warm_concurrency: warm_concurrency? as usize,
            ignore_query_params: self.ignore_query_params(ignore_query_params.unwrap_or_default()),
            sort_query_params: sort_query_params.unwrap_or(false),
            ttl_mode: ttl_mode?,
            targeted_cache_control,
            stale_retention: Duration::from_secs(stale_retention? as u64),
        })
    }

    /// `ignore_query_params`: globs over parameter names (`*` and `?`; anything else literal),
    /// each non-empty.
    fn ignore_query_params(&mut self, globs: Vec<String>) -> Vec<String> {
        for (i, g) in globs.iter().enumerate() {
            let path = format!("cache.ignore_query_params[{i}]");
            if g.is_empty() {
                self.problem(path, "an empty pattern matches nothing");
            } else if let Err(e) = crate::util::glob::matcher(g) {
                self.problem(path, format!("`{g}`: {e}"));
            }
        }
        globs
    }

    /// `warm_urls`: absolute `http://` URLs.
    fn warm_urls(&mut self, urls: Vec<String>) -> Vec<String> {
        for (i, u) in urls.iter().enumerate() {
            let ok = u
                .parse::<http::Uri>()
                .ok()
                .filter(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
            if ok.is_none() {
                self.problem(
                    format!("cache.warm_urls[{i}]"),
                    format!(
                        "`{u}` is not an absolute http:// URL (e.g. http://example.com/index.html)"
                    ),
                );
            }
        }
        urls
    }

    /// `tag_headers`: header names, lower-cased.
    fn tag_headers(&mut self, names: Option<Vec<String>>) -> Vec<String> {
        let names: Vec<String> = names
            .unwrap_or_else(|| DEFAULT_TAG_HEADERS.iter().map(|s| s.to_string()).collect())
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for (i, h) in names.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.problem(
                    format!("cache.tag_headers[{i}]"),
                    format!("`{h}` is not a header name"),
                );
            }
        }
        names
    }

    /// `[cache.tiers.NAME]`: each tier's TTL within its bounds.
    fn tier_ttls(
        &mut self,
        tiers: std::collections::BTreeMap<String, FileCacheTier>,
    ) -> [u64; CacheTier::ALL.len()] {
        let mut ttl = CacheTier::ALL.map(|t| t.ttl_bounds().0);
        for (name, t) in tiers {
            let path = format!("cache.tiers.{name}");
            let Some(i) = CacheTier::ALL.iter().position(|x| x.name() == name) else {
                self.problem(
                    path,
                    format!("unknown tier `{name}`, expected one of: hot, warm, cold"),
                );
                continue;
            };
            let (def, lo, hi) = CacheTier::ALL[i].ttl_bounds();
            if let Some(v) = self.int_in(
                &format!("{path}.ttl_seconds"),
                t.ttl_seconds,
                def as i64,
                lo as i64,
                hi as i64,
            ) {
                ttl[i] = v as u64;
            }
        }
        ttl
    }
}
