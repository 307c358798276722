//! Builds the Pingora server and services from a validated [`Config`]. Knows nothing about
//! selection algorithms or request handling; those live in `balancer/` and `edge/`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

use crate::balancer::StateRegistry;
use crate::config::Config;
use crate::edge::Edge;
use crate::health::HealthService;
use crate::ratelimit::RateLimiter;
use crate::snapshot::Snapshot;

/// Why the server could not be assembled (configuration already validated).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A TLS certificate or key could not be loaded.
    #[error("TLS listener {listen}: cannot load certificate or key: {source}")]
    Tls {
        /// The listener address.
        listen: String,
        /// Pingora's error.
        source: Box<pingora::Error>,
    },
}

/// Process-wide state that outlives any one config snapshot.
pub struct App {
    /// The snapshot requests run against; replaced whole on reload.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Live per-backend state shared by successive snapshots.
    pub registry: Arc<StateRegistry>,
    /// Rate-limit stores and breaker (process-wide; limits themselves are in the snapshot).
    pub limiter: Arc<RateLimiter>,
}

impl App {
    /// State for `config` as the first generation.
    pub fn new(config: &Config) -> Self {
        let registry = Arc::new(StateRegistry::default());
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::build(config, &registry, 1)));
        let limiter = Arc::new(RateLimiter::new(config.redis.as_ref()));
        App {
            snapshot,
            registry,
            limiter,
        }
    }
}

/// Pingora settings derived from Sluice's `[server]` section.
pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.grace_period.as_secs().max(1)),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        ..ServerConf::default()
    }
}

/// A bootstrapped Pingora server with Sluice's proxy service on every configured listener.
pub fn build_server(config: &Config, app: &App, opt: Opt) -> Result<Server, AppError> {
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(config));
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge::new(Arc::clone(&app.snapshot), Arc::clone(&app.limiter)),
        "sluice-proxy",
    );
    for addr in &config.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    for t in &config.server.tls {
        let listen = t.listen.to_string();
        let tls_err = |source| AppError::Tls {
            listen: listen.clone(),
            source,
        };
        let mut settings =
            TlsSettings::intermediate(&t.cert.to_string_lossy(), &t.key.to_string_lossy())
                .map_err(tls_err)?;
        settings.enable_h2();
        proxy.add_tls_with_settings(&listen, None, settings);
    }
    server.add_service(proxy);
    server.add_service(pingora::services::background::background_service(
        "sluice-health",
        HealthService::new(Arc::clone(&app.snapshot)),
    ));
    Ok(server)
}
