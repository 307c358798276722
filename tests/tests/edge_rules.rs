//! Route matching and route rules (issue 15): precedence of exact, regex and prefix paths with
//! methods and header conditions; redirects; rewrite and strip_prefix on the path the backend
//! gets; request and response header rules with templates; security headers (HSTS only over
//! TLS); body limits; allow/deny by source address; CORS preflights and responses. Each test
//! asserts what the client and the backend (the sample's JSON echo) each saw.

mod support;

use serde_json::Value;
use support::*;

fn pool(b: &Backend) -> String {
    format!("[upstreams.api]\n{}\n", backends_toml(&[(b.addr, None)]))
}

/// A client that does not follow redirects.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map_or("-", |v| v.to_str().unwrap_or("?"))
}

/// The route names below are returned in `x-route` by a response rule on each route, so the
/// client sees which route served it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_exact_then_regex_in_file_order_then_longest_prefix() {
    let bs = backends(1).await;
    let route = |name: &str, matcher: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\n{matcher}\nupstream = \"api\"\nresponse_headers = {{ set = {{ \"x-route\" = \"{name}\" }} }}\n"
        )
    };
    let config = [
        pool(&bs[0]),
        route("root", "path_prefix = \"/\""),
        route("admin-prefix", "path_prefix = \"/v1/users/admin\""),
        route("users-regex", "path_regex = \"^/v[0-9]+/users\""),
        route("v1-regex", "path_regex = \"^/v1/\""),
        route("me-exact", "path_exact = \"/v1/users/me\""),
        route(
            "writes",
            "path_prefix = \"/api\"\nmethods = [\"POST\", \"PUT\"]",
        ),
        route(
            "canary",
            "path_prefix = \"/api\"\nmatch_headers = { \"x-canary\" = \"1\" }",
        ),
        route("api", "path_prefix = \"/api\""),
        route("host", "host = \"h.example\"\npath_prefix = \"/\""),
    ]
    .concat();
    let sluice = Sluice::start(config).await;
    let c = client(None);
    let table = [
        ("GET", "/v1/users/me", None, None, "me-exact"),
        ("GET", "/v1/users/me/x", None, None, "users-regex"),
        ("GET", "/v1/users/admin", None, None, "users-regex"),
        ("GET", "/v1/other", None, None, "v1-regex"),
        ("GET", "/v2/other", None, None, "root"),
        ("GET", "/api/x", None, None, "api"),
        ("POST", "/api/x", None, None, "writes"),
        ("GET", "/api/x", Some("1"), None, "canary"),
        ("GET", "/api/x", Some("2"), None, "api"),
        ("POST", "/api/x", Some("1"), None, "writes"),
        ("GET", "/v1/users/me", None, Some("h.example"), "host"),
    ];
    for (method, path, canary, host, want) in table {
        let mut req = c.request(method.parse().unwrap(), sluice.url(path));
        if let Some(v) = canary {
            req = req.header("x-canary", v);
        }
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
        assert_eq!(
            header(&r, "x-route"),
            want,
            "{method} {path} canary={canary:?} host={host:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_redirects_everything_to_https() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "{}[[routes]]\nname = \"to-https\"\nscheme = \"http\"\nredirect = {{ to = \"https://{{host}}{{uri}}\" }}\n\
         [[routes]]\nname = \"site\"\nupstream = \"api\"\n",
        pool(&bs[0])
    ))
    .tls()
    .start()
    .await;
    let c = no_redirects();
    let r = c
        .post(sluice.url("/a/b?x=1&y=2"))
        .header("host", "Shop.Example:8080")
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308, "308 keeps the method and body");
    assert_eq!(header(&r, "location"), "https://shop.example/a/b?x=1&y=2");
    assert!(!bs[0].shared.served().contains_key("/a/b"));
    // Over TLS the same request is proxied: no redirect loop.
    let tls = demo_tls_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let port = sluice.tls_addr.unwrap().port();
    let r = tls
        .post(format!("https://localhost:{port}/a/b"))
        .body("kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body_len"], 4);
    let m = sluice
        .metrics_when(|t| t.contains("sluice_edge_answers_total"))
        .await;
    assert!(
        m.contains("sluice_edge_answers_total{reason=\"redirect\",route=\"to-https\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_and_strip_prefix_change_only_what_the_backend_gets() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\npath_prefix = \"/api\"\nstrip_prefix = \"/api\"\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/old\"\nrewrite = {{ pattern = \"^/old/(.*)$\", to = \"/new/$1\" }}\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/both\"\nrewrite = {{ pattern = \"^/both/v1/\", to = \"/both/v2/\" }}\nstrip_prefix = \"/both\"\nupstream = \"api\"\n",
        pool(&bs[0])
    ))
    .await;
    let c = client(None);
    for (path, want_path, want_query) in [
        ("/api/users?id=7", "/users", "id=7"),
        ("/api", "/", ""),
        ("/old/a/b?q=1", "/new/a/b", "q=1"),
        ("/both/v1/x", "/v2/x", ""),
    ] {
        let v: Value = c
            .get(sluice.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["path"], want_path, "{path}");
        assert_eq!(v["query"], want_query, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_in_both_directions_with_templates() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\nupstream = \"api\"\n\
         request_headers = {{ set = {{ \"x-env\" = \"prod\", \"x-origin\" = \"{{scheme}}://{{host}}{{uri}} {{client_ip}}\" }}, add = {{ \"x-tag\" = \"b\" }}, remove = [\"x-debug\"] }}\n\
         response_headers = {{ set = {{ \"x-id\" = \"id={{request_id}}\" }}, add = {{ \"cache-control\" = \"no-transform\" }}, remove = [\"x-backend-id\"] }}\n",
        pool(&bs[0])
    ))
    .await;
    let c = client(Some("127.0.0.9".parse().unwrap()));
    let r = c
        .get(sluice.url("/p?q=1"))
        .header("host", "Site.Example:81")
        .header("x-env", "dev")
        .header("x-tag", "a")
        .header("x-debug", "1")
        .header("x-request-id", "rid-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-backend-id"), "-", "removed from the response");
    assert_eq!(header(&r, "x-id"), "id=rid-1");
    assert!(header(&r, "cache-control").contains("no-transform"));
    let v: Value = r.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-env"], "prod", "set replaces the client's value");
    assert_eq!(h["x-tag"], "a, b", "add keeps the client's value");
    assert!(h.get("x-debug").is_none(), "removed: {h}");
    assert_eq!(h["x-origin"], "http://site.example/p?q=1 127.0.0.9");
    assert_eq!(h["host"], "Site.Example:81", "Host untouched");
}

