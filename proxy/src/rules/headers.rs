//! `request_headers` / `response_headers` (`set`, `add`, `remove`) and `security_headers`.

use http::header::HeaderName;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader, StaticHeaderName};
use serde::Serialize;

use super::template::{Template, Vars};

/// A field name prepared at config load: inserting it neither parses nor allocates (measured:
/// `insert_header` with a `HeaderName` re-parsed it, about 300 instructions per field).
#[derive(Debug, Clone)]
pub struct FieldName {
    /// The name, ready to insert into a header map.
    pub prepared: StaticHeaderName,
    /// Whether the field is written as a raw HTTP/1 line after the map's fields (vendored
    /// pingora-http `raw_h1_fields_mut`; the HTTP/2 paths fold such lines into the map) instead
    /// of inserted into the map. True for every name nothing reads back from the map after the
    /// rules ran ([`KEPT_IN_MAP`], and the client-subject fields of the request,
    /// [`HeaderRules::keep_in_map`]). A request or response header copied for the proxy has its
    /// map sized exactly, so an insert grows and rehashes it (and its case map): callgrind,
    /// `benches/rules-route.toml`, the rule set's three fields and security headers as lines
    /// instead of inserts: see docs/benchmarks.md, session 19.
    pub line: bool,
}

/// Names rule values keep in the header map because Sluice reads them there after the rules:
/// `Host` (the forwarding fields), the trace context (replaced by Sluice's span), `Vary` and
/// the CORS fields (written after the response rules), the security headers (added only when
/// the response has none of its own).
pub const KEPT_IN_MAP: [&str; 8] = [
    "host",
    "traceparent",
    "tracestate",
    "vary",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
];

/// Whether `name` is one of [`KEPT_IN_MAP`] or a CORS field (`access-control-*`).
fn kept_in_map(name: &HeaderName) -> bool {
    let n = name.as_str();
    KEPT_IN_MAP.contains(&n) || n.starts_with("access-control-")
}

impl FieldName {
    /// Prepare `name`.
    pub fn new(name: HeaderName) -> Self {
        let line = !kept_in_map(&name);
        FieldName {
            prepared: StaticHeaderName::prepared(name),
            line,
        }
    }

