//! Serde structs that mirror the TOML file one to one. Nothing outside `config/` sees them: they
//! are validated into [`super::model`] and never used at run time.

use serde::Deserialize;

/// The whole file, as written. Top-level sections are deserialized one by one (see
/// [`super::load_str`]) so that a problem in one section does not hide problems in another.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "logging",
    "reload",
    "upstreams",
    "routes",
    "redis",
    "rate_limit",
    "cache",
];

/// `[cache]`: the shared response cache.
#[derive(Debug, Deserialize)]
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
}

/// `[cache.tiers.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheTier {
    /// Freshness when the origin gives none.
    pub ttl_seconds: Option<i64>,
}

/// `[admin]`: the admin API listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Whether the admin listener runs.
    pub enabled: Option<bool>,
    /// `ip:port` of the admin listener.
    pub listen: Option<String>,
    /// Bearer token, inline.
    pub token: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
}

/// `[logging]`: log format and the access log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogging {
    /// `text` or `json`.
    pub format: Option<String>,
    /// One line per request (routes may turn it off).
    pub access_log: Option<bool>,
}

/// `[reload]`: what triggers a live reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReload {
    /// Watch the config file and reload when it changes.
    pub watch: Option<bool>,
    /// How often the file is looked at, and how long it must stay unchanged before a reload.
    pub debounce_ms: Option<i64>,
}

/// `[redis]`: the shared store for rate limits (and later the cache).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// A single node, `redis://host:port/db`.
    pub url: Option<String>,
    /// Redis Cluster seed nodes.
    pub cluster: Option<Vec<String>>,
    /// Bound on each Redis call.
    pub command_timeout_ms: Option<i64>,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: Option<i64>,
    /// How long an open breaker skips Redis before probing it again.
    pub breaker_cooldown_ms: Option<i64>,
}

/// `[rate_limit]`: per-client limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    /// `enforce` or `shadow`.
    pub mode: Option<String>,
    /// `local`, `open` or `closed`.
    pub on_redis_error: Option<String>,
    /// Sluice instances sharing the limits (the local fallback divides limits by it).
    pub instances: Option<i64>,
    /// Requests counted per Redis call for large limits (0: one per request).
    pub lease_batch: Option<i64>,
    /// Header carrying an API key.
    pub api_key_header: Option<String>,
    /// Redis hash mapping API keys to `client:tier`.
    pub api_keys_redis_hash: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Path prefixes never limited.
    pub exempt_paths: Option<Vec<String>>,
    /// Prefix of every Redis key.
    pub key_prefix: Option<String>,
    /// Bearer-token verification.
    pub jwt: Option<FileJwt>,
    /// Limits per tier.
    pub tiers: Option<std::collections::BTreeMap<String, FileLimit>>,
    /// API keys known from the config.
    pub api_keys: Option<Vec<FileApiKey>>,
}

/// `[rate_limit.jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJwt {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// Environment variable holding the HS256 secret.
    pub hs256_secret_env: Option<String>,
    /// RS256 public key (PEM file).
    pub rs256_public_key: Option<String>,
    /// ES256 public key (PEM file).
    pub es256_public_key: Option<String>,
    /// Claim naming the client's tier.
    pub tier_claim: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    pub leeway_seconds: Option<i64>,
}

/// A limit: `{ limit, window_ms, algorithm, burst }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimit {
    /// Requests per window.
    pub limit: Option<i64>,
    /// Window length.
    pub window_ms: Option<i64>,
    /// `sliding_window_log`, `fixed_window`, `sliding_window` or `gcra`.
    pub algorithm: Option<String>,
    /// GCRA: requests allowed at once.
    pub burst: Option<i64>,
    /// Routes only: `true` turns limiting off for the route.
    pub off: Option<bool>,
}

/// One `[[rate_limit.api_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApiKey {
    /// The key as clients send it.
    pub key: String,
    /// Client id used for the limit.
    pub client: String,
    /// Tier name.
    pub tier: Option<String>,
}

