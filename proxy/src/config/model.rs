//! The validated runtime configuration. Built only by [`super::load`]; every value here has been
//! checked, so the rest of Sluice never re-validates.

use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

use super::ser;
pub use crate::accesslog::{Destination, Format as AccessFormat};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default plain listener when `[server].listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default proxy worker threads.
pub const DEFAULT_THREADS: usize = 2;
/// Default seconds a graceful stop (SIGTERM) waits for in-flight requests.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;
/// Default number of idle upstream connections kept for reuse (Pingora's own default).
pub const DEFAULT_KEEPALIVE_POOL_SIZE: usize = 128;
/// `--check` warns about certificates expiring within this many days.
pub const EXPIRY_WARNING_DAYS: i64 = 14;
/// Default request field for a verified client certificate's subject.
pub const DEFAULT_CLIENT_SUBJECT_HEADER: &str = "x-client-subject";
/// Default upstream TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default upstream read timeout.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 30_000;
/// Default upstream write timeout.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;
/// Default idle time before a pooled upstream connection is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT_MS: u64 = 60_000;
/// Default extra attempts on another backend after a connect failure.
pub const DEFAULT_RETRIES: u32 = 2;
/// Default backend weight.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest accepted backend weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Largest accepted number of backends in one pool (the per-request "already tried" set is a
/// fixed-size bitset, so the request path never allocates for it).
pub const MAX_BACKENDS: usize = 256;
/// Largest accepted `retries`.
pub const MAX_RETRIES: u32 = 16;
/// Default retry budget: retries may add this percentage to a pool's request rate.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// Default retries always allowed per second on top of the percentage.
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Default passive-health failure count (nginx's `max_fails`).
pub const DEFAULT_MAX_FAILS: u32 = 3;
/// Default passive-health window and ejection time (nginx's `fail_timeout`).
pub const DEFAULT_FAIL_TIMEOUT_MS: u64 = 30_000;
/// Default idle limit of upgraded (WebSocket) connections: one hour.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// Default active-probe interval.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1_000;
/// Default active-probe timeout.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 500;
/// Default consecutive successes to return.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to leave.
pub const DEFAULT_FALL: u32 = 3;
/// Default probed path.
pub const DEFAULT_HEALTH_PATH: &str = "/health";

/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default Unix socket for handing listeners to a new process on `--upgrade`.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/sluice_upgrade.sock";
/// Default PID file of `--daemon`.
pub const DEFAULT_PID_FILE: &str = "/tmp/sluice.pid";
/// Default `[server] client_header_timeout_ms`: the whole request head must arrive within it.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default `[server] client_body_timeout_ms`: longest wait for each read of a request body.
pub const DEFAULT_CLIENT_BODY_TIMEOUT_MS: u64 = 60_000;
/// Default `[server] keepalive_timeout_ms`: how long an idle client connection is kept open.
pub const DEFAULT_CLIENT_KEEPALIVE_TIMEOUT_MS: u64 = 75_000;
/// Default `[server] max_request_header_bytes` (request line and fields).
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Default `[server] max_connections`: open client connections on the proxy listeners.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default interval of the config-file watch (and its debounce).
pub const DEFAULT_RELOAD_DEBOUNCE_MS: u64 = 500;

/// `[admin]`: the admin API listener (fixed for the life of the process, except the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminSettings {
    /// Where the admin API listens; `None` when disabled.
    pub listen: Option<SocketAddr>,
    /// Bearer token required for mutating calls (and every call off loopback but the probes
    /// and, with `public_metrics`, `/metrics`).
    #[serde(serialize_with = "ser::secret")]
    pub token: Option<String>,
    /// `GET /metrics` needs no token off loopback.
    pub public_metrics: bool,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable `key=value` lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoggingSettings {
    /// Line format (fixed for the life of the process).
    pub format: LogFormat,
    /// Default of each route's `access_log`.
    pub access_log: bool,
    /// Where access-log lines go (opened at start; restart-only).
    pub access_log_path: Destination,
    /// The access-log line format (reloadable).
    pub access_log_format: AccessFormat,
    /// The writer's queue, in lines (restart-only).
    pub access_log_buffer: usize,
    /// Default of each route's `access_log_sample`.
    pub access_log_sample: f64,
}

/// Default `[logging] access_log_buffer`: lines queued for the writer before new ones drop.
pub const DEFAULT_ACCESS_LOG_BUFFER: usize = 16_384;

/// `[reload]`: live reload triggers other than SIGHUP and `POST /reload` (always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReloadSettings {
    /// Reload when the config file changes on disk.
    pub watch: bool,
    /// Poll interval of the watch; a change is applied once the file stayed the same this long.
    #[serde(serialize_with = "ser::ms")]
    pub debounce: Duration,
}

/// `[tracing]`: W3C trace context propagation and the optional OTLP span export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TracingSettings {
    /// Continue the client's trace (or start one) and send `traceparent` to the backend.
    pub propagate: bool,
    /// Fraction of the traces Sluice starts that are marked sampled (a continued trace keeps
    /// its caller's decision); sampled requests are the ones exported.
    pub sample_ratio: f64,
    /// OTLP/HTTP endpoint spans are exported to (`None`: no export). Restart-only.
    #[serde(serialize_with = "ser::redact_url_opt")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Restart-only.
    pub service_name: String,
    /// Time allowed for one export request. Restart-only.
    #[serde(serialize_with = "ser::ms")]
    pub otlp_timeout: Duration,
}

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Settings that need a restart to change.
    pub server: ServerSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// Log format and access log.
    pub logging: LoggingSettings,
    /// Reload triggers.
    pub reload: ReloadSettings,
    /// Trace context and span export.
    pub tracing: TracingSettings,
    /// Pools, in file order (sorted by name, as TOML tables are).
    pub upstreams: Vec<UpstreamSpec>,
    /// `[dns]`: how backend names are resolved.
    pub dns: DnsSettings,
    /// What `--check` (and the log at start and reload) should tell without refusing the
    /// config, e.g. a certificate that expires within 14 days; `file:line:col: key: message`.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Routes in file order.
    pub routes: Vec<RouteSpec>,
    /// `[redis]`, when configured.
    pub redis: Option<RedisSpec>,
    /// `[rate_limit]`, when configured (no limits otherwise).
    pub rate_limit: Option<RateLimitSpec>,
    /// `[cache]` (defaults when absent; only routes with a tier cache).
    pub cache: CacheSpec,
}

/// Process-level settings (listeners, threads): fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<TlsListener>,
    /// Proxy worker threads.
    pub threads: usize,
    /// Graceful stop wait.
    #[serde(serialize_with = "ser::ms")]
    pub grace_period: Duration,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive_pool_size: usize,
    /// Unix socket for the listener hand-over of a graceful upgrade.
    pub upgrade_sock: PathBuf,
    /// After SIGTERM: how long listeners stay open while `/readyz` already answers 503.
    #[serde(serialize_with = "ser::ms")]
    pub drain_delay: Duration,
    /// Where `--daemon` writes the process id.
    pub pid_file: PathBuf,
    /// HTTP/1 header field names keep the case they arrived in; otherwise they are lowercased.
    pub preserve_header_case: bool,
    /// The whole request head must arrive within this (408 otherwise).
    #[serde(serialize_with = "ser::ms")]
    pub client_header_timeout: Duration,
    /// Longest wait for each read of a request body (408 otherwise).
    #[serde(serialize_with = "ser::ms")]
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive client connection waits for its next request.
    #[serde(serialize_with = "ser::ms")]
    pub keepalive_timeout: Duration,
    /// Larger request heads are refused with 431.
    pub max_request_header_bytes: usize,
    /// Open client connections on the proxy listeners; beyond it Sluice stops accepting.
    pub max_connections: usize,
    /// Normalise request paths before routing, limits and forwarding.
    pub normalize_path: bool,
    /// HTTP/2 with prior knowledge (h2c) on the plain listeners (restart-only).
    pub h2c: bool,
}

/// One TLS listener with its resolved certificate and key paths.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsListener {
    /// Address to listen on (restart-only).
    pub listen: SocketAddr,
    /// Its certificates, chosen by server name; the first is the default (reloadable: the
    /// files are read again on every reload).
    pub certs: Vec<CertPair>,
    /// A server name no certificate covers fails the handshake (instead of the default).
    pub reject_unknown_sni: bool,
    /// `min_version = "1.3"`: TLS 1.2 is not offered (restart-only).
    pub tls13_only: bool,
    /// Whether clients are asked for a certificate (reloadable).
    pub client_auth: ClientAuthMode,
    /// The CAs that may sign client certificates (read again on every reload).
    pub client_ca: Option<PathBuf>,
    /// The request field (lower case) that carries a verified client certificate's subject to
    /// the backends; removed from every client request.
    pub client_subject_header: String,
    /// A certificate obtained and renewed from an ACME CA (served after `certs`).
    pub acme: Option<AcmeSpec>,
}

/// `acme = { ... }` of a TLS listener: one certificate for `hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AcmeSpec {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact address given to the CA.
    pub email: Option<String>,
    /// The names of the certificate (the first names its files).
    pub hosts: Vec<String>,
    /// Directory of the account credentials, certificates and keys.
    pub storage: PathBuf,
    /// CA bundle trusted for the directory's HTTPS (`None`: the system's roots).
    pub directory_ca: Option<PathBuf>,
    /// How the CA validates the hosts.
    pub challenge: AcmeChallenge,
}

