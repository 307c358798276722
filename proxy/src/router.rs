//! Route matching. Precedence, the same for every request:
//!
//! 1. host first: the exact host, then the longest `*.suffix`, then `*`; a host pattern with no
//!    matching route falls through to the next;
//! 2. within a host pattern: `path_exact`, then `path_regex` in file order, then the longest
//!    `path_prefix` (prefixes match on `/` boundaries: `/api` matches `/api` and `/api/x`, not
//!    `/apix`);
//! 3. among routes with the same path rule, the first in the file whose `methods` and
//!    `match_headers` accept the request.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::config::{HeaderMatch, HostMatch, PathMatch, RouteSpec};

/// A route's conditions besides host and path.
#[derive(Debug, Default)]
struct Conditions {
    methods: Vec<Method>,
    headers: Vec<HeaderMatch>,
    tls: Option<bool>,
}

impl Conditions {
    fn accept(&self, tls: bool, method: &Method, headers: &HeaderMap) -> bool {
        self.tls.is_none_or(|t| t == tls)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|h| match &h.value {
                None => headers.contains_key(&h.name),
                Some(v) => headers
                    .get_all(&h.name)
                    .iter()
                    .any(|x| x.as_bytes() == v.as_bytes()),
            })
    }
}

/// Route indexes for one host pattern.
#[derive(Debug, Default)]
struct Group {
    /// `path_exact` → routes in file order.
    exact: HashMap<String, Vec<usize>>,
    /// `path_regex` routes in file order.
    regex: Vec<(crate::rules::Pattern, usize)>,
    /// `(path_prefix, route)`, longest prefix first, routes with the same prefix in file order
    /// (a stable sort).
    prefixes: Vec<(String, usize)>,
}

impl Group {
    fn add(&mut self, path: &PathMatch, route: usize) {
        match path {
            PathMatch::Exact(p) => self.exact.entry(p.clone()).or_default().push(route),
            PathMatch::Regex(r) => self.regex.push((r.clone(), route)),
            PathMatch::Prefix(prefix) => {
                self.prefixes.push((prefix.clone(), route));
                self.prefixes
                    .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
            }
        }
    }

    fn find(&self, path: &str, accept: impl Fn(usize) -> bool) -> Option<usize> {
        if !self.exact.is_empty() {
            if let Some(u) = self
                .exact
                .get(path)
                .and_then(|rs| rs.iter().copied().find(|r| accept(*r)))
            {
                return Some(u);
            }
        }
        if let Some(u) = self
            .regex
            .iter()
            .find(|(re, r)| re.is_match(path) && accept(*r))
        {
            return Some(u.1);
        }
        self.prefixes
            .iter()
            .find(|(p, r)| prefix_matches(p, path) && accept(*r))
            .map(|(_, r)| *r)
    }
}

/// Whether `path` is `prefix` or below it, on `/` boundaries.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || matches!(path.as_bytes()[prefix.len()], b'/' | b'?'))
}

/// Immutable route table built from the config.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Group>,
    /// `(".example.com", group)`, longest suffix first.
    suffix: Vec<(String, Group)>,
    any: Group,
    /// Per route: its conditions, `None` when it has none (the common case: no check).
    conditions: Vec<Option<Conditions>>,
    /// Whether any route has conditions; without any, lookups skip the check altogether.
    any_conditions: bool,
}

impl Router {
    /// Build the table from validated routes.
    pub fn new(routes: &[RouteSpec]) -> Self {
        let mut r = Router::default();
        for (idx, route) in routes.iter().enumerate() {
            let group = match &route.host {
                HostMatch::Any => &mut r.any,
                HostMatch::Exact(h) => r.exact.entry(h.clone()).or_default(),
                HostMatch::Suffix(s) => match r.suffix.iter().position(|(x, _)| x == s) {
                    Some(i) => &mut r.suffix[i].1,
                    None => {
                        r.suffix.push((s.clone(), Group::default()));
                        &mut r.suffix.last_mut().expect("just pushed").1
                    }
                },
            };
            group.add(&route.path, idx);
            let has =
                !route.methods.is_empty() || !route.match_headers.is_empty() || route.tls.is_some();
            r.any_conditions |= has;
            r.conditions.push(has.then(|| Conditions {
                methods: route.methods.clone(),
                headers: route.match_headers.clone(),
                tls: route.tls,
            }));
        }
        r.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        r
    }

    /// Whether any route names a host. Without one, [`Router::find`] ignores the host, and the
    /// request's `Host` need be neither looked up nor normalised (about 270 instructions per
    /// request, callgrind).
    pub fn matches_hosts(&self) -> bool {
        !self.exact.is_empty() || !self.suffix.is_empty()
    }

