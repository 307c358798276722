//! Issue 16 (ACME): a TLS listener with `acme = { ... }` obtains its certificate from a real
//! ACME server (Debian's `pebble`, started here on free ports with a test CA made here, and
//! pointed at a DNS server of the test that sends the certificate's names to 127.0.0.1), answers
//! the HTTP-01 challenges on its plain listener, serves the certificate by SNI, renews it two
//! thirds into its (short, 12 s) lifetime, and keeps serving it when a renewal fails.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::ca::Ca;
use support::dns::DnsServer;
use support::*;

struct Pebble {
    child: Child,
    /// The ACME directory URL.
    directory: String,
    /// The management interface (for the issuing root).
    management: SocketAddr,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pebble on free ports, its HTTPS certificate from `ca`, validating HTTP-01 on `http_port`
/// and resolving names through `dns`; certificates valid for `validity` seconds.
async fn pebble(dir: &Path, ca: &Ca, http_port: u16, dns: SocketAddr, validity: u64) -> Pebble {
    pebble_tls(dir, ca, http_port, free_port(), dns, validity).await
}

/// The same, validating TLS-ALPN-01 on `tls_port`.
async fn pebble_tls(
    dir: &Path,
    ca: &Ca,
    http_port: u16,
    tls_port: u16,
    dns: SocketAddr,
    validity: u64,
) -> Pebble {
    ca.leaf(&["localhost", "127.0.0.1"], dir, "pebble");
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let management: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": management.to_string(),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }
    });
    let path = dir.join("pebble.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let out = log.try_clone().unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&path)
        .arg("-dnsserver")
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(out)
        .stderr(log)
        .spawn()
        .expect("pebble is installed (scripts/install-deps.sh)");
    eventually(Duration::from_secs(20), "pebble listening", || {
        std::net::TcpStream::connect(listen).ok()
    })
    .await;
    Pebble {
        child,
        directory: format!("https://{listen}/dir"),
        management,
    }
}

/// The root that signs pebble's certificates (a new one each run), from its management API.
async fn issuing_root(p: &Pebble, ca: &Ca) -> reqwest::Certificate {
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let pem = c
        .get(format!("https://{}/roots/0", p.management))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()
}

/// The certificate `addr` shows for `name`, verified against `root` (or the error).
async fn served(
    root: &reqwest::Certificate,
    name: &str,
    addr: SocketAddr,
) -> Result<Vec<u8>, String> {
    let c = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .tls_built_in_root_certs(false)
        .resolve(name, addr)
        .tls_info(true)
        .no_proxy()
        .build()
        .unwrap();
    let r = c
        .get(format!("https://{name}:{}/acme-test", addr.port()))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "no certificate".into())
}

async fn until<T>(
    what: &str,
    s: &Sluice,
    deadline: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_issued_served_renewed_and_kept_when_renewal_fails() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "pebble-ca");
    let dns = DnsServer::start("a.test", &["127.0.0.1".parse().unwrap()]).await;
    dns.set("b.test", &["127.0.0.1".parse().unwrap()]);

    // Sluice's ports first: pebble validates HTTP-01 on the plain one.
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let plain_port = free_port();
    let p = pebble(d, &ca, plain_port, dns.addr, 12).await;
    let storage = d.join("acme");
    let s = Sluice::with_config(one_pool(&[bs[0].addr]))
        .listen_port(plain_port)
        .server_extra(&format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\nacme = {{ directory = \"{}\", email = \"ops@example.com\", hosts = [\"a.test\", \"b.test\"], storage = \"{}\", directory_ca = \"{}\" }}\n",
            p.directory,
            storage.display(),
            ca_file.display()
        ))
        .start()
        .await;
    let root = issuing_root(&p, &ca).await;

    // Issued and served for both names, verified up to pebble's root.
    let first = until(
        "the first certificate",
        &s,
        Duration::from_secs(30),
        async || served(&root, "a.test", tls_addr).await.ok(),
    )
    .await;
    assert_eq!(served(&root, "b.test", tls_addr).await.unwrap(), first);
    assert!(storage.join("a.test.pem").is_file());
    assert!(storage.join("a.test.key").is_file());
    let log = s.log();
    assert!(log.contains("acme_issued"), "{log}");

    // Renewed two thirds into its 12 s lifetime: a new certificate, no restart.
    let second = until(
        "the renewed certificate",
        &s,
        Duration::from_secs(30),
        async || {
            served(&root, "a.test", tls_addr)
                .await
                .ok()
                .filter(|c| *c != first)
        },
    )
    .await;

    // The CA goes away: the next renewal fails, is counted and logged, and the certificate
    // served stays the one obtained last.
    drop(p);
    let m = until(
        "a failed renewal",
        &s,
        Duration::from_secs(30),
        async || {
            let (_, m) = s.admin_get("/metrics").await;
            m.contains("sluice_acme_orders_total{name=\"a.test\",result=\"failed\"}")
                .then_some(m)
        },
    )
    .await;
    assert!(
        m.contains("sluice_acme_orders_total{name=\"a.test\",result=\"issued\"}"),
        "{m}"
    );
    assert!(s.log().contains("acme_failed"));
    assert_eq!(served(&root, "a.test", tls_addr).await, Ok(second));
}