/// The ACME challenge a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AcmeChallenge {
    /// `http-01`: a request on port 80, answered by the plain listeners.
    #[serde(rename = "http-01")]
    Http01,
    /// `tls-alpn-01` (RFC 8737): a TLS handshake on port 443 with ALPN `acme-tls/1`, answered
    /// by this listener with a certificate made for it.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl TlsListener {
    /// Whether it answers ACME TLS-ALPN-01 validations (its ALPN list, fixed at start, then has
    /// `acme-tls/1`).
    pub fn answers_tls_alpn(&self) -> bool {
        self.acme
            .as_ref()
            .is_some_and(|a| a.challenge == AcmeChallenge::TlsAlpn01)
    }
}

/// `client_auth` of a TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// No certificate is asked for.
    Off,
    /// A certificate is asked for; a client without one still connects (a route may require
    /// one); a certificate that does not verify fails the handshake.
    Optional,
    /// A client without a valid certificate fails the handshake.
    Required,
}

/// A certificate chain and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertPair {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

pub use crate::balancer::Strategy;

/// One upstream pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSpec {
    /// The `[upstreams.NAME]` name.
    pub name: String,
    /// Selection strategy.
    pub strategy: Strategy,
    /// TCP connect timeout.
    #[serde(serialize_with = "ser::ms")]
    pub connect_timeout: Duration,
    /// Read timeout.
    #[serde(serialize_with = "ser::ms")]
    pub read_timeout: Duration,
    /// Write timeout.
    #[serde(serialize_with = "ser::ms")]
    pub write_timeout: Duration,
    /// Idle pooled-connection lifetime.
    #[serde(serialize_with = "ser::ms")]
    pub keepalive_timeout: Duration,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// Which failures are retried.
    pub next_upstream: NextUpstream,
    /// No retry starts later than this after the first attempt (`None`: no limit).
    #[serde(serialize_with = "ser::opt_ms")]
    pub retry_timeout: Option<Duration>,
    /// Retry budget.
    pub retry_budget: RetryBudgetSpec,
    /// Passive health.
    pub passive: PassiveSpec,
    /// Try every backend when none is available, instead of answering 503.
    pub panic_mode: bool,
    /// Ramp-up time for a returning backend (zero: none).
    #[serde(serialize_with = "ser::ms")]
    pub slow_start: Duration,
    /// Idle limit for upgraded connections.
    #[serde(serialize_with = "ser::ms")]
    pub websocket_idle_timeout: Duration,
    /// Active health checks (`None`: backends are only judged passively).
    pub health: Option<HealthSpec>,
    /// HTTP version spoken to the backends.
    pub protocol: UpstreamProtocol,
    /// Backends given by name are looked up again after this (or their records' TTL, if
    /// shorter).
    #[serde(serialize_with = "ser::ms")]
    pub resolve_interval: Duration,
    /// TLS to the backends (`None`: cleartext).
    pub tls: Option<UpstreamTls>,
    /// Members, in file order.
    pub backends: Vec<BackendSpec>,
}

