//! `compression`: which responses are compressed, with which coding for which client, and the
//! response fields that change with it. The encoders are Pingora's (gzip on flate2, brotli,
//! zstd), fed chunk by chunk: a body is never buffered whole.

use http::header::{self, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::protocols::http::compression::{Algorithm, Encode};
use serde::Serialize;

/// A content coding Sluice can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Coding {
    /// `zstd` (RFC 8878).
    #[serde(rename = "zstd")]
    Zstd,
    /// `br` (RFC 7932).
    #[serde(rename = "br")]
    Brotli,
    /// `gzip` (RFC 1952).
    #[serde(rename = "gzip")]
    Gzip,
}

impl Coding {
    /// The names accepted in `algorithms`.
    pub const ALL: [(&'static str, Coding); 3] = [
        ("zstd", Coding::Zstd),
        ("br", Coding::Brotli),
        ("gzip", Coding::Gzip),
    ];

    /// The coding's token in `Accept-Encoding` / `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// A streaming encoder. Levels favour speed, as nginx's `gzip_comp_level 1` default: at the
    /// edge the CPU per request matters more than the last few percent of size.
    pub fn encoder(self) -> Option<Box<dyn Encode + Send + Sync>> {
        match self {
            Coding::Zstd => Algorithm::Zstd.compressor(1),
            Coding::Brotli => Algorithm::Brotli.compressor(1),
            Coding::Gzip => Algorithm::Gzip.compressor(1),
        }
    }
}

/// A `types` entry: `type/subtype` or `type/*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaRange(pub String);

impl MediaRange {
    fn matches(&self, media_type: &str) -> bool {
        match self.0.strip_suffix("/*") {
            Some(top) => media_type
                .split_once('/')
                .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top)),
            None => media_type.eq_ignore_ascii_case(&self.0),
        }
    }
}

/// A route's `compression`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compression {
    /// Codings in the server's order of preference (used when the client's q-values tie).
    pub algorithms: Vec<Coding>,
    /// Smallest `Content-Length` compressed (a body of unknown length is compressed).
    pub min_bytes: u64,
    /// Media types compressed.
    pub types: Vec<MediaRange>,
}

/// Default `types`.
pub const DEFAULT_TYPES: [&str; 7] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/wasm",
    "image/svg+xml",
    "application/problem+json",
];

impl Compression {
    /// Whether `resp` is one this route compresses for some client: a 200 with a body of a
    /// listed type, at least `min_bytes` long, not already encoded, not a range, not marked
    /// `no-transform` (RFC 9111 §5.2.2.6). Its answer then depends on `Accept-Encoding`.
    pub fn applies(&self, resp: &ResponseHeader) -> bool {
        let h = &resp.headers;
        if resp.status != http::StatusCode::OK
            || h.get(header::CONTENT_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
            || h.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        if h.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
            })
        }) {
            return false;
        }
        let len = h
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if len.is_some_and(|n| n < self.min_bytes) {
            return false;
        }
        let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = ct.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| t.matches(media))
    }

    /// The coding for a client that sent `accept` (RFC 9110 §12.5.3): the listed coding with
    /// the highest q-value above 0, `*` standing for the ones not named; ties go to the order
    /// of `algorithms`. `None`: identity.
    pub fn choose(&self, accept: Option<&HeaderValue>) -> Option<Coding> {
        let accept = accept?.to_str().ok()?;
        let mut best: Option<(u16, usize, Coding)> = None;
        for (rank, coding) in self.algorithms.iter().enumerate() {
            let q = quality(accept, coding.token());
            if q == 0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((bq, brank, _)) => q > bq || (q == bq && rank < brank),
            };
            if better {
                best = Some((q, rank, *coding));
            }
        }
        best.map(|(_, _, c)| c)
    }
}

/// The q-value (0..=1000) `accept` gives `token`: its own entry, else `*`'s, else 0.
fn quality(accept: &str, token: &str) -> u16 {
    let mut star = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("q")
                    .then(|| parse_q(v.trim()))
            })
            .unwrap_or(1000);
        if name.eq_ignore_ascii_case(token) {
            return q;
        }
        if name == "*" {
            star = Some(q);
        }
    }
    star.unwrap_or(0)
}

