//! The immutable runtime snapshot a request runs against: route table and built pools. Held in an
//! `ArcSwap` by [`crate::edge::Edge`]; a reload builds a new one and swaps it, so requests in
//! flight finish on the snapshot they started with.

use pingora::upstreams::peer::HttpPeer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::balancer::{Balancer, PassivePolicy, PickPolicy, RetryBudget, Slot, StateRegistry};
use crate::config::{
    Config, HealthSpec, NextUpstream, RateLimitSpec, RouteLimit, UpstreamProtocol, UpstreamSpec,
};
use crate::metrics::{Kind, Live, LiveFamily, Metrics, PoolMetrics, RouteMetrics, TierMetrics};
use crate::ratelimit::JwtVerifier;
use crate::router::Router;

/// Pingora's own per-read timeout of downstream sessions; setting it again is skipped.
const PINGORA_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One pool ready to serve: its balancer and a prepared peer per member.
#[derive(Debug)]
pub struct Pool {
    /// The `[upstreams.NAME]` name.
    pub name: String,
    /// Member selection.
    pub balancer: Balancer,
    /// A peer template per member, same order as the balancer's slots; cloned per attempt.
    pub peers: Vec<HttpPeer>,
    /// The members as configured (`host:port`), same order as the slots; for logs.
    pub names: Vec<String>,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// Which failures are retried.
    pub next_upstream: NextUpstream,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Option<Duration>,
    /// Shared by every request on this pool (rebuilt on reload).
    pub retry_budget: RetryBudget,
    /// Passive health policy.
    pub passive: PassivePolicy,
    /// Whether 5xx responses count as passive failures.
    pub fail_on_5xx: bool,
    /// Backups, slow start, panic mode.
    pub pick: PickPolicy,
    /// Idle limit for upgraded connections.
    pub websocket_idle_timeout: Duration,
    /// Active probes, read by the health service.
    pub health: Option<HealthSpec>,
    /// Upstream latency series.
    pub metrics: PoolMetrics,
}

impl Pool {
    /// Build the pool for `spec`, reusing live backend state from `registry`; a backend given
    /// by name has a member per address in `names` (none while it has none).
    pub fn new(
        spec: &UpstreamSpec,
        registry: &StateRegistry,
        metrics: &Metrics,
        names: &crate::dns::Names,
    ) -> Self {
        let members = members(spec, names);
        let slots = members
            .iter()
            .map(|m| Slot {
                key: m.name.clone(),
                weight: m.spec.weight,
                state: registry.get(
                    &spec.name,
                    m.addr,
                    spec.health.as_ref().is_none_or(|h| h.initial_healthy),
                ),
                backup: m.spec.backup,
            })
            .collect();
        let tls = PeerTls::new(spec);
        let peers = members
            .iter()
            .map(|m| {
                let mut p = HttpPeer::new(m.addr, spec.tls.is_some(), String::new());
                p.options.connection_timeout = Some(spec.connect_timeout);
                p.options.read_timeout = Some(spec.read_timeout);
                p.options.write_timeout = Some(spec.write_timeout);
                p.options.idle_timeout = Some(spec.keepalive_timeout);
                tls.apply(spec, m, &mut p);
                // Every field of the reuse hash is set: each request's clone answers it
                // without hashing (vendored pingora-core README section 27).
                p.freeze_reuse_hash();
                p
            })
            .collect();
        Pool {
            name: spec.name.clone(),
            balancer: Balancer::new(spec.strategy, slots),
            peers,
            names: members.into_iter().map(|m| m.name).collect(),
            retries: spec.retries,
            next_upstream: spec.next_upstream,
            retry_timeout: spec.retry_timeout,
            retry_budget: RetryBudget::new(
                spec.retry_budget.percent,
                spec.retry_budget.min_per_second,
                crate::util::clock::now_ms(),
            ),
            passive: PassivePolicy {
                max_fails: spec.passive.max_fails,
                fail_timeout: spec.passive.fail_timeout,
            },
            fail_on_5xx: spec.passive.on_5xx,
            pick: PickPolicy {
                slow_start_ns: spec.slow_start.as_nanos() as u64,
                panic_mode: spec.panic_mode,
            },
            websocket_idle_timeout: spec.websocket_idle_timeout,
            health: spec.health.clone(),
            metrics: metrics.pool(&spec.name),
        }
    }
}

