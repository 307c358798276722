//! Issue 16 (first part): one TLS listener, several certificates chosen by server name (names
//! from each certificate's subjectAltName, exact then `*.` wildcard, the first as default or a
//! handshake failure for an unknown name), and certificates read again on reload: the next
//! handshake gets the new one, a connection already open keeps working, a broken file is
//! refused and the old certificate still served. Certificates are made in the test (rcgen).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::KeyPair;
use support::ca::Ca;
use support::*;

fn pair(dir: &Path, stem: &str) -> String {
    format!(
        "{{ cert = \"{}\", key = \"{}\" }}",
        dir.join(format!("{stem}.pem")).display(),
        dir.join(format!("{stem}.key")).display()
    )
}

/// A client trusting `ca` that sends `name` as SNI (resolved to `addr`), on a fresh connection
/// unless the client is reused.
fn tls_client(ca: &Ca, name: &str, addr: SocketAddr, verify: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .danger_accept_invalid_certs(!verify)
        .resolve(name, addr)
        .tls_info(true)
        .no_proxy()
        .build()
        .unwrap()
}

/// The DER of the certificate the server showed for `name`, or the error.
async fn served(ca: &Ca, name: &str, addr: SocketAddr, verify: bool) -> Result<Vec<u8>, String> {
    let c = tls_client(ca, name, addr, verify);
    peer(&c, name, addr).await
}

async fn peer(c: &reqwest::Client, name: &str, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let r = c
        .get(format!("https://{name}:{}/sni", addr.port()))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    assert_eq!(r.status(), 200);
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    r.bytes().await.unwrap();
    Ok(der)
}

async fn start(dir: &Path, certs: &str, extra: &str, bs: &[Backend]) -> (Sluice, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let s = Sluice::with_config(one_pool(&[bs[0].addr]))
        .server_extra(&format!(
            "[[server.tls]]\nlisten = \"{addr}\"\ncerts = [{certs}]\n{extra}"
        ))
        .admin_token("t0ken")
        .start()
        .await;
    let _ = dir;
    // The harness waits for the listeners it made; this one comes from `server_extra`.
    eventually(Duration::from_secs(10), "the TLS listener", || {
        std::net::TcpStream::connect(addr).ok()
    })
    .await;
    (s, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_certificate_and_unknown_names_the_default_or_nothing() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let a = ca.leaf(&["a.test"], dir.path(), "a");
    let b = ca.leaf(&["*.b.test", "b.test"], dir.path(), "b");
    let certs = format!("{}, {}", pair(dir.path(), "a"), pair(dir.path(), "b"));
    let (s, addr) = start(dir.path(), &certs, "", &bs).await;

    assert_eq!(served(&ca, "a.test", addr, true).await.unwrap(), a);
    assert_eq!(served(&ca, "b.test", addr, true).await.unwrap(), b);
    assert_eq!(
        served(&ca, "x.b.test", addr, true).await.unwrap(),
        b,
        "wildcard"
    );
    assert_eq!(
        served(&ca, "A.TEST", addr, true).await.unwrap(),
        a,
        "names ignore case"
    );
    // Unknown name: the first certificate (which the client cannot verify for that name).
    assert_eq!(served(&ca, "c.test", addr, false).await.unwrap(), a);
    // The wildcard covers one label only.
    assert_eq!(served(&ca, "y.x.b.test", addr, false).await.unwrap(), a);

    // Seconds until each certificate expires, by its first name.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let metrics = s.admin_get("/metrics").await.1;
    for name in ["a.test", "*.b.test"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("sluice_tls_certificate_expiry_seconds{")
                    && l.contains(&format!("name=\"{name}\""))
                    && l.contains(&format!("listen=\"{addr}\""))
            })
            .unwrap_or_else(|| panic!("no expiry for {name}:\n{metrics}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((v - (1_893_456_000.0 - now)).abs() < 120.0, "{line}");
    }
    Sluice::promtool_check(&metrics);

    // `unknown_sni = "reject"`: no certificate for an unknown name, the handshake fails.
    let (_s2, addr2) = start(dir.path(), &certs, "unknown_sni = \"reject\"\n", &bs).await;
    assert_eq!(served(&ca, "b.test", addr2, true).await.unwrap(), b);
    let err = served(&ca, "c.test", addr2, false).await.unwrap_err();
    assert!(!err.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_after_reload_and_a_broken_one_refused() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let old = ca.leaf(&["a.test"], dir.path(), "a");
    let (s, addr) = start(dir.path(), &pair(dir.path(), "a"), "", &bs).await;
    let kept = tls_client(&ca, "a.test", addr, true);
    assert_eq!(peer(&kept, "a.test", addr).await.unwrap(), old);

    // Renewed in place (same file names, a new key too); the config text is unchanged.
    let new = ca.leaf(&["a.test"], dir.path(), "a");
    assert_ne!(new, old);
    let (status, body) = s.admin_post("/reload", "t0ken", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&ca, "a.test", addr, true).await.unwrap(), new);
    // The connection opened before the reload keeps its certificate and keeps working.
    assert_eq!(peer(&kept, "a.test", addr).await.unwrap(), old);

    // A broken file: the reload is refused and the last good certificate is still served.
    std::fs::write(
        dir.path().join("a.pem"),
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (status, body) = s.admin_post("/reload", "t0ken", None).await;
    assert_ne!(status, 200, "{body}");
    assert!(body.to_string().contains("server.tls[0]"), "{body}");
    assert_eq!(served(&ca, "a.test", addr, true).await.unwrap(), new);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[test]
fn check_names_a_name_on_two_certificates_and_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(&["a.test"], dir.path(), "a");
    ca.leaf(&["a.test", "z.test"], dir.path(), "z");
    let config: PathBuf = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n[[server.tls]]\nlisten = \"127.0.0.1:1\"\ncerts = [{}, {}]\nunknown_sni = \"drop\"\n[[server.tls]]\nlisten = \"127.0.0.1:2\"\ncert = \"{}\"\n[upstreams.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n[[routes]]\nupstream = \"a\"\n",
            pair(dir.path(), "a"),
            pair(dir.path(), "z"),
            dir.path().join("a.pem").display()
        ),
    )
    .unwrap();
    let (st, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("server.tls[0].certs[1].cert"), "{err}");
    assert!(
        err.contains("`a.test` is also a name of server.tls[0].certs[0]"),
        "{err}"
    );
    assert!(err.contains("server.tls[0].unknown_sni"), "{err}");
    assert!(err.contains("server.tls[1].key"), "{err}");
}

