//! Who may use a route: `allow` / `deny` source addresses and `cors` origins.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderValue, Method};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use serde::Serialize;

use super::headers::Fields;

/// `allow` / `deny`: CIDRs checked against the client address. `deny` wins; a non-empty `allow`
/// admits only its networks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Acl {
    /// Admitted networks (empty: everyone not denied).
    #[serde(serialize_with = "nets")]
    pub allow: Vec<IpNet>,
    /// Refused networks.
    #[serde(serialize_with = "nets")]
    pub deny: Vec<IpNet>,
}

fn nets<S: serde::Serializer>(v: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|n| n.to_string()))
}

impl Acl {
    /// Whether there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether `ip` may use the route. An unknown address (a Unix socket client) passes only
    /// when there is no `allow` list.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip.map(canonical) else {
            return self.allow.is_empty();
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack listener reports IPv4
/// clients) as the IPv4 address, so IPv4 CIDRs apply to it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `cors`: cross-origin access for browsers. Preflights are answered by Sluice; actual
/// responses get the `Access-Control-Allow-*` fields when the `Origin` is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// Allowed origins (`scheme://host[:port]`, lower-cased); empty with `any_origin`.
    pub origins: Vec<String>,
    /// `origins = ["*"]`: any origin (never with credentials).
    pub any_origin: bool,
    /// `Access-Control-Allow-Methods` of preflights.
    #[serde(serialize_with = "value")]
    pub methods: HeaderValue,
    /// `Access-Control-Allow-Headers` of preflights (none when empty).
    #[serde(serialize_with = "opt_value")]
    pub headers: Option<HeaderValue>,
    /// `Access-Control-Expose-Headers` of actual responses.
    #[serde(serialize_with = "opt_value")]
    pub expose_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age` of preflights.
    pub max_age_seconds: Option<u32>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

fn value<S: serde::Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.to_str().unwrap_or(""))
}

fn opt_value<S: serde::Serializer>(v: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => value(v, s),
        None => s.serialize_none(),
    }
}

/// What a request is, to CORS.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsRequest {
    /// No `Origin`: not a cross-origin browser request.
    None,
    /// A preflight from an allowed origin: answer 204 with these fields.
    Preflight,
    /// A preflight from an origin not allowed: answer 403.
    PreflightDenied,
    /// An actual request from an allowed origin: add the fields to its response.
    Allowed,
    /// An actual request from an origin not allowed: proxied without CORS fields (the browser
    /// withholds the response from the page).
    Denied,
}

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

impl Cors {
    /// Classify `req`.
    pub fn classify(&self, req: &RequestHeader) -> CorsRequest {
        let Some(origin) = req.headers.get(header::ORIGIN) else {
            return CorsRequest::None;
        };
        let allowed = self.any_origin
            || origin.to_str().is_ok_and(|o| {
                self.origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            });
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        match (preflight, allowed) {
            (true, true) => CorsRequest::Preflight,
            (true, false) => CorsRequest::PreflightDenied,
            (false, true) => CorsRequest::Allowed,
            (false, false) => CorsRequest::Denied,
        }
    }

    /// The fields of a preflight answer to `req` (allowed origin).
    pub fn preflight_fields(&self, req: &RequestHeader) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        self.origin_fields(req, &mut |n, v| out.push((n, v)));
        out.push((header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
        if let Some(h) = &self.headers {
            out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone()));
        }
        if let Some(age) = self.max_age_seconds {
            out.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age)));
        }
        out
    }

    /// Add the fields of an actual response to `resp` (allowed origin).
    pub fn response_fields(&self, req: &RequestHeader, resp: &mut impl Fields) {
        self.origin_fields(req, &mut |n, v| {
            if n == header::VARY {
                resp.add(&n, v)
            } else {
                resp.set(&n, v)
            }
        });
        if let Some(h) = &self.expose_headers {
            resp.set(&header::ACCESS_CONTROL_EXPOSE_HEADERS, h.clone());
        }
    }

    fn origin_fields(&self, req: &RequestHeader, put: &mut dyn FnMut(HeaderName, HeaderValue)) {
        if self.any_origin && !self.credentials {
            put(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else if let Some(o) = req.headers.get(header::ORIGIN) {
            put(ALLOW_ORIGIN, o.clone());
            // The answer depends on the Origin: caches must key on it (Fetch standard §3.2.5).
            put(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            put(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_allow_admits_only_its_networks() {
        let acl = Acl {
            allow: vec![net("10.0.0.0/8")],
            deny: vec![net("10.1.2.0/24")],
        };
        assert!(acl.permits(Some("10.9.9.9".parse().unwrap())));
        assert!(!acl.permits(Some("10.1.2.3".parse().unwrap())));
        assert!(!acl.permits(Some("192.168.1.1".parse().unwrap())));
        assert!(acl.permits(Some("::ffff:10.9.9.9".parse().unwrap())));
        assert!(!acl.permits(None));
        let deny_only = Acl {
            allow: vec![],
            deny: vec![net("127.0.0.2/32")],
        };
        assert!(deny_only.permits(None));
        assert!(deny_only.permits(Some("127.0.0.1".parse().unwrap())));
        assert!(!deny_only.permits(Some("127.0.0.2".parse().unwrap())));
    }

    fn cors() -> Cors {
        Cors {
            origins: vec!["https://app.example.com".into()],
            any_origin: false,
            methods: HeaderValue::from_static("GET, POST"),
            headers: Some(HeaderValue::from_static("authorization")),
            expose_headers: None,
            max_age_seconds: Some(600),
            credentials: true,
        }
    }

    fn req(method: &str, origin: Option<&str>, preflight: bool) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        if let Some(o) = origin {
            r.insert_header("origin", o).unwrap();
        }
        if preflight {
            r.insert_header("access-control-request-method", "POST")
                .unwrap();
        }
        r
    }

    #[test]
    fn classifies_preflights_and_actual_requests() {
        let c = cors();
        let ok = Some("https://app.example.com");
        let bad = Some("https://evil.example");
        assert_eq!(c.classify(&req("GET", None, false)), CorsRequest::None);
        assert_eq!(
            c.classify(&req("OPTIONS", ok, true)),
            CorsRequest::Preflight
        );
        assert_eq!(
            c.classify(&req("OPTIONS", bad, true)),
            CorsRequest::PreflightDenied
        );
        // An OPTIONS without Access-Control-Request-Method is an ordinary request.
        assert_eq!(c.classify(&req("OPTIONS", ok, false)), CorsRequest::Allowed);
        assert_eq!(c.classify(&req("GET", bad, false)), CorsRequest::Denied);
        let fields = c.preflight_fields(&req("OPTIONS", ok, true));
        let get = |n: HeaderName| fields.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get(ALLOW_ORIGIN).unwrap(), "https://app.example.com");
        assert_eq!(get(header::ACCESS_CONTROL_MAX_AGE).unwrap(), "600");
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(),
            "true"
        );
        assert_eq!(get(header::VARY).unwrap(), "Origin");
    }
}