/// `protocol` of a pool: which HTTP version Sluice speaks to its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (over TLS when the pool has `tls`).
    H1,
    /// HTTP/2 over TLS (ALPN `h2` only).
    H2,
    /// HTTP/2 in cleartext with prior knowledge.
    H2c,
    /// Over TLS, whatever the backend chooses by ALPN (HTTP/2 preferred, HTTP/1.1 accepted).
    Alpn,
}

impl UpstreamProtocol {
    /// The accepted names, for error messages.
    pub const NAMES: &'static str = "h1, h2, h2c, alpn";

    /// The value for a `protocol` name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "h1" => UpstreamProtocol::H1,
            "h2" => UpstreamProtocol::H2,
            "h2c" => UpstreamProtocol::H2c,
            "alpn" => UpstreamProtocol::Alpn,
            _ => return None,
        })
    }

    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::Alpn => "alpn",
        }
    }
}

/// `[upstreams.NAME.tls]`: how Sluice connects to a pool's backends over TLS.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamTls {
    /// Server name sent and verified (`None`: each backend's host name, or its IP address).
    pub sni: Option<String>,
    /// CA bundle trusted for the backends' certificates (`None`: the system's roots).
    pub ca: Option<PathBuf>,
    /// Whether the backend's certificate is verified (name and chain).
    pub verify: bool,
    /// Client certificate shown to backends that ask for one.
    pub client_cert: Option<CertPair>,
    /// The files' contents, read and checked when the config was loaded.
    #[serde(skip)]
    pub material: Arc<UpstreamTlsMaterial>,
}