/// `--check` passes a certificate that expires within 14 days, or has expired, but says so,
/// naming the key; one that lasts longer is not mentioned.
#[test]
fn check_warns_about_a_certificate_that_expires_soon() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf_expiring_in(5, &["soon.test"], dir.path(), "soon");
    ca.leaf_expiring_in(-2, &["gone.test"], dir.path(), "gone");
    ca.leaf_expiring_in(40, &["later.test"], dir.path(), "later");
    let config: PathBuf = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n[[server.tls]]\nlisten = \"127.0.0.1:1\"\ncerts = [{}, {}, {}]\n[upstreams.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n[[routes]]\nupstream = \"a\"\n",
            pair(dir.path(), "soon"),
            pair(dir.path(), "gone"),
            pair(dir.path(), "later"),
        ),
    )
    .unwrap();
    let (st, out, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(err.contains("warning: "), "{err}");
    assert!(err.contains("server.tls[0].certs[0].cert"), "{err}");
    assert!(
        err.contains("soon.pem` expires in 4 days") || err.contains("soon.pem` expires in 5 days"),
        "{err}"
    );
    assert!(err.contains("server.tls[0].certs[1].cert"), "{err}");
    assert!(err.contains("gone.pem` expired"), "{err}");
    assert!(!err.contains("later.pem"), "{err}");
}

/// The file watch follows certificate files too: a certificate rewritten in place is served
/// without any signal or API call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watch_picks_up_a_renewed_certificate() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let old = ca.leaf(&["a.test"], dir.path(), "a");
    let (_s, addr) = start(dir.path(), &pair(dir.path(), "a"), "", &bs).await;
    assert_eq!(served(&ca, "a.test", addr, true).await.unwrap(), old);
    let new = ca.leaf(&["a.test"], dir.path(), "a");
    let mut last = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < end {
        last = served(&ca, "a.test", addr, true).await.unwrap();
        if last == new {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, new, "the renewed certificate was never served");
}

/// `min_version = "1.3"`: a client that speaks at most TLS 1.2 fails the handshake; the default
/// listener serves it. The certificate has an RSA key (the others here are ECDSA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let rsa = ca.leaf_with(
        KeyPair::from_pem(RSA_KEY).unwrap(),
        &["r.test"],
        dir.path(),
        "r",
    );
    let tls12 = |addr| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .resolve("r.test", addr)
            .no_proxy()
            .build()
            .unwrap()
    };
    let (_default, addr) = start(dir.path(), &pair(dir.path(), "r"), "", &bs).await;
    assert_eq!(served(&ca, "r.test", addr, true).await.unwrap(), rsa);
    let r = tls12(addr)
        .get(format!("https://r.test:{}/", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "TLS 1.2 is offered by default");

    let (_strict, addr) = start(
        dir.path(),
        &pair(dir.path(), "r"),
        "min_version = \"1.3\"\n",
        &bs,
    )
    .await;
    assert_eq!(served(&ca, "r.test", addr, true).await.unwrap(), rsa);
    let r = tls12(addr)
        .get(format!("https://r.test:{}/", addr.port()))
        .send()
        .await;
    assert!(r.is_err(), "a TLS 1.2 client got through: {r:?}");
}

