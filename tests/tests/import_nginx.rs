//! `sluice import nginx`, proved by difference (issue 19): for each config of `tests/nginx/`, a real
//! nginx runs the config and a real Sluice runs what `sluice import nginx` made of it, in front
//! of the same backend-sample processes; the same requests go to both, and the tests assert the
//! same status, the same significant response fields, and the same request as the backend saw
//! it (method, path, query, the fields the config forwards).
//!
//! Deliberate differences, not compared (docs/migrating-from-nginx.md says why):
//! - Sluice adds `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP`,
//!   `X-Request-Id` and `traceparent` to every proxied request; nginx only what the config sets.
//!   Where the config sets them, their values are compared.
//! - nginx writes its own `Server` and `Date`; Sluice keeps the backend's. Sluice answers with
//!   `X-Request-Id`, and on rate-limited routes with `X-RateLimit-*`/`RateLimit*` fields.
//! - The bodies of the answers each proxy gives itself (403, 404, 413, 429) differ.
//! - nginx speaks HTTP/1.0 to backends without `proxy_http_version 1.1`; Sluice HTTP/1.1.
//! - `hash $remote_addr consistent` hashes differently: each keeps a client on one backend, not
//!   necessarily the same one.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::ca::Ca;
use support::{free_port, run_sluice, workspace_root, BackendProc, Nginx, Sluice};

/// One response, as a client saw it.
#[derive(Debug)]
struct Seen {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        let all: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        (!all.is_empty()).then(|| all.join(", "))
    }

    /// The backend's echo of the request (JSON with its `method`), or `Null` when the body is
    /// not one (an answer the proxy gave itself).
    fn echo(&self) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("method").is_some())
            .unwrap_or(serde_json::Value::Null)
    }

    /// A request field as the backend saw it.
    fn forwarded(&self, name: &str) -> Option<String> {
        self.echo()["headers"][name].as_str().map(str::to_owned)
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Seen {
    let r = rb.send().await.expect("request");
    Seen {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap_or_default(),
    }
}

/// nginx and Sluice, one config, the same three backends.
struct Pair {
    nginx: Nginx,
    sluice: Sluice,
    nginx_http: SocketAddr,
    nginx_https: SocketAddr,
    sluice_https: SocketAddr,
    backends: Vec<BackendProc>,
    /// What `sluice import` wrote, and its stderr.
    imported: String,
    summary: String,
    ca: Ca,
    _dir: tempfile::TempDir,
}

/// Copy `src` (a directory) to `dst`, replacing each `{{NAME}}` in the files.
fn render(src: &Path, dst: &Path, vars: &[(&str, String)]) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            render(&e.path(), &to, vars);
        } else {
            let mut text = std::fs::read_to_string(e.path()).unwrap();
            for (k, v) in vars {
                text = text.replace(&format!("{{{{{k}}}}}"), v);
            }
            std::fs::write(to, text).unwrap();
        }
    }
}

