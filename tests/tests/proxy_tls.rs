//! The TLS listener terminates TLS and speaks HTTP/2 or HTTP/1.1 by ALPN.

mod support;

use support::*;

fn tls_client(http1_only: bool) -> reqwest::Client {
    let mut b = demo_tls_client();
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// Sluice with a TLS listener in front of `backend`, `server` lines added to `[server]`.
async fn tls_sluice(backend: &Backend, server: &str) -> Sluice {
    Sluice::with_config(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(backend.addr, None)])
    ))
    .server_extra(server)
    .tls()
    .start()
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_and_http11_by_alpn() {
    let bs = backends(1).await;
    let sluice = tls_sluice(&bs[0], "").await;
    let port = sluice.tls_addr.unwrap().port();
    let url = format!("https://localhost:{port}/secure");

    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let c = tls_client(http1_only);
        for _ in 0..3 {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.version(), version);
            assert_eq!(r.status(), 200);
            assert_eq!(backend_of(&r), "b1");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["headers"]["x-forwarded-proto"], "https");
            assert_eq!(v["headers"]["host"], format!("localhost:{port}"));
        }
    }
    assert_eq!(bs[0].shared.served()["/secure"], 6);
}

/// An idle TLS keep-alive connection waits for its next request holding no request state
/// (vendored pingora-core README section 21: the TLS stream waits as a plain one does, after
/// the keep-alive release of 1 s). The connection stays open through the waits, and the
/// requests after each wait (one with a body) are answered on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_keeps_serving_after_each_idle_wait() {
    let bs = backends(1).await;
    let sluice = tls_sluice(&bs[0], "").await;
    let port = sluice.tls_addr.unwrap().port();
    let url = format!("https://localhost:{port}/echo");
    let c = tls_client(true);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    for round in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            sluice.metric("sluice_client_connections_open").await,
            1.0,
            "round {round}: the idle TLS connection was closed\n{}",
            sluice.log()
        );
        let body = format!("round {round} body ").repeat(500);
        let r = c.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["body_len"], body.len(), "round {round}: {v}");
        assert_eq!(
            sluice.metric("sluice_client_connections_open").await,
            1.0,
            "round {round}"
        );
    }
}

/// The fault side of the idle TLS wait: a TLS client that stays silent past
/// `keepalive_timeout_ms` is closed by Sluice (the wait outside the request runs under the same
/// limit as the one inside it), and a later request is served on a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_connection_is_closed_at_the_keepalive_timeout() {
    let bs = backends(1).await;
    // Longer than the 1 s keep-alive release, so the wait that times out is the idle one.
    let sluice = tls_sluice(&bs[0], "keepalive_timeout_ms = 2500").await;
    let port = sluice.tls_addr.unwrap().port();
    let url = format!("https://localhost:{port}/ping");
    let c = tls_client(true);
    let opened = std::time::Instant::now();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(sluice.metric("sluice_client_connections_open").await, 1.0);
    let end = opened + std::time::Duration::from_secs(8);
    while sluice.metric("sluice_client_connections_open").await != 0.0 {
        assert!(
            std::time::Instant::now() < end,
            "a silent TLS connection was still open 8 s after its request\n{}",
            sluice.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        opened.elapsed() >= std::time::Duration::from_millis(2400),
        "closed after {:?}, before the keep-alive timeout",
        opened.elapsed()
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}