/// The certificates of an [`UpstreamTls`], as DER, read once per config load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTlsMaterial {
    /// The CA bundle (empty: the system's roots).
    pub ca: Vec<Vec<u8>>,
    /// The client certificate chain and key.
    pub client: Option<crate::tlsfiles::ClientPair>,
}

/// Which failures send a request to another backend (nginx's `proxy_next_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct NextUpstream {
    /// Connection refused, reset or closed before a response.
    pub error: bool,
    /// A malformed response head.
    pub invalid_header: bool,
    /// Connect, read or write timeout.
    pub timeout: bool,
    /// Retry on these response statuses.
    pub http_500: bool,
    /// `502 Bad Gateway`.
    pub http_502: bool,
    /// `503 Service Unavailable`.
    pub http_503: bool,
    /// `504 Gateway Timeout`.
    pub http_504: bool,
    /// `429 Too Many Requests`.
    pub http_429: bool,
}

impl NextUpstream {
    /// Every accepted name, for error messages.
    pub const NAMES: &'static str =
        "error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_429";
    /// The default: `["error", "timeout"]`, as nginx.
    pub const DEFAULT: NextUpstream = NextUpstream {
        error: true,
        invalid_header: false,
        timeout: true,
        http_500: false,
        http_502: false,
        http_503: false,
        http_504: false,
        http_429: false,
    };

    /// Turn on one condition by name; `false` for an unknown name.
    pub fn set(&mut self, name: &str) -> bool {
        let flag = match name {
            "error" => &mut self.error,
            "timeout" => &mut self.timeout,
            "invalid_header" => &mut self.invalid_header,
            "http_500" => &mut self.http_500,
            "http_502" => &mut self.http_502,
            "http_503" => &mut self.http_503,
            "http_504" => &mut self.http_504,
            "http_429" => &mut self.http_429,
            _ => return false,
        };
        *flag = true;
        true
    }

    /// Whether a response with `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        match status {
            500 => self.http_500,
            502 => self.http_502,
            503 => self.http_503,
            504 => self.http_504,
            429 => self.http_429,
            _ => false,
        }
    }
}

/// How many retries a pool may add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryBudgetSpec {
    /// Percentage of the request rate.
    pub percent: u32,
    /// Always allowed per second.
    pub min_per_second: u32,
}

/// nginx-style passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PassiveSpec {
    /// Failures within `fail_timeout` that eject a backend (0: never).
    pub max_fails: u32,
    /// Failure window and ejection time.
    #[serde(serialize_with = "ser::ms")]
    pub fail_timeout: Duration,
    /// Whether 5xx responses count as failures.
    pub on_5xx: bool,
}

