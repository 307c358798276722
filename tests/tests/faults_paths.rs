//! Path tricks and response header leaks: every spelling of a path is normalised before
//! routing, rate-limit exemptions and forwarding (or refused), and a backend's hop-by-hop fields
//! never reach the client.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `target` as the raw request target (no client-side normalisation); the status.
async fn raw_get(addr: SocketAddr, target: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Regression (issue 12, defect 6): exempt paths and routes matched the raw path and the raw
/// path was forwarded, so `/health/../login` and its encodings dodged a 5/min login limit (60 of
/// 60 reached a normalising backend as `/login`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_a_limited_path_cannot_dodge_its_limit() {
    let bs = backends(1).await;
    let s = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n[[routes]]\npath_prefix = \"/login\"\nupstream = \"api\"\nrate_limit = {{ limit = 5, window_ms = 60000, algorithm = \"fixed_window\" }}\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 1000\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let mut statuses = Vec::new();
    for target in [
        "/health/../login",
        "/health/%2e%2e/login",
        "/health/%2E%2E/login",
        "/health/.%2e/login",
        "//login",
        "/./login",
        "/health/..%2Flogin",
        "/health/..%2flogin",
        "/health/..\\login",
        "/health/..%5Clogin",
        "/login",
        "/login",
        "/login",
        "/login",
    ] {
        statuses.push((target, raw_get(s.addr, target).await));
    }
    let reached = served(&bs, "/login").get("b1").copied().unwrap_or(0);
    assert_eq!(
        reached, 5,
        "only the limit reaches the backend: {statuses:?}"
    );
    for (t, st) in &statuses {
        assert!(
            [200, 400, 429].contains(st),
            "{t}: {st} (every spelling is served, limited or refused)"
        );
        if t.contains("%2F") || t.contains("%2f") || t.contains('\\') || t.contains("%5C") {
            assert_eq!(
                *st, 400,
                "{t}: an encoded separator next to `..` is refused"
            );
        }
    }
    assert_eq!(
        statuses.iter().filter(|(_, st)| *st == 429).count(),
        5,
        "{statuses:?}"
    );
    // Nothing reached the backend under another name.
    let total: u64 = bs[0].shared.served().values().sum();
    assert_eq!(total, 5, "{:?}", bs[0].shared.served());
}

/// The normalised path is what the backend sees, with the query kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normalised_path_is_forwarded() {
    let bs = backends(1).await;
    let s = Sluice::start(one_pool(&[bs[0].addr])).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /a/./b/../c//%7Ed?x=%2e%2e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| {
        // Chunked: take the JSON object inside.
        let start = body.find('{').unwrap();
        let end = body.rfind('}').unwrap();
        serde_json::from_str(&body[start..=end]).unwrap()
    });
    assert_eq!(v["path"], "/a/c/~d", "{v}");
    assert_eq!(v["query"], "x=%2e%2e", "the query is not touched: {v}");

    // Off, the path goes through as sent.
    let raw = Sluice::with_config(one_pool(&[bs[0].addr]))
        .server_extra("normalize_path = false")
        .start()
        .await;
    assert_eq!(raw_get(raw.addr, "/x/../y").await, 200);
    assert_eq!(served(&bs, "/x/../y").get("b1"), Some(&1));
}

/// Regression (issue 12, defect 9): a backend's `Connection: close, a`, `a: 1` and
/// `Keep-Alive: timeout=9` reached the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_fields_never_reach_the_client() {
    let backend = RawServer::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, a\r\na: 1\r\nKeep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let s = Sluice::start(one_pool(&[backend.addr])).await;
    let r = client(None).get(s.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    for gone in ["a", "keep-alive", "proxy-connection", "trailer", "upgrade"] {
        assert!(!h.contains_key(gone), "{gone} leaked: {h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(r.text().await.unwrap(), "ok");
}

/// Issue 15: `allow`/`deny` and the path rules see the normalised path, so no spelling of a
/// protected path reaches the backend from a denied address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_a_denied_path_are_denied() {
    let bs = backends(1).await;
    let s = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n[[routes]]\npath_prefix = \"/admin\"\nupstream = \"api\"\ndeny = [\"127.0.0.0/8\"]\n[[routes]]\npath_exact = \"/private\"\nupstream = \"api\"\nallow = [\"10.0.0.0/8\"]\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    for target in [
        "/admin",
        "/admin/",
        "/admin/x",
        "/public/../admin/x",
        "//admin",
        "/./admin",
        "/%61dmin/x",
        "/%61%64%6d%69%6e",
        "/admin/./x/../y",
        "/private",
        "/x/../private",
        "/%70rivate",
        "//private",
    ] {
        let status = raw_get(s.addr, target).await;
        assert!(
            status == 403 || status == 400,
            "{target}: {status} (must be refused)"
        );
    }
    assert!(
        bs[0]
            .shared
            .served()
            .keys()
            .all(|p| !p.contains("admin") && !p.contains("private")),
        "{:?}",
        bs[0].shared.served()
    );
    // Other paths go through.
    assert_eq!(raw_get(s.addr, "/administrator").await, 200);
    assert_eq!(
        raw_get(s.addr, "/private/x").await,
        200,
        "path_exact is exact"
    );
}
