//! Live reload: read the config file, validate it, refuse changes that need a restart, build a
//! new [`Snapshot`] and swap it in. Triggers: the file changing on disk (polled, debounced),
//! SIGHUP, and the admin API's `POST /reload`. Requests and WebSockets in flight keep the
//! snapshot they started with; per-backend state carries over through the
//! [`crate::balancer::StateRegistry`].

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::config::{
    self, AdminSettings, CacheSpec, Config, ConfigError, LoggingSettings, ServerSettings,
    TracingSettings,
};
use crate::metrics::ReloadResult;
use crate::process::App;
use crate::snapshot::Snapshot;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file has problems; every one is listed.
    #[error("{0}")]
    Invalid(ConfigError),
    /// Settings that only a restart can change were edited.
    #[error("these settings need a restart, so nothing was reloaded: {}", .0.join(", "))]
    RestartRequired(Vec<&'static str>),
}

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// The generation now serving.
    pub generation: u64,
}

/// The restart-only settings that differ between `old` and `new`, by config key.
///
/// Every section, and every field of the sections that mix both kinds, is taken apart and
/// marked restart-only or reloadable: a new key does not compile until it is classified here
/// (the destructuring is exhaustive).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        server,
        admin,
        logging,
        // Reloadable: the reload service reads `watch` and `debounce_ms` from the current
        // config on each poll.
        reload: _,
        tracing,
        // Reloadable: a new snapshot is built from them.
        upstreams: _,
        routes: _,
        rate_limit: _,
        // Restart-only as a whole: the limiter's and the cache's connections are made once.
        redis,
        cache,
        // Restart-only: the background resolver is made once.
        dns,
        // Not settings: logged when the config is loaded.
        warnings: _,
    } = old;
    let mut changed = server_changes(server, &new.server);
    let AdminSettings {
        // Restart-only: the admin listener is bound at start.
        listen,
        // Reloadable: checked per admin request against the current config.
        token: _,
        public_metrics: _,
    } = admin;
    let LoggingSettings {
        // Restart-only: the subscriber is installed once.
        format,
        // Reloadable: routes take it as their default; requests matching no route read it
        // from the snapshot.
        access_log: _,
        access_log_sample: _,
        // Reloadable: the snapshot holds the compiled format.
        access_log_format: _,
        // Restart-only: the file is opened and the writer's queue made once.
        access_log_path,
        access_log_buffer,
    } = logging;
    let TracingSettings {
        // Reloadable: the snapshot holds them.
        propagate: _,
        sample_ratio: _,
        // Restart-only: the exporter is made once.
        otlp_endpoint,
        service_name,
        otlp_timeout,
    } = tracing;
    let exporter_differs = *otlp_endpoint != new.tracing.otlp_endpoint
        || *service_name != new.tracing.service_name
        || *otlp_timeout != new.tracing.otlp_timeout;
    let CacheSpec {
        // Restart-only: the store, its lock and key rules are built once (`App::cache`).
        namespace,
        max_object_bytes,
        chunk_bytes,
        memory_bytes,
        command_timeout,
        lock_timeout,
        tag_headers,
        ignore_query_params,
        sort_query_params,
        targeted_cache_control,
        stale_retention,
        // Reloadable: read from the config by each route's rule and by the warm-up.
        ttl_seconds: _,
        ttl_mode: _,
        warm_urls: _,
        warm_concurrency: _,
    } = cache;
    let n = &new.cache;
    let cache_store_differs = *namespace != n.namespace
        || *max_object_bytes != n.max_object_bytes
        || *chunk_bytes != n.chunk_bytes
        || *memory_bytes != n.memory_bytes
        || *command_timeout != n.command_timeout
        || *lock_timeout != n.lock_timeout
        || *tag_headers != n.tag_headers
        || *ignore_query_params != n.ignore_query_params
        || *sort_query_params != n.sort_query_params
        || *targeted_cache_control != n.targeted_cache_control
        || *stale_retention != n.stale_retention;
    let checks = [
        (
            "admin.listen (and admin.enabled)",
            *listen != new.admin.listen,
        ),
        ("logging.format", *format != new.logging.format),
        (
            "logging.access_log_path",
            *access_log_path != new.logging.access_log_path,
        ),
        (
            "logging.access_log_buffer",
            *access_log_buffer != new.logging.access_log_buffer,
        ),
        ("redis", *redis != new.redis),
        ("dns", *dns != new.dns),
        (
            "tracing (otlp_endpoint, service_name, otlp_timeout_ms)",
            exporter_differs,
        ),
        (
            "cache (store settings; route tiers, tier TTLs and warm_urls reload)",
            cache_store_differs,
        ),
    ];
    changed.extend(
        checks
            .into_iter()
            .filter_map(|(key, differs)| differs.then_some(key)),
    );
    changed
}