/// `0`, `0.5`, `1.000` as thousandths; anything malformed counts as 0 (not acceptable).
fn parse_q(v: &str) -> u16 {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    // Thousandths without a string: "5" is 500, "05" is 50, "005" is 5.
    let f = frac
        .bytes()
        .zip([100u16, 10, 1])
        .map(|(d, scale)| u16::from(d - b'0') * scale)
        .sum::<u16>();
    match int {
        "0" => f,
        "1" if f == 0 => 1000,
        _ => 0,
    }
}

/// Mark `resp` as varying by `Accept-Encoding` (once).
pub fn add_vary(resp: &mut ResponseHeader) {
    let present = resp.headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|x| {
                let x = x.trim();
                x == "*" || x.eq_ignore_ascii_case("accept-encoding")
            })
        })
    });
    if !present {
        let _ = resp.append_header(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// Turn `resp`'s fields into those of its `coding`-encoded form: the length is no longer
/// known, ranges no longer apply, and a strong validator becomes weak (RFC 9110 §8.8.1: the
/// bytes differ from the identity form's).
pub fn encode_fields(resp: &mut ResponseHeader, coding: Coding) {
    let _ = resp.insert_header(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(coding.token()),
    );
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.remove_header(&header::ACCEPT_RANGES);
    // The body streams: HTTP/1.1 frames it in chunks (Pingora added this before the hook only
    // when the origin gave no length; the HTTP/2 writer drops the field).
    let _ = resp.insert_header(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    if let Some(etag) = resp.headers.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                let _ = resp.insert_header(header::ETAG, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Compression {
        Compression {
            algorithms: vec![Coding::Zstd, Coding::Brotli, Coding::Gzip],
            min_bytes: 1024,
            types: DEFAULT_TYPES
                .iter()
                .map(|t| MediaRange((*t).into()))
                .collect(),
        }
    }

    fn choose(accept: &str) -> Option<Coding> {
        c().choose(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn accept_encoding_with_q_values() {
        assert_eq!(choose("gzip"), Some(Coding::Gzip));
        assert_eq!(
            choose("gzip, deflate, br"),
            Some(Coding::Brotli),
            "server order on ties"
        );
        assert_eq!(choose("gzip;q=1.0, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(choose("br;q=0, gzip;q=0.1"), Some(Coding::Gzip));
        assert_eq!(choose("*"), Some(Coding::Zstd));
        assert_eq!(choose("*;q=0.5, zstd;q=0"), Some(Coding::Brotli));
        assert_eq!(choose("identity"), None);
        assert_eq!(choose("gzip;q=0"), None);
        assert_eq!(choose("gzip;q=2"), None, "malformed q is not acceptable");
        assert_eq!(c().choose(None), None, "no Accept-Encoding: identity");
    }

    fn resp(fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn what_is_compressed() {
        let c = c();
        assert!(c.applies(&resp(&[
            ("content-type", "application/json; charset=utf-8"),
            ("content-length", "2000")
        ])));
        assert!(
            c.applies(&resp(&[("content-type", "text/html")])),
            "unknown length"
        );
        assert!(!c.applies(&resp(&[
            ("content-type", "text/html"),
            ("content-length", "1023")
        ])));
        assert!(!c.applies(&resp(&[("content-type", "image/png")])));
        assert!(!c.applies(&resp(&[
            ("content-type", "text/html"),
            ("content-encoding", "gzip")
        ])));
        assert!(!c.applies(&resp(&[
            ("content-type", "text/html"),
            ("cache-control", "public, no-transform")
        ])));
        assert!(!c.applies(&resp(&[
            ("content-type", "text/html"),
            ("content-range", "bytes 0-1/2")
        ])));
        assert!(!c.applies(&resp(&[])), "no type");
        let mut partial = resp(&[("content-type", "text/html")]);
        partial.set_status(206).unwrap();
        assert!(!c.applies(&partial));
    }

    #[test]
    fn encoded_fields() {
        let mut r = resp(&[
            ("content-length", "10"),
            ("etag", "\"a\""),
            ("accept-ranges", "bytes"),
            ("vary", "Origin"),
        ]);
        add_vary(&mut r);
        add_vary(&mut r);
        encode_fields(&mut r, Coding::Gzip);
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert_eq!(r.headers["etag"], "W/\"a\"");
        assert!(r.headers.get("content-length").is_none());
        assert!(r.headers.get("accept-ranges").is_none());
        let vary: Vec<_> = r.headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
    }
}
