//! A route's matching keys beyond host and prefix (`path_exact`, `path_regex`, `methods`,
//! `match_headers`) and its rules (`strip_prefix`, `rewrite`, `redirect`, `request_headers`,
//! `response_headers`, `security_headers`, `max_body_bytes`, `allow`, `deny`, `cors`): the file
//! structs and their validation into [`crate::rules`].

use std::collections::BTreeMap;

use http::header::HeaderName;
use http::{HeaderValue, Method, StatusCode};
use serde::Deserialize;

use super::*;
use crate::rules::{
    paths::REDIRECT_STATUSES, Acl, Compression, Cors, HeaderRules, Pattern, Redirect, Rewrite,
    RouteRules, SecurityHeaders, Template,
};

/// `rewrite = { pattern, to }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRewrite {
    /// Regular expression on the path.
    pub pattern: String,
    /// Replacement, with `$1` or `${name}` for groups.
    pub to: String,
}

/// `redirect = { to, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedirect {
    /// `Location` template.
    pub to: String,
    /// 301, 302, 303, 307 or 308 (default 308).
    pub status: Option<i64>,
}

/// `request_headers` / `response_headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderRules {
    /// Replace (or create) these fields.
    pub set: Option<BTreeMap<String, String>>,
    /// Append these fields.
    pub add: Option<BTreeMap<String, String>>,
    /// Remove these fields.
    pub remove: Option<Vec<String>>,
}

/// `compression = { ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCompression {
    /// Codings in order of preference (default zstd, br, gzip).
    pub algorithms: Option<Vec<String>>,
    /// Smallest body compressed (default 1024).
    pub min_bytes: Option<i64>,
    /// Media types compressed.
    pub types: Option<Vec<String>>,
}

/// `cors = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCors {
    /// Allowed origins, or `["*"]`.
    pub origins: Vec<String>,
    /// Allowed methods (default GET, HEAD, POST).
    pub methods: Option<Vec<String>>,
    /// Allowed request fields.
    pub headers: Option<Vec<String>>,
    /// Response fields a page may read.
    pub expose_headers: Option<Vec<String>>,
    /// How long a browser may cache a preflight answer.
    pub max_age_seconds: Option<i64>,
    /// Allow cookies and credentials.
    pub credentials: Option<bool>,
}

/// `[route_defaults]`: rule keys every route takes unless it sets its own (nginx's
/// `server`-level `add_header`, `client_max_body_size`, `gzip`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteDefaults {
    /// Default `request_headers`.
    pub request_headers: Option<FileHeaderRules>,
    /// Default `response_headers`.
    pub response_headers: Option<FileHeaderRules>,
    /// Default `security_headers`.
    pub security_headers: Option<String>,
    /// Default `compression`.
    pub compression: Option<FileCompression>,
    /// Default `max_body_bytes`.
    pub max_body_bytes: Option<i64>,
    /// Default `allow`.
    pub allow: Option<Vec<String>>,
    /// Default `deny`.
    pub deny: Option<Vec<String>>,
    /// Default `require_client_cert`.
    pub require_client_cert: Option<bool>,
}

impl FileRules {
    /// Each key this route leaves out, taken from `defaults` (a key the route sets replaces
    /// the default whole, as in nginx).
    pub fn with_defaults(mut self, d: &FileRouteDefaults) -> FileRules {
        fn or<T: Clone>(v: &mut Option<T>, d: &Option<T>) {
            if v.is_none() {
                v.clone_from(d);
            }
        }
        or(&mut self.request_headers, &d.request_headers);
        or(&mut self.response_headers, &d.response_headers);
        or(&mut self.security_headers, &d.security_headers);
        or(&mut self.compression, &d.compression);
        or(&mut self.max_body_bytes, &d.max_body_bytes);
        or(&mut self.allow, &d.allow);
        or(&mut self.deny, &d.deny);
        or(&mut self.require_client_cert, &d.require_client_cert);
        self
    }
}

