//! Configuration: reading the TOML file, validating it into the runtime [`Config`], and reporting
//! every problem at once with file, line:column, key path and what was expected.
//!
//! Pipeline: text -> TOML syntax check -> each top-level section deserialized on its own (so one
//! broken section does not hide another) -> semantic validation -> [`Config`].

mod file;
pub mod model;
pub mod ser;
mod span;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use model::*;

use file::{
    FileAdmin, FileApiKey, FileCache, FileHealth, FileJwt, FileLimit, FileLogging, FileRateLimit,
    FileRedis, FileReload, FileRoute, FileServer, FileUpstream, TOP_LEVEL_KEYS,
};
use span::{LineIndex, SpanIndex};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `upstreams.api.backends[2].weight` (empty for whole-file problems).
    pub path: String,
    /// Line and column (1-based) where the key is written, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as named by the user.
    pub file: PathBuf,
    /// All problems, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  {}", self.file.display())?;
            if let Some((l, c)) = p.location {
                write!(f, ":{l}:{c}")?;
            }
            if p.path.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Read and validate the config file at `path`. Relative paths inside it (TLS files) are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            path: String::new(),
            location: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    load_str(&text, path, base)
}

/// Validate config `text`, reporting problems against `file`; relative paths resolve against
/// `base_dir`.
pub fn load_str(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut v = Validator {
        problems: Vec::new(),
        spans: SpanIndex::default(),
    };
    let config = match toml::from_str::<toml::Table>(text) {
        Ok(table) => {
            v.spans = SpanIndex::build(text);
            v.config(table, base_dir)
        }
        Err(e) => {
            let location = e.span().map(|s| LineIndex::new(text).locate(s.start));
            v.problems.push(Problem {
                path: String::new(),
                location,
                message: format!("invalid TOML: {}", e.message()),
            });
            None
        }
    };
    match config {
        Some(c) if v.problems.is_empty() => Ok(c),
        _ => Err(ConfigError {
            file: file.to_owned(),
            problems: v.problems,
        }),
    }
}

/// Collects problems while turning file structs into the runtime model.
struct Validator {
    problems: Vec<Problem>,
    spans: SpanIndex,
}

