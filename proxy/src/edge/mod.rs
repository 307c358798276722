//! The Pingora `ProxyHttp` implementation and the per-request context. Each hook delegates:
//! routing to [`crate::router`], selection to [`crate::balancer`], header rules to [`headers`].

mod grpc;
mod headers;
mod limits;
mod retry;
mod rules;

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};
use tracing::warn;

use crate::accesslog;
use crate::balancer::{Lease, Tried};
use crate::cache::{self, CacheLayer, CacheRule};
use crate::metrics::{GaugeGuard, LimitResult, Method, Metrics};
use crate::ratelimit::RateLimiter;
use crate::router::normalize_host;
use crate::snapshot::Snapshot;
use crate::util::clock::{between, now_ns};

pub use headers::{strip_response_hop_by_hop, REQUEST_ID};
pub use retry::Failure;

/// The proxy: reads the current [`Snapshot`] once per request.
pub struct Edge {
    snapshot: Arc<ArcSwap<Snapshot>>,
    limiter: Arc<RateLimiter>,
    cache: &'static CacheLayer,
    metrics: &'static Metrics,
    /// Set once a graceful stop began: every response then closes its connection.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The access log's writer.
    access_log: Arc<accesslog::Sink>,
    /// The OTLP span exporter, when configured.
    spans: Option<Arc<crate::otel::SpanExport>>,
    /// HTTP-01 answers of ACME orders in progress.
    acme: Arc<crate::acme::Challenges>,
}

/// What the proxy shares with the rest of the process, handed to [`Edge::new`].
pub struct EdgeParts {
    /// The snapshot each request starts on.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Rate limiting.
    pub limiter: Arc<RateLimiter>,
    /// The response cache.
    pub cache: &'static CacheLayer,
    /// The request-path metric families.
    pub metrics: &'static Metrics,
    /// Set once a graceful stop began.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The access log's writer.
    pub access_log: Arc<accesslog::Sink>,
    /// The OTLP span exporter, when configured.
    pub spans: Option<Arc<crate::otel::SpanExport>>,
    /// HTTP-01 answers of ACME orders in progress.
    pub acme: Arc<crate::acme::Challenges>,
}

impl Edge {
    /// A proxy serving whatever snapshot `p.snapshot` holds at each request's start, limiting
    /// rates through `p.limiter`, caching in `p.cache`, counting in `p.metrics`.
    pub fn new(p: EdgeParts) -> Self {
        Edge {
            snapshot: p.snapshot,
            limiter: p.limiter,
            cache: p.cache,
            metrics: p.metrics,
            draining: p.draining,
            access_log: p.access_log,
            spans: p.spans,
            acme: p.acme,
        }
    }
}

/// Per-request state, dropped when the request (or upgraded connection) ends.
#[derive(Default)]
pub struct RequestCtx {
    /// The snapshot this request started on.
    snapshot: Option<Arc<Snapshot>>,
    /// Index of the routed pool in `snapshot.pools`.
    pool: usize,
    /// The matched route's index.
    route: Option<usize>,
    /// The request asks for a protocol upgrade (WebSocket).
    upgrade: bool,
    /// `X-Request-Id`, passed through or generated.
    request_id: Option<HeaderValue>,
    /// The W3C trace this request belongs to and Sluice's span (`[tracing] propagate`).
    trace: Option<crate::tracectx::TraceContext>,
    /// The client's `traceparent` was invalid: its `tracestate` is not passed on.
    drop_tracestate: bool,
    /// Client IP (the TCP peer).
    client_ip: Option<IpAddr>,
    /// Whether the client connection is TLS.
    tls: bool,
    /// The verified client certificate's subject and the index of its listener in
    /// `snapshot.client_subject` (boxed: only mTLS requests have one).
    client_subject: Option<Box<(usize, HeaderValue)>>,
    /// The HTTP status Sluice's own answer to a gRPC request stands for (0: none): the client
    /// got 200 with a `grpc-status` (atomic: answers take the context shared).
    grpc_answer: std::sync::atomic::AtomicU16,
    /// When the request header had been read ([`now_ns`]).
    started: u64,
    /// This request's unit of the in-flight gauge.
    _in_flight: Option<GaugeGuard<'static>>,
    /// This connection's unit of the open-WebSockets gauge, once upgraded.
    websocket: Option<GaugeGuard<'static>>,
    /// Backend attempts: selection, failover and passive health.
    attempt: Attempt,
    /// The response cache's part of the request.
    cache: CacheCtx,
    /// Rate limiting's part of the request.
    limits: LimitCtx,
    /// The route rules' part of the request.
    rules: RulesCtx,
}