/// One member of a pool: a backend, or one address of a backend given by name.
struct Member<'a> {
    spec: &'a crate::config::BackendSpec,
    addr: std::net::SocketAddr,
    /// `ip:port` or `host:port` as written; `host:port/ip` for an address of a name.
    name: String,
}

/// The members of `spec`'s pool with the addresses `names` gives its backend names.
fn members<'a>(spec: &'a UpstreamSpec, names: &crate::dns::Names) -> Vec<Member<'a>> {
    let mut out = Vec::with_capacity(spec.backends.len());
    for b in &spec.backends {
        match &b.addr {
            crate::config::BackendAddr::Ip(a) => out.push(Member {
                spec: b,
                addr: *a,
                name: b.name.clone(),
            }),
            crate::config::BackendAddr::Name { host, port } => {
                for ip in names.get(host).map_or(&[][..], Vec::as_slice) {
                    out.push(Member {
                        spec: b,
                        addr: std::net::SocketAddr::new(*ip, *port),
                        name: format!("{}/{ip}", b.name),
                    });
                }
            }
        }
    }
    out
}

/// A pool's TLS and protocol settings in the form Pingora's connector takes, built once per
/// pool and shared by its peers.
struct PeerTls {
    ca: Option<Arc<pingora::protocols::tls::CaType>>,
    client: Option<Arc<pingora::utils::tls::CertKey>>,
    /// Keeps pooled connections of pools with different TLS settings apart: Pingora's reuse
    /// key has the address, SNI, client certificate and verify flags, but not the CA.
    group_key: u64,
}

impl PeerTls {
    fn new(spec: &UpstreamSpec) -> Self {
        use std::hash::{Hash, Hasher};
        let Some(tls) = &spec.tls else {
            return PeerTls {
                ca: None,
                client: None,
                group_key: 0,
            };
        };
        let m = &tls.material;
        let ca = (!m.ca.is_empty()).then(|| {
            let list: Vec<_> =
                m.ca.iter()
                    .map(|der| {
                        pingora::utils::tls::WrappedX509::new(
                            der.clone(),
                            pingora::utils::tls::parse_x509,
                        )
                    })
                    .collect();
            Arc::from(list.into_boxed_slice())
        });
        let client = m.client.as_ref().map(|c| {
            Arc::new(pingora::utils::tls::CertKey::new(
                c.certs.clone(),
                c.key.clone(),
            ))
        });
        let mut h = std::collections::hash_map::DefaultHasher::new();
        m.ca.hash(&mut h);
        spec.protocol.name().hash(&mut h);
        PeerTls {
            ca,
            client,
            group_key: h.finish() | 1,
        }
    }

    /// Set `p`'s TLS (SNI, CA, client certificate, verification) and ALPN for member `m`.
    fn apply(&self, spec: &UpstreamSpec, m: &Member<'_>, p: &mut HttpPeer) {
        use pingora::protocols::ALPN;
        p.options.alpn = match spec.protocol {
            UpstreamProtocol::H1 => ALPN::H1,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => ALPN::H2,
            UpstreamProtocol::Alpn => ALPN::H2H1,
        };
        let Some(tls) = &spec.tls else { return };
        // Never empty: Pingora skips every check of a peer without SNI. An IP address is
        // verified against the certificate's IP addresses (and not sent as SNI).
        p.sni = match &tls.sni {
            Some(s) => s.clone(),
            None => match &m.spec.addr {
                crate::config::BackendAddr::Name { host, .. } => host.clone(),
                crate::config::BackendAddr::Ip(a) => a.ip().to_string(),
            },
        };
        p.options.verify_cert = tls.verify;
        p.options.verify_hostname = tls.verify;
        p.options.ca = self.ca.clone();
        p.client_cert_key = self.client.clone();
        p.group_key = self.group_key;
    }
}

/// The listeners with `client_auth` on and their subject fields (names validated at load).
fn client_subject(config: &Config) -> Vec<(std::net::SocketAddr, http::HeaderName)> {
    config
        .server
        .tls
        .iter()
        .filter(|t| t.client_auth != crate::config::ClientAuthMode::Off)
        .filter_map(|t| {
            let name = http::HeaderName::from_bytes(t.client_subject_header.as_bytes()).ok()?;
            Some((t.listen, name))
        })
        .collect()
}

