//! The validated runtime configuration. Built only by [`super::load`]; every value here has been
//! checked, so the rest of Sluice never re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default plain listener when `[server].listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default proxy worker threads.
pub const DEFAULT_THREADS: usize = 2;
/// Default seconds a graceful stop (SIGTERM) waits for in-flight requests.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 30;
/// Default number of idle upstream connections kept for reuse (Pingora's own default).
pub const DEFAULT_KEEPALIVE_POOL_SIZE: usize = 128;
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

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Settings that need a restart to change.
    pub server: ServerSettings,
    /// Pools, in file order (sorted by name, as TOML tables are).
    pub upstreams: Vec<UpstreamSpec>,
    /// Routes in file order.
    pub routes: Vec<RouteSpec>,
}

/// Process-level settings (listeners, threads): fixed for the life of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<TlsListener>,
    /// Proxy worker threads.
    pub threads: usize,
    /// Graceful stop wait.
    pub grace_period: Duration,
    /// Idle upstream connections kept for reuse.
    pub upstream_keepalive_pool_size: usize,
}

/// One TLS listener with its resolved certificate and key paths.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// How a pool picks a backend for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Exact rotation.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's algorithm).
    Weighted,
    /// Fewest in-flight requests relative to weight.
    LeastConn,
    /// Consistent hash of the client IP (sticky).
    IpHash,
    /// Weighted random.
    Random,
    /// Power of two random choices on in-flight count, peak-EWMA latency tie-break.
    P2c,
}

impl Strategy {
    /// Every accepted name, for error messages.
    pub const NAMES: &'static str = "round_robin | weighted | least_conn | ip_hash | random | p2c";

    /// Parse a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "round_robin" => Strategy::RoundRobin,
            "weighted" => Strategy::Weighted,
            "least_conn" => Strategy::LeastConn,
            "ip_hash" => Strategy::IpHash,
            "random" => Strategy::Random,
            "p2c" => Strategy::P2c,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Weighted => "weighted",
            Strategy::LeastConn => "least_conn",
            Strategy::IpHash => "ip_hash",
            Strategy::Random => "random",
            Strategy::P2c => "p2c",
        }
    }
}

/// One upstream pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// The `[upstreams.NAME]` name.
    pub name: String,
    /// Selection strategy.
    pub strategy: Strategy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout.
    pub read_timeout: Duration,
    /// Write timeout.
    pub write_timeout: Duration,
    /// Idle pooled-connection lifetime.
    pub keepalive_timeout: Duration,
    /// Extra attempts after a connect failure.
    pub retries: u32,
    /// Members, in file order.
    pub backends: Vec<BackendSpec>,
}

/// One pool member.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// The address as written (`host:port`), used in logs and as the stable identity.
    pub name: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// Relative share of traffic, `1..=1000`.
    pub weight: u32,
}

/// Which `Host` values a route accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`: any host.
    Any,
    /// `example.com` (lower-cased).
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any name ending with it.
    Suffix(String),
}

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// Host pattern.
    pub host: HostMatch,
    /// Path prefix, starting with `/`.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}
