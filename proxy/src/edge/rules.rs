//! A route's rules applied to one request: redirect, access lists, CORS and the body limit
//! before proxying; path and fields of the upstream request; fields of the response.

use std::net::IpAddr;

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::{ErrorSource, ErrorType};

use super::{headers, RequestCtx, RulesCtx};
use crate::metrics::EdgeAnswer;
use crate::router::normalize_host;
use crate::rules::{compress, CorsRequest, RouteRules, SecurityHeaders, Var, Vars};
use crate::snapshot::{Route, Snapshot};

/// The client address after `trusted_proxies`, resolved only for a route whose rules need it.
fn client_ip(snapshot: &Snapshot, req: &RequestHeader, peer: Option<IpAddr>) -> Option<IpAddr> {
    match &snapshot.rate_limit {
        Some(r) if !r.spec.trusted_proxies.is_empty() => {
            crate::ratelimit::client_ip(peer, req, &r.spec.trusted_proxies)
        }
        _ => peer,
    }
}

/// What the rules read of the request besides its head.
pub(super) struct ReqInfo<'a> {
    /// The client's request head.
    pub req: &'a RequestHeader,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the request asks for an upgrade.
    pub upgrade: bool,
    /// The request id.
    pub request_id: Option<&'a HeaderValue>,
}

/// The template values of `info`'s request, with `host` its normalised host.
fn vars<'a>(info: &'a ReqInfo<'a>, host: &'a str, client_ip: Option<IpAddr>) -> Vars<'a> {
    let req = info.req;
    Vars {
        client_ip,
        host,
        tls: info.tls,
        request_id: info.request_id.map_or(&[][..], |v| v.as_bytes()),
        uri: req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |p| p.as_str()),
    }
}

/// An answer the request-phase rules give instead of proxying.
pub(super) struct Answer {
    status: StatusCode,
    fields: Vec<(header::HeaderName, HeaderValue)>,
    body: &'static [u8],
}

impl Answer {
    fn new(status: StatusCode, body: &'static [u8]) -> Answer {
        Answer {
            status,
            fields: Vec::new(),
            body,
        }
    }
}

/// Run the route's request-phase rules: `Some` is the answer Sluice gives instead of
/// proxying (sent by [`send`]), `None` lets the request through. Not `async`: a request the
/// rules let through builds and boxes no future (that future's move into its box and the box
/// cost about 400 instructions a request on the rule set of `benches/rules-route.toml`).
pub(super) fn on_request(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: &Snapshot,
    route: &Route,
) -> Option<Answer> {
    let rules = &route.rules;
    let req = session.req_header();
    let needs_ip = !rules.acl.is_empty() || rules.uses(Var::ClientIp);
    let ip = if needs_ip {
        client_ip(snapshot, req, ctx.client_ip)
    } else {
        ctx.client_ip
    };
    if rules.require_client_cert && ctx.client_subject.is_none() {
        route.metrics.answered(EdgeAnswer::ClientCertRequired);
        return Some(Answer::new(
            StatusCode::FORBIDDEN,
            b"client certificate required\n",
        ));
    }
    if !rules.acl.permits(ip) {
        route.metrics.answered(EdgeAnswer::AccessDenied);
        return Some(Answer::new(StatusCode::FORBIDDEN, b"forbidden\n"));
    }
    if let Some(r) = &rules.redirect {
        let host = normalize_host(headers::host(req));
        let info = ReqInfo {
            req,
            tls: ctx.tls,
            upgrade: ctx.upgrade,
            request_id: ctx.request_id.as_ref(),
        };
        let location = r.to.value(&vars(&info, &host, ip));
        route.metrics.answered(EdgeAnswer::Redirect);
        let Some(location) = location else {
            // A host or path a header cannot carry: nothing sane to redirect to.
            return Some(Answer::new(StatusCode::BAD_REQUEST, b"bad request\n"));
        };
        return Some(Answer {
            status: r.status,
            fields: vec![(header::LOCATION, location)],
            body: b"redirecting\n",
        });
    }
    if let Some(cors) = &rules.cors {
        match cors.classify(req) {
            CorsRequest::Preflight => {
                route.metrics.answered(EdgeAnswer::CorsPreflight);
                return Some(Answer {
                    status: StatusCode::NO_CONTENT,
                    fields: cors.preflight_fields(req),
                    body: b"",
                });
            }
            CorsRequest::PreflightDenied => {
                route.metrics.answered(EdgeAnswer::CorsDenied);
                return Some(Answer::new(StatusCode::FORBIDDEN, b"origin not allowed\n"));
            }
            CorsRequest::Allowed => ctx.rules.cors_allowed = true,
            CorsRequest::None | CorsRequest::Denied => {}
        }
    }
    if let Some(limit) = rules.max_body_bytes {
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            route.metrics.answered(EdgeAnswer::BodyTooLarge);
            // The body is not read: the connection cannot carry another request.
            session.set_keepalive(None);
            return Some(Answer::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                b"request body too large\n",
            ));
        }
        ctx.rules.body_limit = Some(limit);
    }
    ctx.rules.client_ip = ip;
    None
}