    /// The index (in the config's `routes`) of the route for `host` (lower-case, without port),
    /// `path` (without the query), `method` and `headers`, on a TLS connection or not.
    pub fn find(
        &self,
        host: &str,
        path: &str,
        tls: bool,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        if !self.any_conditions {
            // Monomorphised with a constant `true`: the common table costs no per-route check.
            return self.lookup(host, path, |_| true);
        }
        self.lookup(host, path, |r: usize| {
            self.conditions
                .get(r)
                .and_then(Option::as_ref)
                .is_none_or(|c| c.accept(tls, method, headers))
        })
    }

    fn lookup(
        &self,
        host: &str,
        path: &str,
        accept: impl Fn(usize) -> bool + Copy,
    ) -> Option<usize> {
        if let Some(u) = self.exact.get(host).and_then(|g| g.find(path, accept)) {
            return Some(u);
        }
        for (suffix, g) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(u) = g.find(path, accept) {
                    return Some(u);
                }
            }
        }
        self.any.find(path, accept)
    }
}

/// Normalise a `Host` header or URI authority for matching: strip the port and lower-case it.
/// Returns a borrowed slice when it is already lower-case (the common case: no allocation).
/// One pass over the bytes from the end (callgrind, plain route: `rsplit_once`,
/// `trim_end_matches` and the case check through `str`'s pattern searchers cost 320
/// instructions a request; the test holds it to that version's results).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let b = raw.as_bytes();
    let (start, mut end) = if b.first() == Some(&b'[') {
        // IPv6 literal: [::1]:8080 is `::1`; an unclosed one is everything after the `[`.
        (1, b.iter().position(|&c| c == b']').unwrap_or(b.len()))
    } else {
        // A port is the digits after the last `:` (possibly none: `host:`).
        let mut i = b.len();
        while i > 0 && b[i - 1].is_ascii_digit() {
            i -= 1;
        }
        (
            0,
            if i > 0 && b[i - 1] == b':' {
                i - 1
            } else {
                b.len()
            },
        )
    };
    // Every index here is at an ASCII byte or the end: a `str` boundary.
    while end > start && b[end - 1] == b'.' {
        end -= 1;
    }
    lower(&raw[start..end])
}

