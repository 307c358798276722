//! backend-sample: the upstream server Sluice's tests, benchmarks and demo run behind it.
//!
//! Every response carries `x-backend-id`. Endpoints:
//! Plain listeners speak HTTP/1.1 and HTTP/2 with prior knowledge (h2c); with `--tls-cert`
//! the listener is TLS only and offers `h2` and `http/1.1` by ALPN (`--client-ca` then asks
//! every client for a certificate signed by that CA).
//!
//! - any other path: 200 JSON echo `{id, method, path, query, version, headers}` (`version`:
//!   `HTTP/1.1` or `HTTP/2.0`); POST/PUT/PATCH add the
//!   body's `body_len` and `body_sha256` (streamed, so 100 MB uploads use flat memory);
//! - `GET /health`: 200, or whatever `POST /control/health?status=503` set;
//! - `GET /delay/{ms}`, `GET /status/{code}`, `GET /bytes/{n}` (n pseudo-random bytes from
//!   [`Pattern`], streamed; `?seed=` picks the stream);
//! - `GET /cache/{seconds}`: `Cache-Control: public, max-age=…` with an `ETag`, 304 on a
//!   matching `If-None-Match`;
//! - `GET /ws`: WebSocket echo whose first message names the backend;
//! - `GET /ws/broadcast`: WebSocket whose text messages reach every broadcast client, on every
//!   instance when started with `--redis URL` (see [`broadcast`]);
//! - `GET /ping`: 200 `pong`, the cheapest answer (benchmarks);
//! - gRPC `grpc.health.v1.Health/Check` and `/Watch` (HTTP/2 only): `SERVING` for the server
//!   (`""`) while `/health` answers 2xx, `NOT_SERVING` otherwise; `NOT_FOUND` for other names;
//! - `GET /json/{n}`: an `n`-byte JSON array of records, the same each time (compression);
//! - `/respond/{anything}?name=value&...` (any method): 200 whose response headers are the query pairs
//!   (e.g. `cache-control=no-store`, `vary=accept`), plus `x-served: N` (how many times this path
//!   was served, also in the body) so a test can tell a cached answer from a fresh one; a
//!   request whose `If-None-Match` / `If-Modified-Since` equals the given `etag` /
//!   `last-modified` gets a 304;
//! - `GET /control/stats` (requests served per path), `POST /control/reset`,
//!   `POST /control/delay?ms=N` (added to every non-control request),
//!   `POST /control/fail?status=N` (every non-control request except `/health` answers N;
//!   0 turns it off).

pub mod broadcast;
pub mod cli;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The response header that names the backend.
pub const BACKEND_ID: &str = "x-backend-id";

/// Shared state of one backend instance.
#[derive(Debug)]
pub struct Shared {
    id: String,
    id_header: HeaderValue,
    health_status: AtomicU16,
    delay_ms: AtomicU64,
    fail_status: AtomicU16,
    served: Mutex<BTreeMap<String, u64>>,
    broadcast: broadcast::Broadcast,
    /// The gRPC health service's statuses (`""`: the whole server; follows `set_health`).
    grpc_health: tonic_health::server::HealthReporter,
}

impl Shared {
    /// A fresh state for backend `id`, broadcasting within this instance only.
    pub fn new(id: &str) -> Arc<Self> {
        Self::with_broadcast(id, broadcast::Broadcast::default())
    }

    /// A fresh state for backend `id` using `broadcast` for `/ws/broadcast`.
    pub fn with_broadcast(id: &str, broadcast: broadcast::Broadcast) -> Arc<Self> {
        Arc::new(Shared {
            id: id.to_owned(),
            id_header: HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid")),
            health_status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            fail_status: AtomicU16::new(0),
            served: Mutex::new(BTreeMap::new()),
            broadcast,
            grpc_health: tonic_health::server::HealthReporter::new(),
        })
    }

    /// Requests served per path so far (control endpoints excluded).
    pub fn served(&self) -> BTreeMap<String, u64> {
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Total requests served (control endpoints excluded).
    pub fn total(&self) -> u64 {
        self.served().values().sum()
    }

    /// Set what `GET /health` answers; the gRPC health of `""` (the server) follows: `SERVING`
    /// for a 2xx status, `NOT_SERVING` otherwise.
    pub fn set_health(&self, status: u16) {
        self.health_status.store(status, Relaxed);
        let serving = if (200..300).contains(&status) {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        let reporter = self.grpc_health.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { reporter.set_service_status("", serving).await });
        }
    }

    /// Make every non-control request except `/health` answer `status` (0: off).
    pub fn set_fail_status(&self, status: u16) {
        self.fail_status.store(status, Relaxed);
    }

    /// Add `ms` of delay before every non-control response.
    pub fn set_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Relaxed);
    }
}

