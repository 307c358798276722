//! `request_headers` / `response_headers` (`set`, `add`, `remove`) and `security_headers`.

use http::header::HeaderName;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader, StaticHeaderName};
use serde::Serialize;

use super::template::{Template, Vars};

/// A field name prepared at config load: inserting it neither parses nor allocates (measured:
/// `insert_header` with a `HeaderName` re-parsed it, about 300 instructions per field).
#[derive(Debug, Clone)]
pub struct FieldName(pub StaticHeaderName);

impl FieldName {
    /// Prepare `name`.
    pub fn new(name: HeaderName) -> Self {
        FieldName(StaticHeaderName::prepared(name))
    }

    /// The name.
    pub fn name(&self) -> &HeaderName {
        self.0.name()
    }
}

impl PartialEq for FieldName {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl Eq for FieldName {}

/// The header maps of a request or a response, as the rules change them.
pub trait Fields {
    /// Replace every field named `name` with `value`.
    fn set(&mut self, name: &HeaderName, value: HeaderValue);
    /// Add a field, keeping those already there.
    fn add(&mut self, name: &HeaderName, value: HeaderValue);
    /// [`Fields::set`] under a prepared name.
    fn set_prepared(&mut self, name: &StaticHeaderName, value: HeaderValue);
    /// [`Fields::add`] under a prepared name.
    fn add_prepared(&mut self, name: &StaticHeaderName, value: HeaderValue);
    /// Remove every field named `name`.
    fn remove(&mut self, name: &HeaderName);
    /// Whether a field named `name` is present.
    fn has(&self, name: &HeaderName) -> bool;
    /// Room for `n` more fields, so that adding several does not grow (rehash) the maps
    /// more than once.
    fn reserve(&mut self, n: usize);
}

macro_rules! fields {
    ($t:ty) => {
        impl Fields for $t {
            fn set(&mut self, name: &HeaderName, value: HeaderValue) {
                // Only fails for a name over 64 KiB, which validation rules out.
                let _ = self.insert_header(name.clone(), value);
            }
            fn add(&mut self, name: &HeaderName, value: HeaderValue) {
                let _ = self.append_header(name.clone(), value);
            }
            fn set_prepared(&mut self, name: &StaticHeaderName, value: HeaderValue) {
                self.insert_static_header(name, value);
            }
            fn add_prepared(&mut self, name: &StaticHeaderName, value: HeaderValue) {
                self.append_static_header(name, value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
            fn has(&self, name: &HeaderName) -> bool {
                self.headers.contains_key(name)
            }
            fn reserve(&mut self, n: usize) {
                self.reserve_headers(n);
            }
        }
    };
}
fields!(RequestHeader);
fields!(ResponseHeader);

/// One direction's header rules, applied in the order remove, set, add.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HeaderRules {
    /// Replaced (or created) fields.
    #[serde(serialize_with = "named")]
    pub set: Vec<(FieldName, Template)>,
    /// Appended fields.
    #[serde(serialize_with = "named")]
    pub add: Vec<(FieldName, Template)>,
    /// Removed fields.
    #[serde(serialize_with = "names")]
    pub remove: Vec<HeaderName>,
}

fn named<S: serde::Serializer>(v: &[(FieldName, Template)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(n, t)| (n.name().as_str(), t.source())))
}

fn names<S: serde::Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

impl HeaderRules {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether a value names `var` (the request's host is then worked out for it; otherwise
    /// not: about 1,000 instructions per request saved with literal values).
    pub fn uses(&self, var: super::Var) -> bool {
        self.set.iter().chain(&self.add).any(|(_, t)| t.uses(var))
    }

    /// Apply to `fields`.
    pub fn apply(&self, fields: &mut impl Fields, vars: &Vars) {
        for name in &self.remove {
            fields.remove(name);
        }
        fields.reserve(self.set.len() + self.add.len());
        for (name, t) in &self.set {
            if let Some(v) = t.value(vars) {
                fields.set_prepared(&name.0, v);
            }
        }
        for (name, t) in &self.add {
            if let Some(v) = t.value(vars) {
                fields.add_prepared(&name.0, v);
            }
        }
    }
}

/// `security_headers`: response fields browsers act on. Each is added only when the response
/// does not carry its own (the application knows its framing and referrer needs best).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityHeaders {
    /// Nothing added.
    #[default]
    Off,
    /// HSTS for one year (TLS only), `nosniff`, `SAMEORIGIN` framing,
    /// `strict-origin-when-cross-origin` referrers.
    Basic,
    /// HSTS for two years with subdomains (TLS only), `nosniff`, no framing, no referrer.
    Strict,
}

impl SecurityHeaders {
    /// Names accepted in the config.
    pub const NAMES: [&'static str; 3] = ["off", "basic", "strict"];

    /// From its config name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "basic" => Some(Self::Basic),
            "strict" => Some(Self::Strict),
            _ => None,
        }
    }