    /// The name.
    pub fn name(&self) -> &HeaderName {
        self.prepared.name()
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
    /// The raw HTTP/1 field lines written after the map's fields, and whether the header keeps
    /// the case of its names.
    fn lines(&mut self) -> (&mut Vec<u8>, bool);
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
                if self.has(name) {
                    self.remove_header(name);
                }
            }
            fn has(&self, name: &HeaderName) -> bool {
                // Usually absent (a client rarely sends what a rule removes or replaces, a
                // backend rarely sets the security fields): a small map compares names
                // (vendored http), where a removal would hash the name.
                self.headers.contains_key(name)
            }
            fn reserve(&mut self, n: usize) {
                self.reserve_headers(n);
            }
            fn lines(&mut self) -> (&mut Vec<u8>, bool) {
                let case = self.has_case();
                (self.raw_h1_fields_mut(), case)
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

    /// Keep `names` in the header map (not written as lines): the request's client-subject
    /// fields, which Sluice replaces after the rules.
    pub fn keep_in_map(&mut self, names: &[HeaderName]) {
        for (name, _) in self.set.iter_mut().chain(self.add.iter_mut()) {
            if names.contains(name.name()) {
                name.line = false;
            }
        }
    }

    /// Apply to `fields`. A value that is not a valid field value (a host or URI with bytes a
    /// field cannot carry) is skipped, and a `set` of it leaves the field as it was.
    /// `lines`: `Some(room_after)` for an HTTP/1 message, whose fields may be written as raw
    /// lines ([`FieldName::line`]), `room_after` being the bytes of lines the caller writes
    /// afterwards (the line buffer is allocated once for both: growing it line by line cost
    /// about 150 instructions a line); `None` for an HTTP/2 one, whose lines would be folded
    /// into its map again, each name parsed (callgrind over HTTP/2: about 1,000 instructions
    /// a line more than the insert).
    pub fn apply(&self, fields: &mut impl Fields, vars: &Vars, lines: Option<usize>) {
        for name in &self.remove {
            fields.remove(name);
        }
        // A field goes in as a line only in an HTTP/1 message and under a name nothing reads
        // back from the map.
        let as_line = |name: &FieldName| lines.is_some() && name.line;
        let (mut in_map, mut line_bytes) = (0, 0);
        for (name, t) in self.set.iter().chain(&self.add) {
            if as_line(name) {
                // A variable's text is rarely longer than an IPv6 address.
                line_bytes += name.name().as_str().len() + t.source().len() + 4 + 40;
            } else {
                in_map += 1;
            }
        }
        if in_map > 0 {
            fields.reserve(in_map);
        }
        if line_bytes > 0 {
            fields
                .lines()
                .0
                .reserve(line_bytes + lines.unwrap_or_default());
        }
        for (name, t) in &self.set {
            if as_line(name) {
                // The map's fields of that name go only when the new value was written.
                if line(fields, name, t, vars) {
                    fields.remove(name.name());
                }
            } else if let Some(v) = t.value(vars) {
                fields.set_prepared(&name.prepared, v);
            }
        }
        for (name, t) in &self.add {
            if as_line(name) {
                line(fields, name, t, vars);
            } else if let Some(v) = t.value(vars) {
                fields.add_prepared(&name.prepared, v);
            }
        }
    }
}

/// Append `name: value` as a raw line (a prepared name is written as it was configured,
/// lowercase). `false`, with nothing written, when the value is not a valid field value.
fn line(fields: &mut impl Fields, name: &FieldName, t: &Template, vars: &Vars) -> bool {
    let (raw, _) = fields.lines();
    let start = raw.len();
    raw.extend_from_slice(name.name().as_str().as_bytes());
    raw.extend_from_slice(b": ");
    if t.render_valid(vars, raw) {
        raw.extend_from_slice(b"\r\n");
        true
    } else {
        raw.truncate(start);
        false
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

    /// The most bytes [`SecurityHeaders::apply`] writes as raw lines.
    pub const LINE_BYTES: usize = 180;

    /// Add the fields to `resp`; HSTS only on a TLS connection (RFC 6797 §7.2: a browser
    /// ignores it over plain HTTP). `lines` as for [`HeaderRules::apply`].
    pub fn apply(self, resp: &mut impl Fields, tls: bool, lines: Option<usize>) {
        let values: &[(&StaticHeaderName, HeaderValue); 4] = match self {
            Self::Off => return,
            Self::Basic => &BASIC,
            Self::Strict => &STRICT,
        };
        match lines {
            Some(room_after) => resp.lines().0.reserve(Self::LINE_BYTES + room_after),
            None => resp.reserve(values.len()),
        }
        for (i, (name, value)) in values.iter().enumerate() {
            if (i == 0 && !tls) || resp.has(name.name()) {
                continue;
            }
            if lines.is_none() {
                resp.set_prepared(name, value.clone());
                continue;
            }
            // A raw line, not an insert into the map (see [`FieldName::line`]); nothing reads
            // these names back.
            let (raw, case) = resp.lines();
            let name = if case {
                name.case()
            } else {
                name.name().as_str().as_bytes()
            };
            crate::util::push_raw_field(raw, name, &[value.as_bytes()]);
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

    fn rule(name: &'static str, value: &str) -> (FieldName, Template) {
        (
            FieldName::new(HeaderName::from_static(name)),
            Template::parse(value).unwrap(),
        )
    }

    /// The response's fields as a client gets them: the map's, then the raw lines (what the
    /// HTTP/2 server folds in too).
    fn sent(mut resp: ResponseHeader) -> ResponseHeader {
        resp.fold_raw_h1_fields().unwrap();
        resp
    }

    #[test]
    fn fields_are_found_and_removed_in_small_and_large_maps() {
        // Up to 16 names the vendored http compares names, beyond that it hashes: both find
        // every field, whatever its case or position, and nothing else.
        for extra in [0, 3, 14, 21] {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for i in 0..extra {
                req.append_header(format!("x-filler-{i}"), "1").unwrap();
            }
            req.append_header("X-Debug", "1").unwrap();
            req.append_header("x-debug", "2").unwrap();
            req.append_header("host", "h").unwrap();
            let debug = HeaderName::from_static("x-debug");
            let absent = HeaderName::from_static("x-absent");
            assert!(req.has(&debug), "{extra}");
            assert!(req.has(&http::header::HOST), "{extra}");
            assert!(!req.has(&absent), "{extra}");
            req.remove(&absent);
            req.remove(&debug);
            assert!(!req.has(&debug), "{extra}");
            assert!(req.headers.get("x-debug").is_none(), "{extra}");
            assert_eq!(req.headers.len(), extra + 1, "{extra}");
        }
    }

    #[test]
    fn remove_then_set_then_add() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("server", "x").unwrap();
        resp.append_header("x-a", "old").unwrap();
        let rules = HeaderRules {
            set: vec![rule("x-a", "new")],
            add: vec![rule("x-b", "{host}")],
            remove: vec![HeaderName::from_static("server")],
        };
        let vars = Vars {
            host: "h",
            ..Default::default()
        };
        // Once per message (a retry's upstream request is a fresh copy of the client's).
        rules.apply(&mut resp, &vars, Some(0));
        // Written as lines, not into the map.
        assert!(resp.headers.get("x-b").is_none());
        let resp = sent(resp);
        assert!(resp.headers.get("server").is_none());
        let a: Vec<_> = resp.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["new"]);
        assert_eq!(resp.headers["x-b"], "h");
    }

    #[test]
    fn set_replaces_every_field_of_its_name_and_add_keeps_them() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-a", "1").unwrap();
        resp.append_header("x-a", "2").unwrap();
        resp.append_header("x-b", "1").unwrap();
        let rules = HeaderRules {
            set: vec![rule("x-a", "new")],
            add: vec![rule("x-b", "2")],
            remove: vec![],
        };
        rules.apply(&mut resp, &Vars::default(), Some(0));
        let resp = sent(resp);
        let a: Vec<_> = resp.headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["new"]);
        let b: Vec<_> = resp.headers.get_all("x-b").iter().collect();
        assert_eq!(b, ["1", "2"]);
    }