/// Active probes of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    /// `None`: TCP connect only (unless `grpc_service`); `Some(path)`: HTTP GET of `path`.
    pub http_path: Option<String>,
    /// `Some(service)`: a gRPC `grpc.health.v1.Health/Check` of `service` (`""`: the server),
    /// which must answer `SERVING`.
    pub grpc_service: Option<String>,
    /// Time between probes.
    #[serde(serialize_with = "ser::ms")]
    pub interval: Duration,
    /// Probe timeout.
    #[serde(serialize_with = "ser::ms")]
    pub timeout: Duration,
    /// Accepted statuses, inclusive.
    pub expect_status: (u16, u16),
    /// Consecutive successes to return.
    pub rise: u32,
    /// Consecutive failures to leave.
    pub fall: u32,
    /// Whether backends start in rotation.
    pub initial_healthy: bool,
}

/// One pool member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSpec {
    /// The address as written (`host:port`), used in logs and as the stable identity.
    pub name: String,
    /// An IP address, or a name resolved in the background (every address a member).
    #[serde(serialize_with = "ser::display")]
    pub addr: BackendAddr,
    /// Relative share of traffic, `1..=1000`.
    pub weight: u32,
    /// Only used while no primary is available.
    pub backup: bool,
}

/// Where a backend is: an address, or a name whose A/AAAA records are the members.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendAddr {
    /// `ip:port`.
    Ip(SocketAddr),
    /// `host:port` (the host lower-cased, without a trailing dot).
    Name {
        /// The DNS name.
        host: String,
        /// The port every address gets.
        port: u16,
    },
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Ip(a) => write!(f, "{a}"),
            BackendAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// `[dns]`: how backend names are resolved (restart-only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsSettings {
    /// Name servers asked (empty: the system's, from `/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Bound on one lookup.
    #[serde(serialize_with = "ser::ms")]
    pub timeout: Duration,
}

/// Default bound on one DNS lookup.
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2_000;
/// Default time between two lookups of a backend name.
pub const DEFAULT_RESOLVE_INTERVAL_MS: u64 = 30_000;

/// Which `Host` values a route accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HostMatch {
    /// `*`: any host.
    Any,
    /// `example.com` (lower-cased).
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any name ending with it.
    Suffix(String),
}

/// One route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSpec {
    /// Host pattern.
    #[serde(serialize_with = "host")]
    pub host: HostMatch,
    /// How the path is matched.
    #[serde(flatten)]
    pub path: PathMatch,
    /// Methods matched (empty: any).
    #[serde(serialize_with = "methods")]
    pub methods: Vec<http::Method>,
    /// Request fields that must be present (with a value, or any value).
    pub match_headers: Vec<HeaderMatch>,
    /// `Some(true)`: only requests over TLS; `Some(false)`: only plain HTTP; `None`: both.
    #[serde(serialize_with = "scheme")]
    pub tls: Option<bool>,
    /// Index into [`Config::upstreams`] (`None`: a redirect-only route).
    pub upstream: Option<usize>,
    /// Rate-limit rule of this route.
    pub rate_limit: RouteLimit,
    /// Label in metrics and logs (`name`, or `host` + `path_prefix`).
    pub name: String,
    /// Whether requests on this route are access-logged.
    pub access_log: bool,
    /// Fraction of this route's requests that are access-logged.
    pub access_log_sample: f64,
    /// Response caching on this route.
    pub cache: RouteCache,
    /// Tags given to every entry cached on this route.
    pub cache_tags: Vec<String>,
    /// Header, path, access and body rules.
    pub rules: crate::rules::RouteRules,
}

#[cfg(test)]
impl RouteSpec {
    /// A route for unit tests: `host` and `path` to pool `upstream` (its index, also its
    /// name `#N`), no conditions and no rules.
    pub(crate) fn for_test(host: HostMatch, path: PathMatch, upstream: usize) -> RouteSpec {
        RouteSpec {
            host,
            path,
            methods: Vec::new(),
            match_headers: Vec::new(),
            tls: None,
            upstream: Some(upstream),
            rate_limit: Default::default(),
            name: format!("#{upstream}"),
            access_log: true,
            access_log_sample: 1.0,
            cache: Default::default(),
            cache_tags: Vec::new(),
            rules: Default::default(),
        }
    }
}

