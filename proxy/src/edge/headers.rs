//! Header rules for proxied requests: `X-Forwarded-*`, `X-Real-IP`, `Host` and `X-Request-Id`.

use std::net::IpAddr;

use http::{header, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader, StaticHeaderName};

use crate::util::ip::ip_text;
use crate::util::push_raw_field;

/// The request id header, passed through when the client sends a sane one, generated otherwise,
/// and returned on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// The headers Sluice adds to every proxied request, pre-built so that adding them neither
/// parses nor allocates a name (see `StaticHeaderName` in vendor/pingora-http).
pub static X_REQUEST_ID: StaticHeaderName = StaticHeaderName::new(REQUEST_ID, "X-Request-Id");
static X_FORWARDED_HOST: StaticHeaderName =
    StaticHeaderName::new("x-forwarded-host", "X-Forwarded-Host");
static X_FORWARDED_PROTO: StaticHeaderName =
    StaticHeaderName::new("x-forwarded-proto", "X-Forwarded-Proto");
static X_FORWARDED_FOR: StaticHeaderName =
    StaticHeaderName::new("x-forwarded-for", "X-Forwarded-For");
static X_REAL_IP: StaticHeaderName = StaticHeaderName::new("x-real-ip", "X-Real-IP");
static TRACEPARENT: StaticHeaderName = StaticHeaderName::new("traceparent", "traceparent");
static TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");

/// The trace this request belongs to, from its `traceparent` or new (`[tracing] propagate`).
/// The second value says the client's `traceparent` was there but invalid: its `tracestate`
/// belongs to a trace that is not continued and must not be passed on.
pub fn trace_context(
    req: &RequestHeader,
    sample_ratio: f64,
) -> (crate::tracectx::TraceContext, bool) {
    let mut all = req.headers.get_all(TRACEPARENT.name()).iter();
    let given = all.next();
    // A repeated field is invalid (W3C Trace Context, 3.2).
    let parent = match all.next() {
        Some(_) => None,
        None => given.and_then(|v| crate::tracectx::parse(v.as_bytes())),
    };
    let ids: [u8; 24] = crate::util::rng::bytes();
    let (span, trace) = ids.split_at(8);
    let sampled =
        sample_ratio >= 1.0 || (sample_ratio > 0.0 && crate::util::rng::unit() < sample_ratio);
    let t = crate::tracectx::TraceContext::new(
        parent,
        span.try_into().unwrap_or([1; 8]),
        trace.try_into().unwrap_or([1; 16]),
        u8::from(sampled),
    );
    (t, given.is_some() && parent.is_none())
}

static HOST: StaticHeaderName = StaticHeaderName::new("host", "Host");

/// Longest client-supplied request id that is passed through.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The host the client asked for: `Host`, or the URI authority (HTTP/2's `:authority`).
pub fn host(req: &RequestHeader) -> &str {
    req.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The client's request id when it is present and printable, else a fresh random one.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get(X_REQUEST_ID.name()) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic())
        {
            return v.clone();
        }
    }
    let mut buf = [0u8; 32];
    // 16 random bytes are exactly 32 hex digits: the only error (a buffer of the wrong size)
    // cannot happen.
    let _ = hex::encode_to_slice(crate::util::rng::bytes::<16>(), &mut buf);
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

/// The bytes [`response_request_id`] writes for a generated id (a client's may be longer):
/// room header rules leave for it in the line buffer.
pub const REQUEST_ID_LINE_BYTES: usize = 48;

/// The bytes [`forwarded`] writes for a short host and an IPv4 client, without trace context:
/// room header rules leave for them in the line buffer.
pub const FORWARDED_LINE_BYTES: usize = 192;

