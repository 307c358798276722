//! What Sluice forwards: X-Forwarded-*, X-Real-IP, Host, X-Request-Id; routing by host and path;
//! 404 when nothing matches.

mod support;

use serde_json::Value;
use support::*;

/// Send `req`, expect a 200, return the response headers and the backend's JSON echo.
async fn echo(req: reqwest::RequestBuilder) -> (reqwest::header::HeaderMap, Value) {
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    (headers, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_request_id() {
    let bs = backends(1).await;
    let sluice = Sluice::start(one_pool(&[bs[0].addr])).await;
    let c = client(Some("127.0.0.7".parse().unwrap()));

    // Generated id, returned to the client and seen by the backend.
    let (resp, body) = echo(
        c.get(sluice.url("/who?x=1"))
            .header("host", "shop.example:8080")
            .header("x-forwarded-for", "203.0.113.9"),
    )
    .await;
    let h = &body["headers"];
    assert_eq!(body["path"], "/who");
    assert_eq!(body["query"], "x=1");
    assert_eq!(h["host"], "shop.example:8080", "Host is kept");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.7");
    assert_eq!(h["x-real-ip"], "127.0.0.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8080");
    let id = resp["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(h["x-request-id"], id.as_str());
    assert_eq!(resp["x-backend-id"], "b1");

    // Values a client sends under the names Sluice sets are replaced, not passed on as well.
    let (_, body) = echo(
        c.get(sluice.url("/"))
            .header("x-real-ip", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example"),
    )
    .await;
    let h = &body["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], sluice.addr.to_string().as_str());

    // A client-supplied id is passed through and returned.
    let (resp, body) = echo(c.get(sluice.url("/")).header("x-request-id", "trace-42")).await;
    assert_eq!(body["headers"]["x-request-id"], "trace-42");
    assert_eq!(resp["x-request-id"], "trace-42");

    // Fresh ids differ per request.
    let (a, _) = echo(c.get(sluice.url("/"))).await;
    let (b, _) = echo(c.get(sluice.url("/"))).await;
    assert_ne!(a["x-request-id"], b["x-request-id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_are_not_forwarded_and_others_are() {
    let bs = backends(1).await;
    let sluice = Sluice::start(one_pool(&[bs[0].addr])).await;
    let c = client(None);
    // Hop-by-hop fields, and a field the client nominated in Connection, stay on this hop.
    let (_, body) = echo(
        c.get(sluice.url("/h"))
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic eDp5")
            .header("x-kept", "yes"),
    )
    .await;
    let h = body["headers"].as_object().unwrap();
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(!h.contains_key(gone), "{gone} was forwarded: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
    // Without any of them, every field goes through (the sanitizing fast path).
    let (_, body) = echo(
        c.get(sluice.url("/h"))
            .header("x-kept", "yes")
            .header("accept", "text/plain"),
    )
    .await;
    assert_eq!(body["headers"]["x-kept"], "yes");
    assert_eq!(body["headers"]["accept"], "text/plain");
}

/// A client that sends many fields: Sluice's header maps keep no hash index up to 16 names
/// (vendored `http`) and build one past that. A request of 40 names, in mixed case, with a
/// repeated one, a spoofed `X-Real-IP`, a field nominated in `Connection` and a client's
/// `X-Forwarded-For` (read back after the removals) among them,
/// crosses that bound while it is parsed, copied upstream, sanitized and given Sluice's
/// fields; the backend must see every field once with its value, the repeated one in order,
/// and neither the spoofed value nor the nominated field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_many_fields_arrives_whole() {
    let bs = backends(1).await;
    let sluice = Sluice::start(one_pool(&[bs[0].addr])).await;
    let c = client(Some("127.0.0.7".parse().unwrap()));
    // With the eight other names (reqwest adds Host and Accept): 8, 16, 17 and 48 names.
    for n in [0, 8, 9, 40] {
        let mut req = c
            .get(sluice.url("/many"))
            .header("connection", "X-Nominated")
            .header("x-nominated", "secret")
            .header("x-real-ip", "6.6.6.6")
            .header("x-dup", "1")
            .header("user-agent", "many/1");
        for i in 0..n {
            req = req.header(format!("X-Field-{i:02}"), format!("v{i}"));
        }
        // Last, so that removing an earlier field moves its bucket: Sluice reads it after.
        req = req
            .header("x-dup", "2")
            .header("X-DUP", "3")
            .header("x-forwarded-for", "203.0.113.9");
        let (_, body) = echo(req).await;
        let h = body["headers"].as_object().unwrap();
        for i in 0..n {
            assert_eq!(
                h[&format!("x-field-{i:02}")],
                format!("v{i}").as_str(),
                "{n}: {h:?}"
            );
        }
        assert_eq!(h["x-dup"], "1, 2, 3", "{n}");
        assert_eq!(h["x-real-ip"], "127.0.0.7", "{n}");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.7", "{n}");
        assert_eq!(h["user-agent"], "many/1", "{n}");
        assert!(!h.contains_key("x-nominated"), "{n}: {h:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_prefix_and_404_otherwise() {
    let bs = backends(3).await;
    let sluice = Sluice::start(format!(
        r#"
[upstreams.web]
{}
[upstreams.api]
{}
[upstreams.admin]
{}
[[routes]]
host = "*.example.com"
path_prefix = "/"
upstream = "web"
[[routes]]
host = "*.example.com"
path_prefix = "/api"
upstream = "api"
[[routes]]
host = "admin.example.com"
path_prefix = "/"
upstream = "admin"
"#,
        backends_toml(&[(bs[0].addr, None)]),
        backends_toml(&[(bs[1].addr, None)]),
        backends_toml(&[(bs[2].addr, None)]),
    ))
    .await;
    let c = client(None);
    let go = |host: &'static str, path: &'static str| {
        let c = c.clone();
        let url = sluice.url(path);
        async move {
            let r = c.get(url).header("host", host).send().await.unwrap();
            (r.status().as_u16(), backend_of(&r), r)
        }
    };
    assert_eq!(go("www.example.com", "/").await.1, "b1");
    assert_eq!(go("www.example.com", "/api/v1/items").await.1, "b2");
    assert_eq!(go("WWW.Example.COM:80", "/api").await.1, "b2");
    assert_eq!(go("www.example.com", "/apix").await.1, "b1");
    assert_eq!(go("admin.example.com", "/api").await.1, "b3");

    let (status, backend, resp) = go("other.org", "/").await;
    assert_eq!((status, backend.as_str()), (404, ""));
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(
        resp.text().await.unwrap(),
        "no route for this host and path\n"
    );
    // Nothing reached any backend for the 404.
    let total: u64 = bs.iter().map(|b| b.shared.total()).sum();
    assert_eq!(total, 5);
}

/// A raw HTTP/1.1 backend that records each request head it reads and answers with a field
/// name in mixed case (hyper, under backend-sample, would lowercase both).
async fn raw_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let resp = b"HTTP/1.1 200 OK\r\nX-Backend-Case: yes\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, heads)
}

/// One request over a raw client connection; returns the response head as sent on the wire.
async fn raw_get(addr: std::net::SocketAddr) -> String {
    raw_request(
        addr,
        b"GET /case HTTP/1.1\r\nhost: case.example\r\nX-Client-Case: 1\r\n\r\n",
    )
    .await
}

/// Send `request` as is over a new connection; returns the response head.
async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_are_lowercased_unless_preserve_header_case() {
    let (addr, heads) = raw_backend().await;
    // (extra [server] line, what the client must see, what the backend must see)
    let modes: [(&str, &[&str], &[&str]); 2] = [
        // Default: field names go out lowercased in both directions, the standard ones (Host,
        // Content-Length, ...) in their canonical case.
        (
            "",
            &[
                "\r\nx-backend-case: yes\r\n",
                "\r\nx-request-id: ",
                "\r\nContent-Length: 2\r\n",
            ],
            &[
                "\r\nx-client-case: 1\r\n",
                "\r\nx-forwarded-for: 127.0.0.1\r\n",
                "\r\nHost: case.example\r\n",
            ],
        ),
        // preserve_header_case: each name as the client or backend wrote it; the fields Sluice
        // adds in their usual Title-Case.
        (
            "preserve_header_case = true",
            &["\r\nX-Backend-Case: yes\r\n", "\r\nX-Request-Id: "],
            &[
                "\r\nX-Client-Case: 1\r\n",
                "\r\nX-Forwarded-For: 127.0.0.1\r\n",
                "\r\nhost: case.example\r\n",
            ],
        ),
    ];
    for (extra, to_client, to_backend) in modes {
        let sluice = Sluice::with_config(one_pool(&[addr]))
            .server_extra(extra)
            .start()
            .await;
        let resp = raw_get(sluice.addr).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        for line in to_client {
            assert!(resp.contains(line), "{extra}: {line:?} in {resp}");
        }
        let head = heads
            .lock()
            .unwrap()
            .pop()
            .expect("the backend saw the request");
        for line in to_backend {
            assert!(head.contains(line), "{extra}: {line:?} in {head}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_framing_is_validated() {
    let bs = backends(1).await;
    let sluice = Sluice::start(one_pool(&[bs[0].addr])).await;
    // Not a number, or two values that disagree: the body's end is ambiguous, so 400 (and
    // nothing reaches the backend).
    for bad in [
        &b"POST /f HTTP/1.1\r\nHost: f\r\nContent-Length: abc\r\n\r\n"[..],
        b"POST /f HTTP/1.1\r\nHost: f\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let resp = raw_request(sluice.addr, bad).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
    // One valid value frames the body.
    let resp = raw_request(
        sluice.addr,
        b"POST /f HTTP/1.1\r\nHost: f\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(served(&bs, "/f")["b1"], 1);
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, split into (trace id, span id, flags).
fn traceparent(v: &Value) -> (String, String, String) {
    let s = v.as_str().unwrap_or_else(|| panic!("no traceparent: {v}"));
    let parts: Vec<&str> = s.split('-').collect();
    assert_eq!(parts.len(), 4, "{s}");
    assert_eq!(parts[0], "00", "{s}");
    assert_eq!(parts[1].len(), 32, "{s}");
    assert_eq!(parts[2].len(), 16, "{s}");
    for p in &parts[1..] {
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s}"
        );
    }
    assert_ne!(parts[1], "0".repeat(32));
    assert_ne!(parts[2], "0".repeat(16));
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Issue 17: W3C trace context. A trace that comes in is continued with a span of Sluice's own
/// (the backend's parent), `tracestate` passed on; a request without one (or with an invalid
/// one) starts a new trace and an invalid one's `tracestate` is dropped; the access log carries
/// the trace id the backend saw; `propagate = false` leaves the fields alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_is_continued_or_started() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::start(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = '$request_id $trace_id'\n{}",
        log.display(),
        one_pool(&[bs[0].addr])
    ))
    .await;
    let c = client(None);

    // Continued: same trace, a new span, the caller's flags, tracestate untouched.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, body) = echo(
        c.get(sluice.url("/t"))
            .header("traceparent", incoming)
            .header("tracestate", "vendor=abc,other=1")
            .header("x-request-id", "continued"),
    )
    .await;
    let (trace, span, flags) = traceparent(&body["headers"]["traceparent"]);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(span, "00f067aa0ba902b7", "Sluice is a hop: its own span");
    assert_eq!(flags, "01");
    assert_eq!(body["headers"]["tracestate"], "vendor=abc,other=1");

    // Started: a new trace per request, sampled by default.
    let mut started = Vec::new();
    for i in 0..2 {
        let (_, body) = echo(
            c.get(sluice.url("/t"))
                .header("x-request-id", format!("new-{i}")),
        )
        .await;
        let (trace, _, flags) = traceparent(&body["headers"]["traceparent"]);
        assert_eq!(flags, "01");
        started.push(trace);
    }
    assert_ne!(started[0], started[1]);

    // Invalid (upper-case hex): a new trace, and its tracestate is not passed on.
    let (_, body) = echo(
        c.get(sluice.url("/t"))
            .header(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            )
            .header("tracestate", "vendor=abc")
            .header("x-request-id", "invalid"),
    )
    .await;
    let (trace, _, _) = traceparent(&body["headers"]["traceparent"]);
    assert_ne!(trace.to_uppercase(), "4BF92F3577B34DA6A3CE929D0E0E4736");
    assert!(body["headers"].get("tracestate").is_none(), "{body}");

    // The access log names the trace the backend saw.
    let lines = eventually(std::time::Duration::from_secs(5), "4 lines", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (t.lines().count() >= 4).then_some(t)
    })
    .await;
    assert!(
        lines.contains("continued 4bf92f3577b34da6a3ce929d0e0e4736\n"),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("new-0 {}\n", started[0])),
        "{lines}"
    );

    // Off: what the client sent goes through untouched.
    let off = Sluice::start(format!(
        "[tracing]\npropagate = false\n{}",
        one_pool(&[bs[0].addr])
    ))
    .await;
    let (_, body) = echo(
        c.get(off.url("/t"))
            .header("traceparent", "garbage")
            .header("tracestate", "vendor=abc"),
    )
    .await;
    assert_eq!(body["headers"]["traceparent"], "garbage");
    assert_eq!(body["headers"]["tracestate"], "vendor=abc");
    let (_, body) = echo(c.get(off.url("/t"))).await;
    assert!(body["headers"].get("traceparent").is_none(), "{body}");
}