/// What the route's rules decided for the request.
#[derive(Default)]
pub(crate) struct RulesCtx {
    /// The client address after `trusted_proxies`, when a rule needed it.
    client_ip: Option<IpAddr>,
    /// The request came from an allowed CORS origin: its response gets the CORS fields.
    cors_allowed: bool,
    /// The route's `max_body_bytes`, for a body of unknown length.
    body_limit: Option<u64>,
    /// Body bytes read so far (counted only with a limit).
    body_seen: u64,
    /// The response body's encoder, when the route compresses this response.
    encoder: Option<Box<dyn pingora::protocols::http::compression::Encode + Send + Sync>>,
}

/// The attempts of one request on its pool's backends.
#[derive(Default)]
struct Attempt {
    /// Members already attempted.
    tried: Tried,
    /// Connection attempts made.
    attempts: u32,
    /// Member index of the current attempt.
    current: Option<usize>,
    /// When the first attempt started (for `retry_timeout_ms`; [`now_ns`], 0 before).
    first_attempt: u64,
    /// The current attempt's response status was turned into a retry.
    status_retry: bool,
    /// A pooled connection already failed under this request and was retried (at most once).
    stale_retried: bool,
    /// The retry after a stale pooled connection asked for a new connection.
    fresh_peer: bool,
    /// In-flight unit on the current backend; released on drop.
    lease: Option<Lease>,
    /// When the current attempt was sent, for latency tracking ([`now_ns`], 0 before).
    attempt_started: u64,
    /// The last attempt that got a response head: from its start to the head (access log).
    upstream_took: Option<std::time::Duration>,
    /// The current attempt's response head arrived: what fails after it (a body cut short, a
    /// WebSocket closed after its 101) is never counted against the backend's health.
    response_started: bool,
    /// The attempt failed while the client had not finished sending its request body (a slow
    /// or stalled client, not a slow backend): answered 408, never counted or retried.
    client_stalled: bool,
}

/// The response cache's part of one request.
#[derive(Default)]
struct CacheCtx {
    /// The route's cache rule, when this request may be served from or stored in the cache.
    rule: Option<CacheRule>,
    /// The route caches but this request may not use the cache (method, upgrade).
    bypass: bool,
    /// The cross-instance fill lock this request holds (key, token).
    fill_lock: Option<(CacheKey, u64)>,
    /// Answered from an entry another instance stored while this one waited.
    peer_filled: bool,
    /// The header fields of a 304 that revalidated the stored response.
    not_modified: Option<Box<http::HeaderMap>>,
}

/// Rate limiting's part of one request.
#[derive(Default)]
struct LimitCtx {
    /// The rate-limit decision, for response headers.
    rate: Option<limits::RateInfo>,
    /// How rate limiting judged the request, for the access log.
    result: Option<LimitResult>,
}

impl RequestCtx {
    /// The route this request matched, once routed.
    fn route(&self) -> Option<&crate::snapshot::Route> {
        match (&self.snapshot, self.route) {
            (Some(s), Some(r)) => s.routes.get(r),
            _ => None,
        }
    }

    /// The pool this request was routed to. Only valid after routing succeeded.
    fn pool(&self) -> Option<&crate::snapshot::Pool> {
        self.snapshot.as_ref().map(|s| &s.pools[self.pool])
    }

    /// Count a failure of the current attempt in the passive health table, logging an ejection.
    /// As nginx does, the pool's last available backend is never ejected passively: ejecting it
    /// would turn a failing backend into no backend (503 for everyone for `fail_timeout`).
    fn record_failure(&self, failure: Failure) {
        let (Some(pool), Some(idx)) = (self.pool(), self.attempt.current) else {
            return;
        };
        let now = now_ns();
        let slots = pool.balancer.slots();
        let state = &slots[idx].state;
        let others = || {
            slots
                .iter()
                .enumerate()
                .any(|(i, s)| i != idx && s.state.available(now))
        };
        if state.record_failure(now, pool.passive, others) {
            warn!(
                event = "backend_ejected",
                pool = %pool.name,
                backend = %pool.names[idx],
                reason = failure.label(),
                old = "available",
                new = "ejected",
                for_ms = pool.passive.fail_timeout.as_millis() as u64,
                "backend ejected after {} failures",
                pool.passive.max_fails
            );
        }
    }