/// The restart-only `[server]` keys that differ.
fn server_changes(old: &ServerSettings, n: &ServerSettings) -> Vec<&'static str> {
    let ServerSettings {
        // Restart-only: listeners, threads and process settings Pingora takes at start. Of a
        // TLS listener only its address: its certificates are read again on every reload.
        listen,
        tls,
        threads,
        grace_period,
        upstream_keepalive_pool_size,
        upgrade_sock,
        drain_delay,
        pid_file,
        preserve_header_case,
        max_connections,
        h2c,
        // Reloadable: read per request or handed to the HTTP/1 reader after each reload.
        client_header_timeout: _,
        client_body_timeout: _,
        keepalive_timeout: _,
        max_request_header_bytes: _,
        normalize_path: _,
    } = old;
    let checks: [(&'static str, bool); 11] = [
        ("server.h2c", *h2c != n.h2c),
        ("server.listen", *listen != n.listen),
        (
            "server.tls (listen addresses, min_version, acme challenge tls-alpn-01)",
            !tls.iter()
                .map(|t| (t.listen, t.tls13_only, t.answers_tls_alpn()))
                .eq(n
                    .tls
                    .iter()
                    .map(|t| (t.listen, t.tls13_only, t.answers_tls_alpn()))),
        ),
        ("server.threads", *threads != n.threads),
        (
            "server.grace_period_seconds",
            *grace_period != n.grace_period,
        ),
        (
            "server.upstream_keepalive_pool_size",
            *upstream_keepalive_pool_size != n.upstream_keepalive_pool_size,
        ),
        ("server.upgrade_sock", *upgrade_sock != n.upgrade_sock),
        ("server.drain_delay_ms", *drain_delay != n.drain_delay),
        ("server.pid_file", *pid_file != n.pid_file),
        (
            "server.max_connections",
            *max_connections != n.max_connections,
        ),
        (
            "server.preserve_header_case",
            *preserve_header_case != n.preserve_header_case,
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
}

impl App {
    /// Reload from the config file now. `trigger` names the cause in the log (`file`, `sighup`,
    /// `admin`). Never changes anything unless the whole new config is valid and applicable.
    pub fn reload(&self, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| {
            ReloadError::Invalid(ConfigError {
                file: self.config_path.clone(),
                problems: vec![config::Problem {
                    path: String::new(),
                    location: None,
                    message: format!("cannot read the file: {e}"),
                }],
            })
        })?;
        self.reload_text(&text, trigger)
    }

    /// Reload from `text` (the config file's content).
    pub fn reload_text(&self, text: &str, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        // One reload at a time; held only here, never on the request path or across an await.
        let mut last = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        *last = text.to_owned();
        let result = config::load_str(text, &self.config_path, &self.base_dir)
            .map_err(ReloadError::Invalid)
            .and_then(|new| {
                let old = self.config.load();
                let changed = restart_only_changes(&old, &new);
                if !changed.is_empty() {
                    return Err(ReloadError::RestartRequired(changed));
                }
                // Certificates are read again even when the config names the same files: a
                // renewed certificate is served from the next handshake on.
                let mut sets = Vec::with_capacity(new.server.tls.len());
                for (i, t) in new.server.tls.iter().enumerate() {
                    match crate::sni::CertSet::load(t) {
                        Ok(s) => sets.push(s),
                        Err(message) => {
                            return Err(ReloadError::Invalid(ConfigError {
                                file: self.config_path.clone(),
                                problems: vec![config::Problem {
                                    path: format!("server.tls[{i}]"),
                                    location: None,
                                    message,
                                }],
                            }))
                        }
                    }
                }
                // New backend names are looked up now (known ones keep their addresses; the
                // background lookups follow them): one that does not resolve refuses the reload.
                let names =
                    crate::dns::resolve_blocking(&new, &self.names.load()).map_err(|problems| {
                        ReloadError::Invalid(config::later_problems(
                            &self.config_path,
                            text,
                            problems,
                        ))
                    })?;
                Ok((new, sets, names))
            });
        match result {
            Ok((new, sets, names)) => {
                for (resolver, set) in self.tls.iter().zip(sets) {
                    resolver.replace(set);
                }
                let generation = self.snapshot.load().generation + 1;
                let snapshot =
                    Snapshot::build(&new, &self.registry, self.metrics, generation, &names);
                self.names.store(Arc::new(names));
                crate::process::apply_client_limits(&new);
                self.config.store(Arc::new(new));
                self.snapshot.store(Arc::new(snapshot));
                self.metrics.reload(ReloadResult::Ok);
                self.metrics.set_generation(generation);
                info!(
                    event = "config_reloaded",
                    trigger, generation, "config reloaded"
                );
                for w in &self.config.load().warnings {
                    warn!(event = "config_warning", "{w}");
                }
                Ok(Reloaded { generation })
            }
            Err(e) => {
                match &e {
                    ReloadError::Invalid(c) => {
                        self.metrics.reload(ReloadResult::Invalid);
                        for p in &c.problems {
                            warn!(
                                event = "config_reload_failed",
                                trigger,
                                key = %p.path,
                                line = p.location.map(|l| l.0),
                                column = p.location.map(|l| l.1),
                                problem = %p.message,
                                "config reload rejected; the previous config keeps serving"
                            );
                        }
                    }
                    ReloadError::RestartRequired(keys) => {
                        self.metrics.reload(ReloadResult::Refused);
                        warn!(
                            event = "config_reload_refused",
                            trigger,
                            keys = %keys.join(", "),
                            "config reload refused: these settings need a restart; the previous config keeps serving"
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// The file content the last reload attempt (or the start) read.
    pub fn last_loaded_text(&self) -> String {
        self.reload_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the watch compares of one certificate or key file: modification time and length
/// (`None` when it cannot be read).
type Stamp = Option<(std::time::SystemTime, u64)>;

/// The stamps of every certificate and key file of `config`'s TLS listeners and TLS pools, in
/// order.
async fn cert_stamps(config: &Config) -> Vec<Stamp> {
    let mut files = Vec::new();
    for t in &config.server.tls {
        for p in &t.certs {
            files.extend([&p.cert, &p.key]);
        }
    }
    // A pool's CA bundle and client certificate are re-read on reload too.
    for u in &config.upstreams {
        if let Some(t) = &u.tls {
            files.extend(t.ca.iter());
            if let Some(p) = &t.client_cert {
                files.extend([&p.cert, &p.key]);
            }
        }
    }
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        // Follows symlinks: a Kubernetes Secret volume swaps them.
        let m = tokio::fs::metadata(f).await.ok();
        out.push(m.and_then(|m| Some((m.modified().ok()?, m.len()))));
    }
    out
}

/// Background service: SIGHUP and the file watch.
pub struct ReloadService {
    app: Arc<App>,
}

impl ReloadService {
    /// Reload triggers for `app`.
    pub fn new(app: Arc<App>) -> Self {
        ReloadService { app }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGHUP; reload by file or admin API only");
                None
            }
        };
        // SIGUSR1: reopen the access-log file (after logrotate renamed it). Installed here,
        // at start: the default action of SIGUSR1 would end the process.
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGUSR1; the access log cannot be reopened");
                None
            }
        };
        let mut debounce = self.app.config.load().reload.debounce;
        let mut tick = tokio::time::interval(debounce);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A change is applied once the file reads the same on two consecutive polls, so an
        // editor's partial write is never loaded.
        let mut pending: Option<String> = None;
        // Certificate and key files are watched too (a renewal that rewrites them in place,
        // a Kubernetes Secret update): same two-poll rule, then a reload.
        let mut certs_seen = cert_stamps(&self.app.config.load()).await;
        let mut certs_pending: Option<Vec<Stamp>> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let app = self.app.clone();
                    let _ = tokio::task::spawn_blocking(move || app.reload("sighup")).await;
                    pending = None;
                }
                Some(()) = async { match usr1.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    self.app.access_log.reopen();
                }
                _ = tick.tick() => {
                    let settings = self.app.config.load().reload;
                    if settings.debounce != debounce {
                        // A reload changed the poll interval: follow it.
                        debounce = settings.debounce;
                        tick = tokio::time::interval_at(tokio::time::Instant::now() + debounce, debounce);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    if !settings.watch {
                        pending = None;
                        continue;
                    }
                    let Ok(text) = tokio::fs::read_to_string(&self.app.config_path).await else {
                        continue;
                    };
                    if text == self.app.last_loaded_text() {
                        pending = None;
                        let now = cert_stamps(&self.app.config.load()).await;
                        if now == certs_seen {
                            certs_pending = None;
                        } else if certs_pending.as_ref() == Some(&now) {
                            certs_pending = None;
                            certs_seen = now;
                            let app = self.app.clone();
                            let _ = tokio::task::spawn_blocking(move || app.reload("certificate_file")).await;
                        } else {
                            certs_pending = Some(now);
                        }
                    } else if pending.as_deref() == Some(text.as_str()) {
                        pending = None;
                        let app = self.app.clone();
                        let _ = tokio::task::spawn_blocking(move || app.reload_text(&text, "file")).await;
                    } else {
                        pending = Some(text);
                    }
                }
            }
        }
    }
}

impl App {
    /// Serve new addresses of backend names (`changes`): a new snapshot of the current config
    /// with them, under the reload lock so that it never races a reload (whose own names are
    /// kept: only the changed entries are replaced).
    pub fn apply_names(&self, changes: Vec<(String, Vec<std::net::IpAddr>)>) -> u64 {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = (**self.names.load()).clone();
        for (host, addrs) in changes {
            names.insert(host, addrs);
        }
        let config = self.config.load();
        let generation = self.snapshot.load().generation + 1;
        let snapshot = Snapshot::build(&config, &self.registry, self.metrics, generation, &names);
        self.names.store(Arc::new(names));
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.set_generation(generation);
        generation
    }
}

/// Background service: looks backend names up again when they are due (`dns.rs`), and builds
/// a new snapshot when their addresses change.
pub struct DnsService {
    app: Arc<App>,
}

impl DnsService {
    /// Lookups for `app`'s backend names.
    pub fn new(app: Arc<App>) -> Self {
        DnsService { app }
    }
}

/// How often the service checks for due names and for names a reload added or removed.
const DNS_TICK: std::time::Duration = std::time::Duration::from_millis(500);

#[async_trait]
impl BackgroundService for DnsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use crate::dns::LookupResult;
        let resolver = match crate::dns::resolver(&self.app.config.load().dns) {
            Ok(r) => r,
            Err(e) => {
                warn!(event = "dns_unavailable", error = %e, "backend names will not be looked up again");
                return;
            }
        };
        let mut schedule = crate::dns::Schedule::default();
        loop {
            let wanted = crate::dns::names_of(&self.app.config.load());
            let now = std::time::Instant::now();
            let due = schedule.due(&wanted, now);
            if !due.is_empty() {
                let names = self.app.names.load_full();
                let mut changes = Vec::new();
                for host in due {
                    let interval = wanted.get(&host).map_or(DNS_TICK, |(i, _)| *i);
                    let result = match crate::dns::lookup(&resolver, &host).await {
                        Ok((addrs, valid_until)) => {
                            schedule.done(
                                &host,
                                std::time::Instant::now(),
                                interval,
                                Some(valid_until),
                            );
                            if names.get(&host) == Some(&addrs) {
                                LookupResult::Unchanged
                            } else {
                                info!(
                                    event = "dns_changed",
                                    name = %host,
                                    old = ?names.get(&host),
                                    new = ?addrs,
                                    "backend name has new addresses"
                                );
                                changes.push((host.clone(), addrs));
                                LookupResult::Changed
                            }
                        }
                        Err(e) => {
                            schedule.done(&host, std::time::Instant::now(), interval, None);
                            warn!(
                                event = "dns_failed",
                                name = %host,
                                error = %e,
                                kept = ?names.get(&host),
                                "backend name lookup failed; its last addresses stay"
                            );
                            LookupResult::Failed
                        }
                    };
                    self.app
                        .dns_lookups
                        .with_label_values(&[host.as_str(), result.label()])
                        .inc();
                }
                if !changes.is_empty() {
                    self.app.apply_names(changes);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(DNS_TICK) => {}
            }
        }
    }
}

impl App {
    /// Read every TLS listener's certificates again (an ACME order stored a new one), under the
    /// reload lock; a listener whose files do not load keeps what it serves.
    pub fn refresh_certs(&self) {
        let _guard = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let config = self.config.load();
        for (t, resolver) in config.server.tls.iter().zip(&self.tls) {
            match crate::sni::CertSet::load(t) {
                Ok(set) => resolver.replace(set),
                Err(e) => {
                    warn!(event = "certificates_not_reloaded", error = %e, "keeping the certificates served now")
                }
            }
        }
    }
}

/// Background service: orders and renews the certificates of listeners with `acme` (see
/// `acme.rs`): when there is none for all the listener's hosts, and two thirds into the served
/// one's lifetime. A failed order keeps the certificate served now and is retried later.
pub struct AcmeService {
    app: Arc<App>,
}

impl AcmeService {
    /// Orders for `app`'s listeners.
    pub fn new(app: Arc<App>) -> Self {
        AcmeService { app }
    }
}

/// Longest wait between two looks at a listener's ACME certificate (a config or file change is
/// noticed within it).
const ACME_RECHECK: std::time::Duration = std::time::Duration::from_secs(3600);
/// How soon an instance that found the order lock taken looks for the other's certificate.
const ACME_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Bound on one order, challenges included.
const ACME_ORDER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use crate::acme::{self, OrderResult};
        use std::time::{Duration, Instant};
        let mut next: std::collections::HashMap<(std::net::SocketAddr, Vec<String>), Instant> =
            std::collections::HashMap::new();
        // With [redis], the instances share certificates and one orders at a time.
        let shared = self.app.config.load().redis.as_ref().map(acme::Shared::new);
        loop {
            let config = self.app.config.load_full();
            for t in &config.server.tls {
                let Some(spec) = &t.acme else { continue };
                let key = (t.listen, spec.hosts.clone());
                let now = Instant::now();
                if next.get(&key).is_some_and(|n| *n > now) {
                    continue;
                }
                let name = spec.hosts.first().cloned().unwrap_or_default();
                if let Some(sh) = &shared {
                    // Another instance's newer certificate is taken as it is.
                    match sh.fetch(spec).await {
                        Ok(Some((cert, key_pem))) => match acme::install(spec, &cert, &key_pem) {
                            Ok(true) => {
                                self.app.refresh_certs();
                                info!(event = "acme_shared", name = %name, "certificate taken from Redis and served");
                            }
                            Ok(false) => {}
                            Err(e) => {
                                warn!(event = "acme_shared_invalid", name = %name, error = %e, "the certificate in Redis does not load")
                            }
                        },
                        Ok(None) => {}
                        Err(e) => {
                            warn!(event = "acme_redis_failed", name = %name, error = %e, "cannot read shared certificates from Redis")
                        }
                    }
                }
                let stored = acme::stored(spec).filter(|c| acme::covers(c, spec));
                let unix = acme::now_unix();
                if let Some(c) = &stored {
                    let wait = acme::renew_at(c) - unix;
                    if wait > 0 {
                        let wait = Duration::from_secs(wait as u64).min(ACME_RECHECK);
                        next.insert(key, now + wait);
                        continue;
                    }
                }
                let token = format!("{:016x}", rand::random::<u64>());
                if let Some(sh) = &shared {
                    match sh.lock(spec, &token).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Another instance is ordering: take its certificate soon.
                            next.insert(key, now + ACME_LOCK_WAIT);
                            continue;
                        }
                        // Without Redis each instance orders for itself.
                        Err(e) => {
                            warn!(event = "acme_redis_failed", name = %name, error = %e, "cannot take the order lock; ordering without it")
                        }
                    }
                }
                info!(event = "acme_order", name = %name, hosts = ?spec.hosts, renewal = stored.is_some(), "ordering a certificate");
                let result =
                    acme::order(spec, &self.app.acme_challenges, ACME_ORDER_DEADLINE).await;
                if let (Ok(()), Some(sh)) = (&result, &shared) {
                    if let Err(e) = sh.publish(spec).await {
                        warn!(event = "acme_redis_failed", name = %name, error = %e, "cannot share the new certificate through Redis");
                    }
                }
                if let Some(sh) = &shared {
                    sh.unlock(spec, &token).await;
                }
                match result {
                    Ok(()) => {
                        self.app.refresh_certs();
                        info!(event = "acme_issued", name = %name, "certificate obtained and served");
                        self.app
                            .acme_orders
                            .with_label_values(&[name.as_str(), OrderResult::Issued.label()])
                            .inc();
                        next.remove(&key);
                    }
                    Err(e) => {
                        // Retry after a tenth of what is left (bounded), or soon without one.
                        let retry = match &stored {
                            Some(c) => Duration::from_secs(
                                ((c.not_after - unix) / 10).clamp(1, 3600) as u64,
                            ),
                            None => Duration::from_secs(30),
                        };
                        warn!(
                            event = "acme_failed",
                            name = %name,
                            error = %e,
                            retry_in_s = retry.as_secs(),
                            "certificate order failed; the certificate served now stays"
                        );
                        self.app
                            .acme_orders
                            .with_label_values(&[name.as_str(), OrderResult::Failed.label()])
                            .inc();
                        next.insert(key, Instant::now() + retry);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "{extra}\n[upstreams.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n[[routes]]\nupstream = \"a\"\n"
        );
        config::load_str(
            &text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .expect("valid")
    }

    #[test]
    fn each_section_is_classified() {
        let base = config("");
        let reloadable = [
            "[reload]\ndebounce_ms = 900\nwatch = false",
            "[logging]\naccess_log = false",
            "[logging]\naccess_log_format = \"$status\"\naccess_log_sample = 0.5",
            "[tracing]\npropagate = false\nsample_ratio = 0.1",
            "[admin]\ntoken = \"t\"",
            "[cache.tiers.hot]\nttl_seconds = 120",
            "[server]\nclient_header_timeout_ms = 5\nnormalize_path = false",
            "[rate_limit]\nmode = \"shadow\"",
        ];
        for extra in reloadable {
            assert_eq!(
                restart_only_changes(&base, &config(extra)),
                Vec::<&str>::new(),
                "{extra}"
            );
        }
        let restart_only = [
            (
                "[admin]\nlisten = \"127.0.0.1:1\"",
                "admin.listen (and admin.enabled)",
            ),
            ("[logging]\nformat = \"json\"", "logging.format"),
            (
                "[logging]\naccess_log_path = \"stdout\"",
                "logging.access_log_path",
            ),
            (
                "[logging]\naccess_log_buffer = 5",
                "logging.access_log_buffer",
            ),
            (
                "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"",
                "tracing (otlp_endpoint, service_name, otlp_timeout_ms)",
            ),
            ("[redis]\nurl = \"redis://127.0.0.1:1\"", "redis"),
            (
                "[cache]\nnamespace = \"other\"",
                "cache (store settings; route tiers, tier TTLs and warm_urls reload)",
            ),
            ("[server]\nthreads = 7", "server.threads"),
        ];
        for (extra, key) in restart_only {
            assert_eq!(
                restart_only_changes(&base, &config(extra)),
                [key],
                "{extra}"
            );
        }
    }
}
