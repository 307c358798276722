//! A broken deploy must fail loudly and harm nothing: a bad certificate or key is a config error
//! (never a process without its listener), a port already taken makes the new process exit at
//! once with the reason, and an upgrade whose new process fails leaves the old one serving.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const GARBAGE_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

/// A config with one plain and one TLS listener using `cert` and `key`.
fn tls_config(dir: &Path, cert: &Path, key: &Path, backend: std::net::SocketAddr) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\nupgrade_sock = \"{}\"\n[[server.tls]]\nlisten = \"127.0.0.1:{}\"\ncert = \"{}\"\nkey = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[upstreams.api]\n{}\n{}",
        free_port(),
        dir.join("upgrade.sock").display(),
        free_port(),
        cert.display(),
        key.display(),
        free_port(),
        backends_toml(&[(backend, None)]),
        route_all("api"),
    )
}

fn demo_tls() -> (std::path::PathBuf, std::path::PathBuf) {
    let d = workspace_root().join("conf/tls");
    (d.join("cert.pem"), d.join("key.pem"))
}

/// Regression (issue 12, defect 2): `--check` only checked that the files existed, and a
/// garbage PEM made the TLS listener panic at start while the process lived on with no
/// listener (and `/readyz` said 200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_certificate_or_a_foreign_key_is_a_config_error() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = demo_tls();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, GARBAGE_PEM).unwrap();
    let other_key = dir.path().join("other.key");
    // A valid key of another certificate: a certificate is only usable with its own key.
    std::fs::write(&other_key, OTHER_KEY).unwrap();

    for (c, k, what) in [
        (&garbage, &key, "garbage certificate"),
        (&cert, &other_key, "key of another certificate"),
        (&key, &cert, "certificate and key swapped"),
    ] {
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, tls_config(dir.path(), c, k, bs[0].addr)).unwrap();
        let (st, _, err) = run_sluice(&["--check", "--config", config.to_str().unwrap()]);
        assert!(!st.success(), "{what}: --check passed");
        assert!(err.contains("server.tls[0].cert"), "{what}: {err}");

        // Started for real, it exits at once and non-zero: no half-dead process.
        let started = Instant::now();
        let out = Command::new(SLUICE_BIN)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: the process ran");
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
    }
}

/// Regression (issue 12, defect 10): a second Sluice whose ports were taken retried the bind for
/// 30 s and then ran on without its listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_taken_ports_exits_at_once_with_the_reason() {
    let bs = backends(1).await;
    let first = Sluice::start(one_pool(&[bs[0].addr])).await;
    let started = Instant::now();
    let out = Command::new(SLUICE_BIN)
        .arg("--config")
        .arg(first.config_path())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains(&first.addr.to_string()), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The first one never noticed.
    let r = client(None).get(first.url("/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Regression (issue 12, defect 2): the old process handed its listeners over on SIGQUIT and
/// exited even when the new one had died: a total outage. Now a new process with a bad
/// certificate exits non-zero before asking for the listeners, the old one finds nobody to hand
/// them to and keeps serving, and a later good upgrade still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_whose_new_process_fails_leaves_the_old_one_serving() {
    let bs = backends(1).await;
    let old = Sluice::with_config(one_pool(&[bs[0].addr]))
        .tls()
        .start()
        .await;
    let c = client(None);
    assert_eq!(c.get(old.url("/ping")).send().await.unwrap().status(), 200);

    // The new binary's config names a garbage certificate.
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, GARBAGE_PEM).unwrap();
    let text = std::fs::read_to_string(old.config_path()).unwrap();
    let bad = text.replace(
        &demo_tls().0.display().to_string(),
        &garbage.display().to_string(),
    );
    assert_ne!(bad, text);
    let bad_config = dir.path().join("sluice.toml");
    std::fs::write(&bad_config, bad).unwrap();
    let out = Command::new(SLUICE_BIN)
        .arg("--config")
        .arg(&bad_config)
        .arg("--upgrade")
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the broken new process must fail");

    // What a careless script or unit does next: tell the old one to hand over.
    old.signal("QUIT");
    old.wait_log(&["upgrade_failed"], Duration::from_secs(20))
        .await;
    for _ in 0..20 {
        let r = c.get(old.url("/ping")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let (status, body) = old.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");

    // A good upgrade afterwards still takes over.
    let mut old = old;
    let new = old.upgrade().await;
    assert!(
        old.wait_exit(Duration::from_secs(30)).await.is_some(),
        "the old process exits after a successful hand-over"
    );
    let r = c.get(new.url("/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// `/readyz` reports the listeners: a process is ready only once its proxy listeners accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_includes_the_listeners() {
    let bs = backends(1).await;
    let s = Sluice::start(one_pool(&[bs[0].addr])).await;
    let v = s.admin_json("/readyz").await;
    assert_eq!(v["listening"], true, "{v}");
    assert_eq!(v["ready"], true, "{v}");
}

/// A valid EC P-256 private key that belongs to no certificate here.
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbOG/lP45EPy2vUzo
03S65goErG3wx9QnNAiyO+vSMEWhRANCAARuC8m73eUsf9uhb3s8tTHS7Y9zTczu
Xu1sm9aXuDp+1fAnPWjrQ5cZC2qcp1aZ+2Ugz1/78p8HwThbej9qizKq
-----END PRIVATE KEY-----
";

/// Regression (issue 12, defect 10): during the SIGTERM drain delay responses said
/// `keep-alive` while the docs promised `close`; clients kept their connection to an instance
/// that was about to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_during_the_drain_close_their_connection() {
    let bs = backends(1).await;
    let s = Sluice::with_config(one_pool(&[bs[0].addr]))
        .server_extra("drain_delay_ms = 3000")
        .grace(5)
        .start()
        .await;
    let c = client(None);
    let r = c.get(s.url("/ping")).send().await.unwrap();
    assert_ne!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    s.signal("TERM");
    s.wait_log(&["drain_delay"], Duration::from_secs(5)).await;
    let r = c.get(s.url("/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "{:?}",
        r.headers()
    );
}

/// Regression (issue 12, defect 7): `GET /config` showed a `redis+unix://...?pass=SECRET`
/// password verbatim and part of a password containing `@`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_endpoint_never_shows_a_redis_credential() {
    let bs = backends(1).await;
    for url in [
        "redis+unix:///tmp/sluice-test-absent.sock?pass=S3CRET",
        "redis://user:p@S3CRET@127.0.0.1:1/0",
    ] {
        let s = Sluice::start(format!(
            "{}[redis]\nurl = \"{url}\"\n",
            one_pool(&[bs[0].addr])
        ))
        .await;
        let (status, body) = s.admin_get("/config").await;
        assert_eq!(status, 200);
        assert!(!body.contains("S3CRET"), "{url}: {body}");
        assert!(body.contains("<redacted>"), "{url}: {body}");
    }
}
