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