impl Validator {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let location = self.spans.locate(&path);
        self.problems.push(Problem {
            path,
            location,
            message: message.into(),
        });
    }

    /// Deserialize one section, recording a problem (with the exact nested key path) on failure.
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "." | "" => path.to_owned(),
                    _ => format!("{path}.{inner}"),
                };
                let message = e.inner().to_string();
                self.problem(full, message);
                None
            }
        }
    }

    fn config(&mut self, mut table: toml::Table, base_dir: &Path) -> Option<Config> {
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.problem(
                    key.clone(),
                    format!(
                        "unknown section `{key}`, expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }
        let server = match table.remove("server") {
            Some(v) => self
                .section::<FileServer>("server", v)
                .and_then(|s| self.server(s, base_dir)),
            None => Some(self.server(FileServer::empty(), base_dir)?),
        };

        let admin_file = table
            .remove("admin")
            .and_then(|v| self.section::<FileAdmin>("admin", v));
        let admin = self.admin(admin_file);
        let logging_file = table
            .remove("logging")
            .and_then(|v| self.section::<FileLogging>("logging", v));
        let logging = self.logging(logging_file);
        let reload_file = table
            .remove("reload")
            .and_then(|v| self.section::<FileReload>("reload", v));
        let reload = self.reload(reload_file);

        let mut names: Vec<String> = Vec::new();
        let mut upstreams = Vec::new();
        match table.remove("upstreams") {
            Some(toml::Value::Table(t)) => {
                for (name, value) in t {
                    let path = format!("upstreams.{name}");
                    names.push(name.clone());
                    if let Some(u) = self.section::<FileUpstream>(&path, value) {
                        if let Some(spec) = self.upstream(&path, name, u) {
                            upstreams.push(spec);
                        }
                    }
                }
            }
            Some(_) => self.problem("upstreams", "expected a table of pools: [upstreams.NAME]"),
            None => self.problem(
                "upstreams",
                "missing: define at least one pool, e.g. [upstreams.api] with backends = [...]",
            ),
        }

        let mut routes = Vec::new();
        match table.remove("routes") {
            Some(toml::Value::Array(a)) => {
                if a.is_empty() {
                    self.problem("routes", "empty: define at least one [[routes]]");
                }
                let access_log = logging.is_none_or(|l| l.access_log);
                let mut route_names = HashSet::new();
                for (i, value) in a.into_iter().enumerate() {
                    let path = format!("routes[{i}]");
                    if let Some(r) = self.section::<FileRoute>(&path, value) {
                        if let Some(spec) = self.route(&path, r, &names, &upstreams, access_log) {
                            if !route_names.insert(spec.name.clone()) {
                                self.problem(
                                    format!("{path}.name"),
                                    format!(
                                        "route name `{}` is used twice: give each route a unique `name`",
                                        spec.name
                                    ),
                                );
                            }
                            routes.push(spec);
                        }
                    }
                }
            }
            Some(_) => self.problem("routes", "expected an array of tables: [[routes]]"),
            None => self.problem(
                "routes",
                "missing: define at least one [[routes]] with host, path_prefix and upstream",
            ),
        }

        let redis = table
            .remove("redis")
            .and_then(|v| self.section::<FileRedis>("redis", v))
            .and_then(|r| self.redis(r));
        let cache_file = table
            .remove("cache")
            .and_then(|v| self.section::<FileCache>("cache", v));
        let cache = self.cache(cache_file);
        let rate_limit = table
            .remove("rate_limit")
            .and_then(|v| self.section::<FileRateLimit>("rate_limit", v))
            .and_then(|r| self.rate_limit(r, base_dir));

        Some(Config {
            server: server?,
            admin: admin?,
            logging: logging?,
            reload: reload?,
            upstreams,
            routes,
            redis,
            rate_limit,
            cache: cache?,
        })
    }

    fn cache(&mut self, c: Option<FileCache>) -> Option<CacheSpec> {
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
        } = c.unwrap_or(FileCache {
            namespace: None,
            max_object_bytes: None,
            chunk_bytes: None,
            memory_bytes: None,
            command_timeout_ms: None,
            lock_timeout_ms: None,
            tiers: None,
            tag_headers: None,
            warm_urls: None,
            warm_concurrency: None,
            ignore_query_params: None,
            sort_query_params: None,
        });
        let warm_urls = warm_urls.unwrap_or_default();
        for (i, u) in warm_urls.iter().enumerate() {
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
        let warm_concurrency = self.int_in("cache.warm_concurrency", warm_concurrency, 4, 1, 256);
        let tag_headers: Vec<String> = tag_headers
            .unwrap_or_else(|| DEFAULT_TAG_HEADERS.iter().map(|s| s.to_string()).collect())
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for (i, h) in tag_headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.problem(
                    format!("cache.tag_headers[{i}]"),
                    format!("`{h}` is not a header name"),
                );
            }
        }
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
        let mut ttl = CacheTier::ALL.map(|t| t.ttl_bounds().0);
        for (name, t) in tiers.unwrap_or_default() {
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
            ignore_query_params: ignore_query_params.unwrap_or_default(),
            sort_query_params: sort_query_params.unwrap_or(false),
        })
    }

    fn admin(&mut self, a: Option<FileAdmin>) -> Option<AdminSettings> {
        let FileAdmin {
            enabled,
            listen,
            token,
            token_env,
        } = a.unwrap_or(FileAdmin {
            enabled: None,
            listen: None,
            token: None,
            token_env: None,
        });
        let listen_text = listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
        let addr = match listen_text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    "admin.listen",
                    format!("`{listen_text}` is not a listen address: expected ip:port, e.g. 127.0.0.1:9901"),
                );
                None
            }
        };
        let token = match (token, token_env) {
            (Some(_), Some(_)) => {
                self.problem("admin", "give either `token` or `token_env`, not both");
                return None;
            }
            (Some(t), None) if t.trim().is_empty() => {
                self.problem("admin.token", "empty: give a secret or leave the key out");
                return None;
            }
            (Some(t), None) => Some(t),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(t) if !t.trim().is_empty() => Some(t),
                _ => {
                    self.problem(
                        "admin.token_env",
                        format!("environment variable `{var}` is not set or empty"),
                    );
                    return None;
                }
            },
            (None, None) => None,
        };
        let enabled = enabled.unwrap_or(true);
        let addr = addr?;
        if enabled && token.is_none() && !addr.ip().is_loopback() {
            self.problem(
                "admin.listen",
                format!(
                    "`{addr}` is not a loopback address, so the admin API needs a bearer token: \
                     set `token` or `token_env`"
                ),
            );
            return None;
        }
        Some(AdminSettings {
            listen: enabled.then_some(addr),
            token,
        })
    }

    fn logging(&mut self, l: Option<FileLogging>) -> Option<LoggingSettings> {
        let (format, access_log) = l.map_or((None, None), |l| (l.format, l.access_log));
        let format = match format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "logging.format",
                    format!("unknown format `{other}`, expected one of: text, json"),
                );
                return None;
            }
        };
        Some(LoggingSettings {
            format,
            access_log: access_log.unwrap_or(true),
        })
    }

    fn reload(&mut self, r: Option<FileReload>) -> Option<ReloadSettings> {
        let (watch, debounce) = r.map_or((None, None), |r| (r.watch, r.debounce_ms));
        let debounce = self.int_in(
            "reload.debounce_ms",
            debounce,
            DEFAULT_RELOAD_DEBOUNCE_MS as i64,
            10,
            60_000,
        )?;
        Some(ReloadSettings {
            watch: watch.unwrap_or(true),
            debounce: Duration::from_millis(debounce as u64),
        })
    }

    fn redis(&mut self, r: FileRedis) -> Option<RedisSpec> {
        let FileRedis {
            url,
            cluster,
            command_timeout_ms,
            breaker_failures,
            breaker_cooldown_ms,
        } = r;
        let target = match (url, cluster) {
            (Some(u), None) => self.redis_url("redis.url", &u).map(RedisTarget::Single),
            (None, Some(nodes)) if !nodes.is_empty() => {
                let before = self.problems.len();
                for (i, n) in nodes.iter().enumerate() {
                    self.redis_url(&format!("redis.cluster[{i}]"), n);
                }
                (self.problems.len() == before).then_some(RedisTarget::Cluster(nodes))
            }
            (Some(_), Some(_)) => {
                self.problem(
                    "redis",
                    "give either `url` (one node) or `cluster` (seed nodes), not both",
                );
                None
            }
            _ => {
                self.problem(
                    "redis",
                    "give `url = \"redis://127.0.0.1:6379/\"` or `cluster = [\"redis://…\", …]`",
                );
                None
            }
        };
        let timeout = self.ms(
            "redis.command_timeout_ms",
            command_timeout_ms,
            DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
        );
        let failures = self.int_in(
            "redis.breaker_failures",
            breaker_failures,
            DEFAULT_BREAKER_FAILURES as i64,
            1,
            1_000_000,
        );
        let cooldown = self.ms(
            "redis.breaker_cooldown_ms",
            breaker_cooldown_ms,
            DEFAULT_BREAKER_COOLDOWN_MS,
        );
        Some(RedisSpec {
            target: target?,
            command_timeout: timeout?,
            breaker_failures: failures? as u32,
            breaker_cooldown: cooldown?,
        })
    }

    fn redis_url(&mut self, path: &str, url: &str) -> Option<String> {
        match redis::Client::open(url) {
            Ok(_) => Some(url.to_owned()),
            Err(e) => {
                self.problem(
                    path,
                    format!("`{url}` is not a Redis URL ({e}): expected redis://host:port/"),
                );
                None
            }
        }
    }

    /// A limit table; `default` fills what it leaves out.
    fn limit(
        &mut self,
        path: &str,
        l: FileLimit,
        default: Option<LimitPolicy>,
    ) -> Option<LimitPolicy> {
        let FileLimit {
            limit,
            window_ms,
            algorithm,
            burst,
            off,
        } = l;
        if off.is_some() {
            self.problem(
                format!("{path}.off"),
                "`off` is only meaningful on a route's rate_limit",
            );
        }
        let algorithm = match algorithm.as_deref() {
            None => Some(default.map_or(Algorithm::SlidingWindow, |d| d.algorithm)),
            Some(a) => Algorithm::parse(a).or_else(|| {
                self.problem(
                    format!("{path}.algorithm"),
                    format!(
                        "unknown algorithm `{a}`, expected one of: {}",
                        Algorithm::NAMES
                    ),
                );
                None
            }),
        };
        let limit = match (limit, default) {
            (None, Some(d)) => Some(d.limit as i64),
            (None, None) => {
                self.problem(
                    format!("{path}.limit"),
                    "missing: requests allowed per window",
                );
                None
            }
            (Some(v), _) => self.int_in(&format!("{path}.limit"), Some(v), 0, 1, 1_000_000_000),
        };
        let window = self.int_in(
            &format!("{path}.window_ms"),
            window_ms,
            default.map_or(DEFAULT_WINDOW_MS, |d| d.window_ms) as i64,
            1,
            86_400_000 * 30,
        );
        let burst = match (burst, limit) {
            (Some(b), _) => self.int_in(&format!("{path}.burst"), Some(b), 0, 1, 1_000_000_000),
            (None, Some(l)) => Some(l),
            (None, None) => None,
        };
        Some(LimitPolicy {
            algorithm: algorithm?,
            limit: limit? as u64,
            window_ms: window? as u64,
            burst: burst? as u64,
        })
    }

    fn rate_limit(&mut self, r: FileRateLimit, base_dir: &Path) -> Option<RateLimitSpec> {
        let FileRateLimit {
            mode,
            on_redis_error,
            instances,
            lease_batch,
            api_key_header,
            api_keys_redis_hash,
            trusted_proxies,
            exempt_paths,
            key_prefix,
            jwt,
            tiers,
            api_keys,
        } = r;
        let mode = match mode.as_deref().unwrap_or("enforce") {
            "enforce" => Some(LimitMode::Enforce),
            "shadow" => Some(LimitMode::Shadow),
            other => {
                self.problem(
                    "rate_limit.mode",
                    format!("`{other}`: expected `enforce` or `shadow`"),
                );
                None
            }
        };
        let on_error = match on_redis_error.as_deref().unwrap_or("local") {
            "local" => Some(OnRedisError::Local),
            "open" => Some(OnRedisError::Open),
            "closed" => Some(OnRedisError::Closed),
            other => {
                self.problem(
                    "rate_limit.on_redis_error",
                    format!("`{other}`: expected `local`, `open` or `closed`"),
                );
                None
            }
        };
        let instances = self.int_in("rate_limit.instances", instances, 1, 1, 10_000);
        let lease_batch = self.int_in(
            "rate_limit.lease_batch",
            lease_batch,
            DEFAULT_LEASE_BATCH as i64,
            0,
            100_000,
        );
        let header = api_key_header
            .unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_owned())
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            self.problem(
                "rate_limit.api_key_header",
                format!("`{header}` is not a header name"),
            );
        }
        let mut proxies = Vec::new();
        for (i, p) in trusted_proxies.unwrap_or_default().iter().enumerate() {
            let parsed = p
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => proxies.push(n),
                Err(_) => self.problem(
                    format!("rate_limit.trusted_proxies[{i}]"),
                    format!("`{p}` is not an IP or CIDR, e.g. 10.0.0.0/8"),
                ),
            }
        }
        let exempt = exempt_paths
            .unwrap_or_else(|| DEFAULT_EXEMPT_PATHS.iter().map(|s| s.to_string()).collect());
        for (i, p) in exempt.iter().enumerate() {
            if !p.starts_with('/') {
                self.problem(
                    format!("rate_limit.exempt_paths[{i}]"),
                    format!("`{p}` must start with `/`"),
                );
            }
        }
        let builtin = |limit| LimitPolicy {
            algorithm: Algorithm::SlidingWindow,
            limit,
            window_ms: DEFAULT_WINDOW_MS,
            burst: limit,
        };
        let mut tier_map = std::collections::BTreeMap::from([
            (TIER_ANONYMOUS.to_owned(), builtin(100)),
            (TIER_AUTHENTICATED.to_owned(), builtin(500)),
            (TIER_PREMIUM.to_owned(), builtin(5000)),
        ]);
        for (name, l) in tiers.unwrap_or_default() {
            let default = tier_map.get(&name).copied();
            if let Some(p) = self.limit(&format!("rate_limit.tiers.{name}"), l, default) {
                tier_map.insert(name, p);
            }
        }
        let mut keys = std::collections::HashMap::new();
        for (i, FileApiKey { key, client, tier }) in
            api_keys.unwrap_or_default().into_iter().enumerate()
        {
            let tier = tier.unwrap_or_else(|| TIER_PREMIUM.to_owned());
            if !tier_map.contains_key(&tier) {
                self.problem(
                    format!("rate_limit.api_keys[{i}].tier"),
                    format!(
                        "no tier named `{tier}` (defined: {})",
                        tier_map.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if key.is_empty() || keys.insert(key, ApiKeyOwner { client, tier }).is_some() {
                self.problem(
                    format!("rate_limit.api_keys[{i}].key"),
                    "empty or listed twice",
                );
            }
        }
        let jwt = jwt.and_then(|j| self.jwt(j, base_dir));
        Some(RateLimitSpec {
            mode: mode?,
            on_redis_error: on_error?,
            instances: instances? as u32,
            lease_batch: lease_batch? as u64,
            api_key_header: header,
            api_keys_redis_hash,
            trusted_proxies: proxies,
            exempt_paths: exempt,
            key_prefix: key_prefix.unwrap_or_else(|| DEFAULT_RATE_LIMIT_PREFIX.to_owned()),
            jwt,
            tiers: tier_map,
            api_keys: keys,
        })
    }

    fn jwt(&mut self, j: FileJwt, base_dir: &Path) -> Option<JwtSpec> {
        let FileJwt {
            hs256_secret,
            hs256_secret_env,
            rs256_public_key,
            es256_public_key,
            tier_claim,
            leeway_seconds,
        } = j;
        let given = [
            hs256_secret.is_some(),
            hs256_secret_env.is_some(),
            rs256_public_key.is_some(),
            es256_public_key.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            self.problem(
                "rate_limit.jwt",
                "give exactly one of hs256_secret, hs256_secret_env, rs256_public_key, es256_public_key",
            );
            return None;
        }
        let key = if let Some(s) = hs256_secret {
            Some(JwtKey::Hs256(s.into_bytes()))
        } else if let Some(var) = hs256_secret_env {
            match std::env::var(&var) {
                Ok(v) if !v.is_empty() => Some(JwtKey::Hs256(v.into_bytes())),
                _ => {
                    self.problem(
                        "rate_limit.jwt.hs256_secret_env",
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            }
        } else {
            let (path, pem, rsa) = match (rs256_public_key, es256_public_key) {
                (Some(p), _) => ("rate_limit.jwt.rs256_public_key", p, true),
                (_, Some(p)) => ("rate_limit.jwt.es256_public_key", p, false),
                _ => unreachable!("exactly one key source was checked above"),
            };
            let file = self.existing_file(path, &pem, base_dir)?;
            match std::fs::read(&file) {
                Ok(bytes) => {
                    let ok = if rsa {
                        jsonwebtoken::DecodingKey::from_rsa_pem(&bytes).is_ok()
                    } else {
                        jsonwebtoken::DecodingKey::from_ec_pem(&bytes).is_ok()
                    };
                    if !ok {
                        self.problem(
                            path,
                            format!("`{}` is not a PEM public key of that type", file.display()),
                        );
                        None
                    } else if rsa {
                        Some(JwtKey::Rs256(bytes))
                    } else {
                        Some(JwtKey::Es256(bytes))
                    }
                }
                Err(e) => {
                    self.problem(path, format!("cannot read `{}`: {e}", file.display()));
                    None
                }
            }
        };
        let leeway = self.int_in("rate_limit.jwt.leeway_seconds", leeway_seconds, 30, 0, 3600);
        Some(JwtSpec {
            key: key?,
            tier_claim: tier_claim.unwrap_or_else(|| DEFAULT_TIER_CLAIM.to_owned()),
            leeway_seconds: leeway? as u64,
        })
    }

    fn server(&mut self, s: FileServer, base_dir: &Path) -> Option<ServerSettings> {
        let FileServer {
            listen,
            threads,
            tls,
            grace_period_seconds,
            upstream_keepalive_pool_size,
            upgrade_sock,
            drain_delay_ms,
            pid_file,
            preserve_header_case,
            client_header_timeout_ms,
            client_body_timeout_ms,
            keepalive_timeout_ms,
            max_request_header_bytes,
            max_connections,
            normalize_path,
        } = s;
        let mut seen = HashSet::new();
        let mut plain = Vec::new();
        let listen = listen.unwrap_or_else(|| vec![DEFAULT_LISTEN.to_owned()]);
        let tls = tls.unwrap_or_default();
        if listen.is_empty() && tls.is_empty() {
            self.problem("server.listen", "no listener: give at least one address");
        }
        for (i, a) in listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            if let Some(addr) = self.listen_addr(&path, a, &mut seen) {
                plain.push(addr);
            }
        }
        let mut tls_out = Vec::new();
        for (i, t) in tls.into_iter().enumerate() {
            let path = format!("server.tls[{i}]");
            let listen = self.listen_addr(&format!("{path}.listen"), &t.listen, &mut seen);
            let cert = self.existing_file(&format!("{path}.cert"), &t.cert, base_dir);
            let key = self.existing_file(&format!("{path}.key"), &t.key, base_dir);
            if let (Some(listen), Some(cert), Some(key)) = (listen, cert, key) {
                // Parsed and matched here, as the listener will: a bad pair is a config error,
                // never a listener that fails at start.
                match crate::tlsfiles::check_pair(&cert, &key) {
                    Ok(()) => tls_out.push(TlsListener { listen, cert, key }),
                    Err(why) => self.problem(format!("{path}.cert"), why),
                }
            }
        }
        let threads =
            self.int_in("server.threads", threads, DEFAULT_THREADS as i64, 1, 1024)? as usize;
        let grace = self.int_in(
            "server.grace_period_seconds",
            grace_period_seconds,
            DEFAULT_GRACE_PERIOD_SECONDS as i64,
            0,
            3600,
        )?;
        let pool = self.int_in(
            "server.upstream_keepalive_pool_size",
            upstream_keepalive_pool_size,
            DEFAULT_KEEPALIVE_POOL_SIZE as i64,
            0,
            1_000_000,
        )?;
        let ms = |this: &mut Self, key: &str, v: Option<i64>, default: u64, min: i64| {
            this.int_in(&format!("server.{key}"), v, default as i64, min, 86_400_000)
                .map(|v| Duration::from_millis(v as u64))
        };
        let client_header_timeout = ms(
            self,
            "client_header_timeout_ms",
            client_header_timeout_ms,
            DEFAULT_CLIENT_HEADER_TIMEOUT_MS,
            1,
        );
        let client_body_timeout = ms(
            self,
            "client_body_timeout_ms",
            client_body_timeout_ms,
            DEFAULT_CLIENT_BODY_TIMEOUT_MS,
            1,
        );
        let keepalive_timeout = ms(
            self,
            "keepalive_timeout_ms",
            keepalive_timeout_ms,
            DEFAULT_CLIENT_KEEPALIVE_TIMEOUT_MS,
            1,
        );
        let max_request_header_bytes = self.int_in(
            "server.max_request_header_bytes",
            max_request_header_bytes,
            DEFAULT_MAX_REQUEST_HEADER_BYTES as i64,
            1024,
            1 << 20,
        );
        let max_connections = self.int_in(
            "server.max_connections",
            max_connections,
            DEFAULT_MAX_CONNECTIONS as i64,
            1,
            10_000_000,
        );
        Some(ServerSettings {
            client_header_timeout: client_header_timeout?,
            client_body_timeout: client_body_timeout?,
            keepalive_timeout: keepalive_timeout?,
            max_request_header_bytes: max_request_header_bytes? as usize,
            max_connections: max_connections? as usize,
            normalize_path: normalize_path.unwrap_or(true),
            listen: plain,
            tls: tls_out,
            threads,
            grace_period: Duration::from_secs(grace as u64),
            upstream_keepalive_pool_size: pool as usize,
            upgrade_sock: PathBuf::from(
                upgrade_sock.unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.into()),
            ),
            drain_delay: Duration::from_millis(self.int_in(
                "server.drain_delay_ms",
                drain_delay_ms,
                0,
                0,
                600_000,
            )? as u64),
            pid_file: PathBuf::from(pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.into())),
            preserve_header_case: preserve_header_case.unwrap_or(false),
        })
    }

    fn listen_addr(
        &mut self,
        path: &str,
        value: &str,
        seen: &mut HashSet<SocketAddr>,
    ) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) if !seen.insert(a) => {
                self.problem(path, format!("`{value}` is listed twice"));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    path,
                    format!(
                        "`{value}` is not a listen address: expected ip:port, e.g. 0.0.0.0:8080"
                    ),
                );
                None
            }
        }
    }

    fn existing_file(&mut self, path: &str, value: &str, base_dir: &Path) -> Option<PathBuf> {
        let p = Path::new(value);
        let full = if p.is_absolute() {
            p.to_owned()
        } else {
            base_dir.join(p)
        };
        if full.is_file() {
            Some(full)
        } else {
            self.problem(
                path,
                format!(
                    "file `{}` does not exist (relative paths start at the config file's directory)",
                    full.display()
                ),
            );
            None
        }
    }

    /// An optional integer with a default, checked against `min..=max`.
    fn int_in(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.problem(path, format!("must be {min}..={max}, got {v}"));
            None
        }
    }

    fn ms(&mut self, path: &str, value: Option<i64>, default: u64) -> Option<Duration> {
        self.int_in(path, value, default as i64, 1, 86_400_000)
            .map(|v| Duration::from_millis(v as u64))
    }

    fn upstream(&mut self, path: &str, name: String, u: FileUpstream) -> Option<UpstreamSpec> {
        let FileUpstream {
            strategy,
            connect_timeout_ms,
            read_timeout_ms,
            write_timeout_ms,
            keepalive_timeout_ms,
            retries,
            next_upstream,
            retry_timeout_ms,
            retry_budget_percent,
            retry_budget_min_per_second,
            max_fails,
            fail_timeout_ms,
            fail_on_5xx,
            panic_mode,
            slow_start_ms,
            websocket_idle_timeout_ms,
            health,
            backends,
        } = u;
        let before = self.problems.len();
        let strategy = match strategy.as_deref() {
            None => Some(Strategy::RoundRobin),
            Some(s) => Strategy::parse(s).or_else(|| {
                self.problem(
                    format!("{path}.strategy"),
                    format!(
                        "unknown strategy `{s}`, expected one of: {}",
                        Strategy::NAMES
                    ),
                );
                None
            }),
        };
        let connect = self.ms(
            &format!("{path}.connect_timeout_ms"),
            connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
        );
        let read = self.ms(
            &format!("{path}.read_timeout_ms"),
            read_timeout_ms,
            DEFAULT_READ_TIMEOUT_MS,
        );
        let write = self.ms(
            &format!("{path}.write_timeout_ms"),
            write_timeout_ms,
            DEFAULT_WRITE_TIMEOUT_MS,
        );
        let keepalive = self.ms(
            &format!("{path}.keepalive_timeout_ms"),
            keepalive_timeout_ms,
            DEFAULT_KEEPALIVE_TIMEOUT_MS,
        );
        let retries = self.int_in(
            &format!("{path}.retries"),
            retries,
            DEFAULT_RETRIES as i64,
            0,
            MAX_RETRIES as i64,
        );
        let next = match next_upstream {
            None => NextUpstream::DEFAULT,
            Some(names) => {
                let mut n = NextUpstream::default();
                for (i, name) in names.iter().enumerate() {
                    if !n.set(name) {
                        self.problem(
                            format!("{path}.next_upstream[{i}]"),
                            format!(
                                "unknown condition `{name}`, expected one of: {}",
                                NextUpstream::NAMES
                            ),
                        );
                    }
                }
                n
            }
        };
        let retry_timeout = self
            .int_in(
                &format!("{path}.retry_timeout_ms"),
                retry_timeout_ms,
                0,
                0,
                86_400_000,
            )
            .map(|v| (v > 0).then(|| Duration::from_millis(v as u64)));
        let budget_percent = self.int_in(
            &format!("{path}.retry_budget_percent"),
            retry_budget_percent,
            DEFAULT_RETRY_BUDGET_PERCENT as i64,
            0,
            1000,
        );
        let budget_min = self.int_in(
            &format!("{path}.retry_budget_min_per_second"),
            retry_budget_min_per_second,
            DEFAULT_RETRY_BUDGET_MIN_PER_SECOND as i64,
            0,
            1_000_000,
        );
        let max_fails = self.int_in(
            &format!("{path}.max_fails"),
            max_fails,
            DEFAULT_MAX_FAILS as i64,
            0,
            1_000_000,
        );
        let fail_timeout = self.ms(
            &format!("{path}.fail_timeout_ms"),
            fail_timeout_ms,
            DEFAULT_FAIL_TIMEOUT_MS,
        );
        let slow_start = self
            .int_in(
                &format!("{path}.slow_start_ms"),
                slow_start_ms,
                0,
                0,
                86_400_000,
            )
            .map(|v| Duration::from_millis(v as u64));
        let ws_idle = self.ms(
            &format!("{path}.websocket_idle_timeout_ms"),
            websocket_idle_timeout_ms,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS,
        );
        let health = health.map(|h| self.health(&format!("{path}.health"), h));
        if backends.is_empty() {
            self.problem(
                format!("{path}.backends"),
                "empty pool: list at least one backend, e.g. { addr = \"127.0.0.1:9001\" }",
            );
        }
        if backends.len() > MAX_BACKENDS {
            self.problem(
                format!("{path}.backends"),
                format!(
                    "{} backends: at most {MAX_BACKENDS} per pool",
                    backends.len()
                ),
            );
        }
        let mut out = Vec::with_capacity(backends.len());
        let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for (i, b) in backends.into_iter().enumerate() {
            let bpath = format!("{path}.backends[{i}]");
            let weight = self.int_in(
                &format!("{bpath}.weight"),
                b.weight,
                DEFAULT_WEIGHT as i64,
                1,
                MAX_WEIGHT as i64,
            );
            let addr = resolve(&b.addr).map_err(|why| {
                self.problem(
                    format!("{bpath}.addr"),
                    format!(
                        "`{}` {why}: expected host:port, e.g. 127.0.0.1:9001",
                        b.addr
                    ),
                )
            });
            if let Ok(addr) = addr {
                if let Some(first) = seen.insert(addr, i) {
                    self.problem(
                        format!("{bpath}.addr"),
                        format!(
                            "duplicate backend `{}`: already listed as backends[{first}]",
                            b.addr
                        ),
                    );
                }
            }
            if let (Ok(addr), Some(weight)) = (addr, weight) {
                out.push(BackendSpec {
                    name: b.addr,
                    addr,
                    weight: weight as u32,
                    backup: b.backup.unwrap_or(false),
                });
            }
        }
        if !out.is_empty() && out.iter().all(|b| b.backup) {
            self.problem(
                format!("{path}.backends"),
                "every backend is a backup: mark at least one as a primary (backup = false)",
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(UpstreamSpec {
            name,
            strategy: strategy?,
            connect_timeout: connect?,
            read_timeout: read?,
            write_timeout: write?,
            keepalive_timeout: keepalive?,
            retries: retries? as u32,
            next_upstream: next,
            retry_timeout: retry_timeout?,
            retry_budget: RetryBudgetSpec {
                percent: budget_percent? as u32,
                min_per_second: budget_min? as u32,
            },
            passive: PassiveSpec {
                max_fails: max_fails? as u32,
                fail_timeout: fail_timeout?,
                on_5xx: fail_on_5xx.unwrap_or(false),
            },
            panic_mode: panic_mode.unwrap_or(false),
            slow_start: slow_start?,
            websocket_idle_timeout: ws_idle?,
            health: health.flatten(),
            backends: out,
        })
    }

    fn health(&mut self, path: &str, h: FileHealth) -> Option<HealthSpec> {
        let FileHealth {
            kind,
            path: probe_path,
            interval_ms,
            timeout_ms,
            expect_status,
            rise,
            fall,
            initial,
        } = h;
        let http = match kind.as_deref().unwrap_or("http") {
            "http" => true,
            "tcp" => false,
            other => {
                self.problem(
                    format!("{path}.kind"),
                    format!("unknown probe kind `{other}`, expected `http` or `tcp`"),
                );
                true
            }
        };
        let probe_path = probe_path.unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_owned());
        if !probe_path.starts_with('/') {
            self.problem(
                format!("{path}.path"),
                format!("`{probe_path}` must start with `/`"),
            );
        }
        let interval = self.ms(
            &format!("{path}.interval_ms"),
            interval_ms,
            DEFAULT_HEALTH_INTERVAL_MS,
        );
        let timeout = self.ms(
            &format!("{path}.timeout_ms"),
            timeout_ms,
            DEFAULT_HEALTH_TIMEOUT_MS,
        );
        let expect = match parse_status_range(expect_status.as_deref().unwrap_or("200-399")) {
            Some(r) => Some(r),
            None => {
                self.problem(
                    format!("{path}.expect_status"),
                    format!(
                        "`{}` is not a status or range: expected e.g. \"200\" or \"200-399\"",
                        expect_status.unwrap_or_default()
                    ),
                );
                None
            }
        };
        let rise = self.int_in(&format!("{path}.rise"), rise, DEFAULT_RISE as i64, 1, 100);
        let fall = self.int_in(&format!("{path}.fall"), fall, DEFAULT_FALL as i64, 1, 100);
        let initial_healthy = match initial.as_deref().unwrap_or("healthy") {
            "healthy" => Some(true),
            "unhealthy" => Some(false),
            other => {
                self.problem(
                    format!("{path}.initial"),
                    format!("`{other}` is not a state: expected `healthy` or `unhealthy`"),
                );
                None
            }
        };
        Some(HealthSpec {
            http_path: http.then_some(probe_path),
            interval: interval?,
            timeout: timeout?,
            expect_status: expect?,
            rise: rise? as u32,
            fall: fall? as u32,
            initial_healthy: initial_healthy?,
        })
    }

    fn route(
        &mut self,
        path: &str,
        r: FileRoute,
        names: &[String],
        upstreams: &[UpstreamSpec],
        access_log_default: bool,
    ) -> Option<RouteSpec> {
        let FileRoute {
            host,
            path_prefix,
            upstream,
            rate_limit,
            name,
            access_log,
            cache,
            cache_set_cookie,
            cache_tags,
        } = r;
        let cache_tags = cache_tags.unwrap_or_default();
        for (i, t) in cache_tags.iter().enumerate() {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == ',') {
                self.problem(
                    format!("{path}.cache_tags[{i}]"),
                    format!("`{t}`: a tag is one word without spaces or commas"),
                );
            }
        }
        let tier = match cache.as_deref() {
            None | Some("off") => Some(None),
            Some(t) => match CacheTier::ALL.iter().find(|x| x.name() == t) {
                Some(x) => Some(Some(*x)),
                None => {
                    self.problem(
                        format!("{path}.cache"),
                        format!("unknown cache tier `{t}`, expected one of: hot, warm, cold, off"),
                    );
                    None
                }
            },
        };
        let name = name.unwrap_or_else(|| {
            format!(
                "{}{}",
                host.as_deref().unwrap_or("*"),
                path_prefix.as_deref().unwrap_or("/")
            )
        });
        if name.is_empty()
            || name.len() > 128
            || name
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            self.problem(
                format!("{path}.name"),
                "expected 1-128 printable characters without quotes or backslashes",
            );
        }
        let rate_limit = match rate_limit {
            None => Some(RouteLimit::Tier),
            Some(FileLimit {
                off: Some(true), ..
            }) => Some(RouteLimit::Off),
            Some(mut l) => {
                l.off = None;
                self.limit(&format!("{path}.rate_limit"), l, None)
                    .map(RouteLimit::Policy)
            }
        };
        let host = match parse_host(host.as_deref().unwrap_or("*")) {
            Ok(h) => Some(h),
            Err(why) => {
                self.problem(format!("{path}.host"), why);
                None
            }
        };
        let prefix = path_prefix.unwrap_or_else(|| "/".to_owned());
        if !prefix.starts_with('/') {
            self.problem(
                format!("{path}.path_prefix"),
                format!("`{prefix}` must start with `/`"),
            );
        }
        let idx = if names.contains(&upstream) {
            // Only a pool that validated has an index; a broken one was already reported.
            upstreams.iter().position(|u| u.name == upstream)
        } else {
            let known = if names.is_empty() {
                "none are defined".to_owned()
            } else {
                format!("defined: {}", names.join(", "))
            };
            self.problem(
                format!("{path}.upstream"),
                format!("no upstream named `{upstream}` ({known})"),
            );
            None
        };
        Some(RouteSpec {
            host: host?,
            path_prefix: prefix,
            upstream: idx?,
            rate_limit: rate_limit?,
            name,
            access_log: access_log.unwrap_or(access_log_default),
            cache: RouteCache {
                tier: tier?,
                set_cookie: cache_set_cookie.unwrap_or(false),
            },
            cache_tags,
        })
    }
}

