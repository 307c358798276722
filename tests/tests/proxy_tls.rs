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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_and_http11_by_alpn() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .tls()
    .start()
    .await;
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

/// The open-connections gauge from the admin API's metrics.
async fn open_connections(sluice: &Sluice) -> f64 {
    let (_, metrics) = sluice.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_client_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sluice_client_connections_open in\n{metrics}"))
}

/// An idle TLS keep-alive connection waits for its next request holding no request state
/// (vendored pingora-core README section 21: the TLS stream waits as a plain one does, after
/// the keep-alive release of 1 s). The connection stays open through the waits, and the
/// requests after each wait (one with a body) are answered on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_keeps_serving_after_each_idle_wait() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .tls()
    .start()
    .await;
    let port = sluice.tls_addr.unwrap().port();
    let url = format!("https://localhost:{port}/echo");
    let c = tls_client(true);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    for round in 0..2 {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(
            open_connections(&sluice).await,
            1.0,
            "round {round}: the idle TLS connection was closed\n{}",
            sluice.log()
        );
        let body = format!("round {round} body ").repeat(500);
        let r = c.post(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "round {round}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["body_len"], body.len(), "round {round}: {v}");
        assert_eq!(open_connections(&sluice).await, 1.0, "round {round}");
    }
}
