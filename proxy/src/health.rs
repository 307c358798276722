//! Active health checks: one probe task per backend of every pool with `[upstreams.NAME.health]`,
//! run by a Pingora background service that follows the current snapshot. A backend leaves
//! rotation after `fall` failed probes and returns after `rise` good ones; each change is logged
//! as a structured event. (Passive health lives in `balancer::BackendState::record_failure`.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::Backend;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::balancer::BackendState;
use crate::config::HealthSpec;
use crate::snapshot::Snapshot;
use crate::util::clock::now_ns;

/// How often the service looks for a new snapshot (reload) to reconcile its probe tasks.
const RECONCILE_EVERY: Duration = Duration::from_millis(250);

/// The background service that owns every probe task.
pub struct HealthService {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl HealthService {
    /// Probes for whatever `snapshot` holds, following reloads.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        HealthService { snapshot }
    }
}

/// What one probe task was started for; a task is replaced when this changes.
struct Probe {
    spec: HealthSpec,
    state: Arc<BackendState>,
    /// The peer's reuse key (address, TLS settings, protocol): a change restarts the probe.
    peer: u64,
    task: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut probes: HashMap<(String, SocketAddr), Probe> = HashMap::new();
        let mut generation = 0;
        loop {
            let snapshot = self.snapshot.load_full();
            if snapshot.generation != generation {
                generation = snapshot.generation;
                reconcile(&snapshot, &mut probes);
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            }
        }
        for (_, p) in probes {
            p.task.abort();
        }
    }
}

/// Start probes for new backends, stop them for removed ones, restart changed ones. Backends
/// that stay keep their task, counters and state.
fn reconcile(snapshot: &Snapshot, probes: &mut HashMap<(String, SocketAddr), Probe>) {
    let mut wanted = HashMap::new();
    for pool in &snapshot.pools {
        let Some(spec) = &pool.health else { continue };
        for (i, slot) in pool.balancer.slots().iter().enumerate() {
            let addr = pool.peers[i]
                .address()
                .as_inet()
                .copied()
                .expect("pools hold TCP addresses");
            wanted.insert(
                (pool.name.clone(), addr),
                (
                    spec.clone(),
                    slot.state.clone(),
                    pool.names[i].clone(),
                    pool.peers[i].clone(),
                ),
            );
        }
    }
    probes.retain(|key, p| {
        let keep = wanted.get(key).is_some_and(|(spec, state, _, peer)| {
            *spec == p.spec && Arc::ptr_eq(state, &p.state) && peer.reuse_hash() == p.peer
        });
        if !keep {
            p.task.abort();
        }
        keep
    });
    for (key, (spec, state, name, peer)) in wanted {
        if probes.contains_key(&key) {
            continue;
        }
        let hash = peer.reuse_hash();
        let task = tokio::spawn(probe_loop(
            key.0.clone(),
            name,
            key.1,
            spec.clone(),
            state.clone(),
            peer,
        ));
        probes.insert(
            key,
            Probe {
                spec,
                state,
                peer: hash,
                task,
            },
        );
    }
}

/// A single probe of one backend.
enum Prober {
    Http(Box<HttpHealthCheck>),
    Tcp(Box<TcpHealthCheck>),
}

impl Prober {
    /// A probe for `spec` whose HTTP requests name `host` and go over `template`'s transport
    /// (the pool's TLS settings and protocol).
    fn new(spec: &HealthSpec, host: &str, template: HttpPeer) -> Self {
        match &spec.http_path {
            Some(path) => {
                let mut hc = HttpHealthCheck::new(host, template.is_tls());
                hc.peer_template = template;
                if let Ok(uri) = path.parse() {
                    hc.req.set_uri(uri);
                }
                hc.peer_template.options.connection_timeout = Some(spec.timeout);
                hc.peer_template.options.read_timeout = Some(spec.timeout);
                hc.peer_template.options.write_timeout = Some(spec.timeout);
                let (lo, hi) = spec.expect_status;
                hc.validator = Some(Box::new(move |resp| {
                    let s = resp.status.as_u16();
                    if (lo..=hi).contains(&s) {
                        Ok(())
                    } else {
                        Error::e_explain(
                            ErrorType::CustomCode("unexpected status", s),
                            format!("status {s}, expected {lo}-{hi}"),
                        )
                    }
                }));
                Prober::Http(Box::new(hc))
            }
            None => {
                let mut hc = TcpHealthCheck::new();
                hc.peer_template.options.connection_timeout = Some(spec.timeout);
                Prober::Tcp(hc)
            }
        }
    }

    /// Probe `target`; the whole probe is bounded by `timeout`. `Err` carries the reason.
    async fn probe(&self, target: &Backend, timeout: Duration) -> Result<(), String> {
        let check = async {
            match self {
                Prober::Http(hc) => hc.check(target).await,
                Prober::Tcp(hc) => hc.check(target).await,
            }
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }
}

/// Probe one backend every `interval` for as long as the task lives.
async fn probe_loop(
    pool: String,
    backend: String,
    addr: SocketAddr,
    spec: HealthSpec,
    state: Arc<BackendState>,
    template: HttpPeer,
) {
    let prober = Prober::new(&spec, &backend, template);
    let target = Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(addr),
        weight: 1,
        ext: http::Extensions::new(),
    };
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut tick = tokio::time::interval(spec.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let verdict = prober.probe(&target, spec.timeout).await;
        state.mark_probed();
        match verdict {
            Ok(()) => {
                successes = successes.saturating_add(1);
                failures = 0;
                if successes >= spec.rise && state.set_probe_up(true, now_ns()) {
                    info!(
                        event = "health_changed",
                        pool = %pool,
                        backend = %backend,
                        reason = "probe succeeded",
                        old = "unhealthy",
                        new = "healthy",
                        successes,
                        "backend back in rotation"
                    );
                }
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                successes = 0;
                if failures >= spec.fall && state.set_probe_up(false, now_ns()) {
                    warn!(
                        event = "health_changed",
                        pool = %pool,
                        backend = %backend,
                        reason = %reason,
                        old = "healthy",
                        new = "unhealthy",
                        failures,
                        "backend left rotation"
                    );
                }
            }
        }
    }
}