    /// Whether `e` is a reused (pooled) upstream connection found closed before any response
    /// byte, on an idempotent request whose body can be replayed, for the first time in this
    /// request. Pingora marks such errors `RetryType::ReusedOnly`.
    fn stale_connection(&self, e: &Error, session: &Session, client_reused: bool) -> bool {
        client_reused
            && !self.attempt.stale_retried
            && matches!(e.retry, pingora::RetryType::ReusedOnly)
            && e.esource() == &ErrorSource::Upstream
            && replayable(session)
    }

    /// Whether another attempt may follow `failure`. `session` is given when the attempt may
    /// have reached the backend: then only idempotent methods with a fully buffered body are
    /// retried, and never once response bytes went to the client. Spends the retry budget.
    fn may_retry(&self, failure: Failure, session: Option<&Session>) -> bool {
        let Some(pool) = self.pool() else {
            return false;
        };
        if !failure.retried_by(&pool.next_upstream) || self.attempt.attempts > pool.retries {
            return false;
        }
        let now = now_ns();
        if !pool
            .balancer
            .has_candidate(&self.attempt.tried, now, pool.pick)
        {
            // Nobody else to try: let the real failure (504, the backend's 503, ...) through.
            return false;
        }
        if let (Some(limit), first @ 1..) = (pool.retry_timeout, self.attempt.first_attempt) {
            if between(first, now) > limit {
                return false;
            }
        }
        if session.is_some_and(|s| !replayable(s)) {
            return false;
        }
        let ok = pool.retry_budget.try_withdraw(now / 1_000_000);
        if ok {
            if let Some(idx) = self.attempt.current {
                pool.balancer.slots()[idx].state.count_retry();
            }
        }
        ok
    }
}

/// Whether a request the backend may have seen can be sent again: an idempotent method, the
/// whole body in Pingora's replay buffer, and nothing of the response sent to the client yet.
fn replayable(session: &Session) -> bool {
    is_idempotent(&session.req_header().method)
        && !session.as_ref().retry_buffer_truncated()
        && session.response_written().is_none()
}

/// Methods safe to send twice (RFC 9110 §9.2.2), minus the rarely proxied TRACE.
fn is_idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
    )
}

#[async_trait]
impl ProxyHttp for Edge {
    // Boxed: Pingora moves the context by value into and between its request futures, and
    // at 600 bytes those copies cost more than one allocation (callgrind: six more memcpy calls
    // per request than the floor's `()` context, about 500 instructions; boxed, 330 fewer per request in all).
    type CTX = Box<RequestCtx>;

    fn new_ctx(&self) -> Self::CTX {
        Box::new(RequestCtx {
            started: now_ns(),
            _in_flight: Some(self.metrics.request_guard()),
            ..RequestCtx::default()
        })
    }

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {
        // Pingora's default installs a (disabled) response-compression module that still runs on
        // every response header and body chunk. Sluice does not compress, so it installs none.
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // HTTP/1.1 pipelining (RFC 9112 9.3.2), as nginx serves it: a request that arrives
        // behind this one on the connection is answered after it, in order, instead of the
        // connection closing after a `keep-alive` answer and the request being lost (Pingora's
        // default). Sequential: the next request is read once this one's answer is written.
        session.downstream_session.set_pipelining_enabled(true);
        ctx.request_id = Some(headers::request_id(session.req_header()));
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            // Draining: this answer closes the connection, so the client's next request goes
            // to another instance.
            session.set_keepalive(None);
        }