/// Sluice's `X-Request-Id` on a response going to the client, replacing the backend's if it
/// sent one. Written as a raw HTTP/1 line after the map's fields (vendored pingora-http; the
/// HTTP/2 server folds it into the map) rather than inserted into the map: callgrind, plain
/// route, 43,062 / 43,147 to 42,952 / 42,990 instructions per request (the insert was about
/// 600, the lookup for the backend's field and the line remain). `id` is a valid field value
/// ([`request_id`]).
///
/// For an HTTP/2 client (`h2`) the id goes into the map: its server would fold the line into
/// the map again, parsing the name (callgrind over HTTP/2: a raw line folded costs about 1,800
/// instructions, the insert about 600). It is marked sensitive, which HPACK encodes as a literal
/// never indexed: an id is new on every response, and indexed it took an entry of the
/// connection's 4 KiB dynamic table each time, evicting fields that do repeat (`date`,
/// `content-type`), and the encoder compared it with every earlier id in the table (h2's
/// entries of one name are a chain): callgrind `--h2`, 80.1k / 80.6k to 77.7k / 77.8k
/// instructions per request.
pub fn response_request_id(resp: &mut ResponseHeader, id: &HeaderValue, h2: bool) {
    if h2 {
        let mut id = id.clone();
        id.set_sensitive(true);
        resp.insert_static_header(&X_REQUEST_ID, id);
        return;
    }
    if resp.headers.contains_key(X_REQUEST_ID.name()) {
        resp.remove_header(X_REQUEST_ID.name());
    }
    let name = if resp.has_case() {
        X_REQUEST_ID.case()
    } else {
        X_REQUEST_ID.name().as_str().as_bytes()
    };
    let raw = resp.raw_h1_fields_mut();
    raw.reserve(name.len() + id.len() + 4);
    push_raw_field(raw, name, &[id.as_bytes()]);
}

/// The fields [`forwarded`] sets. Any the client sent under these names are dropped, never
/// passed on: a client must not choose its own `X-Real-IP`.
static SET_FIELDS: [&StaticHeaderName; 5] = [
    &X_FORWARDED_HOST,
    &X_FORWARDED_PROTO,
    &X_REAL_IP,
    &X_FORWARDED_FOR,
    &X_REQUEST_ID,
];

/// The subject of the client certificate verified on this request's connection, with the
/// index of its listener in `listeners` (matched by the connection's local address).
pub fn client_subject(
    session: &pingora::proxy::Session,
    listeners: &[(std::net::SocketAddr, http::HeaderName)],
) -> Option<Box<(usize, HeaderValue)>> {
    let digest = session.digest()?;
    let subject = digest.ssl_digest.as_ref()?.subject.as_deref()?;
    let local = session.server_addr()?.as_inet()?;
    let i = listeners.iter().position(|(l, _)| {
        l.port() == local.port() && (l.ip().is_unspecified() || l.ip() == local.ip())
    })?;
    let value = HeaderValue::from_str(subject).ok()?;
    Some(Box::new((i, value)))
}

/// The client-certificate subject fields of the upstream request: every configured name
/// removed (a client may not claim a subject), then the verified subject under its listener's
/// name.
pub fn set_client_subject(
    up: &mut RequestHeader,
    snapshot: &crate::snapshot::Snapshot,
    subject: Option<&(usize, HeaderValue)>,
) {
    for name in &snapshot.client_subject_fields {
        up.remove_header(name);
    }
    if let Some((i, value)) = subject {
        if let Some((_, name)) = snapshot.client_subject.get(*i) {
            // Cannot fail: a valid name and value.
            let _ = up.insert_header(name.clone(), value.clone());
        }
    }
}