/// One route's runtime settings.
#[derive(Debug, Clone)]
pub struct Route {
    /// Index of its pool in [`Snapshot::pools`] (`None`: it only redirects).
    pub upstream: Option<usize>,
    /// Its header, path, access and body rules.
    pub rules: crate::rules::RouteRules,
    /// `rules.on_request()`, `rules.on_upstream_request()`, `rules.on_response()`: checked on
    /// every request, so kept as plain flags.
    pub rules_on: RulePhases,
    /// Its rate-limit rule.
    pub rate_limit: RouteLimit,
    /// Whether its requests are access-logged.
    pub access_log: bool,
    /// The fraction of its requests that are logged (1: all, no random draw).
    pub access_log_sample: f64,
    /// Its name (`route` in the access log).
    pub name: String,
    /// Its request series.
    pub metrics: Arc<RouteMetrics>,
    /// Its cache rule (`None`: not cached).
    pub cache: Option<crate::cache::CacheRule>,
    /// Tags given to every entry cached on this route.
    pub cache_tags: Vec<String>,
}

/// Which request phases a route's rules act in.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulePhases {
    /// Before proxying (redirect, access lists, CORS, body limit).
    pub request: bool,
    /// On the upstream request (path, fields).
    pub upstream_request: bool,
    /// On the response (fields).
    pub response: bool,
}

/// The reloadable part of rate limiting: limits, identities and the JWT verifier.
pub struct RatePolicies {
    /// The validated `[rate_limit]` section.
    pub spec: RateLimitSpec,
    /// Built once from `spec.jwt`.
    pub jwt: Option<JwtVerifier>,
    /// Check counters per tier name (and `route` for routes' own limits).
    pub tier_metrics: HashMap<String, TierMetrics>,
}

impl std::fmt::Debug for RatePolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatePolicies")
            .field("tiers", &self.spec.tiers)
            .field("jwt", &self.jwt.is_some())
            .finish()
    }
}

/// Everything the request path reads, built once per config generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Host and path -> route index.
    pub router: Router,
    /// Routes, indexed as in the config.
    pub routes: Vec<Route>,
    /// Rate limiting, when configured.
    pub rate_limit: Option<RatePolicies>,
    /// Pools, indexed as in [`Config::upstreams`].
    pub pools: Vec<Pool>,
    /// Which config generation this is (1 for the first load).
    pub generation: u64,
    /// Normalise request paths before routing (`[server] normalize_path`).
    pub normalize_path: bool,
    /// Access-log requests that match no route (`[logging] access_log`).
    pub log_unrouted: bool,
    /// The access-log line format (`[logging] access_log_format`).
    pub access_format: Arc<crate::accesslog::Format>,
    /// `[tracing] propagate`: continue or start a W3C trace and tell the backend.
    pub trace_propagate: bool,
    /// `[tracing] sample_ratio`: the fraction of new traces marked sampled.
    pub trace_sample_ratio: f64,
    /// Per-read wait for request bodies, when it differs from Pingora's 60 s default
    /// (`[server] client_body_timeout_ms`).
    pub client_body_timeout: Option<Duration>,
    /// TLS listeners that verify client certificates, and the field each sends the verified
    /// subject in (empty: no listener asks for certificates, nothing to do per request).
    pub client_subject: Vec<(std::net::SocketAddr, http::HeaderName)>,
    /// Every such field name once: removed from every client request, so that no client can
    /// claim a subject.
    pub client_subject_fields: Vec<http::HeaderName>,
    /// A TLS listener orders its certificate from an ACME CA: the plain listeners answer
    /// HTTP-01 challenges.
    pub acme_http01: bool,
}

