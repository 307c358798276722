//! `request_headers` / `response_headers` (`set`, `add`, `remove`) and `security_headers`.

use http::header::HeaderName;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use serde::Serialize;

use super::template::{Template, Vars};

/// The header maps of a request or a response, as the rules change them.
pub trait Fields {
    /// Replace every field named `name` with `value`.
    fn set(&mut self, name: &HeaderName, value: HeaderValue);
    /// Add a field, keeping those already there.
    fn add(&mut self, name: &HeaderName, value: HeaderValue);
    /// Remove every field named `name`.
    fn remove(&mut self, name: &HeaderName);
    /// Whether a field named `name` is present.
    fn has(&self, name: &HeaderName) -> bool;
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
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
            fn has(&self, name: &HeaderName) -> bool {
                self.headers.contains_key(name)
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
    pub set: Vec<(HeaderName, Template)>,
    /// Appended fields.
    #[serde(serialize_with = "named")]
    pub add: Vec<(HeaderName, Template)>,
    /// Removed fields.
    #[serde(serialize_with = "names")]
    pub remove: Vec<HeaderName>,
}

fn named<S: serde::Serializer>(v: &[(HeaderName, Template)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(n, t)| (n.as_str(), t.source())))
}

fn names<S: serde::Serializer>(v: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(HeaderName::as_str))
}

impl HeaderRules {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Apply to `fields`.
    pub fn apply(&self, fields: &mut impl Fields, vars: &Vars) {
        for name in &self.remove {
            fields.remove(name);
        }
        for (name, t) in &self.set {
            if let Some(v) = t.value(vars) {
                fields.set(name, v);
            }
        }
        for (name, t) in &self.add {
            if let Some(v) = t.value(vars) {
                fields.add(name, v);
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
        let values: [(&'static str, &'static str); 4] = match self {
            Self::Off => return,
            Self::Basic => [
                ("strict-transport-security", "max-age=31536000"),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "SAMEORIGIN"),
                ("referrer-policy", "strict-origin-when-cross-origin"),
            ],
            Self::Strict => [
                (
                    "strict-transport-security",
                    "max-age=63072000; includeSubDomains",
                ),
                ("x-content-type-options", "nosniff"),
                ("x-frame-options", "DENY"),
                ("referrer-policy", "no-referrer"),
            ],
        };
        for (i, (name, value)) in values.into_iter().enumerate() {
            if i == 0 && !tls {
                continue;
            }
            let name = HeaderName::from_static(name);
            if !resp.has(&name) {
                resp.set(&name, HeaderValue::from_static(value));
            }
        }
    }
}

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
                HeaderName::from_static("x-a"),
                Template::parse("new").unwrap(),
            )],
            add: vec![(
                HeaderName::from_static("x-b"),
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
