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

/// Wait until `sluice` has no client connection open (failing with `what` after 8 s from
/// `from`); how long after `from` that was.
async fn until_all_closed(
    sluice: &Sluice,
    from: std::time::Instant,
    what: &str,
) -> std::time::Duration {
    let end = from + std::time::Duration::from_secs(8);
    while sluice.metric("sluice_client_connections_open").await != 0.0 {
        assert!(
            std::time::Instant::now() < end,
            "{what} was still open 8 s later\n{}",
            sluice.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    from.elapsed()
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
    let took = until_all_closed(
        &sluice,
        opened,
        "a silent TLS connection (from its request)",
    )
    .await;
    assert!(
        took >= std::time::Duration::from_millis(2400),
        "closed after {took:?}, before the keep-alive timeout"
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}

/// An HTTP/2 connection idle for the keep-alive release (1 s) gives back its codec buffers
/// (vendored h2 and pingora-core READMEs: read, write and HPACK buffers, 28 KiB) and allocates
/// them again for the next frames. After each idle wait, on the same connection: a request and a
/// response whose heads span CONTINUATION frames (a 30,000-byte field each way), an upload and
/// a download larger than the buffers, and concurrent streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_keeps_serving_after_each_idle_wait() {
    let bs = backends(1).await;
    let sluice = tls_sluice(&bs[0], "").await;
    let base = format!("https://localhost:{}", sluice.tls_addr.unwrap().port());
    let c = demo_tls_client()
        .http2_max_header_list_size(256 * 1024)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    // Letters in an order HPACK's Huffman code cannot shrink below 16 KiB (one frame's most).
    let big: String = (0..30_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        let r = c
            .get(format!("{base}/respond/big?x-big={big}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "round {round}");
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(
            r.headers().get("x-big").map(|v| v.len()),
            Some(big.len()),
            "round {round}: the large response field"
        );
        r.bytes().await.unwrap();

        let body = vec![b'u'; 300_000];
        let r = c
            .post(format!("{base}/echo"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["body_len"], 300_000, "round {round}");

        let r = c.get(format!("{base}/bytes/1000000")).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        assert_eq!(r.bytes().await.unwrap().len(), 1_000_000, "round {round}");

        let streams = (0..8).map(|_| {
            let c = c.clone();
            let url = format!("{base}/json/10240");
            async move {
                let r = c.get(url).send().await.unwrap();
                (r.status(), r.bytes().await.unwrap().len())
            }
        });
        for (status, len) in futures_util::future::join_all(streams).await {
            assert_eq!(status, 200, "round {round}");
            assert!(len >= 10_000, "round {round}: {len} bytes");
        }
        assert_eq!(
            sluice.metric("sluice_client_connections_open").await,
            1.0,
            "round {round}: the requests did not share one HTTP/2 connection\n{}",
            sluice.log()
        );
    }
}

/// `keepalive_timeout_ms` closes an idle HTTP/2 connection too (stock Pingora held it, and its
/// `max_connections` slot, for ever: the limit was applied to HTTP/1 only). The connection's
/// open stream is not idle: a request slower than the limit completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_at_the_keepalive_timeout() {
    let bs = backends(1).await;
    let sluice = tls_sluice(&bs[0], "keepalive_timeout_ms = 2500").await;
    let base = format!("https://localhost:{}", sluice.tls_addr.unwrap().port());
    let c = tls_client(false);
    let r = c.get(format!("{base}/delay/3500")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        r.status(),
        200,
        "a stream longer than the idle limit was cut"
    );
    r.bytes().await.unwrap();
    let idle_from = std::time::Instant::now();
    assert_eq!(sluice.metric("sluice_client_connections_open").await, 1.0);
    let took = until_all_closed(
        &sluice,
        idle_from,
        "an idle HTTP/2 connection (from its last stream)",
    )
    .await;
    assert!(
        took >= std::time::Duration::from_millis(2300),
        "closed {took:?} after its last stream, before the keep-alive timeout"
    );
    let r = c.get(format!("{base}/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}
