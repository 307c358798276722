//! Wiring: builds the Pingora server and its services (proxy, admin, health, reload, warm-up)
//! from a validated [`Config`] around the process state ([`crate::process::App`]). Knows
//! nothing about selection algorithms or request handling; those live in `balancer/` and
//! `edge/`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

use crate::admin::AdminApi;
use crate::config::Config;
use crate::edge::Edge;
use crate::health::HealthService;
use crate::metrics::{Kind, Live, LiveFamily};
use crate::process::{apply_client_limits, App};
use crate::reload::ReloadService;

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
    /// A metric family could not be registered (a bug: names are fixed in the code).
    #[error("metrics: {0}")]
    Metrics(crate::metrics::Error),
}

impl From<crate::metrics::Error> for AppError {
    fn from(e: crate::metrics::Error) -> Self {
        AppError::Metrics(e)
    }
}

static CONNECTION_FAMILIES: [LiveFamily; 1] = [LiveFamily {
    name: "sluice_client_connections_open",
    help: "Established client connections on the proxy listeners.",
    kind: Kind::Gauge,
    labels: &[],
}];

/// The open-connections gauge: the vendored listener counts each connection from accept to
/// its end (one atomic add each way, per connection); read at scrape time.
fn open_connections(open: Arc<AtomicUsize>) -> Result<Live, crate::metrics::Error> {
    Live::new(&CONNECTION_FAMILIES, &[], move |s| {
        s.add(0, &[], open.load(Relaxed) as f64);
    })
}

/// Pingora settings derived from Sluice's `[server]` section.
pub fn server_conf(config: &Config) -> ServerConf {
    let s = &config.server;
    ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(s.grace_period.as_secs().max(1)),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        upgrade_sock: s.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: s.pid_file.to_string_lossy().into_owned(),
        // Not `daemon_wait_for_ready`: in Pingora 0.9.1 the daemon may send its SIGUSR1 before
        // the launcher has installed a handler for it, which kills the launcher (seen in
        // `daemon_mode_and_the_systemd_reload_upgrade`). The launcher exits after the fork; a
        // `Type=forking` unit waits for the PID file to appear.
        daemon_wait_for_ready: false,
        ..ServerConf::default()
    }
}

/// A bootstrapped Pingora server with Sluice's proxy service on every configured listener, the
/// admin API, health checks and reload triggers.
pub fn build_server(config: &Config, app: &Arc<App>, opt: Opt) -> Result<Server, AppError> {
    pingora::http::set_preserve_h1_header_case(config.server.preserve_header_case);
    apply_client_limits(config);
    let daemon = opt.daemon;
    let mut server = Server::new_with_opt_and_conf(Some(opt), server_conf(config));
    // A daemon must take over listeners (and tell its launcher it is ready) after the fork, so
    // bootstrap runs as a service the listeners depend on; otherwise it runs right here.
    let bootstrap = if daemon {
        Some(server.bootstrap_as_a_service())
    } else {
        server.bootstrap();
        None
    };

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Edge::new(crate::edge::EdgeParts {
            snapshot: Arc::clone(&app.snapshot),
            limiter: Arc::clone(&app.limiter),
            cache: app.cache,
            metrics: app.metrics,
            draining: Arc::clone(&app.draining),
            access_log: Arc::clone(&app.access_log),
            spans: app.spans.clone(),
            acme: Arc::clone(&app.acme_challenges),
        }),
        "sluice-proxy",
    );
    if config.server.h2c {
        // The plain listeners read the first bytes of each connection: the HTTP/2 preface
        // makes it an HTTP/2 connection, anything else HTTP/1.1.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        if let Some(p) = proxy.app_logic_mut() {
            p.server_options = Some(options);
        }
    }
    let listening = Arc::clone(&app.listening);
    proxy.on_listening(move || {
        listening.store(true, Relaxed);
        crate::notify::ready();
    });
    let max_connections = crate::resources::connection_budget(config.server.max_connections);
    proxy.set_connection_limit(Arc::new(tokio::sync::Semaphore::new(max_connections)));
    let open = Arc::new(AtomicUsize::new(0));
    proxy.set_connection_counter(Arc::clone(&open));
    app.metrics
        .registry()
        .register(Box::new(open_connections(open)?))?;
    // No L4 read buffer under the HTTP reader (or rustls), which has its own: Pingora's default
    // is a 64 KiB zeroed buffer per client connection, held for the connection's life (an idle
    // keep-alive connection cost 95 KiB of RSS, 64 of them this buffer; nginx holds about
    // 1 KiB). benches/connections.sh, docs/benchmarks.md.
    let l4_buffer = || L4BufferSettings::new(0, pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE);
    for addr in &config.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(l4_buffer()));
    }
    for (t, resolver) in config.server.tls.iter().zip(&app.tls) {
        let listen = t.listen.to_string();
        // The files are given by the resolver (reloaded with the config), not by path.
        let mut settings = TlsSettings::intermediate("", "").map_err(|source| AppError::Tls {
            listen: listen.clone(),
            source,
        })?;
        settings
            .set_cert_resolver(Arc::clone(resolver) as Arc<dyn pingora::tls::ResolvesServerCert>);
        // The same resolver asks for client certificates when the listener has client_auth
        // (and says not to otherwise), so a reload can change that too.
        settings.set_client_cert_verifier(
            Arc::clone(resolver) as Arc<dyn pingora::tls::ClientCertVerifier>
        );
        settings.set_tls13_only(t.tls13_only);
        if t.answers_tls_alpn() {
            // HTTP/2, HTTP/1.1, and the CA's TLS-ALPN-01 validations (vendored patch).
            settings.set_alpn_protocols(vec![
                b"h2".to_vec(),
                b"http/1.1".to_vec(),
                crate::acme::ALPN_ACME_TLS.to_vec(),
            ]);
        } else {
            settings.enable_h2();
        }
        proxy.add_listener(
            ListenerConfig::tcp(listen)
                .tls(settings)
                .l4_buffer(l4_buffer()),
        );
    }
    let proxy = server.add_service(proxy);
    if let Some(b) = &bootstrap {
        proxy.add_dependency(b);
    }
    if let Some(addr) = config.admin.listen {
        let mut admin = pingora::services::listening::Service::new(
            "sluice-admin".to_owned(),
            AdminApi::new(Arc::clone(app)),
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        let admin = server.add_service(admin);
        if let Some(b) = &bootstrap {
            admin.add_dependency(b);
        }
    }
    server.add_service(pingora::services::background::background_service(
        "sluice-health",
        HealthService::new(Arc::clone(&app.snapshot)),
    ));
    server.add_service(pingora::services::background::background_service(
        "sluice-acme",
        crate::reload::AcmeService::new(Arc::clone(app)),
    ));
    server.add_service(pingora::services::background::background_service(
        "sluice-dns",
        crate::reload::DnsService::new(Arc::clone(app)),
    ));
    server.add_service(pingora::services::background::background_service(
        "sluice-reload",
        ReloadService::new(Arc::clone(app)),
    ));
    let warm = server.add_service(pingora::services::background::background_service(
        "sluice-warm",
        crate::warm::WarmService::new(Arc::clone(app)),
    ));
    // Warm-up requests go through the proxy listener.
    warm.add_dependency(&proxy);
    Ok(server)
}