impl From<FileRouteDefaults> for FileRules {
    fn from(d: FileRouteDefaults) -> FileRules {
        FileRules::default().with_defaults(&d)
    }
}

/// The rule keys of one `[[routes]]` entry, taken out of [`super::route::FileRoute`].
#[derive(Debug, Default)]
pub struct FileRules {
    pub strip_prefix: Option<String>,
    pub rewrite: Option<FileRewrite>,
    pub redirect: Option<FileRedirect>,
    pub request_headers: Option<FileHeaderRules>,
    pub response_headers: Option<FileHeaderRules>,
    pub security_headers: Option<String>,
    pub compression: Option<FileCompression>,
    pub max_body_bytes: Option<i64>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub cors: Option<FileCors>,
    pub require_client_cert: Option<bool>,
}

/// Request fields Sluice itself sets or that frame the message: a rule may not touch them.
pub const OWNED_REQUEST_FIELDS: [&str; 12] = [
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];

/// Response fields that frame the message: a rule may not touch them.
pub const OWNED_RESPONSE_FIELDS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "trailer",
    "keep-alive",
    "x-request-id",
];

/// Whether route `a`, listed before `b`, takes every request `b` would get (same host pattern
/// and path rule, and `a`'s conditions accept everything `b`'s do): `b` then never receives
/// traffic, which `--check` reports.
pub(super) fn shadows(a: &RouteSpec, b: &RouteSpec) -> bool {
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let headers = a.match_headers.iter().all(|ha| {
        b.match_headers
            .iter()
            .any(|hb| hb.name == ha.name && (ha.value.is_none() || ha.value == hb.value))
    });
    let scheme = a.tls.is_none() || a.tls == b.tls;
    a.host == b.host && a.path == b.path && methods && headers && scheme
}

impl Validator {
    /// A route's path matcher: exactly one of `path_prefix` (default `/`), `path_exact`,
    /// `path_regex`.
    pub(super) fn path_match(
        &mut self,
        path: &str,
        prefix: Option<String>,
        exact: Option<String>,
        regex: Option<String>,
    ) -> Option<PathMatch> {
        let given = [prefix.is_some(), exact.is_some(), regex.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            self.problem(
                path.to_owned(),
                "give one of path_prefix, path_exact, path_regex",
            );
            return None;
        }
        let slash = |v: &mut Self, key: &str, p: &str| {
            if !p.starts_with('/') {
                v.problem(
                    format!("{path}.{key}"),
                    format!("`{p}` must start with `/`"),
                );
            }
        };
        if let Some(e) = exact {
            slash(self, "path_exact", &e);
            return Some(PathMatch::Exact(e));
        }
        if let Some(r) = regex {
            return match Pattern::new(&r) {
                Ok(p) => Some(PathMatch::Regex(p)),
                Err(e) => {
                    self.problem(format!("{path}.path_regex"), format!("`{r}`: {e}"));
                    None
                }
            };
        }
        let p = prefix.unwrap_or_else(|| "/".to_owned());
        slash(self, "path_prefix", &p);
        Some(PathMatch::Prefix(p))
    }

    /// `methods`: upper-case HTTP methods.
    pub(super) fn methods(&mut self, path: &str, m: Option<Vec<String>>) -> Vec<Method> {
        let mut out = Vec::new();
        for (i, name) in m.unwrap_or_default().iter().enumerate() {
            let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
            match Method::from_bytes(name.as_bytes()) {
                Ok(m) if ok => out.push(m),
                _ => self.problem(
                    format!("{path}.methods[{i}]"),
                    format!("`{name}` is not an HTTP method (upper case, e.g. GET)"),
                ),
            }
        }
        out
    }

