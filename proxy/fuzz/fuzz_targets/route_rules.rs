//! A route's rules on arbitrary request input (issue 15): the coding chosen for an
//! `Accept-Encoding`, CORS on an arbitrary `Origin`, templates rendered with an arbitrary host
//! and URI, the rewritten upstream path (its regex-free prefix form agreeing with the regex). None may panic; a chosen coding is one offered; a
//! rewritten path is a valid origin-form target when its input was.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use sluice::rules::compress::{Coding, Compression, MediaRange};
use sluice::rules::{paths, Pattern, Rewrite, Template, Vars};

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: Accept-Encoding, Origin, host, path?query.
    let mut parts = data.split(|b| *b == 0);
    let accept = parts.next().unwrap_or_default();
    let origin = parts.next().unwrap_or_default();
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();

    let c = Compression {
        algorithms: vec![Coding::Gzip, Coding::Zstd],
        min_bytes: 0,
        types: vec![MediaRange("text/*".into())],
    };
    if let Ok(v) = HeaderValue::from_bytes(accept) {
        if let Some(coding) = c.choose(Some(&v)) {
            assert!(c.algorithms.contains(&coding));
        }
    }

    let Ok(mut req) = RequestHeader::build("OPTIONS", target.as_bytes(), None) else {
        return;
    };
    let _ = req.insert_header("origin", origin);
    let _ = req.insert_header("access-control-request-method", "GET");
    let cors = sluice::rules::Cors {
        origins: vec!["https://a.example".into()],
        any_origin: false,
        methods: HeaderValue::from_static("GET"),
        headers: None,
        expose_headers: None,
        max_age_seconds: Some(5),
        credentials: true,
    };
    let _ = cors.classify(&req);
    let _ = cors.preflight_fields(&req);

    let t = Template::parse("{scheme}://{host}{uri} {client_ip} {request_id}").unwrap();
    let uri = req
        .uri
        .path_and_query()
        .map_or_else(|| req.uri.path().to_owned(), |p| p.as_str().to_owned());
    let vars = Vars {
        client_ip: None,
        host: &host,
        tls: false,
        request_id: b"id",
        uri: &uri,
    };
    let _ = t.value(&vars);

    let rw = Rewrite::new(Pattern::new("^/a/(.*)$").unwrap(), "/b/$1".into());
    let path = req.uri.path();
    // The prefix form (no regex engine) gives what the regex gives.
    let by_regex = match rw.pattern.0.replace(path, rw.to.as_str()) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(s) => Some(s),
    };
    assert_eq!(rw.apply(path), by_regex, "{path:?}");
    if let Some(out) = paths::upstream_path(Some(&rw), Some("/b"), path, req.uri.query()) {
        assert!(out.starts_with('/'), "{path:?} -> {out:?}");
        assert!(out.parse::<http::Uri>().is_ok(), "{path:?} -> {out:?}");
    }
});
