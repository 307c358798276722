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
    Grpc(Box<GrpcCheck>),
}

/// `kind = "grpc"`: `grpc.health.v1.Health/Check` over HTTP/2 on a new connection.
struct GrpcCheck {
    /// The pool's peer (TLS settings), always speaking HTTP/2.
    peer: HttpPeer,
    /// `:authority` of the call.
    host: String,
    /// The request message, framed (5-byte gRPC prefix + protobuf `HealthCheckRequest`).
    request: bytes::Bytes,
}

/// One connector for every gRPC probe (building one reads the system's CA store).
fn grpc_connector() -> &'static pingora::connectors::http::Connector {
    static CONNECTOR: std::sync::OnceLock<pingora::connectors::http::Connector> =
        std::sync::OnceLock::new();
    CONNECTOR.get_or_init(|| pingora::connectors::http::Connector::new(None))
}

impl GrpcCheck {
    fn new(template: HttpPeer, host: &str, service: &str, timeout: Duration) -> Self {
        let mut peer = template;
        peer.options.alpn = pingora::protocols::ALPN::H2;
        peer.options.connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        // HealthCheckRequest { string service = 1; } (a service name is short: one-byte length).
        let mut msg = Vec::with_capacity(2 + service.len());
        if !service.is_empty() {
            msg.push(0x0a);
            msg.push(service.len().min(127) as u8);
            msg.extend_from_slice(&service.as_bytes()[..service.len().min(127)]);
        }
        let mut framed = Vec::with_capacity(5 + msg.len());
        framed.push(0);
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(&msg);
        GrpcCheck {
            peer,
            host: host.to_owned(),
            request: framed.into(),
        }
    }

    async fn check(&self, target: &Backend) -> Result<(), String> {
        use pingora::protocols::http::client::HttpSession;
        let mut peer = self.peer.clone();
        peer._address = target.addr.clone();
        // The template's frozen reuse hash covers its address: take it anew.
        peer.freeze_reuse_hash();
        let (mut session, _) = grpc_connector()
            .get_http_session(&peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut req =
            pingora::http::RequestHeader::build("POST", b"/grpc.health.v1.Health/Check", Some(4))
                .map_err(|e| e.to_string())?;
        for (k, v) in [
            ("host", self.host.as_str()),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ] {
            req.insert_header(k, v).map_err(|e| e.to_string())?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        session
            .write_request_body(self.request.clone(), true)
            .await
            .map_err(|e| e.to_string())?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let head = session
            .response_header()
            .ok_or("no response header")?
            .clone();
        if head.status != 200 {
            return Err(format!("HTTP status {}", head.status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
        {
            body.extend_from_slice(&chunk);
            if body.len() > 4096 {
                return Err("health answer too large".into());
            }
        }
        // grpc-status comes in the trailers, or in the only header block (Trailers-Only).
        let trailers = match &mut session {
            HttpSession::H2(h2) => h2.read_trailers().await.map_err(|e| e.to_string())?,
            _ => None,
        };
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| head.headers.get("grpc-status"))
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match status.as_deref() {
            Some("0") => {}
            Some(code) => return Err(format!("grpc-status {code}")),
            None => return Err("no grpc-status".into()),
        }
        // HealthCheckResponse { ServingStatus status = 1; }: SERVING is 1.
        match serving_status(&body) {
            Some(1) => Ok(()),
            Some(s) => Err(format!("serving status {s}, expected 1 (SERVING)")),
            None => Err("malformed health answer".into()),
        }
    }
}

/// The `status` field of a framed `HealthCheckResponse` (0, UNKNOWN, when absent).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let len = u32::from_be_bytes(framed.get(1..5)?.try_into().ok()?) as usize;
    let mut msg = framed.get(5..5 + len)?;
    let mut status = 0;
    while let Some((&tag, rest)) = msg.split_first() {
        let (value, rest) = varint(rest)?;
        match tag {
            0x08 => {
                status = value;
                msg = rest;
            }
            // Another varint field.
            t if t & 7 == 0 => msg = rest,
            // A length-delimited field.
            t if t & 7 == 2 => msg = rest.get(value as usize..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// A protobuf varint and what follows it.
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

impl Prober {
    /// A probe for `spec` whose HTTP requests name `host` and go over `template`'s transport
    /// (the pool's TLS settings and protocol).
    fn new(spec: &HealthSpec, host: &str, template: HttpPeer) -> Self {
        if let Some(service) = &spec.grpc_service {
            return Prober::Grpc(Box::new(GrpcCheck::new(
                template,
                host,
                service,
                spec.timeout,
            )));
        }
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
                Prober::Grpc(g) => return g.check(target).await,
            }
            .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_status_is_read_from_a_framed_health_answer() {
        // SERVING, NOT_SERVING, and the default (field absent: UNKNOWN).
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // An unknown length-delimited field is skipped.
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]),
            Some(1)
        );
        // Truncated frames and messages.
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0]), None);
        assert_eq!(serving_status(&[0, 0, 0, 0, 1, 0x08]), None);
    }

    #[test]
    fn the_check_request_names_the_service() {
        let peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        let c = GrpcCheck::new(peer.clone(), "h", "", Duration::from_secs(1));
        assert_eq!(&c.request[..], &[0, 0, 0, 0, 0]);
        let c = GrpcCheck::new(peer, "h", "pkg.Svc", Duration::from_secs(1));
        assert_eq!(&c.request[..7], &[0, 0, 0, 0, 9, 0x0a, 7]);
        assert_eq!(&c.request[7..], b"pkg.Svc");
    }
}
