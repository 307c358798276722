//! Issue 16 (TLS and HTTP/2 to upstreams): a pool's `tls` (CA, SNI, verification, client
//! certificate) and `protocol` (h1, h2, h2c, alpn), against real backend-sample processes with
//! certificates made in the test. A backend whose certificate does not verify is a connect
//! failure, retried on another backend like a refused connection, never served.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::ca::Ca;
use support::*;

/// A backend-sample process serving TLS with `dir/stem.pem`/`.key` (and requiring a client
/// certificate signed by `client_ca` when given).
async fn tls_backend(id: &str, dir: &Path, stem: &str, client_ca: Option<&Path>) -> BackendProc {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let mut args = vec![
        "--tls-cert".to_owned(),
        cert.display().to_string(),
        "--tls-key".to_owned(),
        key.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        args.push("--client-ca".to_owned());
        args.push(ca.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BackendProc::start_with(id, &args).await
}

/// A pool `api` of `addrs` with the extra `lines` (`protocol`, `[upstreams.api.tls]`...).
fn pool(addrs: &[SocketAddr], lines: &str) -> String {
    let members: Vec<_> = addrs.iter().map(|a| (*a, None)).collect();
    format!(
        "[upstreams.api]\n{}\n{lines}\n{}",
        backends_toml(&members),
        route_all("api")
    )
}

/// GET `path` through `s`: status and, on 200, the backend's JSON echo.
async fn get(s: &Sluice, path: &str) -> (u16, serde_json::Value) {
    let r = client(None).get(s.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_is_verified_against_the_pool_ca_and_a_wrong_certificate_is_a_connect_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let other = Ca::new();
    let ca_file = ca.write(d, "ca");
    ca.leaf(&["localhost", "127.0.0.1"], d, "good");
    other.leaf(&["localhost", "127.0.0.1"], d, "rogue");
    let good = tls_backend("good", d, "good", None).await;
    let rogue = tls_backend("rogue", d, "rogue", None).await;

    // The right CA: served over TLS, by IP address (verified against the IP in the SAN).
    let tls = format!("[upstreams.api.tls]\nca = \"{}\"\n", ca_file.display());
    let s = Sluice::start(pool(&[good.addr], &tls)).await;
    let (status, echo) = get(&s, "/over-tls?x=1").await;
    assert_eq!(status, 200, "{}", s.log());
    assert_eq!(echo["id"], "good");
    assert_eq!(echo["path"], "/over-tls");
    assert_eq!(echo["version"], "HTTP/1.1");

    // A rogue backend (certificate from another CA) next to the good one: every request is
    // answered by the good one; the rogue one is tried (round-robin), fails its handshake and
    // the request goes on, as after a refused connection.
    let s = Sluice::start(pool(&[rogue.addr, good.addr], &tls)).await;
    for i in 0..6 {
        let (status, echo) = get(&s, &format!("/mixed/{i}")).await;
        assert_eq!(status, 200, "request {i}: {}", s.log());
        assert_eq!(echo["id"], "good", "request {i}");
    }
    let log = s.log();
    assert!(
        log.contains("TLSHandshakeFailure") || log.contains("handshake"),
        "the rogue backend's handshake failure is logged: {log}"
    );

    // Only the rogue backend: 502, never its answer.
    let s = Sluice::start(pool(&[rogue.addr], &tls)).await;
    let (status, echo) = get(&s, "/rogue").await;
    assert_eq!(status, 502, "{echo}");

    // The system roots do not know the test CA either.
    let s = Sluice::start(pool(&[good.addr], "[upstreams.api.tls]\n")).await;
    assert_eq!(get(&s, "/system-roots").await.0, 502);

    // verify = false accepts any certificate (documented as for tests only).
    let s = Sluice::start(pool(&[rogue.addr], "[upstreams.api.tls]\nverify = false\n")).await;
    let (status, echo) = get(&s, "/unverified").await;
    assert_eq!(status, 200);
    assert_eq!(echo["id"], "rogue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_names_the_backend_and_a_client_certificate_is_shown_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "ca");
    // Its certificate names only api.internal: reached by IP, it verifies only with sni set.
    ca.leaf(&["api.internal"], d, "named");
    let clients = Ca::new();
    let clients_file = clients.write(d, "clients-ca");
    clients.client("sluice-edge", "Sluice", d, "edge");
    let named = tls_backend("named", d, "named", None).await;
    let strict = tls_backend("strict", d, "named", Some(&clients_file)).await;

    let base = format!("[upstreams.api.tls]\nca = \"{}\"\n", ca_file.display());
    let s = Sluice::start(pool(&[named.addr], &base)).await;
    assert_eq!(get(&s, "/no-sni").await.0, 502, "the name does not match");
    let s = Sluice::start(pool(
        &[named.addr],
        &format!("{base}sni = \"api.internal\"\n"),
    ))
    .await;
    let (status, echo) = get(&s, "/sni").await;
    assert_eq!(status, 200, "{}", s.log());
    assert_eq!(echo["id"], "named");

    // A backend that requires a client certificate: refused without one, served with one.
    let with_sni = format!("{base}sni = \"api.internal\"\n");
    let s = Sluice::start(pool(&[strict.addr], &with_sni)).await;
    assert_eq!(get(&s, "/no-client-cert").await.0, 502);
    let s = Sluice::start(pool(
        &[strict.addr],
        &format!(
            "{with_sni}client_cert = \"{}\"\nclient_key = \"{}\"\n",
            d.join("edge.pem").display(),
            d.join("edge.key").display()
        ),
    ))
    .await;
    let (status, echo) = get(&s, "/client-cert").await;
    assert_eq!(status, 200, "{}", s.log());
    assert_eq!(echo["id"], "strict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_alpn_and_h2c_pools_speak_http2_and_websockets_still_upgrade_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "ca");
    ca.leaf(&["localhost", "127.0.0.1"], d, "leaf");
    let tls_b = tls_backend("tls", d, "leaf", None).await;
    let plain_b = BackendProc::start("plain").await;
    let tls = format!("[upstreams.api.tls]\nca = \"{}\"\n", ca_file.display());

    for (protocol, backend, lines, version) in [
        ("h1", &tls_b, tls.as_str(), "HTTP/1.1"),
        ("h2", &tls_b, tls.as_str(), "HTTP/2.0"),
        ("alpn", &tls_b, tls.as_str(), "HTTP/2.0"),
        ("h2c", &plain_b, "", "HTTP/2.0"),
        ("h1", &plain_b, "", "HTTP/1.1"),
    ] {
        let s = Sluice::start(pool(
            &[backend.addr],
            &format!("protocol = \"{protocol}\"\n{lines}"),
        ))
        .await;
        // Several requests (and a POST body) over the same upstream connection.
        for i in 0..3 {
            let (status, echo) = get(&s, &format!("/{protocol}/{i}?q={i}")).await;
            assert_eq!(status, 200, "{protocol}: {}", s.log());
            assert_eq!(echo["version"], version, "{protocol}");
            assert_eq!(echo["query"], format!("q={i}"), "{protocol}");
            // Sluice's forwarding fields reach the backend over HTTP/2 too.
            assert_eq!(echo["headers"]["x-forwarded-proto"], "http", "{protocol}");
            assert_eq!(
                echo["headers"]["x-forwarded-for"], "127.0.0.1",
                "{protocol}"
            );
            assert!(echo["headers"]["x-request-id"].is_string(), "{protocol}");
        }
        let r = client(None)
            .post(s.url("/upload"))
            .body(vec![7u8; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{protocol}");
        let echo: serde_json::Value = r.json().await.unwrap();
        assert_eq!(echo["body_len"], 100_000, "{protocol}");
        assert_eq!(echo["version"], version, "{protocol}");

        // A WebSocket through the same pool: the upgrade goes over HTTP/1.1.
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
            .await
            .unwrap_or_else(|e| panic!("{protocol}: websocket: {e}\n{}", s.log()));
        let hello = ws.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().contains(&backend.id), "{protocol}");
        ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.to_text().unwrap(), "ping", "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_probes_use_the_pool_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "ca");
    ca.leaf(&["localhost", "127.0.0.1"], d, "leaf");
    let b = tls_backend("probed", d, "leaf", None).await;
    let s = Sluice::with_config(pool(
        &[b.addr],
        &format!(
            "[upstreams.api.health]\npath = \"/health\"\ninterval_ms = 50\ninitial = \"unhealthy\"\nrise = 2\n[upstreams.api.tls]\nca = \"{}\"\n",
            ca_file.display()
        ),
    ))
    .admin_token("t0ken")
    .start()
    .await;
    // The backend starts out of rotation and enters it only after two good probes: probes
    // over TLS. (A cleartext probe of a TLS backend never succeeds.)
    assert_eq!(get(&s, "/before-probes").await.0, 503);
    s.status_contains("\"healthy\":true").await;
    for i in 0..4 {
        assert_eq!(get(&s, &format!("/after-probes/{i}")).await.0, 200);
    }
}

#[test]
fn check_names_each_bad_tls_and_protocol_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("garbage.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ca = Ca::new();
    ca.leaf(&["x.test"], d, "leaf");
    let config = d.join("sluice.toml");
    std::fs::write(
        &config,
        r#"
[upstreams.a]
protocol = "h2"
backends = [{ addr = "127.0.0.1:9001" }]

[upstreams.b]
protocol = "h2c"
backends = [{ addr = "127.0.0.1:9002" }]
[upstreams.b.tls]
ca = "garbage.pem"
sni = "not a name"

[upstreams.c]
protocol = "spdy"
backends = [{ addr = "127.0.0.1:9003" }]
[upstreams.c.tls]
client_cert = "leaf.pem"

[upstreams.d]
backends = [{ addr = "127.0.0.1:9004" }]
[upstreams.d.tls]
client_cert = "leaf.pem"
client_key = "garbage.pem"

[[routes]]
path_prefix = "/"
upstream = "a"
"#,
    )
    .unwrap();
    let (status, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    for needle in [
        "upstreams.a.protocol",
        "use `h2c` for HTTP/2 in cleartext",
        "upstreams.b.tls.ca",
        "garbage.pem",
        "upstreams.b.tls.sni",
        "upstreams.c.protocol",
        "`spdy`",
        "upstreams.c.tls.client_key",
        "missing",
        "upstreams.d.tls.client_cert",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}
