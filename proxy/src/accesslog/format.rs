//! Access-log line formats (`[logging] access_log_format`): `json` (one object per line, every
//! field), `text` (`key=value` pairs, every field) or an nginx-style template of `$field`
//! variables and literal text. Compiled once at config load; rendering writes into one reused
//! `String`. Every value a client controls is escaped so that a line stays one line (and valid
//! JSON): no client can forge or split a log line.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// One access-log field, by its name in a template (`$name`) and its key in `json`/`text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// When the request ended, RFC 3339 UTC with milliseconds.
    Time,
    /// The client address (after `trusted_proxies`).
    Client,
    /// The request method.
    Method,
    /// The `Host` (or `:authority`) the client sent.
    Host,
    /// Path and query as the client sent them (after path normalisation).
    Uri,
    /// The path alone.
    Path,
    /// The query alone (empty when none).
    Query,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`.
    Protocol,
    /// The status sent (0 when the client left before a response).
    Status,
    /// Response body bytes sent.
    Bytes,
    /// Whole request, first byte read to logging, in milliseconds.
    DurationMs,
    /// The last upstream attempt: from connecting to the response head, in milliseconds.
    UpstreamMs,
    /// The pool's name.
    Upstream,
    /// The backend address that answered (the last one tried).
    Backend,
    /// Retries after the first attempt.
    Retries,
    /// The request id (`X-Request-Id`).
    RequestId,
    /// The W3C trace id (`traceparent`).
    TraceId,
    /// Cache result (`HIT`, `MISS`, `STALE`, ... or `-`).
    Cache,
    /// Rate-limit result (`allowed`, `limited`, `shadow_limited` or `-`).
    Ratelimit,
    /// The `User-Agent` field.
    UserAgent,
    /// The `Referer` field.
    Referer,
    /// The TLS version of the client connection (`-` on plain HTTP).
    Tls,
    /// The matched route's name (`-` when none matched).
    Route,
}

impl Field {
    /// Every field, in the order `json` and `text` write them.
    pub const ALL: [Field; 23] = [
        Field::Time,
        Field::Client,
        Field::Method,
        Field::Host,
        Field::Uri,
        Field::Path,
        Field::Query,
        Field::Protocol,
        Field::Status,
        Field::Bytes,
        Field::DurationMs,
        Field::UpstreamMs,
        Field::Upstream,
        Field::Backend,
        Field::Retries,
        Field::RequestId,
        Field::TraceId,
        Field::Cache,
        Field::Ratelimit,
        Field::UserAgent,
        Field::Referer,
        Field::Tls,
        Field::Route,
    ];

    /// The field's name.
    pub fn name(self) -> &'static str {
        match self {
            // `timestamp`: the same key the process log's JSON lines use.
            Field::Time => "timestamp",
            Field::Client => "client",
            Field::Method => "method",
            Field::Host => "host",
            Field::Uri => "uri",
            Field::Path => "path",
            Field::Query => "query",
            Field::Protocol => "protocol",
            Field::Status => "status",
            Field::Bytes => "bytes",
            Field::DurationMs => "duration_ms",
            Field::UpstreamMs => "upstream_ms",
            Field::Upstream => "upstream",
            Field::Backend => "backend",
            Field::Retries => "retries",
            Field::RequestId => "request_id",
            Field::TraceId => "trace_id",
            Field::Cache => "cache",
            Field::Ratelimit => "ratelimit",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
            Field::Tls => "tls",
            Field::Route => "route",
        }
    }

    fn by_name(name: &str) -> Option<Field> {
        // `time` is accepted too, as nginx users would write it.
        if name == "time" {
            return Some(Field::Time);
        }
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A variable.
    Field(Field),
}

/// A compiled `access_log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line with every field.
    Json,
    /// `timestamp access key=value ...` with every field.
    Text,
    /// A template: literal text and `$field` (or `${field}`) variables.
    Template {
        /// The template as written (what `GET /config` shows).
        source: String,
        /// Its literal text and variables, in order.
        pieces: Vec<Piece>,
    },
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Format::Json => "json",
            Format::Text => "text",
            Format::Template { source, .. } => source,
        })
    }
}