/// A 2048-bit RSA key (PKCS#8) for the RSA certificate made in the test.
const RSA_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDAD4qZrXoklVjO
CJl8CIeS3wJR3vsoMhIe8fIx3ZDh7qdQSKqDjkQb7lJfyAkV9tSiqbamYp0kUjQZ
TFJCoQ9f2A+E7wo/FuoUDmS9BWLY33va2pEPD08zudrgwS3j1R4Niu3vjOcdb44P
P2+OJUAsgopIgwUm/ugysDymFbS+Ji7MGnI3g9c8bgCcSKhdLpmTAV6FK9Jmnt5G
4kXsP71VofEqZdQ/w603VAIVqYnl1SsRjH1YwGeH1s0XpEjXLEt37kBWrf3Ze5q+
U1DtNgDOQo/t6Zq4KttxQHcye8n8mqFDbngm6/ZVBeZsnwkpVmNlDC8chwI08Nkk
pvrjeWkBAgMBAAECggEARhrmKqZJ+WSSX9J/w+iRJClG/X95CfkM6ELEdzM7GV01
sXZ010Rs1A0wAEpSFrRcdWuhgiZo2cMvxTQ4qp2DsSZ6s7lVciX5F40RdHWs2SDq
Yr55SJf7/xOOM5AQIiO+ro7Rvykdi38WybYMEETEofqcY09/5/YP58CwwqcVrHo9
WyrMKHB1LTsnq2EDCrN1g6VzOq41Dj5k/8GybAN9Y7UMgcu1/BAijxKSsqOR0wyx
kx+47os13fxI8ZT6vpPoH36JtuLtZa8k/76kEMm0xbHrw+Gwxfc+xuHLIOtET++x
vYp1v0TFy4+JOl/8qbO7sB6p7k8tDsN7kUElEwtKaQKBgQDrehRniEq2tWUOLMh7
kb7XZm6tGGNtaNfB9060kEeXFx8GdYTId1ngcCF2zRpqsmmSG5hCa4D+z9Oq8PQv
DNGrWQh/CiuO5JfZYf6SOMipIGxfHxkYBU+OIfw6kSERLaTIriA5FADCeK8woGBP
3RGnNjJVDIraZngvLdBJOQOF8wKBgQDQzMR97QG4Fa6CmYdXJ3E2KnyTEwDxmn7i
STZbNolf2RQRppncw1xlIeQKbNANpNQk2h3LQ9efPZYIbSAprRbbPeyytVAGzbdx
qw4CqkNgShd/JQKALUJ0u36wIlLwgd32v4KQC0A/DQQboj1ST38AExZxXtfBhdL7
B82zhqDOOwKBgQCfET2dXp0R5WFZfPkFOEQRn9ldxp7Ltsog9h3NrbUepHjJ1TMY
dD9bdIO2jACvWMwl7cwh+hsOhne2/sQE0IUGWcN6hfU8tsC5ERB12DP8w7FRZGGA
L345Rk3rhkQvJYUuJyoPRKrqs7msgHnvGSgmq16+wxU9SYEgZbNQ81mk7wKBgQCc
FATpUKoRTfvF2jfl+TDSWY4HbpQtBdzFEA8WvbyQrjcnPo8TC+HcIypQdKhNGqIN
7hGJaOwcN7AYGmKJZL6KIk72AzyP6WSwDjqJ2XZF2vyXaTXmVG6xzZnU1cODzr/5
+4wAWriqqPMiKPOHvK7lgl8rXccP/RYJ2fp0sTUxEwKBgQC/oQPd9Rh8m8kSAqlR
V2dJRdMcB49GIDbTDwFRql9+BYjLXx1UEv4U3bAKAUcyDcxnm9Wf6Fm/+uZfNrqG
Y+pyfZ4KNhUn8ZmQpopekrTwEbSOAA5f1BGb8uYptIpAIbGOYfv6+KLCb3ND7NwY
gUS5IvbSVTKx+xhxJvAkoDtbWg==
-----END PRIVATE KEY-----
";