/// The same rules over HTTP/2 both ways (a TLS client, an h2c pool): the fields Sluice writes
/// as HTTP/1 lines are folded into the HTTP/2 header blocks, with `set` still replacing the
/// backend's field and a rule naming a security header still winning over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_rules_apply_over_http2_both_ways() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[upstreams.api]\nprotocol = \"h2c\"\n{}\n[[routes]]\nupstream = \"api\"\n\
         request_headers = {{ set = {{ \"x-env\" = \"prod\", \"x-ip\" = \"{{client_ip}}\" }}, add = {{ \"x-tag\" = \"b\" }} }}\n\
         response_headers = {{ set = {{ \"x-backend-id\" = \"hidden\", \"x-frame-options\" = \"SAMEORIGIN\" }}, add = {{ \"x-served-by\" = \"{{host}}\" }} }}\n\
         security_headers = \"strict\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .tls()
    .start()
    .await;
    let port = sluice.tls_addr.unwrap().port();
    let r = demo_tls_client()
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/two"))
        .header("x-env", "dev")
        .header("x-tag", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let all = |name: &str| -> Vec<String> {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        all("x-backend-id"),
        ["hidden"],
        "set replaces the backend's"
    );
    assert_eq!(all("x-served-by"), ["localhost"]);
    assert_eq!(all("x-frame-options"), ["SAMEORIGIN"], "the rule wins");
    assert_eq!(all("referrer-policy"), ["no-referrer"]);
    assert_eq!(
        all("strict-transport-security"),
        ["max-age=63072000; includeSubDomains"]
    );
    assert_eq!(all("x-request-id").len(), 1);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "the pool speaks h2c");
    let h = &v["headers"];
    assert_eq!(h["x-env"], "prod", "set replaces the client's value");
    assert_eq!(h["x-tag"], "a, b", "add keeps the client's value");
    assert_eq!(h["x-ip"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_with_hsts_only_over_tls() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "{}[[routes]]\nupstream = \"api\"\nsecurity_headers = \"strict\"\ncompression = {{ min_bytes = 10 }}\n",
        pool(&bs[0])
    ))
    .tls()
    .start()
    .await;
    let plain = client(None).get(sluice.url("/")).send().await.unwrap();
    assert_eq!(header(&plain, "strict-transport-security"), "-");
    assert_eq!(header(&plain, "x-content-type-options"), "nosniff");
    assert_eq!(header(&plain, "x-frame-options"), "DENY");
    assert_eq!(header(&plain, "referrer-policy"), "no-referrer");
    let tls = demo_tls_client().build().unwrap();
    let port = sluice.tls_addr.unwrap().port();
    let r = tls
        .get(format!("https://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "strict-transport-security"),
        "max-age=63072000; includeSubDomains"
    );
    // Compression over HTTP/2 (no Transfer-Encoding there), decoded by the client library.
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = tls
        .get(format!("https://localhost:{port}/h2"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/h2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_get_413() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\nname = \"up\"\nupstream = \"api\"\nmax_body_bytes = 1000\n",
        pool(&bs[0])
    ))
    .await;
    let c = client(None);
    // Within the limit: proxied whole.
    let r = c
        .post(sluice.url("/ok"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body_len"], 1000);
    // Content-Length over the limit: 413 before anything reaches the backend.
    let r = c
        .post(sluice.url("/big"))
        .body(vec![b'a'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(header(&r, "connection"), "close");
    assert!(!bs[0].shared.served().contains_key("/big"));
    // Chunked (no length) over the limit: 413 once the limit is passed. The backend saw the
    // request start and its body cut at the limit (it never answered it).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'a'; 400])).collect();
    let r = c
        .post(sluice.url("/chunked"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let m = sluice.metrics_when(|t| t.contains("body_too_large")).await;
    assert!(
        m.contains("sluice_edge_answers_total{reason=\"body_too_large\",route=\"up\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_by_source_address() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\nname = \"inner\"\nupstream = \"api\"\nallow = [\"127.0.0.0/8\"]\ndeny = [\"127.0.0.2\"]\n",
        pool(&bs[0])
    ))
    .await;
    let ok = client(Some("127.0.0.1".parse().unwrap()))
        .get(sluice.url("/in"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let denied = client(Some("127.0.0.2".parse().unwrap()))
        .get(sluice.url("/denied"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.text().await.unwrap(), "forbidden\n");
    assert!(!bs[0].shared.served().contains_key("/denied"));
    let m = sluice.metrics_when(|t| t.contains("access_denied")).await;
    assert!(
        m.contains("sluice_edge_answers_total{reason=\"access_denied\",route=\"inner\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_answered_by_sluice_and_fields_on_responses() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\nupstream = \"api\"\ncors = {{ origins = [\"https://app.example.com\"], methods = [\"GET\", \"POST\"], headers = [\"authorization\"], max_age_seconds = 600, credentials = true }}\n",
        pool(&bs[0])
    ))
    .await;
    let c = client(None);
    let app = "https://app.example.com";
    let r = c
        .request(reqwest::Method::OPTIONS, sluice.url("/pre"))
        .header("origin", app)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), app);
    assert_eq!(header(&r, "access-control-allow-methods"), "GET, POST");
    assert_eq!(header(&r, "access-control-allow-headers"), "authorization");
    assert_eq!(header(&r, "access-control-max-age"), "600");
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
    assert!(
        !bs[0].shared.served().contains_key("/pre"),
        "preflight never proxied"
    );

    let r = c
        .request(reqwest::Method::OPTIONS, sluice.url("/pre"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "access-control-allow-origin"), "-");

    let r = c
        .get(sluice.url("/data"))
        .header("origin", app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), app);
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
    assert!(header(&r, "vary").contains("Origin"));
    let r = c
        .get(sluice.url("/data"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "proxied: the browser withholds it");
    assert_eq!(header(&r, "access-control-allow-origin"), "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_every_bad_rule_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[upstreams.api]
backends = [{ addr = "127.0.0.1:9" }]

[[routes]]
name = "a"
path_prefix = "/api"
upstream = "api"

[[routes]]
name = "b"
path_prefix = "/api"
upstream = "api"

[[routes]]
name = "c"
path_regex = "^/(unclosed"
rewrite = { pattern = "[", to = "/x" }
upstream = "api"
allow = ["10.0.0.0/33"]
cors = { origins = ["*"], credentials = true }
request_headers = { set = { "x-ip" = "{remote_addr}", "x-forwarded-for" = "me" } }

[[routes]]
name = "d"
path_exact = "/x"
path_prefix = "/x"
redirect = { to = "https://{host}{uri}", status = 200 }
security_headers = "max"
max_body_bytes = -1

[[routes]]
name = "e"
path_prefix = "/nothing"
"#,
    )
    .unwrap();
    let (status, _out, err) = run_sluice(&["--check", "--config", path.to_str().unwrap()]);
    assert!(!status.success());
    for needle in [
        "routes[2].request_headers.set.x-ip",
        "`{remote_addr}`",
        "routes[2].request_headers.set.x-forwarded-for",
        "routes[1]: never",
        "never receives traffic: route `a`",
        "routes[2].path_regex",
        "routes[2].rewrite.pattern",
        "routes[2].allow[0]",
        "routes[2].cors.credentials",
        "routes[3]: give one of path_prefix, path_exact, path_regex",
        "routes[3].redirect.status",
        "routes[3].security_headers",
        "routes[3].max_body_bytes",
        "routes[4].upstream",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// A client that decodes gzip, br and zstd itself (it sends no `Accept-Encoding` of its own:
/// each request names what it accepts).
fn decoding_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_follows_accept_encoding_and_round_trips() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}[[routes]]\nname = \"z\"\nupstream = \"api\"\ncompression = {{ algorithms = [\"zstd\", \"br\", \"gzip\"], min_bytes = 100 }}\n\
         [[routes]]\npath_prefix = \"/respond\"\nupstream = \"api\"\ncompression = {{ min_bytes = 10 }}\n\
         [[routes]]\npath_prefix = \"/c\"\nupstream = \"api\"\ncache = \"warm\"\ncache_ttl_mode = \"override\"\ncompression = {{ min_bytes = 10 }}\n",
        pool(&bs[0])
    ))
    .await;
    let raw = client(None);
    let decoding = decoding_client();
    let identity: Value = raw
        .get(sluice.url("/doc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (accept, want) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip, br, zstd", "zstd"),
        ("*;q=0.1, zstd;q=0", "br"),
    ] {
        // Undecoded: the coding chosen.
        let r = raw
            .get(sluice.url("/doc"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "content-encoding"), want, "{accept}");
        assert!(header(&r, "vary").contains("Accept-Encoding"), "{accept}");
        assert_eq!(header(&r, "content-length"), "-", "{accept}");
        // Decoded by the client library: the same document.
        let r = decoding
            .get(sluice.url("/doc"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{accept}: {e:?}"));
        assert_eq!(v["path"], identity["path"], "{accept}");
        assert_eq!(v["id"], identity["id"], "{accept}");
    }
    // No Accept-Encoding: identity, still marked as varying.
    let r = raw.get(sluice.url("/doc")).send().await.unwrap();
    assert_eq!(header(&r, "content-encoding"), "-");
    assert!(header(&r, "vary").contains("Accept-Encoding"));

    // Never compressed: below min_bytes, already encoded, no-transform, another type, a range.
    let small = raw
        .get(sluice.url("/respond/small?content-type=application/json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&small, "content-encoding"),
        "gzip",
        "over this route's 10 bytes"
    );
    let below = raw
        .get(sluice.url("/json/99"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&below, "content-encoding"),
        "-",
        "below min_bytes (100)"
    );
    assert_eq!(header(&below, "content-length"), "99");
    assert_eq!(header(&below, "vary"), "-");
    let at = raw
        .get(sluice.url("/json/100"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&at, "content-encoding"), "gzip", "at min_bytes");
    for (path, why) in [
        (
            "/respond/enc?content-type=text/plain&content-encoding=br",
            "already encoded",
        ),
        (
            "/respond/nt?content-type=text/plain&cache-control=no-transform",
            "no-transform",
        ),
        (
            "/bytes/2000",
            "not a listed type (application/octet-stream)",
        ),
    ] {
        let r = raw
            .get(sluice.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        let ce = header(&r, "content-encoding").to_owned();
        assert_ne!(ce, "gzip", "{why}");
        assert!(!header(&r, "vary").contains("Accept-Encoding"), "{why}");
        let body = r.bytes().await.unwrap();
        assert!(
            body.starts_with(b"b1 /respond/") || body.len() == 2000,
            "{why}: body untouched: {body:?}"
        );
    }
    let ranged = raw
        .get(sluice.url("/respond/range?content-type=text/plain"))
        .header("accept-encoding", "gzip")
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&ranged, "content-encoding"), "-", "a range request");

    // With the cache: one identity entry, encoded on the way out for each client.
    let first = raw
        .get(sluice.url("/c/item"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert_eq!(header(&first, "content-encoding"), "gzip");
    let plain = raw.get(sluice.url("/c/item")).send().await.unwrap();
    assert_eq!(header(&plain, "x-cache"), "HIT");
    assert_eq!(header(&plain, "content-encoding"), "-");
    let plain: Value = plain.json().await.unwrap();
    for accept in ["br", "zstd", "gzip"] {
        let r = decoding
            .get(sluice.url("/c/item"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(header(&r, "x-cache"), "HIT", "{accept}");
        assert_eq!(r.json::<Value>().await.unwrap(), plain, "{accept}");
    }
    assert_eq!(bs[0].shared.served()["/c/item"], 1);
}

/// `[route_defaults]`: what every route gets unless it says otherwise, seen by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_defaults_apply_to_routes_that_leave_them_out() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[route_defaults]\nsecurity_headers = \"basic\"\nresponse_headers = {{ remove = [\"x-backend-id\"] }}\nmax_body_bytes = 10\n{}\
         [[routes]]\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/own\"\nupstream = \"api\"\nsecurity_headers = \"off\"\nmax_body_bytes = 100\n",
        pool(&bs[0])
    ))
    .await;
    let c = client(None);
    let r = c.get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(header(&r, "x-frame-options"), "SAMEORIGIN");
    assert_eq!(header(&r, "x-backend-id"), "-");
    let r = c
        .post(sluice.url("/x"))
        .body("more than ten")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = c
        .post(sluice.url("/own/x"))
        .body("more than ten")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "its own limit");
    assert_eq!(
        header(&r, "x-frame-options"),
        "-",
        "its own security_headers"
    );
    assert_eq!(
        header(&r, "x-backend-id"),
        "-",
        "the default it did not replace"
    );
}