/// `[server]`: settings fixed for the life of the process (a reload may not change them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    /// Plain HTTP listeners (`ip:port`).
    pub listen: Option<Vec<String>>,
    /// Worker threads for the proxy service.
    pub threads: Option<i64>,
    /// TLS listeners.
    pub tls: Option<Vec<FileTls>>,
    /// Seconds a graceful stop waits for in-flight requests.
    pub grace_period_seconds: Option<i64>,
    /// Idle upstream connections kept for reuse, across all pools.
    pub upstream_keepalive_pool_size: Option<i64>,
    /// Unix socket over which listeners are handed to a new process (`--upgrade`).
    pub upgrade_sock: Option<String>,
    /// After SIGTERM, keep serving this long with `/readyz` at 503 before closing listeners.
    pub drain_delay_ms: Option<i64>,
    /// Where `--daemon` writes the process id.
    pub pid_file: Option<String>,
    /// Keep the case of HTTP/1 header field names as received (default: lowercase them).
    pub preserve_header_case: Option<bool>,
    /// Milliseconds within which a whole request head must arrive.
    pub client_header_timeout_ms: Option<i64>,
    /// Milliseconds of the longest wait for each read of a request body.
    pub client_body_timeout_ms: Option<i64>,
    /// Milliseconds an idle keep-alive client connection waits for its next request.
    pub keepalive_timeout_ms: Option<i64>,
    /// Largest request head (request line and fields) in bytes.
    pub max_request_header_bytes: Option<i64>,
    /// Most open client connections on the proxy listeners.
    pub max_connections: Option<i64>,
    /// Normalise request paths (dot segments, `//`, percent-encoding) before routing.
    pub normalize_path: Option<bool>,
}

/// `[[server.tls]]`: one TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// `ip:port` to listen on.
    pub listen: String,
    /// PEM certificate chain path, relative to the config file's directory unless absolute.
    pub cert: String,
    /// PEM private key path, relative to the config file's directory unless absolute.
    pub key: String,
}

/// `[upstreams.NAME]`: one pool of backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Selection strategy name.
    pub strategy: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout_ms: Option<i64>,
    /// Upstream read timeout (time between reads).
    pub read_timeout_ms: Option<i64>,
    /// Upstream write timeout.
    pub write_timeout_ms: Option<i64>,
    /// How long an idle upstream connection is kept for reuse.
    pub keepalive_timeout_ms: Option<i64>,
    /// Extra attempts on another backend after a retryable failure.
    pub retries: Option<i64>,
    /// Which failures are retried on another backend (nginx's `proxy_next_upstream`).
    pub next_upstream: Option<Vec<String>>,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout_ms: Option<i64>,
    /// Retries may add at most this percentage to the pool's request rate.
    pub retry_budget_percent: Option<i64>,
    /// Retries always allowed per second regardless of the percentage.
    pub retry_budget_min_per_second: Option<i64>,
    /// Passive health: failures within `fail_timeout_ms` that eject a backend.
    pub max_fails: Option<i64>,
    /// Passive health: the failure window and the ejection time.
    pub fail_timeout_ms: Option<i64>,
    /// Passive health: whether 5xx responses count as failures.
    pub fail_on_5xx: Option<bool>,
    /// With nothing healthy, try every backend anyway instead of answering 503.
    pub panic_mode: Option<bool>,
    /// A returning backend's share of traffic ramps up linearly over this time.
    pub slow_start_ms: Option<i64>,
    /// Idle limit for upgraded (WebSocket) connections, replacing the read timeouts.
    pub websocket_idle_timeout_ms: Option<i64>,
    /// Active health checks.
    pub health: Option<FileHealth>,
    /// The pool members.
    pub backends: Vec<FileBackend>,
}

/// `[upstreams.NAME.health]`: active probes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    /// `http` or `tcp`.
    pub kind: Option<String>,
    /// HTTP path probed with GET.
    pub path: Option<String>,
    /// Time between probes of one backend.
    pub interval_ms: Option<i64>,
    /// Probe timeout (connect and response).
    pub timeout_ms: Option<i64>,
    /// Accepted status: `"200"` or a range `"200-399"`.
    pub expect_status: Option<String>,
    /// Consecutive successes to return to rotation.
    pub rise: Option<i64>,
    /// Consecutive failures to leave rotation.
    pub fall: Option<i64>,
    /// State of a backend before its first probe: `healthy` or `unhealthy`.
    pub initial: Option<String>,
}

/// One entry of `backends = [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// `host:port` or `ip:port`.
    pub addr: String,
    /// Relative share of traffic.
    pub weight: Option<i64>,
    /// Only used while no primary backend is available.
    pub backup: Option<bool>,
}

/// `[[routes]]`: one routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// `example.com`, `*.example.com` or `*`.
    pub host: Option<String>,
    /// Path prefix, matched on `/` boundaries.
    pub path_prefix: Option<String>,
    /// Name of an `[upstreams.NAME]` section.
    pub upstream: String,
    /// Per-route limit replacing the tier's, or `{ off = true }`.
    pub rate_limit: Option<FileLimit>,
    /// Name used in metrics and logs.
    pub name: Option<String>,
    /// Whether requests on this route are access-logged (default: `[logging] access_log`).
    pub access_log: Option<bool>,
    /// Cache tier: `hot`, `warm`, `cold` or `off`.
    pub cache: Option<String>,
    /// Store responses that set cookies.
    pub cache_set_cookie: Option<bool>,
    /// Tags given to every entry cached on this route.
    pub cache_tags: Option<Vec<String>>,
}
