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
    /// Exact path.
    pub path_exact: Option<String>,
    /// Regular expression on the path.
    pub path_regex: Option<String>,
    /// Methods matched (default: any).
    pub methods: Option<Vec<String>>,
    /// Request fields that must be present: `{ name = "value" }`, `"*"` for any value.
    pub match_headers: Option<std::collections::BTreeMap<String, String>>,
    /// `http` or `https`: only requests that came in that way.
    pub scheme: Option<String>,
    /// Name of an `[upstreams.NAME]` section (optional for a `redirect` route).
    pub upstream: Option<String>,
    /// Per-route limit replacing the tier's, or `{ off = true }`.
    pub rate_limit: Option<FileLimit>,
    /// Name used in metrics and logs.
    pub name: Option<String>,
    /// Whether requests on this route are access-logged (default: `[logging] access_log`).
    pub access_log: Option<bool>,
    /// Fraction of this route's requests logged (default: `[logging] access_log_sample`).
    pub access_log_sample: Option<f64>,
    /// Cache tier: `hot`, `warm`, `cold` or `off`.
    pub cache: Option<String>,
    /// Store responses that set cookies.
    pub cache_set_cookie: Option<bool>,
    /// Tags given to every entry cached on this route.
    pub cache_tags: Option<Vec<String>>,
    /// `origin` or `override` (default: `[cache] ttl_mode`).
    pub cache_ttl_mode: Option<String>,
    /// Prefix removed from the path the backend gets.
    pub strip_prefix: Option<String>,
    /// Path rewrite for the backend.
    pub rewrite: Option<super::rules::FileRewrite>,
    /// Answer with a redirect instead of proxying.
    pub redirect: Option<super::rules::FileRedirect>,
    /// Rules on the request sent to the backend.
    pub request_headers: Option<super::rules::FileHeaderRules>,
    /// Rules on the response sent to the client.
    pub response_headers: Option<super::rules::FileHeaderRules>,
    /// `off`, `basic` or `strict`.
    pub security_headers: Option<String>,
    /// Response compression.
    pub compression: Option<super::rules::FileCompression>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<i64>,
    /// Admitted source networks.
    pub allow: Option<Vec<String>>,
    /// Refused source networks.
    pub deny: Option<Vec<String>>,
    /// Cross-origin access.
    pub cors: Option<super::rules::FileCors>,
    /// Answer 403 unless the client showed a verified certificate.
    pub require_client_cert: Option<bool>,
}

impl Validator {
    pub(super) fn route(
        &mut self,
        path: &str,
        r: FileRoute,
        names: &[String],
        upstreams: &[UpstreamSpec],
        log_defaults: (bool, f64),
        defaults: &super::rules::FileRouteDefaults,
    ) -> Option<RouteSpec> {
        let FileRoute {
            host,
            path_prefix,
            path_exact,
            path_regex,
            methods,
            match_headers,
            scheme,
            upstream,
            rate_limit,
            name,
            access_log,
            access_log_sample,
            cache,
            cache_set_cookie,
            cache_tags,
            cache_ttl_mode,
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
        let rules = self.route_rules(
            path,
            super::rules::FileRules {
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
            }
            .with_defaults(defaults),
        );
        let (tier, cache_tags) = self.route_cache(path, cache.as_deref(), cache_tags);
        let ttl_mode = self.route_ttl_mode(path, cache_ttl_mode.as_deref());
        let name = name.unwrap_or_else(|| {
            let p = path_exact
                .as_deref()
                .or(path_regex.as_deref())
                .or(path_prefix.as_deref())
                .unwrap_or("/");
            format!("{}{p}", host.as_deref().unwrap_or("*"))
        });
        self.route_name(path, &name);
        let rate_limit = self.route_limit(path, rate_limit);
        let host = match parse_host(host.as_deref().unwrap_or("*")) {
            Ok(h) => Some(h),
            Err(why) => {
                self.problem(format!("{path}.host"), why);
                None
            }
        };
        let path_match = self.path_match(path, path_prefix, path_exact, path_regex);
        let methods = self.methods(path, methods);
        let match_headers = self.match_headers(path, match_headers);
        let tls = self.scheme(path, scheme.as_deref());
        let idx = match (&upstream, &rules) {
            (Some(u), _) => self.route_upstream(path, u, names, upstreams).map(Some),
            (None, Some(r)) if r.redirect.is_some() => Some(None),
            (None, Some(_)) => {
                self.problem(
                    format!("{path}.upstream"),
                    "missing: a route needs an upstream unless it answers with a redirect",
                );
                None
            }
            (None, None) => None,
        };
        Some(RouteSpec {
            host: host?,
            path: path_match?,
            methods,
            match_headers,
            tls: tls?,
            upstream: idx?,
            rate_limit: rate_limit?,
            name,
            access_log: access_log.unwrap_or(log_defaults.0),
            access_log_sample: match access_log_sample {
                None => log_defaults.1,
                v => self.fraction(&format!("{path}.access_log_sample"), v)?,
            },
            cache: RouteCache {
                tier: tier?,
                set_cookie: cache_set_cookie.unwrap_or(false),
                ttl_mode: ttl_mode?,
            },
            cache_tags,
            rules: rules?,
        })
    }

    /// `cache_ttl_mode` (`Some(None)`: the `[cache]` default).
    fn route_ttl_mode(&mut self, path: &str, mode: Option<&str>) -> Option<Option<TtlMode>> {
        match mode {
            None => Some(None),
            Some(m) => self
                .one_of(
                    &format!("{path}.cache_ttl_mode"),
                    Some(m),
                    m,
                    &TtlMode::NAMES,
                )
                .map(Some),
        }
    }

    /// A route name is a metric label: printable, bounded, no quotes.
    fn route_name(&mut self, path: &str, name: &str) {
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
    }

    /// A route's `rate_limit`: the tier's (absent), off, or its own.
    fn route_limit(&mut self, path: &str, limit: Option<FileLimit>) -> Option<RouteLimit> {
        match limit {
            None => Some(RouteLimit::Tier),
            Some(FileLimit {
                off: Some(true), ..
            }) => Some(RouteLimit::Off),
            Some(mut l) => {
                l.off = None;
                self.limit(&format!("{path}.rate_limit"), l, None)
                    .map(RouteLimit::Policy)
            }
        }
    }

    /// `scheme`: `Some(None)` for both.
    fn scheme(&mut self, path: &str, scheme: Option<&str>) -> Option<Option<bool>> {
        match scheme {
            None => Some(None),
            Some(s) => self.one_of(
                &format!("{path}.scheme"),
                Some(s),
                s,
                &[("http", Some(false)), ("https", Some(true))],
            ),
        }
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
