//! Issue 16 (client certificates): a TLS listener with `client_auth = "required"` fails the
//! handshake of a client without a valid certificate; with `"optional"`, a route with
//! `require_client_cert` answers 403 to it. The verified subject reaches the backend in
//! `x-client-subject` (RFC 4514, as nginx's `$ssl_client_s_dn`), and a client can never set
//! that field itself, on any listener. Certificates are made in the test (rcgen).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use support::ca::Ca;
use support::*;

/// Server certificate for `localhost`, client CA, two clients (one from a CA Sluice does not
/// trust), written to `d`.
struct Pki {
    server_ca: Ca,
    client_ca_file: std::path::PathBuf,
}

fn pki(d: &Path) -> Pki {
    let server_ca = Ca::new();
    server_ca.leaf(&["localhost"], d, "server");
    let clients = Ca::new();
    let client_ca_file = clients.write(d, "clients-ca");
    clients.client("alice", "Example, Inc.", d, "alice");
    Ca::new().client("mallory", "Elsewhere", d, "mallory");
    Pki {
        server_ca,
        client_ca_file,
    }
}

/// A client of the listener at `addr` (as `localhost`) showing `dir/stem.pem` when `stem` is
/// given.
fn tls_client(p: &Pki, d: &Path, stem: Option<&str>, addr: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(p.server_ca.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", addr)
        .no_proxy();
    if let Some(stem) = stem {
        let mut pem = std::fs::read(d.join(format!("{stem}.pem"))).unwrap();
        pem.extend(std::fs::read(d.join(format!("{stem}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

fn listener(d: &Path, addr: SocketAddr, extra: &str) -> String {
    format!(
        "[[server.tls]]\nlisten = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        d.join("server.pem").display(),
        d.join("server.key").display()
    )
}

async fn start(d: &Path, tls: &str, body: String) -> Sluice {
    let s = Sluice::with_config(body)
        .server_extra(tls)
        .admin_token("t0ken")
        .start()
        .await;
    let _ = d;
    s
}

async fn wait_listening(addr: SocketAddr) {
    eventually(Duration::from_secs(10), "the TLS listener", || {
        std::net::TcpStream::connect(addr).ok()
    })
    .await;
}

/// GET `https://localhost:<port><path>` with `c`: status and body, or the error.
async fn get(
    c: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    spoof: bool,
) -> Result<(u16, String), String> {
    let mut req = c.get(format!("https://localhost:{}{path}", addr.port()));
    if spoof {
        req = req.header("x-client-subject", "CN=admin");
    }
    let r = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.unwrap()))
}

fn subject_seen(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["headers"]["x-client-subject"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_auth_fails_the_handshake_without_a_valid_certificate() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls = listener(
        d,
        addr,
        &format!(
            "client_auth = \"required\"\nclient_ca = \"{}\"\n",
            p.client_ca_file.display()
        ),
    );
    let s = start(d, &tls, one_pool(&[bs[0].addr])).await;
    wait_listening(addr).await;

    // A valid certificate: served, the backend gets the verified subject (RFC 4514: last RDN
    // first, the comma in the organisation escaped), never the client's own field.
    let (status, body) = get(&tls_client(&p, d, Some("alice"), addr), addr, "/who", true)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", s.log());
    assert_eq!(subject_seen(&body), "O=Example\\, Inc.,CN=alice");

    // No certificate, or one from a CA the listener does not trust: no handshake.
    for stem in [None, Some("mallory")] {
        let r = get(&tls_client(&p, d, stem, addr), addr, "/who", false).await;
        assert!(r.is_err(), "{stem:?} was served: {r:?}");
    }
    assert_eq!(bs[0].shared.total(), 1);

    // On the plain listener, a client's own x-client-subject is removed too.
    let r = client(None)
        .get(s.url("/plain"))
        .header("x-client-subject", "CN=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        subject_seen(&r.text().await.unwrap()),
        serde_json::Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_auth_lets_a_route_require_a_certificate_and_reload_changes_it() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let optional = listener(
        d,
        addr,
        &format!(
            "client_auth = \"optional\"\nclient_ca = \"{}\"\nclient_subject_header = \"X-Tls-Subject\"\n",
            p.client_ca_file.display()
        ),
    );
    let body = format!(
        "[upstreams.api]\nbackends = [{{ addr = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/admin\"\nupstream = \"api\"\nrequire_client_cert = true\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
        bs[0].addr
    );
    let s = start(d, &optional, body.clone()).await;
    wait_listening(addr).await;
    let anonymous = tls_client(&p, d, None, addr);
    let alice = tls_client(&p, d, Some("alice"), addr);

    let (status, text) = get(&anonymous, addr, "/admin/x", false).await.unwrap();
    assert_eq!(
        (status, text.as_str()),
        (403, "client certificate required\n")
    );
    let (status, text) = get(&anonymous, addr, "/public", false).await.unwrap();
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["headers"]["x-tls-subject"], serde_json::Value::Null);
    let (status, text) = get(&alice, addr, "/admin/x", false).await.unwrap();
    assert_eq!(status, 200);
    let seen: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        seen["headers"]["x-tls-subject"],
        "O=Example\\, Inc.,CN=alice"
    );
    // A certificate that does not verify still fails the handshake.
    assert!(get(
        &tls_client(&p, d, Some("mallory"), addr),
        addr,
        "/public",
        false
    )
    .await
    .is_err());
    // The refusal never reached the backend and is counted.
    assert_eq!(bs[0].shared.total(), 2);
    let m = s
        .metrics_when(|m| m.contains("reason=\"client_cert_required\""))
        .await;
    assert!(m.contains("sluice_edge_answers_total"), "{m}");

    // Reload to `required`: the next handshake without a certificate fails; alice is served.
    // (The harness's head holds the listener: the whole file is written here.)
    let head = s.head.replace("\"optional\"", "\"required\"");
    assert_ne!(head, s.head);
    let tmp = s.config_path().with_extension("tmp");
    std::fs::write(&tmp, format!("{head}\n{body}")).unwrap();
    std::fs::rename(&tmp, s.config_path()).unwrap();
    let (status, r) = s.admin_post("/reload", "t0ken", None).await;
    assert_eq!(status, 200, "{r}");
    assert!(get(&tls_client(&p, d, None, addr), addr, "/public", false)
        .await
        .is_err());
    let (status, _) = get(
        &tls_client(&p, d, Some("alice"), addr),
        addr,
        "/public",
        false,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
}

#[test]
fn check_names_client_auth_problems() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d);
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    let config = d.join("sluice.toml");
    let tls = |extra: &str| {
        format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = \"server.pem\"\nkey = \"server.key\"\n{extra}",
            free_port()
        )
    };
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n{}{}{}\n\
             [upstreams.api]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
            free_port(),
            tls("client_auth = \"required\"\n"),
            tls("client_auth = \"sometimes\"\nclient_ca = \"clients-ca.pem\"\n"),
            tls("client_auth = \"optional\"\nclient_ca = \"garbage.pem\"\nclient_subject_header = \"bad header\"\n"),
        ),
    )
    .unwrap();
    let (status, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    for needle in [
        "server.tls[0].client_ca",
        "missing",
        "server.tls[1].client_auth",
        "`sometimes`",
        "server.tls[2].client_ca",
        "garbage.pem",
        "server.tls[2].client_subject_header",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }

    // A route that requires a certificate no listener asks for.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n\
             [upstreams.api]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\nrequire_client_cert = true\n",
            free_port()
        ),
    )
    .unwrap();
    let (status, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("routes[0].require_client_cert"), "{err}");
}

