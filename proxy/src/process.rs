//! The process-wide state every service shares ([`App`]: the snapshot requests run against, the
//! current config, live backend state, the limiter and cache, and the draining and readiness
//! flags), and the process-wide limits handed to Pingora. Imports nothing that wires services,
//! so the admin API, reload, warm-up and lifecycle can all hold an `App`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::balancer::StateRegistry;
use crate::cache::CacheLayer;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;

/// Process-wide state that outlives any one config snapshot.
pub struct App {
    /// The snapshot requests run against; replaced whole on reload.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The validated config the snapshot was built from (for `GET /config` and reload checks).
    pub config: ArcSwap<Config>,
    /// Live per-backend state shared by successive snapshots.
    pub registry: Arc<StateRegistry>,
    /// Rate-limit stores and breaker (process-wide; limits themselves are in the snapshot).
    pub limiter: Arc<RateLimiter>,
    /// The response cache's store and lock (process-wide; rules are in the snapshot).
    pub cache: &'static CacheLayer,
    /// The process's metrics registry and request-path families (every component registers
    /// its own families on it; `GET /metrics` renders it).
    pub metrics: &'static Metrics,
    /// The access log's writer (its destination is fixed for the process's life).
    pub access_log: Arc<crate::accesslog::Sink>,
    /// One certificate resolver per `[[server.tls]]` listener, in order; a reload swaps their
    /// certificates.
    pub tls: Vec<Arc<crate::sni::SniResolver>>,
    /// The current addresses of the backend names (swapped with the snapshot built from them,
    /// under `reload_lock`).
    pub names: ArcSwap<crate::dns::Names>,
    /// `sluice_dns_lookups_total`.
    pub dns_lookups: prometheus::IntCounterVec,
    /// The HTTP-01 answers of ACME orders in progress (read by the proxy).
    pub acme_challenges: Arc<crate::acme::Challenges>,
    /// `sluice_acme_orders_total`.
    pub acme_orders: prometheus::IntCounterVec,
    /// The OTLP span exporter, when `[tracing] otlp_endpoint` is set.
    pub spans: Option<Arc<crate::otel::SpanExport>>,
    /// The config file, re-read on reload.
    pub config_path: PathBuf,
    /// Where relative paths in the config file resolve.
    pub base_dir: PathBuf,
    /// Serializes reloads; holds the file text last read.
    pub(crate) reload_lock: Mutex<String>,
    /// Set once a graceful stop or upgrade began: `/readyz` answers 503 and responses say
    /// `Connection: close`.
    pub draining: Arc<AtomicBool>,
    /// Set once every proxy listener is bound and accepting (`/readyz` waits for it).
    pub listening: Arc<AtomicBool>,
    /// Latched once every actively checked backend has been probed at least once.
    pub health_ready: AtomicBool,
    /// The config generation whose cache warm-up finished.
    pub warmed_generation: std::sync::atomic::AtomicU64,
}

impl App {
    /// State for `config` (read from `path`, whose content was `text`) as the first
    /// generation, with a metrics registry of its own. Fails only if a metric family cannot
    /// be registered (a bug: names are fixed in the code).
    pub fn new(
        config: Config,
        path: &Path,
        text: String,
        access_log: crate::accesslog::Sink,
        spans: Option<crate::otel::SpanExport>,
        tls: Vec<crate::sni::CertSet>,
        names: crate::dns::Names,
    ) -> Result<Arc<Self>, crate::metrics::Error> {
        // One per process (leaked like the cache): request contexts hold its gauges.
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()?));
        for c in access_log.counters() {
            metrics.registry().register(Box::new(c))?;
        }
        let acme_challenges = Arc::new(crate::acme::Challenges::new(config.redis.as_ref()));
        let tls: Vec<Arc<crate::sni::SniResolver>> = tls
            .into_iter()
            .zip(&config.server.tls)
            .map(|(s, t)| {
                Arc::new(if t.answers_tls_alpn() {
                    crate::sni::SniResolver::with_acme(s, Arc::clone(&acme_challenges))
                } else {
                    crate::sni::SniResolver::new(s)
                })
            })
            .collect();
        if !tls.is_empty() {
            let by_listen = config
                .server
                .tls
                .iter()
                .zip(&tls)
                .map(|(t, r)| (t.listen.to_string(), Arc::clone(r)))
                .collect();
            metrics
                .registry()
                .register(Box::new(crate::sni::expiry_metric(by_listen)?))?;
        }
        let registry = Arc::new(StateRegistry::default());
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(
            &config, &registry, metrics, 1, &names,
        )));
        let dns_lookups = crate::dns::lookups_metric()?;
        metrics.registry().register(Box::new(dns_lookups.clone()))?;
        let acme_orders = crate::acme::orders_metric()?;
        metrics.registry().register(Box::new(acme_orders.clone()))?;
        metrics
            .registry()
            .register(Box::new(crate::snapshot::backend_metrics(Arc::clone(
                &snapshot,
            ))?))?;
        let limiter = RateLimiter::new(config.redis.as_ref(), metrics)?;
        let cache: &'static CacheLayer = Box::leak(Box::new(CacheLayer::new(
            &config.cache,
            config.redis.as_ref(),
            metrics,
        )?));
        metrics.set_generation(1);
        let base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        Ok(Arc::new(App {
            snapshot,
            config: ArcSwap::from_pointee(config),
            registry,
            limiter,
            cache,
            metrics,
            access_log: Arc::new(access_log),
            spans: spans.map(Arc::new),
            tls,
            names: ArcSwap::from_pointee(names),
            dns_lookups,
            acme_challenges,
            acme_orders,
            config_path: path.to_owned(),
            base_dir,
            reload_lock: Mutex::new(text),
            draining: Arc::new(AtomicBool::new(false)),
            listening: Arc::new(AtomicBool::new(false)),
            health_ready: AtomicBool::new(false),
            warmed_generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Write out the access log's queue and export the queued spans, each within `timeout`
    /// (before the process exits).
    pub fn flush_logs(&self, timeout: std::time::Duration) {
        self.access_log.flush(timeout);
        if let Some(s) = &self.spans {
            s.shutdown(timeout);
        }
    }

    /// Whether every backend with active checks has had its first probe (latched: once true,
    /// stays true, so a reload that adds backends does not flap readiness).
    pub fn health_checked(&self) -> bool {
        if self.health_ready.load(Relaxed) {
            return true;
        }
        let snapshot = self.snapshot.load();
        let done = snapshot
            .pools
            .iter()
            .filter(|p| p.health.is_some())
            .flat_map(|p| p.balancer.slots())
            .all(|s| s.state.probed());
        if done {
            self.health_ready.store(true, Relaxed);
        }
        done
    }
}

/// Hand the client-side request head limits of `config` to the HTTP/1 reader (process-wide;
/// called at start and after every reload).
pub fn apply_client_limits(config: &Config) {
    let s = &config.server;
    pingora::protocols::http::v1::server::set_request_head_limits(
        Some(s.client_header_timeout),
        Some(s.keepalive_timeout),
        s.max_request_header_bytes,
    );
    // A keep-alive connection idle for a second gives back its request future and head buffer
    // (vendored pingora-core, README section 14): an idle connection then holds a few KiB
    // instead of about 20. Sooner would cost a box per request on connections that send a
    // request every few hundred milliseconds; the cap is Pingora's shutdown pause (1 s).
    pingora::protocols::http::v1::server::set_keepalive_release(Some(KEEPALIVE_RELEASE));
}

/// How long a keep-alive connection waits for its next request before it gives back the memory
/// of its request state (see [`apply_client_limits`]).
const KEEPALIVE_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);