    /// Add the fields to `resp`; HSTS only on a TLS connection (RFC 6797 §7.2: a browser
    /// ignores it over plain HTTP).
    pub fn apply(self, resp: &mut impl Fields, tls: bool) {
        let values: &[(&StaticHeaderName, HeaderValue); 4] = match self {
            Self::Off => return,
            Self::Basic => &BASIC,
            Self::Strict => &STRICT,
        };
        resp.reserve(values.len());
        for (i, (name, value)) in values.iter().enumerate() {
            if (i == 0 && !tls) || resp.has(name.name()) {
                continue;
            }
            resp.set_prepared(name, value.clone());
        }
    }
}

static HSTS: StaticHeaderName =
    StaticHeaderName::new("strict-transport-security", "Strict-Transport-Security");
static NOSNIFF: StaticHeaderName =
    StaticHeaderName::new("x-content-type-options", "X-Content-Type-Options");
static FRAME: StaticHeaderName = StaticHeaderName::new("x-frame-options", "X-Frame-Options");
static REFERRER: StaticHeaderName = StaticHeaderName::new("referrer-policy", "Referrer-Policy");

/// `basic`: HSTS first (skipped over plain HTTP).
static BASIC: [(&StaticHeaderName, HeaderValue); 4] = [
    (&HSTS, HeaderValue::from_static("max-age=31536000")),
    (&NOSNIFF, HeaderValue::from_static("nosniff")),
    (&FRAME, HeaderValue::from_static("SAMEORIGIN")),
    (
        &REFERRER,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
];

/// `strict`: HSTS first (skipped over plain HTTP).
static STRICT: [(&StaticHeaderName, HeaderValue); 4] = [
    (
        &HSTS,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    ),
    (&NOSNIFF, HeaderValue::from_static("nosniff")),
    (&FRAME, HeaderValue::from_static("DENY")),
    (&REFERRER, HeaderValue::from_static("no-referrer")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("server", "x").unwrap();
        resp.append_header("x-a", "old").unwrap();
        let rules = HeaderRules {
            set: vec![(
                FieldName::new(HeaderName::from_static("x-a")),
                Template::parse("new").unwrap(),
            )],
            add: vec![(
                FieldName::new(HeaderName::from_static("x-b")),
                Template::parse("{host}").unwrap(),
            )],
            remove: vec![HeaderName::from_static("server")],
        };
        let vars = Vars {
            host: "h",
            ..Default::default()
        };
        rules.apply(&mut resp, &vars);
        rules.apply(&mut resp, &vars);
        assert!(resp.headers.get("server").is_none());
        assert_eq!(resp.headers.get_all("x-a").iter().count(), 1);
        assert_eq!(resp.headers.get_all("x-b").iter().count(), 2);
    }

    #[test]
    fn hsts_only_over_tls_and_never_over_the_application() {
        let mut plain = ResponseHeader::build(200, None).unwrap();
        SecurityHeaders::Strict.apply(&mut plain, false);
        assert!(plain.headers.get("strict-transport-security").is_none());
        assert_eq!(plain.headers["x-frame-options"], "DENY");
        let mut tls = ResponseHeader::build(200, None).unwrap();
        tls.append_header("x-frame-options", "SAMEORIGIN").unwrap();
        SecurityHeaders::Basic.apply(&mut tls, true);
        assert_eq!(tls.headers["strict-transport-security"], "max-age=31536000");
        assert_eq!(tls.headers["x-frame-options"], "SAMEORIGIN");
    }
}