/// A route's `request_headers` may name the subject field, but what the backend gets under
/// that name is still only the verified subject, or nothing: the rules' value is replaced.
/// (Rule values are written as raw lines after the header map; a subject field must stay in
/// the map for the replacement to see it. Fails with it written as a line.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_rule_cannot_forge_the_verified_subject() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tls = listener(
        d,
        addr,
        &format!(
            "client_auth = \"optional\"\nclient_ca = \"{}\"\n",
            p.client_ca_file.display()
        ),
    );
    let body = format!(
        "[upstreams.api]\nbackends = [{{ addr = \"{}\" }}]\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n\
         request_headers = {{ set = {{ \"x-client-subject\" = \"CN=forged\", \"x-env\" = \"prod\" }} }}\n",
        bs[0].addr
    );
    let s = start(d, &tls, body).await;
    wait_listening(addr).await;
    let (status, text) = get(&tls_client(&p, d, Some("alice"), addr), addr, "/", true)
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", s.log());
    assert_eq!(subject_seen(&text), "O=Example\\, Inc.,CN=alice");
    let (status, text) = get(&tls_client(&p, d, None, addr), addr, "/", false)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(subject_seen(&text), serde_json::Value::Null);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["headers"]["x-env"], "prod", "the other rule applies");
    let r = client(None).get(s.url("/plain")).send().await.unwrap();
    assert_eq!(
        subject_seen(&r.text().await.unwrap()),
        serde_json::Value::Null
    );
}