impl Snapshot {
    /// Build a snapshot from a validated config, resolving its metric handles on `metrics`, with
    /// the current addresses of its backend names.
    pub fn build(
        config: &Config,
        registry: &StateRegistry,
        metrics: &Metrics,
        generation: u64,
        names: &crate::dns::Names,
    ) -> Self {
        let client_subject = client_subject(config);
        let mut client_subject_fields: Vec<http::HeaderName> =
            client_subject.iter().map(|(_, n)| n.clone()).collect();
        client_subject_fields.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        client_subject_fields.dedup();
        Snapshot {
            router: Router::new(&config.routes),
            routes: config
                .routes
                .iter()
                .map(|r| Route {
                    upstream: r.upstream,
                    rules: {
                        let mut rules = r.rules.clone();
                        // Replaced after the rules: a rule's value must be in the map for that.
                        rules.request_headers.keep_in_map(&client_subject_fields);
                        rules
                    },
                    rules_on: RulePhases {
                        request: r.rules.on_request() || r.rules.uses(crate::rules::Var::ClientIp),
                        upstream_request: r.rules.on_upstream_request(),
                        response: r.rules.on_response(),
                    },
                    rate_limit: r.rate_limit,
                    access_log: r.access_log,
                    access_log_sample: r.access_log_sample,
                    name: r.name.clone(),
                    metrics: Arc::new(
                        metrics.route(
                            &r.name,
                            r.upstream
                                .map_or("none", |u| config.upstreams[u].name.as_str()),
                        ),
                    ),
                    cache: crate::cache::CacheRule::of(&r.cache, &config.cache),
                    cache_tags: r.cache_tags.clone(),
                })
                .collect(),
            rate_limit: config.rate_limit.as_ref().map(|spec| RatePolicies {
                jwt: spec.jwt.as_ref().and_then(JwtVerifier::new),
                tier_metrics: spec
                    .tiers
                    .keys()
                    .map(String::as_str)
                    .chain(std::iter::once("route"))
                    .map(|t| (t.to_owned(), metrics.tier(t)))
                    .collect(),
                spec: spec.clone(),
            }),
            pools: config
                .upstreams
                .iter()
                .map(|u| Pool::new(u, registry, metrics, names))
                .collect(),
            generation,
            normalize_path: config.server.normalize_path,
            log_unrouted: config.logging.access_log,
            access_format: Arc::new(config.logging.access_log_format.clone()),
            trace_propagate: config.tracing.propagate,
            trace_sample_ratio: config.tracing.sample_ratio,
            client_body_timeout: Some(config.server.client_body_timeout)
                .filter(|t| *t != PINGORA_READ_TIMEOUT),
            client_subject,
            acme_http01: config.server.tls.iter().any(|t| t.acme.is_some()),
            client_subject_fields,
        }
    }
}

/// A per-backend family (labels `upstream`, `backend`).
const fn backend_family(name: &'static str, help: &'static str, kind: Kind) -> LiveFamily {
    LiveFamily {
        name,
        help,
        kind,
        labels: &["upstream", "backend"],
    }
}

/// Per-backend families, read from the live state of the current snapshot's pools.
static BACKEND_FAMILIES: [LiveFamily; 6] = [
    backend_family(
        "sluice_backend_up",
        "1 when the backend is in rotation (active checks pass and not ejected).",
        Kind::Gauge,
    ),
    backend_family(
        "sluice_backend_in_flight",
        "Requests (and WebSockets) in flight on the backend.",
        Kind::Gauge,
    ),
    backend_family(
        "sluice_backend_selections_total",
        "Times the balancer picked the backend.",
        Kind::Counter,
    ),
    backend_family(
        "sluice_backend_failures_total",
        "Failed attempts (connect, timeout, error, counted status).",
        Kind::Counter,
    ),
    backend_family(
        "sluice_backend_ejections_total",
        "Passive-health ejections.",
        Kind::Counter,
    ),
    backend_family(
        "sluice_backend_retries_total",
        "Failed attempts on the backend that were retried elsewhere.",
        Kind::Counter,
    ),
];

/// The collector of the per-backend families of whatever snapshot `current` holds at scrape
/// time (a backend removed by a reload stops being exported).
pub fn backend_metrics(
    current: Arc<arc_swap::ArcSwap<Snapshot>>,
) -> Result<Live, crate::metrics::Error> {
    Live::new(&BACKEND_FAMILIES, &[], move |s| {
        let snapshot = current.load();
        let now = crate::util::clock::now_ns();
        for pool in &snapshot.pools {
            for (i, slot) in pool.balancer.slots().iter().enumerate() {
                let labels = [pool.name.as_str(), pool.names[i].as_str()];
                let st = &slot.state;
                let c = st.counters();
                let values = [
                    u64::from(st.probe_up() && !st.ejected(now)),
                    st.inflight() as u64,
                    c.selections,
                    c.failures,
                    c.ejections,
                    c.retries,
                ];
                for (family, v) in values.into_iter().enumerate() {
                    s.add(family, &labels, v as f64);
                }
            }
        }
    })
}