    #[test]
    fn a_value_a_field_cannot_carry_is_skipped_and_set_keeps_the_old_one() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-a", "old").unwrap();
        let rules = HeaderRules {
            set: vec![rule("x-a", "{host}")],
            add: vec![rule("x-b", "<{host}>"), rule("x-c", "ok")],
            remove: vec![],
        };
        let vars = Vars {
            host: "bad\nhost",
            ..Default::default()
        };
        rules.apply(&mut req, &vars, Some(0));
        assert_eq!(req.headers["x-a"], "old");
        assert_eq!(req.raw_h1_fields(), b"x-c: ok\r\n");
    }

    #[test]
    fn names_read_back_after_the_rules_stay_in_the_map() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut rules = HeaderRules {
            set: vec![
                rule("host", "h"),
                rule("x-frame-options", "DENY"),
                rule("access-control-allow-origin", "*"),
                rule("x-client-subject", "forged"),
                rule("x-env", "prod"),
            ],
            add: vec![],
            remove: vec![],
        };
        rules.keep_in_map(&[HeaderName::from_static("x-client-subject")]);
        rules.apply(&mut req, &Vars::default(), Some(0));
        for name in [
            "host",
            "x-frame-options",
            "access-control-allow-origin",
            "x-client-subject",
        ] {
            assert!(req.headers.get(name).is_some(), "{name} in the map");
        }
        assert_eq!(req.raw_h1_fields(), b"x-env: prod\r\n");
    }

    #[test]
    fn hsts_only_over_tls_and_never_over_the_application() {
        let mut plain = ResponseHeader::build(200, None).unwrap();
        SecurityHeaders::Strict.apply(&mut plain, false, Some(0));
        let plain = sent(plain);
        assert!(plain.headers.get("strict-transport-security").is_none());
        assert_eq!(plain.headers["x-frame-options"], "DENY");
        let mut tls = ResponseHeader::build(200, None).unwrap();
        tls.append_header("x-frame-options", "SAMEORIGIN").unwrap();
        SecurityHeaders::Basic.apply(&mut tls, true, Some(0));
        let tls = sent(tls);
        assert_eq!(tls.headers["strict-transport-security"], "max-age=31536000");
        let frame: Vec<_> = tls.headers.get_all("x-frame-options").iter().collect();
        assert_eq!(frame, ["SAMEORIGIN"]);
    }

    #[test]
    fn an_http2_message_gets_its_fields_in_the_map() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-a", "old").unwrap();
        let rules = HeaderRules {
            set: vec![rule("x-a", "new")],
            add: vec![rule("x-b", "{host}")],
            remove: vec![],
        };
        let vars = Vars {
            host: "h",
            ..Default::default()
        };
        rules.apply(&mut resp, &vars, None);
        SecurityHeaders::Basic.apply(&mut resp, true, None);
        assert!(resp.raw_h1_fields().is_empty());
        assert_eq!(resp.headers["x-a"], "new");
        assert_eq!(resp.headers["x-b"], "h");
        assert_eq!(
            resp.headers["strict-transport-security"],
            "max-age=31536000"
        );
    }

    #[test]
    fn security_lines_fit_their_reserved_room() {
        for level in [SecurityHeaders::Basic, SecurityHeaders::Strict] {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            level.apply(&mut resp, true, Some(0));
            assert!(resp.raw_h1_fields().len() <= SecurityHeaders::LINE_BYTES);
        }
    }

    #[test]
    fn a_rule_naming_a_security_header_wins_over_it() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        let rules = HeaderRules {
            set: vec![rule("x-frame-options", "ALLOW-FROM https://a.example")],
            add: vec![],
            remove: vec![],
        };
        rules.apply(&mut resp, &Vars::default(), Some(0));
        SecurityHeaders::Strict.apply(&mut resp, true, Some(0));
        let resp = sent(resp);
        let frame: Vec<_> = resp.headers.get_all("x-frame-options").iter().collect();
        assert_eq!(frame, ["ALLOW-FROM https://a.example"]);
        assert_eq!(resp.headers["referrer-policy"], "no-referrer");
    }
}