/// The axum application for `shared`.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ping", get(|| async { "pong" }))
        .route("/delay/{ms}", get(delay))
        .route("/status/{code}", get(status))
        .route("/bytes/{n}", get(bytes_n))
        .route("/json/{n}", get(json_n))
        .route("/cache/{seconds}", get(cache))
        .route("/respond/{*rest}", any(respond))
        .route("/ws", get(ws))
        .route("/ws/broadcast", get(ws_broadcast))
        .route("/control/stats", get(stats))
        .route("/control/reset", post(reset))
        .route("/control/health", post(control_health))
        .route("/control/delay", post(control_delay))
        .route("/control/fail", post(control_fail))
        .route_service("/grpc.health.v1.Health/{*method}", grpc_health(&shared))
        .fallback(any(echo))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            tag_and_count,
        ))
        .with_state(shared)
}

/// The gRPC service `grpc.health.v1.Health` (unary `Check`, server-streaming `Watch`), whose
/// server status follows `POST /control/health`; reached over HTTP/2 (h2c or TLS with ALPN h2).
fn grpc_health(
    shared: &Shared,
) -> tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> {
    tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(shared.grpc_health.clone()),
    )
}

/// Name the backend on every response, count non-control requests, apply the configured delay.
async fn tag_and_count(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/control/") {
        *s.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_owned())
            .or_default() += 1;
        let d = s.delay_ms.load(Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        let fail = s.fail_status.load(Relaxed);
        if fail != 0 && path != "/health" {
            let code = StatusCode::from_u16(fail).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (code, format!("failing with {fail}\n")).into_response();
            resp.headers_mut().insert(BACKEND_ID, s.id_header.clone());
            return resp;
        }
    }
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(BACKEND_ID, s.id_header.clone());
    resp
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let code = StatusCode::from_u16(s.health_status.load(Relaxed)).unwrap_or(StatusCode::OK);
    (code, if code.is_success() { "ok" } else { "unhealthy" }).into_response()
}

#[derive(Deserialize)]
struct StatusParam {
    status: u16,
}

async fn control_health(State(s): State<Arc<Shared>>, Query(q): Query<StatusParam>) -> Response {
    if StatusCode::from_u16(q.status).is_err() {
        return (StatusCode::BAD_REQUEST, "status must be 100..=999").into_response();
    }
    s.set_health(q.status);
    Json(json!({"id": s.id, "health": q.status})).into_response()
}

#[derive(Deserialize)]
struct MsParam {
    ms: u64,
}

async fn control_delay(State(s): State<Arc<Shared>>, Query(q): Query<MsParam>) -> Response {
    s.set_delay_ms(q.ms);
    Json(json!({"id": s.id, "delay_ms": q.ms})).into_response()
}

async fn control_fail(State(s): State<Arc<Shared>>, Query(q): Query<StatusParam>) -> Response {
    if q.status != 0 && StatusCode::from_u16(q.status).is_err() {
        return (StatusCode::BAD_REQUEST, "status must be 0 or 100..=999").into_response();
    }
    s.set_fail_status(q.status);
    Json(json!({"id": s.id, "fail": q.status})).into_response()
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let served = s.served();
    let total: u64 = served.values().sum();
    Json(json!({"id": s.id, "total": total, "paths": served})).into_response()
}

async fn reset(State(s): State<Arc<Shared>>) -> Response {
    s.served.lock().unwrap_or_else(|e| e.into_inner()).clear();
    Json(json!({"id": s.id, "reset": true})).into_response()
}

async fn delay(Path(ms): Path<u64>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
    format!("delayed {ms} ms\n").into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(c) => (c, format!("status {code}\n")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "status must be 100..=999\n").into_response(),
    }
}

#[derive(Deserialize)]
struct SeedParam {
    seed: Option<u64>,
}

/// A JSON array of records, `n` bytes long (at most 16 MiB), the same on every call: a
/// realistic API body for compression benchmarks and tests.
async fn json_n(Path(n): Path<usize>) -> Response {
    let n = n.min(16 << 20);
    let mut body = String::with_capacity(n + 64);
    body.push('[');
    let mut i = 0u64;
    while body.len() + 80 < n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"price\":{}.{:02},\"in_stock\":{}}}",
            i * 7 % 1000,
            i * 13 % 100,
            i % 3 != 0
        ));
        i += 1;
    }
    body.push(']');
    while body.len() < n {
        body.push(' ');
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Streams `n` bytes of [`Pattern`] in 64 KiB chunks.
async fn bytes_n(Path(n): Path<u64>, Query(q): Query<SeedParam>) -> Response {
    let mut pattern = Pattern::new(q.seed.unwrap_or(0));
    let mut left = n;
    let stream = futures_util::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = left.min(64 * 1024) as usize;
        left -= len as u64;
        let mut buf = vec![0u8; len];
        pattern.fill(&mut buf);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(Bytes::from(buf))))
    });
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

