//! `[upstreams.NAME]`: pools, their backends, failover and passive health, and active health checks. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;
use std::sync::Arc;

use super::*;

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
    /// HTTP version spoken to the backends: `h1`, `h2`, `h2c` or `alpn`.
    pub protocol: Option<String>,
    /// TLS to the backends.
    pub tls: Option<FileUpstreamTls>,
    /// Time between two lookups of a backend given by name.
    pub resolve_interval_ms: Option<i64>,
    /// The pool members.
    pub backends: Vec<FileBackend>,
}

/// `[dns]`: the resolver of backend names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    /// `ip:port` (or `ip`, port 53) of the name servers to ask instead of the system's.
    pub nameservers: Option<Vec<String>>,
    /// Bound on one lookup.
    pub timeout_ms: Option<i64>,
}

/// `[upstreams.NAME.tls]`: TLS to the backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// Server name sent and verified (default: the backend's host name, or its IP address).
    pub sni: Option<String>,
    /// PEM bundle of the CAs trusted for the backends' certificates (default: the system's).
    pub ca: Option<String>,
    /// Verify the backend's certificate (default true).
    pub verify: Option<bool>,
    /// PEM client certificate chain shown to backends that ask for one.
    pub client_cert: Option<String>,
    /// Its PEM private key.
    pub client_key: Option<String>,
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
    /// `kind = "grpc"`: the service name asked about (default `""`, the whole server).
    pub grpc_service: Option<String>,
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

/// The retry keys of an upstream, validated together.
struct RetryKeys {
    retries: Option<i64>,
    next_upstream: Option<Vec<String>>,
    retry_timeout_ms: Option<i64>,
    budget_percent: Option<i64>,
    budget_min_per_second: Option<i64>,
}

/// An upstream's retry settings, validated.
struct RetryPolicy {
    retries: u32,
    next_upstream: NextUpstream,
    retry_timeout: Option<Duration>,
    budget: RetryBudgetSpec,
}