impl Format {
    /// `json`, `text`, or a template; a template's problems (an unknown variable, one that is
    /// not closed, none at all) are returned together, each naming what is wrong.
    pub fn parse(s: &str) -> Result<Format, Vec<String>> {
        match s {
            "json" => return Ok(Format::Json),
            "text" => return Ok(Format::Text),
            _ => {}
        }
        let mut pieces = Vec::new();
        let mut problems = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('$') {
                // `$$` is a literal dollar.
                text.push('$');
                rest = r;
                continue;
            }
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                match r.find('}') {
                    Some(end) => (&r[..end], &r[end + 1..]),
                    None => {
                        problems.push(format!("`${{{r}` is not closed with `}}`"));
                        rest = "";
                        break;
                    }
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            match Field::by_name(name) {
                Some(f) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Field(f));
                }
                None => problems.push(format!("unknown field `${name}`")),
            }
            rest = after;
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if problems.is_empty() && !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
            problems.push("no `$field` in it".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Format::Template {
            source: s.to_owned(),
            pieces,
        })
    }
}

/// The field names a template may use, for error messages.
pub fn field_names() -> String {
    Field::ALL
        .iter()
        .map(|f| format!("${}", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is known about one finished request; borrowed from the request's state.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    /// When the request ended.
    pub time: Option<SystemTime>,
    /// The client address.
    pub client: Option<IpAddr>,
    /// The request method.
    pub method: &'a str,
    /// The host the client asked for.
    pub host: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The HTTP version.
    pub protocol: &'a str,
    /// The status sent (0: none).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: usize,
    /// Whole request.
    pub duration: Duration,
    /// The last upstream attempt, connect to response head.
    pub upstream_time: Option<Duration>,
    /// The pool's name.
    pub upstream: Option<&'a str>,
    /// The backend tried last.
    pub backend: Option<&'a str>,
    /// Retries after the first attempt.
    pub retries: usize,
    /// The request id (as received: any bytes).
    pub request_id: Option<&'a [u8]>,
    /// The trace id.
    pub trace_id: Option<&'a str>,
    /// Cache result.
    pub cache: Option<&'static str>,
    /// Rate-limit result.
    pub ratelimit: Option<&'static str>,
    /// `User-Agent` (any bytes a client sent).
    pub user_agent: Option<&'a [u8]>,
    /// `Referer` (any bytes a client sent).
    pub referer: Option<&'a [u8]>,
    /// TLS version.
    pub tls: Option<&'a str>,
    /// Route name.
    pub route: Option<&'a str>,
}

/// A field's value, before escaping.
enum Value<'a> {
    Str(Option<&'a str>),
    /// A header value: not necessarily UTF-8.
    Bytes(Option<&'a [u8]>),
    Int(u64),
    Ms(Option<Duration>),
    Time(Option<SystemTime>),
    Ip(Option<IpAddr>),
}

impl Entry<'_> {
    fn value(&self, f: Field) -> Value<'_> {
        match f {
            Field::Time => Value::Time(self.time),
            Field::Client => Value::Ip(self.client),
            Field::Method => Value::Str(Some(self.method)),
            Field::Host => Value::Str(Some(self.host)),
            Field::Uri | Field::Path => Value::Str(Some(self.path)),
            Field::Query => Value::Str(Some(self.query.unwrap_or(""))),
            Field::Protocol => Value::Str(Some(self.protocol)),
            Field::Status => Value::Int(self.status.into()),
            Field::Bytes => Value::Int(self.bytes as u64),
            Field::DurationMs => Value::Ms(Some(self.duration)),
            Field::UpstreamMs => Value::Ms(self.upstream_time),
            Field::Upstream => Value::Str(self.upstream),
            Field::Backend => Value::Str(self.backend),
            Field::Retries => Value::Int(self.retries as u64),
            Field::RequestId => Value::Bytes(self.request_id),
            Field::TraceId => Value::Str(self.trace_id),
            Field::Cache => Value::Str(self.cache),
            Field::Ratelimit => Value::Str(self.ratelimit),
            Field::UserAgent => Value::Bytes(self.user_agent),
            Field::Referer => Value::Bytes(self.referer),
            Field::Tls => Value::Str(self.tls),
            Field::Route => Value::Str(self.route),
        }
    }

    /// Append this entry as one line (with its `\n`) in `format` to `out`.
    pub fn render(&self, format: &Format, out: &mut String) {
        match format {
            Format::Json => {
                out.push('{');
                for (i, f) in Field::ALL.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    out.push_str(f.name());
                    out.push_str("\":");
                    self.json_value(f, out);
                }
                out.push('}');
            }
            Format::Text => {
                self.plain_value(Field::Time, out);
                out.push_str(" access");
                for f in &Field::ALL[1..] {
                    out.push(' ');
                    out.push_str(f.name());
                    out.push('=');
                    self.text_value(*f, out);
                }
            }
            Format::Template { pieces, .. } => {
                for p in pieces {
                    match p {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Field(f) => self.plain_value(*f, out),
                    }
                }
            }
        }
        out.push('\n');
    }

    fn uri(&self, out: &mut String, escape: fn(&str, &mut String)) {
        escape(self.path, out);
        if let Some(q) = self.query {
            out.push('?');
            escape(q, out);
        }
    }

    fn json_value(&self, f: Field, out: &mut String) {
        if f == Field::Uri {
            out.push('"');
            self.uri(out, json_escape);
            out.push('"');
            return;
        }
        match self.value(f) {
            Value::Str(s) => {
                out.push('"');
                json_escape(s.unwrap_or("-"), out);
                out.push('"');
            }
            Value::Bytes(b) => {
                out.push('"');
                json_escape(&String::from_utf8_lossy(b.unwrap_or(b"-")), out);
                out.push('"');
            }
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Ms(Some(d)) => ms(d, out),
            Value::Ms(None) => out.push_str("null"),
            v @ (Value::Time(_) | Value::Ip(_)) => {
                out.push('"');
                scalar(&v, out);
                out.push('"');
            }
        }
    }

    fn text_value(&self, f: Field, out: &mut String) {
        if f == Field::Uri {
            // One value: quoted whole when the path or the query needs it (a query has `=`).
            if needs_quotes(self.path) || self.query.is_some_and(needs_quotes) {
                out.push('"');
                self.uri(out, json_escape);
                out.push('"');
            } else {
                self.uri(out, |s, out| out.push_str(s));
            }
            return;
        }
        match self.value(f) {
            Value::Str(Some("")) | Value::Bytes(Some(b"")) => out.push_str("\"\""),
            Value::Str(s) => text_escape(s.unwrap_or("-"), out),
            Value::Bytes(b) => text_escape(&String::from_utf8_lossy(b.unwrap_or(b"-")), out),
            v => scalar(&v, out),
        }
    }

    /// A template's value: strings escaped as nginx does (`"`, `\` and non-printable bytes as
    /// `\xHH`), `-` when absent.
    fn plain_value(&self, f: Field, out: &mut String) {
        if f == Field::Uri {
            self.uri(out, |s, out| hex_escape(s.as_bytes(), out));
            return;
        }
        match self.value(f) {
            Value::Str(s) => hex_escape(s.unwrap_or("-").as_bytes(), out),
            Value::Bytes(b) => hex_escape(b.unwrap_or(b"-"), out),
            v => scalar(&v, out),
        }
    }
}