    /// `match_headers = { name = "value" | "*" }`.
    pub(super) fn match_headers(
        &mut self,
        path: &str,
        m: Option<BTreeMap<String, String>>,
    ) -> Vec<HeaderMatch> {
        let mut out = Vec::new();
        for (name, value) in m.unwrap_or_default() {
            let Some(n) = self.field_name(&format!("{path}.match_headers.{name}"), &name) else {
                continue;
            };
            out.push(HeaderMatch {
                name: n,
                value: (value != "*").then_some(value),
            });
        }
        out
    }

    fn field_name(&mut self, path: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(path, format!("`{name}` is not a header field name"));
                None
            }
        }
    }

    /// A route's rules. `proxied` is false for a route without an upstream.
    pub(super) fn route_rules(&mut self, path: &str, r: FileRules) -> Option<RouteRules> {
        let FileRules {
            strip_prefix,
            rewrite,
            redirect,
            request_headers,
            response_headers,
            security_headers,
            compression,
            max_body_bytes,
            allow,
            deny,
            cors,
            require_client_cert,
        } = r;
        let compression = match compression {
            None => Some(None),
            Some(c) => self
                .compression(&format!("{path}.compression"), c)
                .map(Some),
        };
        let rewrite = self.path_rules(path, strip_prefix.as_deref(), rewrite);
        let redirect = match redirect {
            None => Some(None),
            Some(r) => self.redirect(&format!("{path}.redirect"), r).map(Some),
        };
        let request_headers = self.header_rules(
            &format!("{path}.request_headers"),
            request_headers.unwrap_or_default(),
            &OWNED_REQUEST_FIELDS,
        );
        let response_headers = self.header_rules(
            &format!("{path}.response_headers"),
            response_headers.unwrap_or_default(),
            &OWNED_RESPONSE_FIELDS,
        );
        let options = SecurityHeaders::NAMES.map(|n| (n, SecurityHeaders::from_name(n)));
        let security_headers = self
            .one_of(
                &format!("{path}.security_headers"),
                security_headers.as_deref(),
                "off",
                &options,
            )
            .flatten();
        let max_body_bytes = match max_body_bytes {
            None => Some(None),
            Some(n) => self
                .int_in(&format!("{path}.max_body_bytes"), Some(n), 0, 0, i64::MAX)
                .map(|n| Some(n as u64)),
        };
        // Stored as networks (`10.0.0.1/8` is shown as `10.0.0.0/8`).
        let mut nets = |key: &str, list: Option<Vec<String>>| -> Vec<ipnet::IpNet> {
            let list = list.unwrap_or_default();
            let nets = self.networks(&format!("{path}.{key}"), list);
            nets.into_iter().map(|n| n.trunc()).collect()
        };
        let acl = Acl {
            allow: nets("allow", allow),
            deny: nets("deny", deny),
        };
        let cors = match cors {
            None => Some(None),
            Some(c) => self.cors(&format!("{path}.cors"), c).map(Some),
        };
        Some(RouteRules {
            strip_prefix,
            rewrite,
            redirect: redirect?,
            request_headers: request_headers?,
            response_headers: response_headers?,
            security_headers: security_headers?,
            compression: compression?,
            max_body_bytes: max_body_bytes?,
            acl,
            cors: cors?,
            require_client_cert: require_client_cert.unwrap_or(false),
        })
    }

    /// `strip_prefix` (checked) and `rewrite` (compiled).
    fn path_rules(
        &mut self,
        path: &str,
        strip_prefix: Option<&str>,
        rewrite: Option<FileRewrite>,
    ) -> Option<Rewrite> {
        if let Some(p) = strip_prefix {
            if !p.starts_with('/') || p.len() < 2 {
                self.problem(
                    format!("{path}.strip_prefix"),
                    format!("`{p}` must start with `/` and name at least one segment"),
                );
            }
        }
        rewrite.and_then(|rw| match Pattern::new(&rw.pattern) {
            Ok(pattern) => Some(Rewrite::new(pattern, rw.to)),
            Err(e) => {
                self.problem(
                    format!("{path}.rewrite.pattern"),
                    format!("`{}`: {e}", rw.pattern),
                );
                None
            }
        })
    }

    fn compression(&mut self, path: &str, c: FileCompression) -> Option<Compression> {
        use crate::rules::compress::{Coding, MediaRange, DEFAULT_TYPES};
        let mut ok = true;
        let names = c
            .algorithms
            .unwrap_or_else(|| Coding::ALL.iter().map(|(n, _)| (*n).to_owned()).collect());
        let mut algorithms = Vec::new();
        for (i, n) in names.iter().enumerate() {
            match Coding::ALL.iter().find(|(name, _)| name == n) {
                Some((_, coding)) if !algorithms.contains(coding) => algorithms.push(*coding),
                Some(_) => {
                    self.problem(
                        format!("{path}.algorithms[{i}]"),
                        format!("`{n}` is listed twice"),
                    );
                    ok = false;
                }
                None => {
                    self.problem(
                        format!("{path}.algorithms[{i}]"),
                        format!("`{n}`: expected `zstd`, `br` or `gzip`"),
                    );
                    ok = false;
                }
            }
        }
        if names.is_empty() {
            self.problem(
                format!("{path}.algorithms"),
                "empty: list at least one of zstd, br, gzip",
            );
            ok = false;
        }
        let min_bytes = self.int_in(&format!("{path}.min_bytes"), c.min_bytes, 1024, 0, i64::MAX);
        let types = c
            .types
            .unwrap_or_else(|| DEFAULT_TYPES.iter().map(|t| (*t).to_owned()).collect());
        let mut ranges = Vec::new();
        for (i, t) in types.iter().enumerate() {
            let valid = t.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
                };
                token(a) && (b == "*" || token(b))
            });
            if valid {
                ranges.push(MediaRange(t.to_ascii_lowercase()));
            } else {
                self.problem(
                    format!("{path}.types[{i}]"),
                    format!("`{t}`: expected a media type such as `text/*` or `application/json`"),
                );
                ok = false;
            }
        }
        ok.then_some(Compression {
            algorithms,
            min_bytes: min_bytes? as u64,
            types: ranges,
        })
    }

    fn redirect(&mut self, path: &str, r: FileRedirect) -> Option<Redirect> {
        let to = match Template::parse(&r.to) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(format!("{path}.to"), format!("`{}`: {e}", r.to));
                None
            }
        };
        let code = r.status.unwrap_or(308);
        let status = match u16::try_from(code) {
            Ok(c) if REDIRECT_STATUSES.contains(&c) => StatusCode::from_u16(c).ok(),
            _ => {
                self.problem(
                    format!("{path}.status"),
                    format!("{code}: expected 301, 302, 303, 307 or 308"),
                );
                None
            }
        };
        Some(Redirect {
            to: to?,
            status: status?,
        })
    }

    fn header_rules(
        &mut self,
        path: &str,
        r: FileHeaderRules,
        owned: &[&str],
    ) -> Option<HeaderRules> {
        let mut ok = true;
        let name_of = |v: &mut Self, key: String, name: &str| -> Option<HeaderName> {
            let n = v.field_name(&key, name)?;
            if owned.contains(&n.as_str()) {
                v.problem(
                    key,
                    format!(
                        "`{name}` is set by Sluice or frames the message: rules cannot change it"
                    ),
                );
                return None;
            }
            Some(n)
        };
        let mut templated = |v: &mut Self, kind: &str, m: Option<BTreeMap<String, String>>| {
            let mut out = Vec::new();
            for (name, value) in m.unwrap_or_default() {
                let key = format!("{path}.{kind}.{name}");
                let n = name_of(v, key.clone(), &name);
                let t = Template::parse(&value)
                    .map_err(|e| v.problem(key, format!("`{value}`: {e}")))
                    .ok();
                match (n, t) {
                    (Some(n), Some(t)) => out.push((crate::rules::FieldName::new(n), t)),
                    _ => ok = false,
                }
            }
            out
        };
        let set = templated(self, "set", r.set);
        let add = templated(self, "add", r.add);
        let mut remove = Vec::new();
        for (i, name) in r.remove.unwrap_or_default().iter().enumerate() {
            match name_of(self, format!("{path}.remove[{i}]"), name) {
                Some(n) => remove.push(n),
                None => ok = false,
            }
        }
        ok.then_some(HeaderRules { set, add, remove })
    }

    fn cors(&mut self, path: &str, c: FileCors) -> Option<Cors> {
        let any_origin = c.origins.iter().any(|o| o == "*");
        let credentials = c.credentials.unwrap_or(false);
        let mut ok = true;
        if c.origins.is_empty() {
            self.problem(format!("{path}.origins"), "empty: list origins or [\"*\"]");
            ok = false;
        }
        if any_origin && credentials {
            self.problem(
                format!("{path}.credentials"),
                "credentials with origins = [\"*\"] would let any site act as the user: list the origins",
            );
            ok = false;
        }
        for (i, o) in c.origins.iter().enumerate() {
            let valid = o == "*"
                || url::Url::parse(o).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && !o.ends_with('/')
                });
            if !valid {
                self.problem(
                    format!("{path}.origins[{i}]"),
                    format!("`{o}`: expected scheme://host[:port] (no path) or \"*\""),
                );
                ok = false;
            }
        }
        let methods = c
            .methods
            .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()]);
        let methods = self.methods(&format!("{path}.methods"), Some(methods));
        let mut list = |v: &mut Self, key: &str, names: Option<Vec<String>>| {
            let mut out = Vec::new();
            for (i, n) in names.unwrap_or_default().iter().enumerate() {
                if let Some(n) = v.field_name(&format!("{path}.{key}[{i}]"), n) {
                    out.push(n.as_str().to_owned());
                } else {
                    ok = false;
                }
            }
            (!out.is_empty()).then(|| HeaderValue::from_str(&out.join(", ")).ok())?
        };
        let headers = list(self, "headers", c.headers);
        let expose_headers = list(self, "expose_headers", c.expose_headers);
        let max_age = match c.max_age_seconds {
            None => Some(None),
            Some(s) => self
                .int_in(&format!("{path}.max_age_seconds"), Some(s), 0, 0, 86_400)
                .map(|s| Some(s as u32)),
        };
        let joined: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let methods = HeaderValue::from_str(&joined.join(", ")).ok();
        ok.then_some(Cors {
            origins: c
                .origins
                .into_iter()
                .filter(|o| o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            any_origin,
            methods: methods?,
            headers,
            expose_headers,
            max_age_seconds: max_age?,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: HostMatch, p: &str, upstream: usize) -> RouteSpec {
        RouteSpec::for_test(host, PathMatch::Prefix(p.into()), upstream)
    }

    #[test]
    fn a_route_shadows_a_later_one_it_covers() {
        let a = route(HostMatch::Any, "/api", 0);
        let mut b = route(HostMatch::Any, "/api", 1);
        assert!(shadows(&a, &b));
        b.methods = vec![Method::GET];
        assert!(shadows(&a, &b), "a takes every method");
        assert!(!shadows(&b, &a), "b takes only GET");
        let mut c = route(HostMatch::Any, "/api", 2);
        c.methods = vec![Method::GET, Method::POST];
        assert!(shadows(&c, &b));
        assert!(!shadows(&b, &c));
        let other = route(HostMatch::Exact("a.com".into()), "/api", 3);
        assert!(!shadows(&a, &other));
        let mut plain = route(HostMatch::Any, "/api", 4);
        plain.tls = Some(false);
        assert!(shadows(&a, &plain));
        assert!(
            !shadows(&plain, &a),
            "the plain-only route leaves TLS requests"
        );
    }
}
