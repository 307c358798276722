//! Sluice's per-request parsers on arbitrary field values: the client IP from `X-Forwarded-For`
//! behind trusted proxies, the cache key (query filtering and sorting), the response
//! hop-by-hop rules and the rate-limit response headers. None may panic; the header values they
//! produce must be valid header values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pingora::http::{RequestHeader, ResponseHeader};
use sluice::cache::KeyRules;
use sluice::config::{Algorithm, LimitPolicy};
use sluice::ratelimit::Decision;

fuzz_target!(|data: &[u8]| {
    // Fields separated by NUL: path?query, X-Forwarded-For, a response Connection value, a
    // policy name, then numbers.
    let mut parts = data.split(|b| *b == 0);
    let target = parts.next().unwrap_or_default();
    let xff = parts.next().unwrap_or_default();
    let connection = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let nums = parts.next().unwrap_or_default();

    let target = String::from_utf8_lossy(target);
    let Ok(mut req) = RequestHeader::build("GET", target.as_bytes(), None) else {
        return;
    };
    let _ = req.insert_header("x-forwarded-for", xff);
    let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    let _ = sluice::ratelimit::client_ip(Some("127.0.0.1".parse().unwrap()), &req, &trusted);

    for rules in [
        KeyRules::default(),
        KeyRules {
            ignore: vec!["utm_*".into(), "f?clid".into()],
            sort: true,
        },
    ] {
        let _ = sluice::cache::key(&req, "example.com", nums.first() == Some(&1), &rules);
    }

    let mut resp = ResponseHeader::build(if nums.get(1) == Some(&1) { 101 } else { 200 }, None).unwrap();
    let _ = resp.append_header("connection", connection);
    let _ = resp.append_header("keep-alive", "timeout=5");
    let _ = resp.append_header("content-length", "0");
    sluice::edge::strip_response_hop_by_hop(&mut resp);
    if nums.get(1) != Some(&1) {
        assert!(!resp.headers.contains_key("keep-alive"));
        assert!(!resp.headers.contains_key("connection"));
    }

    let n = |i: usize| {
        let b = nums.get(i * 8..i * 8 + 8).unwrap_or(&[0; 8]);
        u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
    };
    let d = Decision {
        allowed: n(0) % 2 == 0,
        limit: n(1),
        remaining: n(2),
        reset_ms: n(3),
        retry_after_ms: n(4),
    };
    let policy = LimitPolicy {
        algorithm: Algorithm::Gcra,
        limit: n(1),
        window_ms: n(5),
        burst: n(6),
    };
    let name = String::from_utf8_lossy(name);
    for (field, value) in sluice::ratelimit::headers(&d, &policy, &name) {
        // What Sluice writes into responses must be a valid header value for names it accepts.
        if name.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            assert!(http::HeaderValue::from_str(&value).is_ok(), "{field}: {value:?}");
        }
    }
});