/// `host` lower-cased, borrowed when it already is.
fn lower(host: &str) -> std::borrow::Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route whose index in the test's list is given as `upstream` (the router returns
    /// route indexes; the tests list routes in that order).
    fn route(host: HostMatch, path: PathMatch, upstream: usize) -> RouteSpec {
        RouteSpec::for_test(host, path, upstream)
    }

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.into())
    }

    fn get(r: &Router, host: &str, path: &str) -> Option<usize> {
        r.find(host, path, false, &Method::GET, &HeaderMap::new())
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let r = Router::new(&[
            route(HostMatch::Any, prefix("/"), 0),
            route(HostMatch::Any, prefix("/api"), 1),
            route(HostMatch::Suffix(".example.com".into()), prefix("/"), 2),
            route(HostMatch::Suffix(".eu.example.com".into()), prefix("/"), 3),
            route(
                HostMatch::Exact("www.example.com".into()),
                prefix("/static/"),
                4,
            ),
        ]);
        assert_eq!(get(&r, "other", "/"), Some(0));
        assert_eq!(get(&r, "other", "/api"), Some(1));
        assert_eq!(get(&r, "other", "/api/v1"), Some(1));
        assert_eq!(get(&r, "other", "/apix"), Some(0));
        assert_eq!(get(&r, "a.example.com", "/api"), Some(2));
        assert_eq!(get(&r, "a.eu.example.com", "/"), Some(3));
        assert_eq!(get(&r, "example.com", "/"), Some(0), "suffix needs a label");
        assert_eq!(get(&r, "www.example.com", "/static/x"), Some(4));
        // exact host without a matching prefix falls through to the wildcard
        assert_eq!(get(&r, "www.example.com", "/other"), Some(2));
    }

    /// Routes that name no host route any host alike, so the edge may skip the `Host` lookup
    /// (`matches_hosts`); one route naming a host, exactly or by suffix, needs it again.
    #[test]
    fn the_host_matters_only_when_a_route_names_one() {
        let any = [
            route(HostMatch::Any, prefix("/"), 0),
            route(HostMatch::Any, prefix("/api"), 1),
        ];
        let r = Router::new(&any);
        assert!(!r.matches_hosts());
        for host in ["", "a.example.com", "other"] {
            assert_eq!(get(&r, host, "/api/x"), Some(1), "{host:?}");
            assert_eq!(get(&r, host, "/x"), Some(0), "{host:?}");
        }
        for named in [
            HostMatch::Exact("a.example.com".into()),
            HostMatch::Suffix(".example.com".into()),
        ] {
            let mut routes = any.to_vec();
            routes.push(route(named, prefix("/"), 2));
            let r = Router::new(&routes);
            assert!(r.matches_hosts());
            assert_eq!(get(&r, "a.example.com", "/x"), Some(2));
            assert_eq!(get(&r, "", "/x"), Some(0));
        }
    }

    /// The precedence table of docs/configuration.md: exact > regex (file order) > longest
    /// prefix, within the most specific host.
    #[test]
    fn exact_then_regex_in_file_order_then_longest_prefix() {
        let re = |p: &str| PathMatch::Regex(crate::rules::Pattern::new(p).unwrap());
        let r = Router::new(&[
            route(HostMatch::Any, prefix("/"), 0),
            route(HostMatch::Any, prefix("/v1/users/admin"), 1),
            route(HostMatch::Any, re("^/v[0-9]+/users"), 2),
            route(HostMatch::Any, re("^/v1/"), 3),
            route(HostMatch::Any, PathMatch::Exact("/v1/users/me".into()), 4),
            route(HostMatch::Exact("h.com".into()), prefix("/"), 5),
        ]);
        assert_eq!(get(&r, "x", "/v1/users/me"), Some(4), "exact first");
        assert_eq!(get(&r, "x", "/v1/users/me/x"), Some(2), "exact is exact");
        assert_eq!(
            get(&r, "x", "/v1/users/admin"),
            Some(2),
            "regex before prefix"
        );
        assert_eq!(get(&r, "x", "/v1/other"), Some(3), "regexes in file order");
        assert_eq!(get(&r, "x", "/v2/other"), Some(0));
        assert_eq!(get(&r, "h.com", "/v1/users/me"), Some(5), "host first");
    }

    #[test]
    fn methods_and_headers_fall_through_to_the_next_candidate() {
        let mut canary = route(HostMatch::Any, prefix("/api"), 0);
        canary.match_headers = vec![HeaderMatch {
            name: http::header::HeaderName::from_static("x-canary"),
            value: Some("1".into()),
        }];
        let mut writes = route(HostMatch::Any, prefix("/api"), 1);
        writes.methods = vec![Method::POST, Method::PUT];
        let rest = route(HostMatch::Any, prefix("/api"), 2);
        let root = route(HostMatch::Any, prefix("/"), 3);
        let r = Router::new(&[canary, writes, rest, root]);
        let mut h = HeaderMap::new();
        assert_eq!(r.find("x", "/api/a", false, &Method::GET, &h), Some(2));
        assert_eq!(r.find("x", "/api/a", false, &Method::POST, &h), Some(1));
        h.insert("x-canary", "1".parse().unwrap());
        assert_eq!(r.find("x", "/api/a", false, &Method::POST, &h), Some(0));
        h.insert("x-canary", "2".parse().unwrap());
        assert_eq!(r.find("x", "/api/a", false, &Method::GET, &h), Some(2));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(HostMatch::Exact("a.com".into()), prefix("/"), 0)]);
        assert_eq!(get(&r, "b.com", "/"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert!(matches!(
            normalize_host("a.b"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// The `str`-pattern version `normalize_host` replaced, as the reference.
    fn reference(raw: &str) -> String {
        let host = if let Some(rest) = raw.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest)
        } else {
            raw.rsplit_once(':').map_or(raw, |(h, p)| {
                if p.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    raw
                }
            })
        };
        host.trim_end_matches('.').to_ascii_lowercase()
    }

    #[test]
    fn normalize_host_agrees_with_the_reference_on_every_short_string() {
        let fixed = [
            "", ":", "::", ":80", "host:", "a:b:80", "host:abc", "host123", "123", "[", "[]",
            "[::1", "[::1]", "[::1]:80", "[::1.]:8", "..", "a..:9", "é.COM:1", "[É]", "A.:.:1",
        ];
        for raw in fixed {
            assert_eq!(normalize_host(raw), reference(raw), "{raw:?}");
        }
        // Every string of up to 5 characters over the characters that matter.
        let alphabet = ['a', 'B', '1', ':', '.', '[', ']', 'é'];
        let mut words = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for w in &words {
                for c in alphabet {
                    let mut w = w.clone();
                    w.push(c);
                    assert_eq!(normalize_host(&w), reference(&w), "{w:?}");
                    next.push(w);
                }
            }
            words = next;
        }
    }
}
