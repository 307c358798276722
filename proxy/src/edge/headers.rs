//! Header rules for proxied requests: `X-Forwarded-*`, `X-Real-IP`, `Host` and `X-Request-Id`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::{header, HeaderValue};
use pingora::http::RequestHeader;
use pingora::prelude::*;

/// The request id header, passed through when the client sends a sane one, generated otherwise,
/// and returned on every response.
pub const REQUEST_ID: &str = "x-request-id";

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
    if let Some(v) = req.headers.get(REQUEST_ID) {
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

/// Set the forwarding headers on the upstream request. `Host` is kept as the client sent it
/// (and filled from `:authority` for HTTP/2 clients, whose requests have no `Host`).
pub fn forwarded(
    up: &mut RequestHeader,
    client_req: &RequestHeader,
    client_ip: Option<IpAddr>,
    tls: bool,
) -> Result<()> {
    let host = host(client_req);
    if up.headers.get(header::HOST).is_none() && !host.is_empty() {
        up.insert_header(header::HOST, host)?;
    }
    if !host.is_empty() {
        up.insert_header("x-forwarded-host", host)?;
    }
    up.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    if let Some(ip) = client_ip {
        let mut s = String::with_capacity(64);
        let _ = write!(s, "{ip}");
        up.insert_header("x-real-ip", s.as_str())?;
        // Append to what earlier proxies recorded, joining repeated headers into one.
        let prior: Vec<&str> = client_req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let xff = if prior.is_empty() {
            s
        } else {
            format!("{}, {s}", prior.join(", "))
        };
        up.insert_header("x-forwarded-for", xff)?;
    }
    Ok(())
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
        forwarded(&mut up, &client, Some("10.0.0.9".parse().unwrap()), true).unwrap();
        let h = |k| up.headers.get(k).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("x-forwarded-for"), "1.2.3.4, 10.0.0.9");
        assert_eq!(h("x-real-ip"), "10.0.0.9");
        assert_eq!(h("x-forwarded-proto"), "https");
        assert_eq!(h("x-forwarded-host"), "shop.example");
        assert_eq!(h("host"), "shop.example");
    }

    #[test]
    fn request_id_passes_sane_ids_and_replaces_others() {
        assert_eq!(request_id(&req(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&req(&[("x-request-id", &"x".repeat(500))]));
        assert_eq!(fresh.len(), 32);
        assert_ne!(request_id(&req(&[])), request_id(&req(&[])));
    }
}
