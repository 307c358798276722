//! Serde structs that mirror the TOML file one to one. Nothing outside `config/` sees them: they
//! are validated into [`super::model`] and never used at run time.

use serde::Deserialize;

/// The whole file, as written. Top-level sections are deserialized one by one (see
/// [`super::load_str`]) so that a problem in one section does not hide problems in another.
pub const TOP_LEVEL_KEYS: &[&str] = &["server", "upstreams", "routes"];

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
    /// Extra attempts on another backend after a connect failure.
    pub retries: Option<i64>,
    /// The pool members.
    pub backends: Vec<FileBackend>,
}

/// One entry of `backends = [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// `host:port` or `ip:port`.
    pub addr: String,
    /// Relative share of traffic.
    pub weight: Option<i64>,
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
}
