//! `[[routes]]`: host and path matching, the pool, and per-route cache and rate-limit rules. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use super::*;

/// `[[routes]]`: one routing rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// `example.com`, `*.example.com` or `*`.
    pub host: Option<String>,
    /// Path prefix, matched on `/` boundaries.
    pub path_prefix: Option<String>,
    /// Name of an `[upstreams.NAME]` section.
    pub upstream: String,
    /// Per-route limit replacing the tier's, or `{ off = true }`.
    pub rate_limit: Option<FileLimit>,
    /// Name used in metrics and logs.
    pub name: Option<String>,
    /// Whether requests on this route are access-logged (default: `[logging] access_log`).
    pub access_log: Option<bool>,
    /// Cache tier: `hot`, `warm`, `cold` or `off`.
    pub cache: Option<String>,
    /// Store responses that set cookies.
    pub cache_set_cookie: Option<bool>,
    /// Tags given to every entry cached on this route.
    pub cache_tags: Option<Vec<String>>,
    /// `origin` or `override` (default: `[cache] ttl_mode`).
    pub cache_ttl_mode: Option<String>,
}

impl Validator {
    pub(super) fn route(
        &mut self,
        path: &str,
        r: FileRoute,
        names: &[String],
        upstreams: &[UpstreamSpec],
        access_log_default: bool,
    ) -> Option<RouteSpec> {
        let FileRoute {
            host,
            path_prefix,
            upstream,
            rate_limit,
            name,
            access_log,
            cache,
            cache_set_cookie,
            cache_tags,
            cache_ttl_mode,
        } = r;
        let (tier, cache_tags) = self.route_cache(path, cache.as_deref(), cache_tags);
        let ttl_mode = match cache_ttl_mode.as_deref() {
            None => Some(None),
            Some(m) => self
                .one_of(
                    &format!("{path}.cache_ttl_mode"),
                    Some(m),
                    m,
                    &TtlMode::NAMES,
                )
                .map(Some),
        };
        let name = name.unwrap_or_else(|| {
            format!(
                "{}{}",
                host.as_deref().unwrap_or("*"),
                path_prefix.as_deref().unwrap_or("/")
            )
        });
        if name.is_empty()
            || name.len() > 128
            || name
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            self.problem(
                format!("{path}.name"),
                "expected 1-128 printable characters without quotes or backslashes",
            );
        }
        let rate_limit = match rate_limit {
            None => Some(RouteLimit::Tier),
            Some(FileLimit {
                off: Some(true), ..
            }) => Some(RouteLimit::Off),
            Some(mut l) => {
                l.off = None;
                self.limit(&format!("{path}.rate_limit"), l, None)
                    .map(RouteLimit::Policy)
            }
        };
        let host = match parse_host(host.as_deref().unwrap_or("*")) {
            Ok(h) => Some(h),
            Err(why) => {
                self.problem(format!("{path}.host"), why);
                None
            }
        };
        let prefix = path_prefix.unwrap_or_else(|| "/".to_owned());
        if !prefix.starts_with('/') {
            self.problem(
                format!("{path}.path_prefix"),
                format!("`{prefix}` must start with `/`"),
            );
        }
        let idx = self.route_upstream(path, &upstream, names, upstreams);
        Some(RouteSpec {
            host: host?,
            path_prefix: prefix,
            upstream: idx?,
            rate_limit: rate_limit?,
            name,
            access_log: access_log.unwrap_or(access_log_default),
            cache: RouteCache {
                tier: tier?,
                set_cookie: cache_set_cookie.unwrap_or(false),
                ttl_mode: ttl_mode?,
            },
            cache_tags,
        })
    }

    /// A route's `cache` tier (`off` or none: `Some(None)`) and its `cache_tags`.
    fn route_cache(
        &mut self,
        path: &str,
        cache: Option<&str>,
        cache_tags: Option<Vec<String>>,
    ) -> (Option<Option<CacheTier>>, Vec<String>) {
        let cache_tags = cache_tags.unwrap_or_default();
        for (i, t) in cache_tags.iter().enumerate() {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c == ',') {
                self.problem(
                    format!("{path}.cache_tags[{i}]"),
                    format!("`{t}`: a tag is one word without spaces or commas"),
                );
            }
        }
        let tier = match cache {
            None | Some("off") => Some(None),
            Some(t) => match CacheTier::ALL.iter().find(|x| x.name() == t) {
                Some(x) => Some(Some(*x)),
                None => {
                    self.problem(
                        format!("{path}.cache"),
                        format!("unknown cache tier `{t}`, expected one of: hot, warm, cold, off"),
                    );
                    None
                }
            },
        };
        (tier, cache_tags)
    }

    /// The index of the pool a route names (`None`, reported, when there is no such pool; a
    /// pool that failed validation was reported already).
    fn route_upstream(
        &mut self,
        path: &str,
        upstream: &str,
        names: &[String],
        upstreams: &[UpstreamSpec],
    ) -> Option<usize> {
        if names.iter().any(|n| n == upstream) {
            // Only a pool that validated has an index; a broken one was already reported.
            upstreams.iter().position(|u| u.name == upstream)
        } else {
            let known = if names.is_empty() {
                "none are defined".to_owned()
            } else {
                format!("defined: {}", names.join(", "))
            };
            self.problem(
                format!("{path}.upstream"),
                format!("no upstream named `{upstream}` ({known})"),
            );
            None
        }
    }
}

/// Parse a route host pattern.
pub(super) fn parse_host(h: &str) -> Result<HostMatch, String> {
    let lower = h.trim().to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if lower == "*" {
        Ok(HostMatch::Any)
    } else if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            Ok(HostMatch::Suffix(format!(".{rest}")))
        } else {
            Err(format!(
                "`{h}` is not a host pattern: expected `example.com`, `*.example.com` or `*`"
            ))
        }
    } else if valid(&lower) {
        Ok(HostMatch::Exact(lower))
    } else {
        Err(format!(
            "`{h}` is not a host pattern: expected `example.com`, `*.example.com` or `*`"
        ))
    }
}
