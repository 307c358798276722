//! Per-route request and response rules compiled at config load: header templates and
//! `set`/`add`/`remove` rules, security headers, path rewriting and redirects, source-address
//! access lists, CORS, body limits and compression. Pure: no I/O, no Sluice state; the edge
//! applies them, the config validates into them.

pub mod access;
pub mod compress;
pub mod headers;
pub mod paths;
pub mod template;

use serde::Serialize;

pub use access::{Acl, Cors, CorsRequest};
pub use compress::Compression;
pub use headers::{FieldName, Fields, HeaderRules, SecurityHeaders};
pub use paths::{Redirect, Rewrite};
pub use template::{Template, Var, Vars};

/// A regular expression compiled once, compared and shown by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    /// Compile `source`; the error is the regex crate's explanation.
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex::Regex::new(source)
            .map(Pattern)
            .map_err(|e| e.to_string())
    }

    /// Whether `text` contains a match.
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The source.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}
impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// Everything a route does besides choosing a pool. The default does nothing and costs
/// nothing on the request path (each phase checks one flag).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteRules {
    /// Prefix removed from the path the backend gets.
    pub strip_prefix: Option<String>,
    /// Path rewrite for the backend.
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect instead of proxying.
    pub redirect: Option<Redirect>,
    /// Rules on the request sent to the backend.
    pub request_headers: HeaderRules,
    /// Rules on the response sent to the client.
    pub response_headers: HeaderRules,
    /// Browser security fields added to responses.
    pub security_headers: SecurityHeaders,
    /// Response compression.
    pub compression: Option<Compression>,
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Source-address access list.
    #[serde(flatten)]
    pub acl: Acl,
    /// Cross-origin access.
    pub cors: Option<Cors>,
    /// Only clients that showed a verified certificate (`client_auth` on their listener).
    pub require_client_cert: bool,
}

impl RouteRules {
    /// Whether any rule acts before the request is proxied (in `request_filter`).
    pub fn on_request(&self) -> bool {
        self.redirect.is_some()
            || !self.acl.is_empty()
            || self.cors.is_some()
            || self.max_body_bytes.is_some()
            || self.require_client_cert
    }

    /// Whether the path or the fields of the upstream request change.
    pub fn on_upstream_request(&self) -> bool {
        self.strip_prefix.is_some() || self.rewrite.is_some() || !self.request_headers.is_empty()
    }

    /// Whether the response fields change.
    pub fn on_response(&self) -> bool {
        !self.response_headers.is_empty()
            || self.security_headers != SecurityHeaders::Off
            || self.cors.is_some()
            || self.compression.is_some()
    }

    /// Whether any template of the route names `var` (the client address is resolved only
    /// then).
    pub fn uses(&self, var: Var) -> bool {
        let rules = [&self.request_headers, &self.response_headers];
        rules
            .iter()
            .flat_map(|r| r.set.iter().chain(r.add.iter()))
            .any(|(_, t)| t.uses(var))
            || self.redirect.as_ref().is_some_and(|r| r.to.uses(var))
    }
}