/// How a route matches the path (the normalised path, without the query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// `path_prefix`: the path or below it, on `/` boundaries.
    #[serde(rename = "path_prefix")]
    Prefix(String),
    /// `path_exact`: exactly this path.
    #[serde(rename = "path_exact")]
    Exact(String),
    /// `path_regex`: a regular expression that matches somewhere in the path (anchor it with
    /// `^`).
    #[serde(rename = "path_regex")]
    Regex(crate::rules::Pattern),
}

/// One entry of `match_headers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    /// Field name.
    #[serde(serialize_with = "header_name")]
    pub name: http::header::HeaderName,
    /// Required value (exact); `None` for `"*"`: present with any value.
    pub value: Option<String>,
}

fn header_name<S: serde::Serializer>(
    n: &http::header::HeaderName,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

fn scheme<S: serde::Serializer>(t: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(true) => s.serialize_str("https"),
        Some(false) => s.serialize_str("http"),
        None => s.serialize_none(),
    }
}

fn methods<S: serde::Serializer>(m: &[http::Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(http::Method::as_str))
}

/// A route's cache rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RouteCache {
    /// The tier (`None`: caching off).
    pub tier: Option<CacheTier>,
    /// Whether responses with `Set-Cookie` may be stored.
    pub set_cookie: bool,
    /// How the tier lifetime is used (`None`: `[cache] ttl_mode`).
    pub ttl_mode: Option<TtlMode>,
}

/// How a route's tier lifetime relates to what the origin says (`ttl_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TtlMode {
    /// RFC 9111: the origin's freshness rules; without any, a response with `Last-Modified`
    /// gets heuristic freshness (10% of its age, capped by the tier lifetime), one with only
    /// an `ETag` is stored stale (revalidated before each use), and anything else is not
    /// stored.
    Origin,
    /// The tier lifetime for every storable response that gives no freshness of its own
    /// (the seeds' behaviour, for origins that send no caching headers).
    Override,
}

impl TtlMode {
    /// The config names, in order.
    pub const NAMES: [(&'static str, TtlMode); 2] =
        [("origin", TtlMode::Origin), ("override", TtlMode::Override)];
}

/// Cache tiers, by how long an object without origin freshness stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheTier {
    /// Short-lived (default 60 s, 60..=300).
    Hot,
    /// Medium (default 300 s, 300..=600).
    Warm,
    /// Long-lived (default 1800 s, 600..=3600).
    Cold,
}

impl CacheTier {
    /// Every tier.
    pub const ALL: [CacheTier; 3] = [CacheTier::Hot, CacheTier::Warm, CacheTier::Cold];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            CacheTier::Hot => "hot",
            CacheTier::Warm => "warm",
            CacheTier::Cold => "cold",
        }
    }

    /// Default TTL and allowed range, in seconds.
    pub fn ttl_bounds(self) -> (u64, u64, u64) {
        match self {
            CacheTier::Hot => (60, 60, 300),
            CacheTier::Warm => (300, 300, 600),
            CacheTier::Cold => (1800, 600, 3600),
        }
    }
}

/// Default cache key namespace in Redis.
pub const DEFAULT_CACHE_NAMESPACE: &str = "sluice:cache";
/// Default largest cached object.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 8 * 1024 * 1024;
/// Default body chunk in Redis.
pub const DEFAULT_CHUNK_BYTES: u64 = 256 * 1024;
/// Default bound of the embedded cache.
pub const DEFAULT_CACHE_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on one Redis cache call.
pub const DEFAULT_CACHE_COMMAND_TIMEOUT_MS: u64 = 20;
/// Default wait of concurrent misses for the one fetching.
pub const DEFAULT_CACHE_LOCK_TIMEOUT_MS: u64 = 3_000;

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheSpec {
    /// Prefix of every key in Redis.
    pub namespace: String,
    /// Larger responses stream through uncached.
    pub max_object_bytes: u64,
    /// Body chunk size in Redis.
    pub chunk_bytes: u64,
    /// Bound of the embedded store.
    pub memory_bytes: u64,
    /// Bound on each Redis call.
    #[serde(serialize_with = "ser::ms")]
    pub command_timeout: Duration,
    /// Wait of concurrent misses for the one fetching.
    #[serde(serialize_with = "ser::ms")]
    pub lock_timeout: Duration,
    /// TTL in seconds for hot, warm, cold.
    pub ttl_seconds: [u64; 3],
    /// Origin response headers listing an entry's tags (lower-case).
    pub tag_headers: Vec<String>,
    /// URLs fetched through Sluice at start and after each reload (absolute `http://`).
    pub warm_urls: Vec<String>,
    /// How many warm-up fetches run at once.
    pub warm_concurrency: usize,
    /// Query parameter names (globs) left out of the cache key.
    pub ignore_query_params: Vec<String>,
    /// Whether query parameters are sorted in the cache key.
    pub sort_query_params: bool,
    /// Default of routes' `cache_ttl_mode`.
    pub ttl_mode: TtlMode,
    /// A Sluice-specific targeted cache field (RFC 9213), lower-case, read before
    /// `CDN-Cache-Control`.
    pub targeted_cache_control: Option<String>,
    /// How long stale entries with a validator are kept for revalidation.
    #[serde(serialize_with = "ser::ms")]
    pub stale_retention: Duration,
}