impl FileServer {
    fn empty() -> Self {
        FileServer {
            listen: None,
            threads: None,
            tls: None,
            grace_period_seconds: None,
            upstream_keepalive_pool_size: None,
            upgrade_sock: None,
            drain_delay_ms: None,
            pid_file: None,
            preserve_header_case: None,
            client_header_timeout_ms: None,
            client_body_timeout_ms: None,
            keepalive_timeout_ms: None,
            max_request_header_bytes: None,
            max_connections: None,
            normalize_path: None,
        }
    }
}

/// Resolve `host:port` once, at load time (never on the request path).
fn resolve(addr: &str) -> Result<SocketAddr, &'static str> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = addr.rsplit_once(':').ok_or("has no port")?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err("is not a valid address");
    }
    // The fuzzer (proxy/fuzz) must not send DNS queries for the names it makes up.
    if cfg!(fuzzing) {
        return Err("does not resolve (names are not looked up under fuzzing)");
    }
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or("does not resolve")
}

/// `"200"` or `"200-399"` -> inclusive range of valid statuses.
fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    ((100..=999).contains(&lo) && (lo..=999).contains(&hi)).then_some((lo, hi))
}

/// Parse a route host pattern.
fn parse_host(h: &str) -> Result<HostMatch, String> {
    let lower = h.trim().to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if lower == "*" {
        Ok(HostMatch::Any)
    } else if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            Ok(HostMatch::Suffix(format!(".{rest}")))
        } else {
            Err(format!(
                "`{h}` is not a host pattern: expected `example.com`, `*.example.com` or `*`"
            ))
        }
    } else if valid(&lower) {
        Ok(HostMatch::Exact(lower))
    } else {
        Err(format!(
            "`{h}` is not a host pattern: expected `example.com`, `*.example.com` or `*`"
        ))
    }
}

#[cfg(test)]
mod tests;