/// Send the rules' answer `a` to the client, a short plain-text body.
pub(super) async fn send(session: &mut Session, ctx: &RequestCtx, a: Answer) -> Result<()> {
    let mut resp = ResponseHeader::build(a.status, Some(3 + a.fields.len()))?;
    if !a.body.is_empty() {
        resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    }
    for (name, value) in a.fields {
        resp.append_header(name, value)?;
    }
    super::respond_with(session, ctx, resp, Bytes::from_static(a.body)).await
}

/// Count a chunk of the request body against the route's limit. A body that goes over it
/// (chunked, or longer than announced over HTTP/2) ends the request with a 413 when nothing
/// was answered yet; the backend sees its request cut at the limit.
pub(super) fn count_body(ctx: &mut RequestCtx, chunk: Option<&Bytes>) -> Result<()> {
    let Some(limit) = ctx.rules.body_limit else {
        return Ok(());
    };
    ctx.rules.body_seen += chunk.map_or(0, |c| c.len() as u64);
    if ctx.rules.body_seen > limit {
        if let Some(r) = ctx.route() {
            r.metrics.answered(EdgeAnswer::BodyTooLarge);
        }
        return Err(Error::create(
            ErrorType::HTTPStatus(413),
            ErrorSource::Downstream,
            Some("request body over max_body_bytes".into()),
            None,
        ));
    }
    Ok(())
}

/// Path and fields of the upstream request.
pub(super) fn upstream_request(
    up: &mut RequestHeader,
    info: &ReqInfo,
    state: &RulesCtx,
    rules: &RouteRules,
) -> Result<()> {
    let client = info.req;
    if rules.rewrite.is_some() || rules.strip_prefix.is_some() {
        if let Some(new) = crate::rules::paths::upstream_path(
            rules.rewrite.as_ref(),
            rules.strip_prefix.as_deref(),
            client.uri.path(),
            client.uri.query(),
        ) {
            // Parsed in place: `str::parse` would copy it into a new buffer first.
            let uri = http::Uri::from_maybe_shared(Bytes::from(new))
                .or_err(ErrorType::InternalError, "rewritten path is not a URI")?;
            up.set_uri(uri);
        }
    }
    if !rules.request_headers.is_empty() {
        let host = if rules.request_headers.uses(Var::Host) {
            normalize_host(headers::host(client))
        } else {
            std::borrow::Cow::Borrowed("")
        };
        rules.request_headers.apply(
            up,
            &vars(info, &host, state.client_ip),
            crate::util::takes_raw_lines(up.version).then_some(headers::FORWARDED_LINE_BYTES),
        );
    }
    Ok(())
}

/// Fields of the response to the client (proxied or from the cache), and its encoder when it
/// is compressed.
pub(super) fn response(
    resp: &mut ResponseHeader,
    info: &ReqInfo,
    state: &mut RulesCtx,
    rules: &RouteRules,
) {
    let client = info.req;
    let h1 = crate::util::takes_raw_lines(client.version);
    if let Some(c) = &rules.compression {
        // HEAD and range requests get the identity form: a range of a compressed body would
        // be a range of bytes no one can name.
        if client.method != http::Method::HEAD
            && !client.headers.contains_key(header::RANGE)
            && !info.upgrade
            && c.applies(resp)
        {
            compress::add_vary(resp);
            if let Some(coding) = c.choose(client.headers.get(header::ACCEPT_ENCODING)) {
                if let Some(encoder) = coding.encoder() {
                    compress::encode_fields(resp, coding);
                    state.encoder = Some(encoder);
                }
            }
        }
    }
    if !rules.response_headers.is_empty() {
        let host = if rules.response_headers.uses(Var::Host) {
            normalize_host(headers::host(client))
        } else {
            std::borrow::Cow::Borrowed("")
        };
        rules.response_headers.apply(
            resp,
            &vars(info, &host, state.client_ip),
            h1.then_some(SecurityHeaders::LINE_BYTES + headers::REQUEST_ID_LINE_BYTES),
        );
    }
    rules
        .security_headers
        .apply(resp, info.tls, h1.then_some(headers::REQUEST_ID_LINE_BYTES));
    if state.cors_allowed {
        if let Some(cors) = &rules.cors {
            cors.response_fields(client, resp);
        }
    }
}

/// Compress a chunk of the response body when the response is compressed.
pub(super) fn response_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end: bool) {
    let Some(encoder) = ctx.rules.encoder.as_mut() else {
        return;
    };
    let input = body.as_deref().unwrap_or(&[]);
    let result = encoder.encode(input, end);
    if end {
        // Finished: a later call (Pingora may signal the end twice) has nothing to add.
        ctx.rules.encoder = None;
    }
    match result {
        Ok(out) => *body = Some(out),
        Err(e) => {
            // The encoders write to memory and do not fail; if one ever did, the body already
            // sent cannot be undone: end the response rather than send garbage.
            tracing::warn!(error = %e, "compression failed");
            ctx.rules.encoder = None;
            *body = None;
        }
    }
}