/// Default headers carrying cache tags.
pub const DEFAULT_TAG_HEADERS: &[&str] = &["cache-tag", "surrogate-key"];

/// Default bound on one Redis call for rate limiting.
pub const DEFAULT_REDIS_COMMAND_TIMEOUT_MS: u64 = 50;
/// Default consecutive Redis failures that open the circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default time an open breaker skips Redis before probing it.
pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 5_000;
/// Default requests counted per Redis call for large limits (see `RateLimitSpec::lease_batch`).
pub const DEFAULT_LEASE_BATCH: u64 = 100;
/// Default header carrying API keys.
pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
/// Default prefix of rate-limit keys in Redis.
pub const DEFAULT_RATE_LIMIT_PREFIX: &str = "sluice:rl";
/// Default JWT claim naming the tier.
pub const DEFAULT_TIER_CLAIM: &str = "tier";
/// Default paths never limited.
pub const DEFAULT_EXEMPT_PATHS: &[&str] = &["/health", "/metrics", "/docs"];
/// Tier of clients identified by IP.
pub const TIER_ANONYMOUS: &str = "anonymous";
/// Default tier of clients identified by a JWT.
pub const TIER_AUTHENTICATED: &str = "authenticated";
/// Default tier of clients identified by an API key.
pub const TIER_PREMIUM: &str = "premium";
/// Default window of the built-in tiers: one minute.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum RedisTarget {
    /// One node (`redis://…`).
    Single(String),
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

/// `[redis]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedisSpec {
    /// Node or cluster.
    #[serde(serialize_with = "redis_target")]
    pub target: RedisTarget,
    /// Bound on each call.
    #[serde(serialize_with = "ser::ms")]
    pub command_timeout: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// Open-breaker cool-down.
    #[serde(serialize_with = "ser::ms")]
    pub breaker_cooldown: Duration,
}

/// Rate-limit algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Exact: a sorted set of request times.
    SlidingWindowLog,
    /// One counter per window.
    FixedWindow,
    /// Two-window weighted counter (approximate, cheap).
    SlidingWindow,
    /// Generic cell rate: a token bucket with `burst`.
    Gcra,
}

impl Algorithm {
    /// Every accepted name.
    pub const NAMES: &'static str = "sliding_window_log | fixed_window | sliding_window | gcra";

    /// Parse a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "sliding_window_log" => Algorithm::SlidingWindowLog,
            "fixed_window" => Algorithm::FixedWindow,
            "sliding_window" => Algorithm::SlidingWindow,
            "gcra" => Algorithm::Gcra,
            _ => return None,
        })
    }

    /// Short stable tag used in Redis keys.
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::SlidingWindowLog => "swl",
            Algorithm::FixedWindow => "fw",
            Algorithm::SlidingWindow => "sw",
            Algorithm::Gcra => "gcra",
        }
    }
}

/// One limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LimitPolicy {
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// Requests per window.
    pub limit: u64,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// GCRA: requests allowed at once (defaults to `limit`).
    pub burst: u64,
}

/// What a route does about rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum RouteLimit {
    /// The client's tier limit.
    #[default]
    Tier,
    /// No limit on this route.
    Off,
    /// This limit instead of the tier's (counted separately per route).
    Policy(LimitPolicy),
}

