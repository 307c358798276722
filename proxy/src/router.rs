//! Route matching: the most specific host pattern (exact, then the longest `*.suffix`, then `*`)
//! that has a matching path prefix wins; within it the longest prefix wins. Prefixes match on
//! `/` boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.

use std::collections::HashMap;

use crate::config::{HostMatch, RouteSpec};

/// Route indexes for one host pattern, longest prefix first.
#[derive(Debug, Default)]
struct Group {
    prefixes: Vec<(String, usize)>,
}

impl Group {
    fn add(&mut self, prefix: &str, route: usize) {
        // The first route listed for a prefix wins, as in the file.
        if !self.prefixes.iter().any(|(p, _)| p == prefix) {
            self.prefixes.push((prefix.to_owned(), route));
            self.prefixes
                .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        }
    }

    fn find(&self, path: &str) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| prefix_matches(p, path))
            .map(|(_, u)| *u)
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
            group.add(&route.path_prefix, idx);
        }
        r.suffix.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        r
    }

    /// The index (in the config's `routes`) of the route for `host` (lower-case, without port)
    /// and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<usize> {
        if let Some(u) = self.exact.get(host).and_then(|g| g.find(path)) {
            return Some(u);
        }
        for (suffix, g) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(u) = g.find(path) {
                    return Some(u);
                }
            }
        }
        self.any.find(path)
    }
}

/// Normalise a `Host` header or URI authority for matching: strip the port and lower-case it.
/// Returns a borrowed slice when it is already lower-case (the common case: no allocation).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = if let Some(rest) = raw.strip_prefix('[') {
        // IPv6 literal: [::1]:8080
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
    let host = host.trim_end_matches('.');
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
    fn route(host: HostMatch, prefix: &str, upstream: usize) -> RouteSpec {
        RouteSpec {
            host,
            path_prefix: prefix.into(),
            upstream,
            rate_limit: Default::default(),
            name: format!("{prefix}#{upstream}"),
            access_log: true,
            cache: Default::default(),
            cache_tags: Vec::new(),
        }
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let r = Router::new(&[
            route(HostMatch::Any, "/", 0),
            route(HostMatch::Any, "/api", 1),
            route(HostMatch::Suffix(".example.com".into()), "/", 2),
            route(HostMatch::Suffix(".eu.example.com".into()), "/", 3),
            route(HostMatch::Exact("www.example.com".into()), "/static/", 4),
        ]);
        assert_eq!(r.find("other", "/"), Some(0));
        assert_eq!(r.find("other", "/api"), Some(1));
        assert_eq!(r.find("other", "/api/v1"), Some(1));
        assert_eq!(r.find("other", "/api?x=1"), Some(1));
        assert_eq!(r.find("other", "/apix"), Some(0));
        assert_eq!(r.find("a.example.com", "/api"), Some(2));
        assert_eq!(r.find("a.eu.example.com", "/"), Some(3));
        assert_eq!(r.find("example.com", "/"), Some(0), "suffix needs a label");
        assert_eq!(r.find("www.example.com", "/static/x"), Some(4));
        // exact host without a matching prefix falls through to the wildcard
        assert_eq!(r.find("www.example.com", "/other"), Some(2));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(HostMatch::Exact("a.com".into()), "/", 0)]);
        assert_eq!(r.find("b.com", "/"), None);
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
}
