//! The Pingora `ProxyHttp` implementation and the per-request context. Each hook delegates:
//! routing to [`crate::router`], selection to [`crate::balancer`], header rules to [`headers`].

mod headers;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::balancer::{Lease, Tried};
use crate::router::normalize_host;
use crate::snapshot::Snapshot;

pub use headers::REQUEST_ID;

/// The proxy: reads the current [`Snapshot`] once per request.
pub struct Edge {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl Edge {
    /// A proxy serving whatever snapshot `snapshot` holds at each request's start.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Edge { snapshot }
    }
}

/// Per-request state, dropped when the request (or upgraded connection) ends.
#[derive(Default)]
pub struct RequestCtx {
    /// The snapshot this request started on.
    snapshot: Option<Arc<Snapshot>>,
    /// Index of the routed pool in `snapshot.pools`.
    pool: usize,
    /// Members already attempted.
    tried: Tried,
    /// Connection attempts made.
    attempts: u32,
    /// In-flight unit on the current backend; released on drop.
    lease: Option<Lease>,
    /// When the current attempt was sent, for latency tracking.
    attempt_started: Option<Instant>,
    /// `X-Request-Id`, passed through or generated.
    request_id: Option<HeaderValue>,
    /// Client IP (the TCP peer).
    client_ip: Option<IpAddr>,
    /// `client_ip` as a header value, for `X-Real-IP` / `X-Forwarded-For`.
    client_ip_value: Option<HeaderValue>,
    /// Whether the client connection is TLS.
    tls: bool,
}

impl RequestCtx {
    /// The pool this request was routed to. Only valid after routing succeeded.
    fn pool(&self) -> Option<&crate::snapshot::Pool> {
        self.snapshot.as_ref().map(|s| &s.pools[self.pool])
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // Pingora's default installs a (disabled) response-compression module that still runs on
        // every response header and body chunk. Sluice does not compress, so it installs none.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = Some(headers::request_id(req));
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip_value = ctx.client_ip.map(headers::ip_value);
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());

        let snapshot = self.snapshot.load_full();
        let host = normalize_host(headers::host(req));
        match snapshot.router.find(&host, req.uri.path()) {
            Some(pool) => {
                ctx.pool = pool;
                ctx.snapshot = Some(snapshot);
                Ok(false)
            }
            None => {
                respond(
                    session,
                    ctx,
                    StatusCode::NOT_FOUND,
                    "no route for this host and path\n",
                )
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let pool = ctx
            .pool()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request was not routed"))?;
        let mut key = [0u8; 16];
        let key = client_key(ctx.client_ip, &mut key);
        let tried = ctx.tried;
        let Some(idx) = pool.balancer.select(key, |i| !tried.contains(i)) else {
            // Nothing left: 503 before any attempt, 502 once every member failed.
            let status = if tried.is_empty() { 503 } else { 502 };
            return Error::e_explain(ErrorType::HTTPStatus(status), "no backend left to try");
        };
        let lease = Lease::new(&pool.balancer.slots()[idx].state);
        let peer = Box::new(pool.peers[idx].clone());
        ctx.tried.insert(idx);
        ctx.attempts += 1;
        ctx.lease = Some(lease);
        ctx.attempt_started = Some(Instant::now());
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Connect failures never reached the backend, so any method may go elsewhere.
        if ctx.pool().is_some_and(|p| ctx.attempts <= p.retries) {
            e.set_retry(true);
        }
        ctx.lease = None;
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        headers::forwarded(
            upstream_request,
            session.req_header(),
            ctx.client_ip_value.as_ref(),
            ctx.tls,
        )?;
        if let Some(id) = &ctx.request_id {
            upstream_request.insert_header(REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let (Some(lease), Some(t)) = (&ctx.lease, ctx.attempt_started) {
            lease.state().observe_latency(t.elapsed());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id {
            upstream_response.insert_header(REQUEST_ID, id.clone())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = error_status(e);
        if code != 0 && session.response_written().is_none() {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = status.canonical_reason().unwrap_or("error");
            // The connection is not reused after a failure: say so, or a client may send its
            // next request on a socket we are closing.
            session.set_keepalive(None);
            // The client may be gone already; there is nothing more to do then.
            let _ = respond(session, ctx, status, body).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, e: &Error) -> bool {
        // A client hanging up is routine at the edge, not an error worth a log line each time.
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.lease = None;
    }
}

/// The status a failed request answers with (0: the client is gone, answer nothing).
fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// The bytes `ip_hash` hashes: the client IP's octets (empty when unknown, e.g. a Unix socket).
fn client_key(ip: Option<IpAddr>, buf: &mut [u8; 16]) -> &[u8] {
    match ip {
        Some(IpAddr::V4(v4)) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        Some(IpAddr::V6(v6)) => {
            *buf = v6.octets();
            &buf[..]
        }
        None => &buf[..0],
    }
}

/// Answer the client from Sluice itself (404, 502, 503, ...), with the request id.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: StatusCode,
    body: &'static str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if let Some(id) = &ctx.request_id {
        resp.insert_header(REQUEST_ID, id.clone())?;
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.insert_header(header::RETRY_AFTER, "1")?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}