/// Whether limits reject or only report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// Over-limit requests get 429.
    Enforce,
    /// Counted and reported, never rejected.
    Shadow,
}

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Use the embedded limiter with limits divided by `instances`.
    Local,
    /// Allow the request.
    Open,
    /// Reject the request (503).
    Closed,
}

/// How a JWT is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum JwtKey {
    /// HS256 shared secret.
    Hs256(Vec<u8>),
    /// RS256 public key, PEM.
    Rs256(Vec<u8>),
    /// ES256 public key, PEM.
    Es256(Vec<u8>),
}

/// `[rate_limit.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwtSpec {
    /// Verification key.
    #[serde(serialize_with = "jwt_key")]
    pub key: JwtKey,
    /// Claim naming the tier.
    pub tier_claim: String,
    /// Allowed clock skew in seconds.
    pub leeway_seconds: u64,
}

/// An API key's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyOwner {
    /// Client id.
    pub client: String,
    /// Tier name.
    pub tier: String,
}

/// `[rate_limit]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitSpec {
    /// Enforce or shadow.
    pub mode: LimitMode,
    /// Redis failure policy.
    pub on_redis_error: OnRedisError,
    /// Instances sharing the limits.
    pub instances: u32,
    /// Requests counted per Redis call for limits of at least 100 × this (0: never).
    pub lease_batch: u64,
    /// Header carrying API keys, parsed once at load (looked up on every limited request).
    #[serde(serialize_with = "ser::display")]
    pub api_key_header: http::HeaderName,
    /// Redis hash of API keys, when keys live in Redis.
    pub api_keys_redis_hash: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    #[serde(serialize_with = "ser::display_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Path prefixes never limited.
    pub exempt_paths: Vec<String>,
    /// Redis key prefix.
    pub key_prefix: String,
    /// Bearer-token verification.
    pub jwt: Option<JwtSpec>,
    /// Limits per tier name.
    pub tiers: std::collections::BTreeMap<String, LimitPolicy>,
    /// API keys from the config.
    #[serde(serialize_with = "api_keys")]
    pub api_keys: std::collections::HashMap<String, ApiKeyOwner>,
}

// How model types are shown by `GET /config` (secrets redacted; see `ser.rs` for the generic
// helpers).

/// API keys: their owners only.
fn api_keys<S: Serializer>(
    v: &std::collections::HashMap<String, ApiKeyOwner>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut owners: Vec<&ApiKeyOwner> = v.values().collect();
    owners.sort_by(|a, b| (&a.client, &a.tier).cmp(&(&b.client, &b.tier)));
    let mut seq = s.serialize_seq(Some(owners.len()))?;
    for o in owners {
        seq.serialize_element(
            &serde_json::json!({"key": ser::REDACTED, "client": o.client, "tier": o.tier}),
        )?;
    }
    seq.end()
}

/// The Redis target, passwords redacted.
fn redis_target<S: Serializer>(t: &RedisTarget, s: S) -> Result<S::Ok, S::Error> {
    match t {
        RedisTarget::Single(u) => serde_json::json!({ "url": ser::redact_url(u) }).serialize(s),
        RedisTarget::Cluster(nodes) => {
            let nodes: Vec<String> = nodes.iter().map(|u| ser::redact_url(u)).collect();
            serde_json::json!({ "cluster": nodes }).serialize(s)
        }
    }
}

/// A host pattern as written.
fn host<S: Serializer>(h: &HostMatch, s: S) -> Result<S::Ok, S::Error> {
    match h {
        HostMatch::Any => s.serialize_str("*"),
        HostMatch::Exact(e) => s.serialize_str(e),
        HostMatch::Suffix(suffix) => s.serialize_str(&format!("*{suffix}")),
    }
}

/// A JWT key: its algorithm only.
fn jwt_key<S: Serializer>(k: &JwtKey, s: S) -> Result<S::Ok, S::Error> {
    let alg = match k {
        JwtKey::Hs256(_) => "HS256",
        JwtKey::Rs256(_) => "RS256",
        JwtKey::Es256(_) => "ES256",
    };
    serde_json::json!({ "algorithm": alg, "key": ser::REDACTED }).serialize(s)
}
