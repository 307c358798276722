//! What a route does to the path: `rewrite` and `strip_prefix` (the path the backend gets) and
//! `redirect` (an answer instead of proxying).

use http::StatusCode;
use serde::Serialize;

use super::template::Template;
use super::Pattern;

/// `rewrite = { pattern, to }`: the first match of `pattern` in the path is replaced by `to`
/// (`$1`, `${name}` refer to groups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// The compiled pattern.
    pub pattern: Pattern,
    /// The replacement.
    pub to: String,
    /// nginx's usual `^/literal/(.*)$` → `/other/$1` done without the regex engine: its
    /// captures cost about 2,000 instructions per request (callgrind, `benches/rules-route.toml`).
    #[serde(skip)]
    prefix_swap: Option<PrefixSwap>,
}

/// `^{from}(.*)$` → `{before}$1{after}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PrefixSwap {
    from: String,
    before: String,
    after: String,
}

impl PrefixSwap {
    fn of(pattern: &str, to: &str) -> Option<PrefixSwap> {
        let from = pattern.strip_prefix('^')?.strip_suffix("(.*)$")?;
        if from.contains(|c: char| "\\.+*?()|[]{}^$".contains(c)) {
            return None;
        }
        let (before, after) = to.split_once("${1}").or_else(|| to.split_once("$1"))?;
        // `$1x` is group `1x` to the regex crate: not this form.
        if before.contains('$')
            || after.contains('$')
            || after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && !to.contains("${1}")
        {
            return None;
        }
        Some(PrefixSwap {
            from: from.to_owned(),
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }
}

impl Rewrite {
    /// A rewrite of `pattern` to `to`.
    pub fn new(pattern: Pattern, to: String) -> Rewrite {
        let prefix_swap = PrefixSwap::of(pattern.as_str(), &to);
        Rewrite {
            pattern,
            to,
            prefix_swap,
        }
    }

    /// The rewritten path, `None` when the pattern does not match.
    pub fn apply(&self, path: &str) -> Option<String> {
        if let Some(p) = &self.prefix_swap {
            let rest = path.strip_prefix(p.from.as_str())?;
            let mut out = String::with_capacity(p.before.len() + rest.len() + p.after.len());
            out.push_str(&p.before);
            out.push_str(rest);
            out.push_str(&p.after);
            return Some(out);
        }
        match self.pattern.0.replace(path, self.to.as_str()) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s),
        }
    }
}

/// `redirect = { to, status }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// The `Location`, a template.
    pub to: Template,
    /// 301, 302, 303, 307 or 308.
    #[serde(serialize_with = "status")]
    pub status: StatusCode,
}

fn status<S: serde::Serializer>(v: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(v.as_u16())
}

/// Statuses a redirect may use.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The path and query the backend gets for `path` (normalised, without query) and `query`:
/// `rewrite` first (on the client's path, as nginx's `rewrite ... break` before `proxy_pass`),
/// then `strip_prefix`. `None` when neither changes it.
pub fn upstream_path(
    rewrite: Option<&Rewrite>,
    strip_prefix: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Option<String> {
    let rewritten = rewrite.and_then(|r| r.apply(path));
    let current = rewritten.as_deref().unwrap_or(path);
    let stripped = strip_prefix.and_then(|p| strip(p, current));
    if rewritten.is_none() && stripped.is_none() {
        return None;
    }
    let new_path = stripped.unwrap_or(current);
    // Exactly the length written: the caller turns the string into the URI's `Bytes`
    // without a copy, which keeps the buffer as it is only when it has no spare capacity.
    let slash = usize::from(!new_path.starts_with('/'));
    let mut out = String::with_capacity(slash + new_path.len() + query.map_or(0, |q| q.len() + 1));
    if slash == 1 {
        out.push('/');
    }
    out.push_str(new_path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

/// `path` without `prefix` (on a `/` boundary), `None` when it does not start with it.
fn strip<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(if rest.is_empty() { "/" } else { rest })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(p: &str, to: &str) -> Rewrite {
        Rewrite::new(Pattern::new(p).unwrap(), to.into())
    }

    /// The prefix form gives what the regex gives, for the forms it takes.
    #[test]
    fn the_prefix_swap_agrees_with_the_regex() {
        let cases = [
            ("^/old/(.*)$", "/new/$1", true),
            ("^/old/(.*)$", "/new/${1}/x", true),
            ("^/api/v1/(.*)$", "/$1", true),
            ("^/a.b/(.*)$", "/$1", false),
            ("^/old/(.*)$", "/new/$1x", false),
            ("^/old/(.*)$", "/$2/$1", false),
            ("/old/(.*)$", "/$1", false),
        ];
        for (p, to, fast) in cases {
            let r = rw(p, to);
            assert_eq!(r.prefix_swap.is_some(), fast, "{p} -> {to}");
            for path in [
                "/old/a/b",
                "/old/",
                "/old",
                "/api/v1/x?",
                "/a.b/c",
                "/x/old/y",
            ] {
                let regex = match r.pattern.0.replace(path, to) {
                    std::borrow::Cow::Borrowed(_) => None,
                    std::borrow::Cow::Owned(s) => Some(s),
                };
                assert_eq!(r.apply(path), regex, "{p} -> {to} on {path}");
            }
        }
    }

    #[test]
    fn strip_prefix_on_segment_boundaries() {
        let f = |p, path, q| upstream_path(None, Some(p), path, q);
        assert_eq!(f("/api", "/api/users", None).as_deref(), Some("/users"));
        assert_eq!(f("/api/", "/api/users", None).as_deref(), Some("/users"));
        assert_eq!(f("/api", "/api", Some("a=1")).as_deref(), Some("/?a=1"));
        assert_eq!(f("/api", "/apix/users", None), None);
        assert_eq!(f("/api", "/other", None), None);
    }

    #[test]
    fn rewrite_then_strip_keeping_the_query() {
        let r = rw("^/old/(.*)$", "/new/$1");
        assert_eq!(
            upstream_path(Some(&r), None, "/old/a/b", Some("x=1")).as_deref(),
            Some("/new/a/b?x=1")
        );
        assert_eq!(upstream_path(Some(&r), None, "/other", None), None);
        let r = rw("^/api/v1/(.*)$", "/api/v2/$1");
        assert_eq!(
            upstream_path(Some(&r), Some("/api"), "/api/v1/users", None).as_deref(),
            Some("/v2/users")
        );
        // A replacement without a leading slash still gives an origin-form target.
        let r = rw("^/x/(.*)$", "$1");
        assert_eq!(
            upstream_path(Some(&r), None, "/x/y", None).as_deref(),
            Some("/y")
        );
    }

    #[test]
    fn the_new_target_has_no_spare_capacity() {
        // `Bytes::from` keeps a `String`'s buffer without copying or allocating only when its
        // length is its capacity (edge/rules.rs parses the URI from it in place).
        let r = rw("^/x/(.*)$", "$1");
        for (rewrite, strip, path, query) in [
            (Some(&r), None, "/x/y", None),
            (Some(&r), None, "/x/y", Some("a=1&b=2")),
            (None, Some("/api"), "/api/users", Some("q")),
            (None, Some("/api"), "/api", None),
        ] {
            let out = upstream_path(rewrite, strip, path, query).unwrap();
            assert_eq!(out.len(), out.capacity(), "{out}");
        }
    }
}