/// Numbers, times and addresses (nothing a client can shape beyond digits).
fn scalar(v: &Value<'_>, out: &mut String) {
    match v {
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Ms(Some(d)) => ms(*d, out),
        Value::Time(Some(t)) => rfc3339(*t, out),
        Value::Ip(Some(ip)) => {
            let mut buf = [0u8; 45];
            let text = crate::util::ip::ip_text(*ip, &mut buf);
            out.push_str(std::str::from_utf8(text).unwrap_or("-"));
        }
        Value::Ms(None)
        | Value::Time(None)
        | Value::Ip(None)
        | Value::Str(None)
        | Value::Bytes(None) => out.push('-'),
        Value::Str(Some(s)) => hex_escape(s.as_bytes(), out),
        Value::Bytes(Some(b)) => hex_escape(b, out),
    }
}

/// Milliseconds with microsecond precision.
fn ms(d: Duration, out: &mut String) {
    let micros = d.as_micros();
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

fn json_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `key=value` text: quoted (JSON-escaped) when the value has a space, a quote, `=`, a
/// backslash or a control character.
fn text_escape(s: &str, out: &mut String) {
    if needs_quotes(s) {
        out.push('"');
        json_escape(s, out);
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Whether a `key=value` text value must be quoted.
fn needs_quotes(s: &str) -> bool {
    s.bytes()
        .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == b'\\' || b == 0x7f)
}

/// nginx's escaping for `log_format`: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn hex_escape(s: &[u8], out: &mut String) {
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-12-02T17:20:04.048Z`. Hand-written
/// (days to civil date, H. Hinnant's algorithm): the chrono in the tree has no clock, and this
/// runs once per logged request.
pub fn rfc3339(t: SystemTime, out: &mut String) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: Some(UNIX_EPOCH + Duration::from_millis(1_796_232_004_048)),
            client: Some("10.1.2.3".parse().unwrap()),
            method: "GET",
            host: "example.com",
            path: "/a b",
            query: Some("q=1"),
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1500),
            upstream: Some("api"),
            backend: Some("127.0.0.1:80"),
            request_id: Some(b"r1"),
            user_agent: Some(b"evil\"\n{\"status\":500}"),
            ..Entry::default()
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let mut s = String::new();
        rfc3339(
            UNIX_EPOCH + Duration::from_millis(1_796_232_004_048),
            &mut s,
        );
        assert_eq!(s, "2026-12-02T17:20:04.048Z");
        s.clear();
        rfc3339(UNIX_EPOCH, &mut s);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        // A leap day.
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut s);
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn json_is_one_valid_object_whatever_the_client_sent() {
        let mut s = String::new();
        entry().render(&Format::Json, &mut s);
        assert_eq!(s.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["user_agent"], "evil\"\n{\"status\":500}");
        assert_eq!(v["uri"], "/a b?q=1");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], serde_json::Value::Null);
        assert_eq!(v["trace_id"], "-");
        assert_eq!(v["client"], "10.1.2.3");
        assert_eq!(v.as_object().unwrap().len(), Field::ALL.len());
    }

    #[test]
    fn text_quotes_what_would_split_a_pair() {
        let mut s = String::new();
        entry().render(&Format::Text, &mut s);
        assert!(
            s.starts_with("2026-12-02T17:20:04.048Z access client=10.1.2.3 "),
            "{s}"
        );
        assert!(s.contains(" path=\"/a b\" "), "{s}");
        assert!(s.contains(" uri=\"/a b?q=1\" "), "{s}");
        assert!(
            s.contains(" user_agent=\"evil\\\"\\n{\\\"status\\\":500}\" "),
            "{s}"
        );
        assert_eq!(s.matches('\n').count(), 1);
    }

    #[test]
    fn templates_substitute_and_escape_like_nginx() {
        let f = Format::parse(
            r#"$client - [$time] "$method $uri $protocol" $status $bytes "${user_agent}" $$5"#,
        )
        .unwrap();
        let mut s = String::new();
        entry().render(&f, &mut s);
        assert_eq!(
            s,
            "10.1.2.3 - [2026-12-02T17:20:04.048Z] \"GET /a b?q=1 HTTP/1.1\" 200 12 \"evil\\x22\\x0A{\\x22status\\x22:500}\" $5\n"
        );
    }

    #[test]
    fn template_problems_are_named_together() {
        let e = Format::parse("$client $nope ${bytes").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("$nope"), "{e:?}");
        assert!(e[1].contains("not closed"), "{e:?}");
        assert!(Format::parse("plain text").unwrap_err()[0].contains("no `$field`"));
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
    }
}
