//! Header rules for proxied requests: `X-Forwarded-*`, `X-Real-IP`, `Host` and `X-Request-Id`.

use std::io::Write as _;
use std::net::IpAddr;

use http::{header, HeaderValue};
use pingora::http::{RequestHeader, StaticHeaderName};

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
static HOST: StaticHeaderName = StaticHeaderName::new("host", "Host");

/// How many headers [`forwarded`] and the request id add at most.
pub const ADDED_HEADERS: usize = 6;

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
    let hex = hex_u128(rand::random::<u128>(), &mut buf);
    HeaderValue::from_bytes(hex).expect("hex is a valid header value")
}

fn hex_u128(v: u128, buf: &mut [u8; 32]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    &buf[..]
}

/// The client IP as a header value, formatted once per request without a heap string (IPv4,
/// the common case, without the formatting machinery).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 45]; // longest IPv6 text form
    let n = match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            45 - w.len()
        }
    };
    HeaderValue::from_bytes(&buf[..n]).expect("an IP address is a valid header value")
}

/// Set the forwarding headers on the upstream request. `Host` is kept as the client sent it
/// (and filled from `:authority` for HTTP/2 clients, whose requests have no `Host`). Values are
/// shared with the client request where possible, so this does not allocate in the common case
/// (no prior `X-Forwarded-For`).
pub fn forwarded(
    up: &mut RequestHeader,
    client_req: &RequestHeader,
    client_ip: Option<&HeaderValue>,
    tls: bool,
) {
    let host = match client_req.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => client_req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    up.reserve_headers(ADDED_HEADERS);
    if let Some(host) = host {
        if up.headers.get(header::HOST).is_none() {
            up.insert_static_header(&HOST, host.clone());
        }
        up.insert_static_header(&X_FORWARDED_HOST, host);
    }
    up.insert_static_header(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(ip) = client_ip {
        up.insert_static_header(&X_REAL_IP, ip.clone());
        // Append to what earlier proxies recorded, joining repeated headers into one.
        let mut prior = client_req
            .headers
            .get_all(X_FORWARDED_FOR.name())
            .iter()
            .peekable();
        let xff = if prior.peek().is_none() {
            ip.clone()
        } else {
            let mut v = Vec::with_capacity(64);
            for p in prior {
                v.extend_from_slice(p.as_bytes());
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&v).expect("joined header values stay valid")
        };
        up.insert_static_header(&X_FORWARDED_FOR, xff);
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

    #[test]
    fn forwarded_headers_append_and_set() {
        let client = req(&[("host", "shop.example"), ("x-forwarded-for", "1.2.3.4")]);
        let mut up = client.clone();
        let ip = ip_value("10.0.0.9".parse().unwrap());
        forwarded(&mut up, &client, Some(&ip), true);
        let h = |k| up.headers.get(k).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("x-forwarded-for"), "1.2.3.4, 10.0.0.9");
        assert_eq!(h("x-real-ip"), "10.0.0.9");
        assert_eq!(h("x-forwarded-proto"), "https");
        assert_eq!(h("x-forwarded-host"), "shop.example");
        assert_eq!(h("host"), "shop.example");
    }

    #[test]
    fn repeated_forwarded_for_headers_are_joined() {
        let client = req(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let mut up = client.clone();
        let ip = ip_value("::1".parse().unwrap());
        forwarded(&mut up, &client, Some(&ip), false);
        assert_eq!(
            up.headers.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 2.2.2.2, ::1"
        );
        assert_eq!(up.headers.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(
            ip_value("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()),
            "2001:db8:85a3:8d3:1319:8a2e:370:7348"
        );
        for ip in [
            "0.0.0.0",
            "1.20.255.9",
            "100.99.10.200",
            "255.255.255.255",
            "127.0.0.1",
        ] {
            assert_eq!(ip_value(ip.parse().unwrap()), ip);
        }
    }

    #[test]
    fn request_id_passes_sane_ids_and_replaces_others() {
        assert_eq!(request_id(&req(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&req(&[("x-request-id", &"x".repeat(500))]));
        assert_eq!(fresh.len(), 32);
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}
