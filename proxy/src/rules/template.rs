//! Header value templates: literal text with `{client_ip}`, `{host}`, `{scheme}`,
//! `{request_id}` and `{uri}`, parsed once at config load.

use std::net::IpAddr;

use http::HeaderValue;
use serde::Serialize;

/// A value a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The client address (after `trusted_proxies`).
    ClientIp,
    /// The requested host, lower-cased, without port (nginx's `$host`).
    Host,
    /// `http` or `https`, as the client connected.
    Scheme,
    /// The request id (`X-Request-Id`).
    RequestId,
    /// The normalised path and query (what routing saw).
    Uri,
}

impl Var {
    /// The variables and their names in templates.
    pub const ALL: [(&'static str, Var); 5] = [
        ("client_ip", Var::ClientIp),
        ("host", Var::Host),
        ("scheme", Var::Scheme),
        ("request_id", Var::RequestId),
        ("uri", Var::Uri),
    ];
}

/// The values of one request, borrowed from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    /// Client address.
    pub client_ip: Option<IpAddr>,
    /// Host without port, lower-cased.
    pub host: &'a str,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The request id.
    pub request_id: &'a [u8],
    /// Path and query.
    pub uri: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template. One without variables holds its ready [`HeaderValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
    literal: Option<HeaderValue>,
}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl Template {
    /// Parse `source`. `{{` and `}}` stand for literal braces. The error names the first
    /// unknown variable or the unbalanced brace.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push(tail.as_bytes()[0] as char);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err("a lone `}`: write `}}` for a literal brace".into());
            }
            let Some(end) = tail.find('}') else {
                return Err("a `{` without its `}`: write `{{` for a literal brace".into());
            };
            let name = &tail[1..end];
            let Some((_, var)) = Var::ALL.iter().find(|(n, _)| *n == name) else {
                let known: Vec<String> = Var::ALL.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                return Err(format!(
                    "unknown variable `{{{name}}}`, expected one of: {}",
                    known.join(", ")
                ));
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(*var));
            rest = &tail[end + 1..];
        }
        lit.push_str(rest);
        let literal = if parts.is_empty() {
            Some(HeaderValue::from_str(&lit).map_err(|_| {
                "not a valid header value (printable ASCII and tabs only)".to_owned()
            })?)
        } else {
            if lit.chars().any(|c| c.is_control() && c != '\t') {
                return Err("not a valid header value (printable ASCII and tabs only)".into());
            }
            None
        };
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
            literal,
        })
    }

    /// The text as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template names `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// Append the rendered text to `out`.
    pub fn render_into(&self, vars: &Vars, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Var(Var::ClientIp) => {
                    if let Some(ip) = vars.client_ip {
                        let mut buf = [0u8; 45];
                        out.extend_from_slice(crate::util::ip::ip_text(ip, &mut buf));
                    }
                }
                Part::Var(Var::Host) => out.extend_from_slice(vars.host.as_bytes()),
                Part::Var(Var::Scheme) => {
                    out.extend_from_slice(if vars.tls { b"https" } else { b"http" })
                }
                Part::Var(Var::RequestId) => out.extend_from_slice(vars.request_id),
                Part::Var(Var::Uri) => out.extend_from_slice(vars.uri.as_bytes()),
            }
        }
    }

    /// Append the rendered text to `out` and say whether it is a valid field value (the rules
    /// for [`HeaderValue`]: visible ASCII, spaces, tabs and obs-text). A literal template was
    /// checked at load; a rendered one is checked here. On `false` `out` holds the invalid text.
    pub fn render_valid(&self, vars: &Vars, out: &mut Vec<u8>) -> bool {
        if let Some(v) = &self.literal {
            out.extend_from_slice(v.as_bytes());
            return true;
        }
        let start = out.len();
        self.render_into(vars, out);
        out[start..]
            .iter()
            .all(|&b| (b >= 32 && b != 127) || b == b'\t')
    }

    /// The value for one request: the ready value when there are no variables (a reference
    /// count, no copy), else rendered. `None` when a rendered value is not a valid header value
    /// (a host or URI with bytes a header cannot carry); the rule is then skipped.
    pub fn value(&self, vars: &Vars) -> Option<HeaderValue> {
        if let Some(v) = &self.literal {
            return Some(v.clone());
        }
        let mut out = Vec::with_capacity(self.source.len() + 32);
        self.render_into(vars, &mut out);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            host: "example.com",
            tls: true,
            request_id: b"abc",
            uri: "/a?b=1",
        }
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::parse("{scheme}://{host}{uri} from {client_ip} id={request_id}").unwrap();
        assert_eq!(
            t.value(&vars()).unwrap(),
            "https://example.com/a?b=1 from 10.1.2.3 id=abc"
        );
        assert!(t.uses(Var::Host));
    }

    #[test]
    fn literal_values_are_prebuilt_and_braces_escape() {
        let t = Template::parse("max-age=60").unwrap();
        assert!(t.literal.is_some());
        assert_eq!(t.value(&vars()).unwrap(), "max-age=60");
        let t = Template::parse("{{\"a\": 1}}").unwrap();
        assert_eq!(t.value(&vars()).unwrap(), "{\"a\": 1}");
    }

    #[test]
    fn unknown_variables_and_bad_braces_are_named() {
        let e = Template::parse("x {remote_addr}").unwrap_err();
        assert!(
            e.contains("`{remote_addr}`") && e.contains("{client_ip}"),
            "{e}"
        );
        assert!(Template::parse("a { b")
            .unwrap_err()
            .contains("without its `}`"));
        assert!(Template::parse("a } b").unwrap_err().contains("lone"));
        assert!(Template::parse("a\nb").is_err());
    }
}