#[test]
fn check_names_acme_problems() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{}\"]\n\
             [[server.tls]]\nlisten = \"127.0.0.1:{}\"\nacme = {{ directory = \"http://ca.test/dir\", email = \"nobody\", hosts = [\"*.a.test\", \"b.test\", \"b.test\"], storage = \"/nonexistent/dir/acme\" }}\n\
             [upstreams.api]\nbackends = [{{ addr = \"127.0.0.1:9001\" }}]\n{}",
            free_port(),
            free_port(),
            route_all("api")
        ),
    )
    .unwrap();
    let (status, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    for needle in [
        "server.tls[0].acme.directory",
        "server.tls[0].acme.email",
        "server.tls[0].acme.hosts[0]",
        "server.tls[0].acme.hosts[2]",
        "listed twice",
        "server.tls[0].acme.storage",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_certificates_and_challenges_through_redis() {
    let bs = backends(1).await;
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "pebble-ca");
    let dns = DnsServer::start("a.test", &["127.0.0.1".parse().unwrap()]).await;
    dns.set("b.test", &["127.0.0.1".parse().unwrap()]);
    // The CA validates on instance A's plain port; instance B orders. A knows nothing of B's
    // order but the challenge it finds in Redis.
    let a_port = free_port();
    let p = pebble(d, &ca, a_port, dns.addr, 3600).await;
    let acme = |hosts: &str, storage: &str| {
        format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{}\"\nacme = {{ directory = \"{}\", hosts = [{hosts}], storage = \"{}\", directory_ca = \"{}\" }}\n",
            free_port(),
            p.directory,
            d.join(storage).display(),
            ca_file.display()
        )
    };
    let redis_section = format!("[redis]\nurl = \"{}\"\n", redis.url());
    let body = format!("{redis_section}{}", one_pool(&[bs[0].addr]));
    // A orders nothing it can get (its name does not resolve), but answers challenges.
    let a = Sluice::with_config(body.clone())
        .listen_port(a_port)
        .server_extra(&acme("\"unresolvable.test\"", "a"))
        .start()
        .await;
    let b_tls = acme("\"a.test\", \"b.test\"", "b");
    let b_addr: SocketAddr = b_tls.split('"').nth(1).unwrap().parse().unwrap();
    let b = Sluice::with_config(body.clone())
        .server_extra(&b_tls)
        .start()
        .await;
    let root = issuing_root(&p, &ca).await;
    let issued = until("B's certificate", &b, Duration::from_secs(30), async || {
        served(&root, "a.test", b_addr).await.ok()
    })
    .await;
    assert!(
        a.log().contains("acme-challenge"),
        "A answered the CA: {}",
        a.log()
    );

    // C has the same hosts: it takes B's certificate from Redis instead of ordering.
    let c_tls = acme("\"a.test\", \"b.test\"", "c");
    let c_addr: SocketAddr = c_tls.split('"').nth(1).unwrap().parse().unwrap();
    let c = Sluice::with_config(body)
        .admin_token("t0ken")
        .server_extra(&c_tls)
        .start()
        .await;
    let taken = until("C's certificate", &c, Duration::from_secs(30), async || {
        served(&root, "b.test", c_addr).await.ok()
    })
    .await;
    assert_eq!(taken, issued);
    assert!(c.log().contains("acme_shared"), "{}", c.log());
    let (_, m) = c.admin_get("/metrics").await;
    assert!(!m.contains("result=\"issued\"}"), "C ordered nothing: {m}");
    assert!(d.join("c/a.test.pem").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_lock_admits_one_instance() {
    let redis = RedisServer::start().await;
    let spec = sluice::config::AcmeSpec {
        directory: "https://ca.test/dir".into(),
        email: None,
        hosts: vec!["a.test".into()],
        storage: "/nonexistent".into(),
        directory_ca: None,
        challenge: sluice::config::AcmeChallenge::Http01,
    };
    let redis_spec = sluice::config::RedisSpec {
        target: sluice::config::RedisTarget::Single(redis.url()),
        command_timeout: Duration::from_secs(1),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(1),
    };
    let one = sluice::acme::Shared::new(&redis_spec);
    let two = sluice::acme::Shared::new(&redis_spec);
    assert_eq!(one.lock(&spec, "t1").await, Ok(true));
    assert_eq!(two.lock(&spec, "t2").await, Ok(false));
    // Only the holder's token releases it.
    two.unlock(&spec, "t2").await;
    assert_eq!(two.lock(&spec, "t2").await, Ok(false));
    one.unlock(&spec, "t1").await;
    assert_eq!(two.lock(&spec, "t2").await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_on_the_tls_listener() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new();
    let ca_file = ca.write(d, "pebble-ca");
    let dns = DnsServer::start("alpn.test", &["127.0.0.1".parse().unwrap()]).await;
    let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // HTTP-01 would go to a port nobody listens on: only the TLS listener can answer.
    let p = pebble_tls(d, &ca, free_port(), tls_addr.port(), dns.addr, 3600).await;
    let s = Sluice::with_config(one_pool(&[bs[0].addr]))
        .server_extra(&format!(
            "[[server.tls]]\nlisten = \"{tls_addr}\"\nacme = {{ directory = \"{}\", hosts = [\"alpn.test\"], storage = \"{}\", directory_ca = \"{}\", challenge = \"tls-alpn-01\" }}\n",
            p.directory,
            d.join("acme").display(),
            ca_file.display()
        ))
        .start()
        .await;
    let root = issuing_root(&p, &ca).await;
    until("the certificate", &s, Duration::from_secs(30), async || {
        served(&root, "alpn.test", tls_addr).await.ok()
    })
    .await;
    let pebble_log = std::fs::read_to_string(d.join("pebble.log")).unwrap();
    assert!(
        pebble_log.contains("set VALID by completed challenge"),
        "{pebble_log}"
    );
    // Ordinary clients still get HTTP/2 and HTTP/1.1 on that listener.
    let c = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .resolve("alpn.test", tls_addr)
        .no_proxy()
        .build()
        .unwrap();
    let r = c
        .get(format!("https://alpn.test:{}/v", tls_addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}