        let snapshot = self.snapshot.load_full();
        if snapshot.acme_http01 && !ctx.tls {
            let path = session.req_header().uri.path();
            if let Some(token) = path.strip_prefix(crate::acme::CHALLENGE_PREFIX) {
                // An ACME CA validating an order (HTTP-01): answered before routing, so that
                // no redirect or rule gets in the way.
                let (status, body) = match Box::pin(self.acme.answer(token)).await {
                    Some(key_authorization) => (StatusCode::OK, Bytes::from(key_authorization)),
                    None => (
                        StatusCode::NOT_FOUND,
                        Bytes::from_static(b"no such challenge\n"),
                    ),
                };
                Box::pin(respond(session, ctx, status, body, "text/plain", &[])).await?;
                return Ok(true);
            }
        }
        if ctx.tls && !snapshot.client_subject.is_empty() {
            ctx.client_subject = headers::client_subject(session, &snapshot.client_subject);
        }
        if snapshot.trace_propagate {
            let (t, drop) =
                headers::trace_context(session.req_header(), snapshot.trace_sample_ratio);
            ctx.trace = Some(t);
            ctx.drop_tracestate = drop;
        }
        if snapshot.normalize_path {
            if let Err(why) = normalize_path(session) {
                Box::pin(respond(
                    session,
                    ctx,
                    StatusCode::BAD_REQUEST,
                    Bytes::from(format!("bad request path: {why}\n")),
                    "text/plain; charset=utf-8",
                    &[],
                ))
                .await?;
                return Ok(true);
            }
        }
        if let Some(t) = snapshot.client_body_timeout {
            session.set_read_timeout(Some(t));
        }
        let req = session.req_header();
        let host = if snapshot.router.matches_hosts() {
            normalize_host(headers::host(req))
        } else {
            std::borrow::Cow::Borrowed("")
        };
        match snapshot
            .router
            .find(&host, req.uri.path(), ctx.tls, &req.method, &req.headers)
        {
            Some(route) => {
                let r = &snapshot.routes[route];
                if let Some(answer) = r
                    .rules_on
                    .request
                    .then(|| rules::on_request(session, ctx, &snapshot, r))
                    .flatten()
                {
                    Box::pin(rules::send(session, ctx, answer)).await?;
                    ctx.route = Some(route);
                    ctx.snapshot = Some(snapshot);
                    return Ok(true);
                }
                let Some(pool) = r.upstream else {
                    // Validation gives every route without an upstream a redirect.
                    return Error::e_explain(ErrorType::InternalError, "route has no upstream");
                };
                ctx.upgrade = session.is_upgrade_req();
                let method = &session.req_header().method;
                if snapshot.routes[route].cache.is_some() {
                    if !ctx.upgrade && (method == http::Method::GET || method == http::Method::HEAD)
                    {
                        ctx.cache.rule = snapshot.routes[route].cache;
                    } else {
                        ctx.cache.bypass = true;
                    }
                }
                if ctx.upgrade {
                    // Replaces Pingora's 60 s downstream read timeout for the upgraded connection.
                    let idle = snapshot.pools[pool].websocket_idle_timeout;
                    session.set_read_timeout(Some(idle));
                }
                ctx.pool = pool;
                ctx.route = Some(route);
                // A background revalidation (stale-while-revalidate) replays a request that was
                // already limited; it must not count again.
                let background = session.subrequest_ctx.is_some();

                // Boxed, like every rarely taken await below: an async hook's future is as
                // large as its largest await and is built and copied on every request.
                if !background
                    && snapshot.rate_limit.is_some()
                    && Box::pin(limits::apply(&self.limiter, &snapshot, route, session, ctx))
                        .await?
                {
                    return Ok(true);
                }
                ctx.snapshot = Some(snapshot);
                Ok(false)
            }
            None => {
                Box::pin(respond(
                    session,
                    ctx,
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(b"no route for this host and path\n"),
                    "text/plain; charset=utf-8",
                    &[],
                ))
                .await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if ctx.cache.rule.is_some() {
            session
                .cache
                .enable(self.cache.storage, None, None, Some(self.cache.lock), None);
            session
                .cache
                .set_max_file_size_bytes(self.cache.max_object_bytes);
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        let req = session.req_header();
        let host = normalize_host(headers::host(req));
        Ok(cache::key(req, &host, ctx.tls, &self.cache.key_rules))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let Some(rule) = &ctx.cache.rule else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let auth = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        let merged;
        let resp = match ctx.cache.not_modified.take() {
            Some(fields) => {
                merged = cache::merge_304(resp, &fields);
                &merged
            }
            None => resp,
        };
        let mut decision = cache::cacheability(resp, auth, rule, self.cache.targeted.as_deref());
        if let RespCacheable::Cacheable(meta) = &mut decision {
            let route_tags = match (&ctx.snapshot, ctx.route) {
                (Some(s), Some(r)) => s.routes[r].cache_tags.as_slice(),
                _ => &[],
            };
            cache::tag_entry(meta, route_tags, &self.cache.tag_headers);
        }
        Ok(decision)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<bool> {
        if ctx.cache.rule.is_none() || self.cache.redis.is_none() {
            return Ok(true);
        }
        let id = ctx.request_id.as_ref().map(|id| (REQUEST_ID, id));
        match Box::pin(self.cache.fill_from_peer(session, id)).await? {
            cache::PeerFill::Fetch(lock) => {
                ctx.cache.fill_lock = lock;
                Ok(true)
            }
            cache::PeerFill::Served => {
                ctx.cache.peer_filled = true;
                Ok(false)
            }
        }
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: pingora-cache already checked the entry's window.
            None => true,
            // stale-if-error (RFC 5861 §4): the origin failed or answered 500, 502, 503, 504.
            Some(e) => match e.etype() {
                ErrorType::HTTPStatus(code) => matches!(code, 500 | 502 | 503 | 504),
                _ => e.esource() == &ErrorSource::Upstream,
            },
        }
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        cache::variance(meta, req)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Borrow only the snapshot field, so the other fields stay assignable.
        let pool = match &ctx.snapshot {
            Some(s) => &s.pools[ctx.pool],
            None => return Error::e_explain(ErrorType::InternalError, "request was not routed"),
        };
        let mut key = [0u8; 16];
        let key = client_key(ctx.client_ip, &mut key);
        let now = now_ns();
        if ctx.attempt.attempts == 0 {
            pool.retry_budget.deposit();
            ctx.attempt.first_attempt = now;
        }
        let Some(idx) = pool.balancer.pick(key, &ctx.attempt.tried, now, pool.pick) else {
            // Nothing may be tried: 503 at once before any attempt (never wait for timeouts),
            // 502 once every candidate failed.
            let status = if ctx.attempt.tried.is_empty() {
                503
            } else {
                502
            };
            return Error::e_explain(ErrorType::HTTPStatus(status), "no backend left to try");
        };
        let state = &pool.balancer.slots()[idx].state;
        state.count_selection();
        let lease = Lease::new(state);
        let mut peer = Box::new(pool.peers[idx].clone());
        if ctx.attempt.stale_retried && !ctx.attempt.fresh_peer {
            // The retry after a pooled connection was found closed must not take another
            // pooled one: when a backend closes its idle connections together (Node.js after
            // 5 s), every pooled connection is dead and the retry failed too (a 502 in the
            // cache conformance runs). The vendored connector connects anew for this peer,
            // and the new connection joins the pool afterwards.
            peer.options.fresh_connection = true;
            ctx.attempt.fresh_peer = true;
        }
        if ctx.upgrade {
            // An idle WebSocket is normal: only the WebSocket idle limit applies.
            peer.options.read_timeout = Some(pool.websocket_idle_timeout);
            // An upgrade is an HTTP/1.1 mechanism (Pingora has no RFC 8441 CONNECT): it goes
            // over HTTP/1.1 whatever the pool's protocol.
            peer.options.alpn = pingora::protocols::ALPN::H1;
        }
        ctx.attempt.tried.insert(idx);
        ctx.attempt.attempts += 1;
        ctx.attempt.current = Some(idx);
        ctx.attempt.status_retry = false;
        ctx.attempt.response_started = false;
        ctx.attempt.lease = Some(lease);
        ctx.attempt.attempt_started = now;
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let failure = Failure::of(&e);
        ctx.record_failure(failure);
        // A failed connect never reached the backend, so any method may go elsewhere.
        let retry = ctx.may_retry(failure, None);
        e.set_retry(retry);
        ctx.attempt.lease = None;
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.stale_connection(&e, session, client_reused) {
            // The backend closed an idle pooled connection just as this request went out on it
            // (its keep-alive timeout raced ours): not the backend's failure and no answer was
            // lost. One more try on a fresh connection, to any member, this one included, as
            // nginx does for a failed cached connection; no passive failure, no budget.
            ctx.attempt.stale_retried = true;
            if let Some(idx) = ctx.attempt.current {
                ctx.attempt.tried.remove(idx);
            }
            ctx.attempt.lease = None;
            e.set_retry(true);
            return e;
        }
        let retry = if std::mem::take(&mut ctx.attempt.status_retry) {
            // Decided (and budgeted) in upstream_response_filter.
            true
        } else if e.esource() != &ErrorSource::Upstream || ctx.attempt.response_started {
            // The client hung up or sent garbage mid-request, or the response had already
            // started (a body cut short, a WebSocket closed after its 101): not a failure of
            // the backend to answer, so it neither counts toward passive ejection nor retries.
            false
        } else if !session.is_body_done() && Failure::of(&e) == Failure::Timeout {
            // The backend timed out waiting for the rest of a request body the client stopped
            // sending: the client's stall, not the backend's (issue 12: three stalled uploads
            // ejected a healthy backend). Only a timeout: a backend that resets or closes
            // before the body was read (a dead pooled HTTP/2 connection, whose request body is
            // read alongside) failed on its own, and gets a 502, not a 408.
            ctx.attempt.client_stalled = true;
            false
        } else {
            let failure = Failure::of(&e);
            ctx.record_failure(failure);
            ctx.may_retry(failure, Some(session))
        };
        e.set_retry(retry);
        if retry {
            ctx.attempt.lease = None;
        }
        e
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        rules::response_body(ctx, body, end_of_stream);
        Ok(None)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // After a 101 the data is the upgraded protocol's (WebSocket messages), not a request
        // body: `max_body_bytes` does not cut a long-lived socket (nginx's
        // `client_max_body_size` does not either).
        if ctx.upgrade && session.was_upgraded() {
            return Ok(());
        }
        rules::count_body(ctx, body.as_ref())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(r) = ctx.route().filter(|r| r.rules_on.upstream_request) {
            let req = rules::ReqInfo {
                req: session.req_header(),
                tls: ctx.tls,
                upgrade: ctx.upgrade,
                request_id: ctx.request_id.as_ref(),
            };
            rules::upstream_request(upstream_request, &req, &ctx.rules, &r.rules)?;
        }
        headers::forwarded(
            upstream_request,
            session.req_header(),
            ctx.client_ip,
            ctx.tls,
            ctx.request_id.as_ref(),
            ctx.trace.as_ref().map(|t| (t, ctx.drop_tracestate)),
        );
        if let Some(s) = &ctx.snapshot {
            if !s.client_subject_fields.is_empty() {
                headers::set_client_subject(upstream_request, s, ctx.client_subject.as_deref());
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.attempt.response_started = true;
        headers::strip_response_hop_by_hop(upstream_response);
        if status == 304 && ctx.cache.rule.is_some() {
            // pingora-cache merges only a few of a 304's fields into the stored response;
            // keep them all for response_cache_filter (RFC 9111 §4.3.4).
            ctx.cache.not_modified = Some(Box::new(upstream_response.headers.clone()));
        }
        if let (Some(lease), t @ 1..) = (&ctx.attempt.lease, ctx.attempt.attempt_started) {
            let now = now_ns();
            let took = between(t, now);
            ctx.attempt.upstream_took = Some(took);
            lease.state().observe_latency_at(took, now);
            if let Some(pool) = ctx.pool() {
                pool.metrics.upstream_took(took);
            }
        }
        if status == 101 && ctx.upgrade {
            ctx.websocket = Some(self.metrics.websocket_guard());
        }
        if status >= 500 && ctx.pool().is_some_and(|p| p.fail_on_5xx) {
            ctx.record_failure(Failure::Status(status));
        }
        let failure = Failure::Status(status);
        if ctx
            .pool()
            .is_some_and(|p| failure.retried_by(&p.next_upstream))
            && ctx.may_retry(failure, Some(session))
        {
            // Nothing has reached the client yet: drop this response and try elsewhere.
            ctx.attempt.status_retry = true;
            return Error::e_explain(ErrorType::HTTPStatus(status), "retrying on another backend");
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.cache.rule.is_some() {
            self.cache
                .label_response(upstream_response, session.cache.phase())?;
        } else if ctx.cache.bypass && !ctx.upgrade {
            let req = session.req_header();
            if !cache::is_safe(&req.method) {
                let host = normalize_host(headers::host(req));
                Box::pin(
                    self.cache
                        .invalidate_after(req, upstream_response, &host, ctx.tls),
                )
                .await;
            }
            cache::label_bypass(upstream_response)?;
        }
        if let (Some(s), Some(i)) = (&ctx.snapshot, ctx.route) {
            // Field by field: the route borrows the snapshot, the rules state is written.
            if let Some(r) = s.routes.get(i).filter(|r| r.rules_on.response) {
                let req = rules::ReqInfo {
                    req: session.req_header(),
                    tls: ctx.tls,
                    upgrade: ctx.upgrade,
                    request_id: ctx.request_id.as_ref(),
                };
                rules::response(upstream_response, &req, &mut ctx.rules, &r.rules);
            }
        }
        let h2 = !crate::util::takes_raw_lines(session.req_header().version);
        if let Some(id) = &ctx.request_id {
            headers::response_request_id(upstream_response, id, h2);
        }
        if let Some(rate) = &ctx.limits.rate {
            if h2 {
                crate::ratelimit::insert_fields(
                    upstream_response,
                    &rate.decision,
                    &rate.policy,
                    &rate.name,
                )
            } else {
                crate::ratelimit::write_h1_fields(
                    upstream_response.raw_h1_fields_mut(),
                    &rate.decision,
                    &rate.policy,
                    &rate.name,
                )
            }
            .or_err(InvalidHTTPHeader, "rate-limit policy name")?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let code = if ctx.attempt.client_stalled {
            StatusCode::REQUEST_TIMEOUT.as_u16()
        } else {
            error_status(e)
        };
        if code != 0 && session.response_written().is_none() {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = status.canonical_reason().unwrap_or("error");
            // The connection is not reused after a failure: say so, or a client may send its
            // next request on a socket we are closing.
            session.set_keepalive(None);
            // The client may be gone already; there is nothing more to do then.
            let _ = respond(
                session,
                ctx,
                status,
                Bytes::from_static(body.as_bytes()),
                "text/plain; charset=utf-8",
                &[],
            )
            .await;
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

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        ctx.attempt.lease = None;
        ctx.websocket = None;
        if let Some(lock) = ctx.cache.fill_lock.take() {
            Box::pin(self.cache.release_fill_lock(lock)).await;
        }
        let took = between(ctx.started, now_ns());
        // A gRPC request Sluice refused got HTTP 200 with a grpc-status: count the status it
        // stands for.
        let status = match ctx.grpc_answer.load(std::sync::atomic::Ordering::Relaxed) {
            0 => session.response_written().map_or(0, |r| r.status.as_u16()),
            s => s,
        };
        let req = session.req_header();
        let method = Method::of(&req.method);
        // Answered in request_filter (rate limited, unauthorized): routed, not proxied, so the
        // context holds no snapshot; only then is the current one loaded.
        let loaded;
        let snapshot: Option<&Snapshot> = match (&ctx.snapshot, ctx.route) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => {
                loaded = self.snapshot.load_full();
                Some(&loaded)
            }
            (None, None) => None,
        };
        let route = ctx.route.and_then(|r| snapshot?.routes.get(r));
        match route {
            Some(r) => r.metrics.record(method, status, took),
            None => self.metrics.unrouted().record(method, status, took),
        }
        if let Some(rule) = &ctx.cache.rule {
            if let Some(x) = cache::request_result(session.cache.phase(), ctx.cache.peer_filled) {
                self.cache.stats.result(rule.tier, x);
            }
        } else if ctx.cache.bypass {
            if let Some(t) = route.and_then(|r| r.cache).map(|c| c.tier) {
                self.cache.stats.result(t, cache::CacheResult::Bypass);
            }
        }
        let pool = ctx.pool();
        let upstream = pool.map(|p| p.name.as_str());
        let backend = match (pool, ctx.attempt.current) {
            (Some(p), Some(i)) => Some(p.names[i].as_str()),
            _ => None,
        };
        let protocol = match req.version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        if let (Some(export), Some(trace)) = (&self.spans, &ctx.trace) {
            let end = std::time::SystemTime::now();
            export.record(&crate::otel::RequestSpan {
                trace,
                start: end.checked_sub(took).unwrap_or(end),
                end,
                method: req.method.as_str(),
                path: req.uri.path(),
                host: headers::host(req),
                status,
                client: ctx.client_ip,
                route: route.map(|r| r.name.as_str()),
                upstream,
                backend,
                protocol,
            });
        }
        let (logged, sample) = match route {
            Some(r) => (r.access_log, r.access_log_sample),
            // A 404: its snapshot was not kept; the current one says (a reload applies).
            None => (self.snapshot.load().log_unrouted, 1.0),
        };
        if !logged || (sample < 1.0 && crate::util::rng::unit() >= sample) {
            return;
        }
        let field = |name: header::HeaderName| req.headers.get(name).map(HeaderValue::as_bytes);
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            // Pingora on rustls names versions `TLSv1_3`; logs say `TLSv1.3`, as nginx does.
            .map(|d| match d.version.as_ref() {
                "TLSv1_3" => "TLSv1.3",
                "TLSv1_2" => "TLSv1.2",
                other => other,
            });
        let trace_hex = ctx.trace.as_ref().map(|t| t.trace_id_hex());
        let entry = accesslog::Entry {
            time: Some(std::time::SystemTime::now()),
            client: ctx.client_ip,
            method: req.method.as_str(),
            host: headers::host(req),
            path: req.uri.path(),
            query: req.uri.query(),
            protocol,
            status,
            bytes: session.body_bytes_sent(),
            duration: took,
            upstream_time: ctx.attempt.upstream_took,
            upstream,
            backend,
            retries: ctx.attempt.attempts.saturating_sub(1) as usize,
            request_id: ctx.request_id.as_ref().map(HeaderValue::as_bytes),
            trace_id: trace_hex.as_ref().and_then(|h| std::str::from_utf8(h).ok()),
            cache: if ctx.cache.rule.is_some() {
                cache::request_result(session.cache.phase(), ctx.cache.peer_filled)
                    .map(cache::CacheResult::x_cache)
            } else {
                None
            },
            ratelimit: ctx.limits.result.map(LimitResult::label),
            user_agent: field(header::USER_AGENT),
            referer: field(header::REFERER),
            tls,
            route: route.map(|r| r.name.as_str()),
        };
        let mut line = String::with_capacity(384);
        match snapshot {
            Some(s) => entry.render(&s.access_format, &mut line),
            None => entry.render(&self.snapshot.load().access_format, &mut line),
        }
        self.access_log.write(line);
    }
}

/// Replace the request's path with its normal form ([`crate::pathnorm`]), keeping the query, so
/// that routing, limits, the cache key and the backend all see the same path.
fn normalize_path(session: &mut Session) -> std::result::Result<(), crate::pathnorm::PathError> {
    let uri = &session.req_header().uri;
    let Some(path) = crate::pathnorm::normalize(uri.path())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| crate::pathnorm::PathError::BadEscape)?,
    );
    let new = http::Uri::from_parts(parts).map_err(|_| crate::pathnorm::PathError::BadEscape)?;
    session.req_header_mut().set_uri(new);
    Ok(())
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
                // The client stopped sending its body for `client_body_timeout_ms`.
                ErrorType::ReadTimedout => 408,
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

/// Answer the client from Sluice itself (404, 401, 429, 502, 503, ...), with the request id and
/// `extra` headers.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    if status == StatusCode::SERVICE_UNAVAILABLE && !extra.iter().any(|(k, _)| *k == "retry-after")
    {
        resp.insert_header(header::RETRY_AFTER, "1")?;
    }
    for (k, v) in extra {
        resp.insert_header(*k, v.as_str())?;
    }
    respond_with(session, ctx, resp, body).await
}

/// Answer with `resp` (its length and the request id added) and `body`.
async fn respond_with(
    session: &mut Session,
    ctx: &RequestCtx,
    mut resp: ResponseHeader,
    body: Bytes,
) -> Result<()> {
    if resp.status.as_u16() >= 400 && grpc::is_grpc(session.req_header()) {
        ctx.grpc_answer
            .store(resp.status.as_u16(), std::sync::atomic::Ordering::Relaxed);
        let resp = grpc::answer(resp.status, &body, ctx.request_id.as_ref())?;
        // Trailers-Only: the status is in the only HEADERS frame, which ends the stream.
        return session.write_response_header(Box::new(resp), true).await;
    }
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    if let Some(id) = &ctx.request_id {
        resp.insert_static_header(&headers::X_REQUEST_ID, id.clone());
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

#[cfg(test)]
mod tests {
    use pingora::protocols::l4::stream::Stream;
    use pingora::protocols::Peek;

    /// The vendored keep-alive read (pingora-core `Stream::poll_read_idle`, README section 14)
    /// clears Tokio's cached readiness after a read that drained the socket, as Tokio's own
    /// reads do: otherwise the connection's next read (Pingora's idle probe while the backend
    /// answers) is a `recvfrom` that fails with EAGAIN on every proxied request. Observed
    /// without tracing: with the readiness left set, the next poll made before the reactor
    /// runs again goes to the socket and finds bytes sent meanwhile; with it cleared it waits
    /// for the reactor without a system call. Fails on the code before the fix.
    #[test]
    fn a_drained_keep_alive_read_clears_the_cached_readiness() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use std::io::Write;
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();
            let mut stream = Stream::from(tokio::net::TcpStream::from_std(accepted).unwrap());
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let got = std::future::poll_fn(|cx| stream.poll_read_idle(cx, 4096))
                .await
                .expect("a plain stream reads this way")
                .unwrap();
            assert_eq!(&got[..], b"GET / HTTP/1.1\r\n\r\n");
            // No await from here on: the reactor cannot see the new bytes.
            client.write_all(b"next").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let r = stream.poll_read_idle(&mut cx, 4096);
            assert!(r.is_pending(), "the readiness was left set: {r:?}");
            // The reactor then reports the bytes.
            let got = std::future::poll_fn(|cx| stream.poll_read_idle(cx, 4096))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got[..], b"next");
        });
    }
}