/// An upstream's `*_timeout_ms` keys and their defaults, in the order [`Validator::upstream`]
/// passes their values.
const TIMEOUT_KEYS: [(&str, u64); 5] = [
    ("connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS),
    ("read_timeout_ms", DEFAULT_READ_TIMEOUT_MS),
    ("write_timeout_ms", DEFAULT_WRITE_TIMEOUT_MS),
    ("keepalive_timeout_ms", DEFAULT_KEEPALIVE_TIMEOUT_MS),
    (
        "websocket_idle_timeout_ms",
        DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS,
    ),
];

impl Validator {
    /// `[upstreams.NAME]` at `path`: every key checked (all problems reported), then the spec.
    pub(super) fn upstream(
        &mut self,
        path: &str,
        name: String,
        u: FileUpstream,
        base_dir: &Path,
    ) -> Option<UpstreamSpec> {
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
            protocol,
            tls,
            resolve_interval_ms,
            backends,
        } = u;
        let before = self.problems.len();
        let strategy = self.strategy(path, strategy.as_deref());
        let values = [
            connect_timeout_ms,
            read_timeout_ms,
            write_timeout_ms,
            keepalive_timeout_ms,
            websocket_idle_timeout_ms,
        ];
        let [connect, read, write, keepalive, ws_idle] = std::array::from_fn(|i| {
            let (key, default) = TIMEOUT_KEYS[i];
            self.ms(&format!("{path}.{key}"), values[i], default)
        });
        let retry = self.retry_policy(
            path,
            RetryKeys {
                retries,
                next_upstream,
                retry_timeout_ms,
                budget_percent: retry_budget_percent,
                budget_min_per_second: retry_budget_min_per_second,
            },
        );
        let passive = self.passive(path, max_fails, fail_timeout_ms, fail_on_5xx);
        let slow_start = self
            .int_in(
                &format!("{path}.slow_start_ms"),
                slow_start_ms,
                0,
                0,
                86_400_000,
            )
            .map(|v| Duration::from_millis(v as u64));
        let health = health.map(|h| self.health(&format!("{path}.health"), h));
        let tls = tls.map(|t| self.upstream_tls(&format!("{path}.tls"), t, base_dir));
        let protocol = self.protocol(path, protocol.as_deref(), tls.is_some());
        if health
            .as_ref()
            .is_some_and(|h| h.as_ref().is_some_and(|h| h.grpc_service.is_some()))
            && protocol == Some(UpstreamProtocol::H1)
        {
            self.problem(
                format!("{path}.health.kind"),
                "gRPC runs over HTTP/2: set the pool's protocol to \"h2c\", \"h2\" or \"alpn\"",
            );
        }
        let out = self.backends(path, backends);
        let resolve_interval = self
            .int_in(
                &format!("{path}.resolve_interval_ms"),
                resolve_interval_ms,
                DEFAULT_RESOLVE_INTERVAL_MS as i64,
                1000,
                86_400_000,
            )
            .map(|v| Duration::from_millis(v as u64));
        if self.problems.len() > before {
            return None;
        }
        let retry = retry?;
        Some(UpstreamSpec {
            name,
            strategy: strategy?,
            connect_timeout: connect?,
            read_timeout: read?,
            write_timeout: write?,
            keepalive_timeout: keepalive?,
            retries: retry.retries,
            next_upstream: retry.next_upstream,
            retry_timeout: retry.retry_timeout,
            retry_budget: retry.budget,
            passive: passive?,
            panic_mode: panic_mode.unwrap_or(false),
            slow_start: slow_start?,
            websocket_idle_timeout: ws_idle?,
            health: health.flatten(),
            protocol: protocol?,
            resolve_interval: resolve_interval?,
            tls: match tls {
                Some(t) => Some(t?),
                None => None,
            },
            backends: out,
        })
    }

    /// `[dns]`: name servers (`ip:port`, or `ip` for port 53) and the lookup timeout.
    pub(super) fn dns(&mut self, d: Option<FileDns>) -> Option<DnsSettings> {
        let FileDns {
            nameservers,
            timeout_ms,
        } = d.unwrap_or_default();
        let mut servers = Vec::new();
        for (i, n) in nameservers.unwrap_or_default().iter().enumerate() {
            let parsed = n.parse::<SocketAddr>().ok().or_else(|| {
                n.parse::<std::net::IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Some(a) => servers.push(a),
                None => self.problem(
                    format!("dns.nameservers[{i}]"),
                    format!("`{n}` is not an IP address or ip:port, e.g. \"10.0.0.2:53\""),
                ),
            }
        }
        let timeout = self.ms("dns.timeout_ms", timeout_ms, DEFAULT_DNS_TIMEOUT_MS);
        Some(DnsSettings {
            nameservers: servers,
            timeout: timeout?,
        })
    }

    /// `protocol`: which HTTP the backends speak, checked against whether the pool uses TLS.
    fn protocol(&mut self, path: &str, p: Option<&str>, tls: bool) -> Option<UpstreamProtocol> {
        let key = format!("{path}.protocol");
        let parsed = match p {
            None => return Some(UpstreamProtocol::H1),
            Some(s) => UpstreamProtocol::parse(s),
        };
        let Some(parsed) = parsed else {
            self.problem(
                key,
                format!(
                    "`{}`: expected one of: {}",
                    p.unwrap_or_default(),
                    UpstreamProtocol::NAMES
                ),
            );
            return None;
        };
        match (parsed, tls) {
            (UpstreamProtocol::H2 | UpstreamProtocol::Alpn, false) => {
                self.problem(
                    key,
                    format!(
                        "`{}` is negotiated over TLS: add [{path}.tls], or use `h2c` for HTTP/2 in cleartext",
                        parsed.name()
                    ),
                );
                None
            }
            (UpstreamProtocol::H2c, true) => {
                self.problem(
                    key,
                    "`h2c` is HTTP/2 in cleartext: use `h2` (or `alpn`) with [tls], or remove [tls]",
                );
                None
            }
            _ => Some(parsed),
        }
    }

    /// `[upstreams.NAME.tls]` at `path`: the files are read and checked here, as the connector
    /// will use them.
    fn upstream_tls(
        &mut self,
        path: &str,
        t: FileUpstreamTls,
        base_dir: &Path,
    ) -> Option<UpstreamTls> {
        let FileUpstreamTls {
            sni,
            ca,
            verify,
            client_cert,
            client_key,
        } = t;
        let before = self.problems.len();
        if let Some(s) = &sni {
            if s.is_empty() || pingora::tls::ServerName::try_from(s.as_str()).is_err() {
                self.problem(
                    format!("{path}.sni"),
                    format!("`{s}` is not a DNS name or IP address"),
                );
            }
        }
        let mut ca_der = Vec::new();
        let ca = ca.and_then(|c| {
            let key = format!("{path}.ca");
            let file = self.existing_file(&key, &c, base_dir)?;
            match crate::tlsfiles::load_ca(&file) {
                Ok(der) => {
                    ca_der = der;
                    Some(file)
                }
                Err(why) => {
                    self.problem(key, why);
                    None
                }
            }
        });
        let client = match (client_cert, client_key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                let cert = self.existing_file(&format!("{path}.client_cert"), &c, base_dir);
                let key = self.existing_file(&format!("{path}.client_key"), &k, base_dir);
                match (cert, key) {
                    (Some(cert), Some(key)) => {
                        match crate::tlsfiles::load_client_pair(&cert, &key) {
                            Ok(pair) => {
                                self.expiry_warning(
                                    &format!("{path}.client_cert"),
                                    &cert,
                                    pair.not_after,
                                );
                                Some((CertPair { cert, key }, pair))
                            }
                            Err(why) => {
                                self.problem(format!("{path}.client_cert"), why);
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            (c, _) => {
                let missing = if c.is_none() {
                    "client_cert"
                } else {
                    "client_key"
                };
                self.problem(
                    format!("{path}.{missing}"),
                    "missing: give client_cert and client_key together",
                );
                None
            }
        };
        if self.problems.len() > before {
            return None;
        }
        let (client_cert, client_pair) = match client {
            Some((paths, pair)) => (Some(paths), Some(pair)),
            None => (None, None),
        };
        Some(UpstreamTls {
            sni,
            ca,
            verify: verify.unwrap_or(true),
            client_cert,
            material: Arc::new(UpstreamTlsMaterial {
                ca: ca_der,
                client: client_pair,
            }),
        })
    }

    /// `retries`, `next_upstream`, `retry_timeout_ms` and the retry budget of the upstream at
    /// `path`.
    fn retry_policy(&mut self, path: &str, k: RetryKeys) -> Option<RetryPolicy> {
        let retries = self.int_in(
            &format!("{path}.retries"),
            k.retries,
            DEFAULT_RETRIES as i64,
            0,
            MAX_RETRIES as i64,
        );
        let next_upstream = self.next_upstream(path, k.next_upstream);
        let retry_timeout = self
            .int_in(
                &format!("{path}.retry_timeout_ms"),
                k.retry_timeout_ms,
                0,
                0,
                86_400_000,
            )
            .map(|v| (v > 0).then(|| Duration::from_millis(v as u64)));
        let percent = self.int_in(
            &format!("{path}.retry_budget_percent"),
            k.budget_percent,
            DEFAULT_RETRY_BUDGET_PERCENT as i64,
            0,
            1000,
        );
        let min_per_second = self.int_in(
            &format!("{path}.retry_budget_min_per_second"),
            k.budget_min_per_second,
            DEFAULT_RETRY_BUDGET_MIN_PER_SECOND as i64,
            0,
            1_000_000,
        );
        Some(RetryPolicy {
            retries: retries? as u32,
            next_upstream,
            retry_timeout: retry_timeout?,
            budget: RetryBudgetSpec {
                percent: percent? as u32,
                min_per_second: min_per_second? as u32,
            },
        })
    }

    /// Passive health of the upstream at `path`: `max_fails`, `fail_timeout_ms`,
    /// `fail_on_5xx`.
    fn passive(
        &mut self,
        path: &str,
        max_fails: Option<i64>,
        fail_timeout_ms: Option<i64>,
        fail_on_5xx: Option<bool>,
    ) -> Option<PassiveSpec> {
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
        Some(PassiveSpec {
            max_fails: max_fails? as u32,
            fail_timeout: fail_timeout?,
            on_5xx: fail_on_5xx.unwrap_or(false),
        })
    }

    /// `strategy`: one of [`Strategy::NAMES`] (default round-robin).
    fn strategy(&mut self, path: &str, s: Option<&str>) -> Option<Strategy> {
        match s {
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
        }
    }

    /// `next_upstream`: the failure classes retried on another backend.
    fn next_upstream(&mut self, path: &str, names: Option<Vec<String>>) -> NextUpstream {
        let Some(names) = names else {
            return NextUpstream::DEFAULT;
        };
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

    /// `backends`: each resolved once, no duplicates, at least one primary.
    fn backends(&mut self, path: &str, backends: Vec<FileBackend>) -> Vec<BackendSpec> {
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
        let mut seen: BTreeMap<BackendAddr, usize> = BTreeMap::new();
        for (i, b) in backends.into_iter().enumerate() {
            let bpath = format!("{path}.backends[{i}]");
            let weight = self.int_in(
                &format!("{bpath}.weight"),
                b.weight,
                DEFAULT_WEIGHT as i64,
                1,
                MAX_WEIGHT as i64,
            );
            let addr = parse_backend(&b.addr).map_err(|why| {
                self.problem(
                    format!("{bpath}.addr"),
                    format!(
                        "`{}` {why}: expected ip:port or host:port, e.g. 127.0.0.1:9001",
                        b.addr
                    ),
                )
            });
            if let Ok(addr) = &addr {
                if let Some(first) = seen.insert(addr.clone(), i) {
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
        out
    }

    pub(super) fn health(&mut self, path: &str, h: FileHealth) -> Option<HealthSpec> {
        let FileHealth {
            kind,
            path: probe_path,
            interval_ms,
            timeout_ms,
            expect_status,
            rise,
            fall,
            initial,
            grpc_service,
        } = h;
        let kind = kind.as_deref().unwrap_or("http");
        let grpc = kind == "grpc";
        if grpc_service.is_some() && !grpc {
            self.problem(format!("{path}.grpc_service"), "only for kind = \"grpc\"");
        }
        let http = match kind {
            "http" => true,
            "tcp" | "grpc" => false,
            other => {
                self.problem(
                    format!("{path}.kind"),
                    format!("unknown probe kind `{other}`, expected `http`, `tcp` or `grpc`"),
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
            grpc_service: grpc.then(|| grpc_service.unwrap_or_default()),
            interval: interval?,
            timeout: timeout?,
            expect_status: expect?,
            rise: rise? as u32,
            fall: fall? as u32,
            initial_healthy: initial_healthy?,
        })
    }
}

/// `ip:port`, or `host:port` with a syntactically valid DNS name (looked up by `dns.rs`, never
/// here: loading a config sends no query).
pub(super) fn parse_backend(addr: &str) -> Result<BackendAddr, &'static str> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(BackendAddr::Ip(a));
    }
    let (host, port) = addr.rsplit_once(':').ok_or("has no port")?;
    let port: u16 = port.parse().map_err(|_| "has no valid port")?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(valid_label) {
        return Err("is not a valid address or host name");
    }
    Ok(BackendAddr::Name { host, port })
}

/// `"200"` or `"200-399"` -> inclusive range of valid statuses.
pub(super) fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let lo: u16 = lo.trim().parse().ok()?;
    let hi: u16 = hi.trim().parse().ok()?;
    ((100..=999).contains(&lo) && (lo..=999).contains(&hi)).then_some((lo, hi))
}