async fn cache(Path(seconds): Path<u64>, headers: HeaderMap) -> Response {
    let etag = format!("\"c{seconds}\"");
    let cc = format!("public, max-age={seconds}");
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let status = if matches {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let body = if matches {
        String::new()
    } else {
        format!("cacheable for {seconds} s\n")
    };
    (
        status,
        [(header::CACHE_CONTROL, cc), (header::ETAG, etag)],
        body,
    )
        .into_response()
}

async fn respond(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let n = s.served().get(&path).copied().unwrap_or(0);
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
    // A conditional request that matches the given validators gets a 304 (with the headers).
    let given = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let asked = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag_match = given("etag").is_some() && given("etag") == asked(header::IF_NONE_MATCH);
    let date_match = given("last-modified").is_some()
        && given("last-modified") == asked(header::IF_MODIFIED_SINCE);
    let mut resp = if etag_match || date_match {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        format!("{} {path} #{n}\n", s.id).into_response()
    };
    resp.headers_mut().insert("x-served", HeaderValue::from(n));
    for (k, v) in query {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

async fn ws(State(s): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(64 << 20)
        .on_upgrade(move |socket| ws_echo(socket, s.id.clone()))
}

async fn ws_echo(mut socket: WebSocket, id: String) {
    if socket
        .send(Message::Text(format!("hello from {id}").into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            // Answer at once: the library's automatic pong is only flushed by the next write.
            Message::Ping(payload) => Message::Pong(payload),
            Message::Pong(_) => continue,
            // The library answers the close (echoing its code) and ends the stream.
            Message::Close(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}

async fn ws_broadcast(State(s): State<Arc<Shared>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| ws_broadcast_client(socket, s))
}

/// Relay between one broadcast client and the shared channel.
async fn ws_broadcast_client(mut socket: WebSocket, s: Arc<Shared>) {
    let mut rx = s.broadcast.subscribe();
    if socket
        .send(Message::Text(format!("hello from {}", s.id).into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => s.broadcast.publish(t.to_string()).await,
                Some(Ok(Message::Ping(p))) => {
                    if socket.send(Message::Pong(p)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Ok(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                // A slow client skips what it missed rather than stalling everyone.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// JSON echo of the request; request bodies are hashed as they stream in.
async fn echo(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let mut out = json!({
        "id": s.id,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
    });
    if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    len += c.len() as u64;
                    hasher.update(&c);
                }
                Err(e) => {
                    return (StatusCode::BAD_REQUEST, format!("body error: {e}\n")).into_response()
                }
            }
        }
        out["body_len"] = json!(len);
        out["body_sha256"] = json!(hex::encode(hasher.finalize()));
    }
    Json(out).into_response()
}

/// A deterministic pseudo-random byte stream (xorshift64*), so a client can check a large body
/// byte for byte without the server sending a digest.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
}

impl Pattern {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Pattern {
            state: seed ^ 0x9e37_79b9_7f4a_7c15 | 1,
        }
    }

    /// Fill `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Serve `shared` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serve `shared` over TLS on `listener` until `shutdown`: each accepted connection is
/// handshaken with `tls` and then served as HTTP/1.1 or HTTP/2 (by ALPN). A failed handshake
/// closes that connection only. Open connections are dropped with the returned future.
pub async fn serve_tls(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(app(shared));
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: keep serving the open connections.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            // Reap finished connection tasks.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        conns.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A rustls server config for `--tls-cert`/`--tls-key` (PEM files), offering `h2` and
/// `http/1.1`, and asking for a client certificate signed by `client_ca` when given.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                roots
                    .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A backend running in the current tokio runtime; stops when dropped.
#[derive(Debug)]
pub struct Handle {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The backend's state, for reading counters and flipping health in tests.
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Handle {
    /// Bind `addr` (port 0 for a free one) and serve as backend `id` on the current runtime.
    pub async fn spawn(addr: SocketAddr, id: &str) -> std::io::Result<Handle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(id);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, shared.clone(), async {
            let _ = rx.await;
        }));
        Ok(Handle {
            addr,
            shared,
            stop: Some(tx),
            task,
        })
    }

    /// Stop accepting and abort open connections.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_chunking_does_not_matter() {
        let mut a = vec![0u8; 1000];
        Pattern::new(7).fill(&mut a);
        let mut b = vec![0u8; 1000];
        let mut p = Pattern::new(7);
        p.fill(&mut b[..8]);
        p.fill(&mut b[8..]);
        assert_eq!(a, b);
        let mut c = vec![0u8; 1000];
        Pattern::new(8).fill(&mut c);
        assert_ne!(a, c);
    }
}