/// Set the forwarding headers and the request id on the upstream request. `Host` is kept as
/// the client sent it (and filled from `:authority` for HTTP/2 clients, whose requests have no
/// `Host`). The fields are written as raw HTTP/1 lines after the copied ones (folded into
/// the map by the vendored pingora-proxy for an HTTP/2 upstream): one buffer instead of five inserts into the header maps, which a
/// copied header, sized exactly, would also have to regrow. `X-Forwarded-For` appends the
/// client to what earlier proxies recorded, joining repeated fields into one.
pub fn forwarded(
    up: &mut RequestHeader,
    client_req: &RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
    request_id: Option<&HeaderValue>,
    trace: Option<(&crate::tracectx::TraceContext, bool)>,
) {
    let host = match client_req.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => client_req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    if let Some(host) = &host {
        if !up.headers.contains_key(header::HOST) {
            up.insert_static_header(&HOST, host.clone());
        }
    }
    // One pass over the client's field names finds the ones Sluice replaces (usually none).
    let mut prior_xff = false;
    for name in client_req.headers.keys() {
        if let Some(f) = SET_FIELDS.iter().find(|f| f.name() == name) {
            prior_xff |= std::ptr::eq(*f, &X_FORWARDED_FOR);
            up.remove_header(f.name());
        } else if let Some((_, drop_state)) = trace {
            // The client's trace context is replaced by Sluice's span (and an invalid one's
            // `tracestate` dropped).
            if name == TRACEPARENT.name() || (drop_state && name == TRACESTATE) {
                up.remove_header(name);
            }
        }
    }
    let case = up.has_case();
    let name = |f: &'static StaticHeaderName| -> &'static [u8] {
        if case {
            f.case()
        } else {
            f.name().as_str().as_bytes()
        }
    };
    let mut ip_buf = [0u8; 45];
    let ip = client_ip.map(|ip| ip_text(ip, &mut ip_buf));
    let raw = up.raw_h1_fields_mut();
    raw.reserve(
        160 + host.as_ref().map_or(0, |h| h.len()) + trace.map_or(0, |_| crate::tracectx::LINE_LEN),
    );
    let mut line =
        |f: &'static StaticHeaderName, parts: &[&[u8]]| push_raw_field(raw, name(f), parts);
    if let Some(host) = &host {
        line(&X_FORWARDED_HOST, &[host.as_bytes()]);
    }
    line(&X_FORWARDED_PROTO, &[if tls { b"https" } else { b"http" }]);
    if let Some(ip) = ip {
        line(&X_REAL_IP, &[ip]);
        if prior_xff {
            let mut joined = Vec::with_capacity(64);
            for p in client_req.headers.get_all(X_FORWARDED_FOR.name()) {
                joined.extend_from_slice(p.as_bytes());
                joined.extend_from_slice(b", ");
            }
            line(&X_FORWARDED_FOR, &[&joined, ip]);
        } else {
            line(&X_FORWARDED_FOR, &[ip]);
        }
    }
    if let Some(id) = request_id {
        line(&X_REQUEST_ID, &[id.as_bytes()]);
    }
    if let Some((t, _)) = trace {
        // Both spellings of the name are `traceparent`: one copy of a line built in place.
        raw.extend_from_slice(&t.traceparent_line());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// The fields `forwarded` wrote, as (name, value) pairs in wire order.
    fn raw_fields(up: &RequestHeader) -> Vec<(String, String)> {
        std::str::from_utf8(up.raw_h1_fields())
            .unwrap()
            .split_terminator("\r\n")
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let client = req(&[
            ("host", "shop.example"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-real-ip", "6.6.6.6"),
            ("x-request-id", "client-id"),
        ]);
        let mut up = client.clone();
        let id = HeaderValue::from_static("the-id");
        forwarded(
            &mut up,
            &client,
            Some("10.0.0.9".parse().unwrap()),
            true,
            Some(&id),
            None,
        );
        assert_eq!(
            raw_fields(&up),
            [
                ("X-Forwarded-Host", "shop.example"),
                ("X-Forwarded-Proto", "https"),
                ("X-Real-IP", "10.0.0.9"),
                ("X-Forwarded-For", "1.2.3.4, 10.0.0.9"),
                ("X-Request-Id", "the-id"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // The client's values under those names are not sent as well.
        for gone in ["x-forwarded-for", "x-real-ip", "x-request-id"] {
            assert!(up.headers.get(gone).is_none(), "{gone}");
        }
        assert_eq!(up.headers.get("host").unwrap(), "shop.example");
        // Written after the copied fields, in one header block.
        let mut wire = Vec::new();
        up.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.starts_with("host: shop.example\r\n"), "{wire}");
        assert!(wire.ends_with("X-Request-Id: the-id\r\n"), "{wire}");
    }

    #[test]
    fn repeated_forwarded_for_headers_are_joined_and_names_follow_the_header_case() {
        let mut client = RequestHeader::build_no_case("GET", b"/x", None).unwrap();
        client.append_header("x-forwarded-for", "1.1.1.1").unwrap();
        client.append_header("x-forwarded-for", "2.2.2.2").unwrap();
        let mut up = client.clone();
        forwarded(
            &mut up,
            &client,
            Some("::1".parse().unwrap()),
            false,
            None,
            None,
        );
        assert_eq!(
            raw_fields(&up),
            [
                ("x-forwarded-proto", "http"),
                ("x-real-ip", "::1"),
                ("x-forwarded-for", "1.1.1.1, 2.2.2.2, ::1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(up.headers.get("x-forwarded-for").is_none());
    }

    #[test]
    fn request_id_passes_sane_ids_and_replaces_others() {
        assert_eq!(request_id(&req(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&req(&[("x-request-id", &"x".repeat(500))]));
        assert_eq!(fresh.len(), 32);
        assert!(
            fresh.as_bytes().iter().all(u8::is_ascii_hexdigit),
            "{fresh:?}"
        );
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}

/// Remove the hop-by-hop fields of a backend's response (RFC 9110 §7.6.1): `Connection` and every
/// field it nominates, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, and `Upgrade` except on
/// a `101` (whose `Connection: upgrade` and `Upgrade` the WebSocket hand-shake needs). Framing
/// fields (`Content-Length`, `Transfer-Encoding`) are never removed by nomination: Pingora
/// frames the response from them. One pass over the field names when there is nothing to do.
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    let upgrade = resp.status.as_u16() == 101;
    let is_hop = |n: &header::HeaderName| {
        (!upgrade && (n == header::CONNECTION || n == header::UPGRADE))
            || n == header::TE
            || n == header::TRAILER
            || n.as_str() == "keep-alive"
            || n.as_str() == "proxy-connection"
    };
    if !resp.headers.keys().any(is_hop) {
        return;
    }
    // Fields nominated by `Connection`; `close`, `keep-alive` and `upgrade` are options or
    // are removed anyway, so the usual values allocate nothing.
    let mut nominated: Vec<header::HeaderName> = Vec::new();
    if !upgrade {
        for v in resp.headers.get_all(header::CONNECTION) {
            for token in v.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                if token.is_empty()
                    || ["close", "keep-alive", "upgrade"]
                        .iter()
                        .any(|t| token.eq_ignore_ascii_case(t))
                {
                    continue;
                }
                if let Ok(name) = header::HeaderName::from_bytes(token.as_bytes()) {
                    if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
                        nominated.push(name);
                    }
                }
            }
        }
    }
    let hop: Vec<header::HeaderName> = resp.headers.keys().filter(|n| is_hop(n)).cloned().collect();
    for name in hop.iter().chain(&nominated) {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod hop_tests {
    use super::*;

    #[test]
    fn the_response_request_id_replaces_the_backends_and_goes_out_once() {
        let mut r = resp(200, &[("x-request-id", "from-backend"), ("x-other", "1")]);
        let mut h2 = r.clone();
        response_request_id(&mut h2, &HeaderValue::from_static("ours"), true);
        let ids: Vec<_> = h2.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["ours"]);
        // Never indexed by HPACK: a new id on every response must not fill the table.
        assert!(h2.headers["x-request-id"].is_sensitive());
        assert!(h2.raw_h1_fields().is_empty());
        response_request_id(&mut r, &HeaderValue::from_static("ours"), false);
        assert!(r.headers.get("x-request-id").is_none());
        let mut wire = bytes::BytesMut::new();
        r.header_to_h1_wire(&mut wire);
        let text = String::from_utf8_lossy(&wire).to_ascii_lowercase();
        assert_eq!(text.matches("x-request-id").count(), 1, "{text}");
        assert!(text.ends_with("x-request-id: ours\r\n"), "{text}");
        assert!(text.contains("x-other: 1\r\n"), "{text}");
    }

    fn resp(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn names(r: &ResponseHeader) -> Vec<String> {
        let mut v: Vec<_> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_and_nominated_fields_go() {
        let mut r = resp(
            200,
            &[
                ("connection", "close, a"),
                ("a", "1"),
                ("keep-alive", "timeout=9"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-sum"),
                ("upgrade", "h2c"),
                ("content-length", "3"),
                ("x-kept", "yes"),
            ],
        );
        strip_response_hop_by_hop(&mut r);
        assert_eq!(names(&r), ["content-length", "x-kept"]);
    }

    #[test]
    fn framing_fields_are_never_removed_by_nomination() {
        let mut r = resp(
            200,
            &[
                ("connection", "content-length, transfer-encoding"),
                ("content-length", "3"),
            ],
        );
        strip_response_hop_by_hop(&mut r);
        assert_eq!(names(&r), ["content-length"]);
    }

    #[test]
    fn a_101_keeps_its_upgrade_fields() {
        let mut r = resp(
            101,
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("keep-alive", "x"),
            ],
        );
        strip_response_hop_by_hop(&mut r);
        assert_eq!(names(&r), ["connection", "upgrade"]);
    }

    #[test]
    fn a_clean_response_is_untouched() {
        let mut r = resp(200, &[("content-type", "text/plain"), ("x-a", "1")]);
        strip_response_hop_by_hop(&mut r);
        assert_eq!(names(&r), ["content-type", "x-a"]);
    }
}