impl Pair {
    /// Start the backends, nginx on `tests/nginx/NAME`, and Sluice on its import (which must
    /// exit with `exit`).
    async fn start(name: &str, exit: i32) -> Pair {
        let mut backends = Vec::new();
        for id in ["b1", "b2", "b3"] {
            backends.push(BackendProc::start(id).await);
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        ca.leaf(&["site.example.test"], dir.path(), "site");
        let src = workspace_root().join("tests/nginx").join(name);
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let vars = |http: u16, https: u16| {
            vec![
                ("HTTP", http.to_string()),
                ("HTTPS", https.to_string()),
                ("B1", backends[0].addr.to_string()),
                ("B2", backends[1].addr.to_string()),
                ("B3", backends[2].addr.to_string()),
                ("CERT", dir.path().join("site.pem").display().to_string()),
                ("KEY", dir.path().join("site.key").display().to_string()),
            ]
        };
        render(&src, &dir.path().join("nginx"), &vars(ports[0], ports[1]));
        render(&src, &dir.path().join("import"), &vars(ports[2], ports[3]));
        let out = dir.path().join("sluice.toml");
        let (status, _, summary) = run_sluice(&[
            "import",
            "nginx",
            dir.path().join("import/nginx.conf").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        let imported = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(exit),
            "sluice import nginx {name}:\n{summary}\n{imported}"
        );
        let tls = imported.contains("[[server.tls]]");
        let mut nginx_addrs = vec![addr(ports[0])];
        if tls {
            nginx_addrs.push(addr(ports[1]));
        }
        let nginx = Nginx::start(&dir.path().join("nginx"), &nginx_addrs).await;
        let sluice =
            Sluice::start_whole(&imported, addr(ports[2]), tls.then(|| addr(ports[3]))).await;
        Pair {
            nginx,
            sluice,
            nginx_http: addr(ports[0]),
            nginx_https: addr(ports[1]),
            sluice_https: addr(ports[3]),
            backends,
            imported,
            summary,
            ca,
            _dir: dir,
        }
    }

    /// The same request to nginx, then to Sluice: `make` gets the base URL
    /// (`http://127.0.0.1:PORT`).
    async fn both(&self, make: impl Fn(&str) -> reqwest::RequestBuilder) -> (Seen, Seen) {
        let n = send(make(&format!("http://{}", self.nginx_http))).await;
        let s = send(make(&format!("http://{}", self.sluice.addr))).await;
        (n, s)
    }

    /// The same over TLS: `make` gets `https://site.example.test:PORT`.
    async fn both_tls(&self, make: impl Fn(&str) -> reqwest::RequestBuilder) -> (Seen, Seen) {
        let n = send(make(&format!(
            "https://site.example.test:{}",
            self.nginx_https.port()
        )))
        .await;
        let s = send(make(&format!(
            "https://site.example.test:{}",
            self.sluice_https.port()
        )))
        .await;
        (n, s)
    }

    fn context(&self, n: &Seen, s: &Seen) -> String {
        format!(
            "\nnginx: {} {:?} {}\nsluice: {} {:?} {}\nimported:\n{}\nsluice log:\n{}\nnginx log:\n{}",
            n.status,
            n.headers,
            String::from_utf8_lossy(&n.body),
            s.status,
            s.headers,
            String::from_utf8_lossy(&s.body),
            self.imported,
            self.sluice.log(),
            self.nginx.log()
        )
    }

    /// Assert the same status, the same `response` fields and, for a proxied answer, the same
    /// request at the backend: method, path, query and the `request` fields.
    fn same(&self, what: &str, n: &Seen, s: &Seen, response: &[&str], request: &[&str]) {
        let ctx = || format!("{what}{}", self.context(n, s));
        assert_eq!(n.status, s.status, "status: {}", ctx());
        for f in response {
            assert_eq!(n.header(f), s.header(f), "response field {f}: {}", ctx());
        }
        let (ne, se) = (n.echo(), s.echo());
        assert_eq!(ne.is_null(), se.is_null(), "proxied by one only: {}", ctx());
        if ne.is_null() {
            return;
        }
        for k in ["method", "path", "query", "body_len", "body_sha256"] {
            assert_eq!(ne[k], se[k], "backend saw a different {k}: {}", ctx());
        }
        for f in request {
            assert_eq!(
                n.forwarded(f),
                s.forwarded(f),
                "backend saw a different {f}: {}",
                ctx()
            );
        }
    }
}

/// A client that shows redirects instead of following them.
fn client(local: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_proxy();
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

/// Backend id of a proxied answer.
fn backend(s: &Seen) -> String {
    s.echo()["id"].as_str().unwrap_or("-").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_with_websocket_behaves_as_nginx() {
    let mut p = Pair::start("lb", 0).await;
    assert!(p.summary.contains("0 not translated"), "{}", p.summary);
    let c = client(None);

    // The same rotation over the three backends, the same forwarded fields.
    let mut counts: [BTreeMap<String, u32>; 2] = Default::default();
    for i in 0..30 {
        let (n, s) = p
            .both(|base| {
                c.get(format!("{base}/orders/{i}?page=2"))
                    .header("host", "shop.example.test:8080")
            })
            .await;
        p.same(
            "GET /orders/N",
            &n,
            &s,
            &[],
            &["host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto"],
        );
        assert_eq!(n.forwarded("host").as_deref(), Some("shop.example.test"));
        *counts[0].entry(backend(&n)).or_default() += 1;
        *counts[1].entry(backend(&s)).or_default() += 1;
    }
    assert_eq!(counts[0], counts[1], "distribution");
    assert_eq!(
        counts[1].values().copied().collect::<Vec<_>>(),
        [10, 10, 10]
    );

    // client_max_body_size 64k: a larger declared body is refused by both; a smaller passes.
    for (len, what) in [(100_000usize, "over the limit"), (1000, "under the limit")] {
        let (n, s) = p
            .both(|base| c.post(format!("{base}/upload")).body(vec![b'x'; len]))
            .await;
        p.same(&format!("POST {len} bytes, {what}"), &n, &s, &[], &[]);
    }

    // The WebSocket location: the upgrade, the greeting, an echo; a client stays on one backend.
    for (base, who) in [(p.nginx_http, "nginx"), (p.sluice.addr, "sluice")] {
        let mut first = None;
        for _ in 0..3 {
            let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{base}/ws"))
                .await
                .unwrap_or_else(|e| panic!("{who}: websocket: {e}"));
            assert_eq!(resp.status(), 101, "{who}");
            let hello = ws.next().await.unwrap().unwrap().into_text().unwrap();
            let id = hello.trim_start_matches("hello from ").to_owned();
            assert_eq!(first.get_or_insert(id.clone()), &id, "{who}: affinity");
            ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
                .await
                .unwrap();
            let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(echoed.to_text().unwrap(), "ping", "{who}");
        }
    }

    // A backend dies: proxy_next_upstream error sends its requests to the others, in both.
    p.backends[1].kill();
    for i in 0..12 {
        let (n, s) = p.both(|base| c.get(format!("{base}/after/{i}"))).await;
        p.same("after b2 died", &n, &s, &[], &[]);
        assert_eq!(s.status, 200);
        assert_ne!(backend(&s), "b2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_limits_rewrites_and_access_lists_behave_as_nginx() {
    let p = Pair::start("api", 0).await;
    let c = client(None);
    let host = "api.example.test";
    let get = |path: &'static str| {
        let c = c.clone();
        move |base: &str| {
            c.get(format!("{base}{path}"))
                .header("host", host)
                .header("x-debug", "1")
                .header("x-custom", "kept")
        }
    };
    let fields = ["host", "x-env", "x-debug", "x-custom"];

    // proxy_pass with a URI: the location's prefix is replaced, the query kept.
    let (n, s) = p.both(get("/users/42?full=1")).await;
    p.same("/users/42", &n, &s, &["x-frame-options"], &fields);
    assert_eq!(s.echo()["path"], "/v2/users/42");

    // The location's own proxy_set_header replaces the server's (Host becomes the upstream's
    // name, nginx's $proxy_host); X-Debug removed; X-Backend-Id hidden from the client.
    let (n, s) = p.both(get("/orders/7")).await;
    p.same(
        "/orders/7",
        &n,
        &s,
        &["x-frame-options", "x-backend-id"],
        &fields,
    );
    assert_eq!(s.forwarded("host").as_deref(), Some("orders"));
    assert_eq!(s.forwarded("x-debug"), None);
    assert_eq!(s.header("x-backend-id"), None);

    // rewrite ... break in a regex location.
    let (n, s) = p.both(get("/legacy/a/b?x=1")).await;
    p.same("/legacy/a/b", &n, &s, &[], &fields);
    assert_eq!(s.echo()["path"], "/modern/a/b");

    // return 301 in an exact location.
    let (n, s) = p.both(get("/old")).await;
    p.same("/old", &n, &s, &["location"], &[]);
    assert_eq!(s.status, 301);

    // location /users/ proxies, so nginx answers /users with a 301 to /users/; so does Sluice
    // (nginx's Location is absolute, with its port; Sluice's relative).
    let (n, s) = p.both(get("/users")).await;
    p.same("/users", &n, &s, &[], &[]);
    assert_eq!(s.status, 301);
    assert!(n.header("location").unwrap().ends_with("/users/"));
    assert_eq!(s.header("location").as_deref(), Some("/users/"));

    // Methods and bodies pass as they are.
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (n, s) = p
            .both(|base| {
                c.request(m.clone(), format!("{base}/orders/9?v=1"))
                    .header("host", host)
                    .body("a body of some bytes")
            })
            .await;
        p.same(method, &n, &s, &[], &fields);
        assert_eq!(s.echo()["method"], method);
    }

    // No location: both answer 404.
    let (n, s) = p.both(get("/nowhere")).await;
    p.same("/nowhere", &n, &s, &[], &[]);
    assert_eq!(s.status, 404);

    // allow 127.0.0.2; deny all.
    for (ip, status) in [("127.0.0.1", 403), ("127.0.0.2", 200)] {
        let c = client(Some(ip.parse().unwrap()));
        let (n, s) = p
            .both(|base| c.get(format!("{base}/internal/x")).header("host", host))
            .await;
        p.same(&format!("/internal/x from {ip}"), &n, &s, &[], &fields);
        assert_eq!(s.status, status, "from {ip}");
        if status == 200 {
            assert_eq!(s.echo()["path"], "/x");
        }
    }
    // deny 127.0.0.3; allow all.
    for (ip, status) in [("127.0.0.3", 403), ("127.0.0.1", 200)] {
        let c = client(Some(ip.parse().unwrap()));
        let (n, s) = p
            .both(|base| c.get(format!("{base}/admin/")).header("host", host))
            .await;
        p.same(&format!("/admin/ from {ip}"), &n, &s, &[], &fields);
        assert_eq!(s.status, status, "from {ip}");
    }

    // client_max_body_size defaults to 1m in nginx.
    let (n, s) = p
        .both(|base| {
            c.post(format!("{base}/orders"))
                .header("host", host)
                .body(vec![b'x'; 2 << 20])
        })
        .await;
    p.same("2 MiB body", &n, &s, &[], &[]);
    assert_eq!(s.status, 413);

    // limit_req rate=2r/m burst=2 nodelay (limit_req_status 429): three at once, then refused.
    // The three /users requests above and below come from 127.0.0.4 only here.
    let c4 = client(Some("127.0.0.4".parse().unwrap()));
    for i in 0..5 {
        let (n, s) = p
            .both(|base| c4.get(format!("{base}/users/{i}")).header("host", host))
            .await;
        p.same(&format!("rate-limited request {i}"), &n, &s, &[], &[]);
        assert_eq!(s.status, if i < 3 { 200 } else { 429 }, "request {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_site_with_redirect_hsts_and_gzip_behaves_as_nginx() {
    let p = Pair::start("tls", 0).await;
    let plain = client(None);

    // The http->https server: the same 301 and Location, for its name and for any other.
    for host in ["site.example.test", "other.example.test"] {
        let (n, s) = p
            .both(|base| plain.get(format!("{base}/a/b?q=1")).header("host", host))
            .await;
        p.same(&format!("plain {host}"), &n, &s, &["location"], &[]);
        assert_eq!(s.status, 301);
        assert_eq!(
            s.header("location").unwrap(),
            format!("https://{host}/a/b?q=1")
        );
    }

    let tls = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(p.ca.cert.pem().as_bytes()).unwrap())
        .resolve("site.example.test", "127.0.0.1:0".parse().unwrap())
        .no_proxy()
        .build()
        .unwrap();

    // Over TLS: HSTS (add_header ... always), the forwarded Host and scheme; HTTP/2 by ALPN.
    let (n, s) = p.both_tls(|base| tls.get(format!("{base}/page?x=1"))).await;
    p.same(
        "https /page",
        &n,
        &s,
        &["strict-transport-security"],
        &["host", "x-forwarded-proto"],
    );
    assert_eq!(s.forwarded("x-forwarded-proto").as_deref(), Some("https"));
    assert!(s.header("strict-transport-security").is_some());

    // gzip: a large JSON body is compressed by both (the client decodes it), with Vary; a body
    // under gzip_min_length is not.
    for (path, compressed) in [("/json/20000", true), ("/json/500", false)] {
        let raw = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(p.ca.cert.pem().as_bytes()).unwrap(),
            )
            .resolve("site.example.test", "127.0.0.1:0".parse().unwrap())
            .no_proxy()
            .no_gzip()
            .build()
            .unwrap();
        let (n, s) = p
            .both_tls(|base| {
                raw.get(format!("{base}{path}"))
                    .header("accept-encoding", "gzip")
            })
            .await;
        p.same(path, &n, &s, &["content-encoding", "content-type"], &[]);
        assert_eq!(s.header("content-encoding").is_some(), compressed, "{path}");
        if compressed {
            assert!(s
                .header("vary")
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding"));
            assert!(n
                .header("vary")
                .unwrap()
                .to_ascii_lowercase()
                .contains("accept-encoding"));
            let (n, s) = p.both_tls(|base| tls.get(format!("{base}{path}"))).await;
            assert_eq!(n.body, s.body, "decoded bodies");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_config_with_includes_behaves_as_nginx() {
    let mut p = Pair::start("split", 0).await;
    assert!(
        p.imported.contains("conf.d/20-site.conf:"),
        "{}",
        p.imported
    );
    assert!(
        p.imported
            .contains("conf.d/10-upstreams.conf:1: upstream app"),
        "{}",
        p.imported
    );
    let c = client(None);

    // weight=2, weight 1, backup: 20/10/0 over 30 requests in both; Host and X-Real-IP from the
    // included snippet.
    let mut counts: [BTreeMap<String, u32>; 2] = Default::default();
    for i in 0..30 {
        let (n, s) = p
            .both(|base| {
                c.get(format!("{base}/p/{i}"))
                    .header("host", "www.example.test")
            })
            .await;
        p.same(
            "GET /p/N",
            &n,
            &s,
            &[],
            &["host", "x-real-ip", "x-forwarded-for"],
        );
        *counts[0].entry(backend(&n)).or_default() += 1;
        *counts[1].entry(backend(&s)).or_default() += 1;
    }
    assert_eq!(counts[0], counts[1], "distribution");
    assert_eq!(counts[1].get("b1"), Some(&20));

    // server_name .example.org: the name and its subdomains; an unknown name goes to the default
    // (the only) server.
    for host in ["example.org", "a.b.example.org", "unknown.test"] {
        let (n, s) = p
            .both(|base| c.get(format!("{base}/x")).header("host", host))
            .await;
        p.same(host, &n, &s, &[], &["host"]);
    }

    // proxy_pass http://app/assets/ in location /static/, with add_header; the nested location
    // refuses everyone.
    let (n, s) = p
        .both(|base| {
            c.get(format!("{base}/static/site.css"))
                .header("host", "www.example.test")
        })
        .await;
    p.same("/static/site.css", &n, &s, &["cache-control"], &["host"]);
    assert_eq!(s.echo()["path"], "/assets/site.css");
    let (n, s) = p
        .both(|base| {
            c.get(format!("{base}/static/private/key"))
                .header("host", "www.example.test")
        })
        .await;
    p.same("/static/private/key", &n, &s, &[], &[]);
    assert_eq!(s.status, 403);

    // The primaries die: the backup takes over in both.
    p.backends[0].kill();
    p.backends[1].kill();
    for i in 0..4 {
        let (n, s) = p.both(|base| c.get(format!("{base}/down/{i}"))).await;
        p.same("primaries down", &n, &s, &[], &[]);
        assert_eq!(backend(&s), "b3");
    }
}

/// What is dropped is said: in the file, on stderr, and by the exit code (1); the file still
/// passes `--check`.
#[test]
fn dropped_directives_are_named_and_the_exit_code_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        r#"events {}
http {
    server {
        listen 127.0.0.1:8081;
        server_name ~^www\d+\.example\.com$ files.example.com;
        location /files/ { root /srv; }
        location / {
            proxy_pass http://127.0.0.1:9001;
            if ($http_x_block) { return 403; }
            proxy_set_header X-User $http_x_user;
        }
        location ~ ^/(?<name>[a-z]+)(?=/) { proxy_pass http://127.0.0.1:9001; }
    }
}
"#,
    )
    .unwrap();
    let out = dir.path().join("sluice.toml");
    let (status, _, stderr) = run_sluice(&[
        "import",
        "nginx",
        conf.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let toml = std::fs::read_to_string(&out).unwrap();
    for needle in [
        "not translated: server_name",
        "regular expression names",
        "not translated: root /srv (Sluice does not serve files)",
        "not translated: if ($http_x_block)",
        "not translated: proxy_set_header X-User $http_x_user ($http_x_user has no Sluice equivalent)",
        "the regex crate does not read this pattern",
        "nginx.conf:6",
    ] {
        assert!(toml.contains(needle), "{needle}:\n{toml}");
    }
    assert!(stderr.contains("not translated"), "{stderr}");
    assert!(
        stderr.contains("nginx.conf:9: not translated: if"),
        "{stderr}"
    );
    let (st, _, err) = run_sluice(&["--check", "--config", out.to_str().unwrap()]);
    assert!(st.success(), "{err}\n{toml}");

    // An unreadable config: exit 2 with the file and line.
    std::fs::write(&conf, "http {\n  server {\n").unwrap();
    let (status, _, stderr) = run_sluice(&["import", "nginx", conf.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("nginx.conf:"), "{stderr}");
}
