//! Issue 16 (DNS): a backend given by name has a member per A/AAAA address, looked up again in
//! the background (`resolve_interval_ms`, or the records' TTL when shorter) without a reload;
//! addresses that disappear drain (a request in flight finishes), a failed lookup keeps the last
//! good set. The test runs its own small DNS server (`[dns] nameservers`), whose answers it
//! changes.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::dns::DnsServer;

use support::*;

/// Two in-process backends on 127.0.0.1 and 127.0.0.2, same port.
async fn two_backends() -> (Backend, Backend) {
    for _ in 0..20 {
        let a = Backend::spawn("127.0.0.1:0".parse().unwrap(), "one")
            .await
            .unwrap();
        let other: SocketAddr = format!("127.0.0.2:{}", a.addr.port()).parse().unwrap();
        if let Ok(b) = Backend::spawn(other, "two").await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn config(dns: SocketAddr, port: u16) -> String {
    format!(
        "[dns]\nnameservers = [\"{dns}\"]\n\
         [upstreams.api]\nresolve_interval_ms = 1000\nbackends = [{{ addr = \"svc.test:{port}\" }}]\n{}",
        route_all("api")
    )
}

/// Which backends answered `n` requests.
async fn who(s: &Sluice, n: usize) -> BTreeMap<String, usize> {
    let c = client(None);
    let mut out = BTreeMap::new();
    for i in 0..n {
        let r = c.get(s.url(&format!("/who/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", s.log());
        *out.entry(backend_of(&r)).or_default() += 1;
    }
    out
}

/// Poll until `n` requests are all answered by `want` (each at least once).
async fn until_served_by(s: &Sluice, want: &[&str]) {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = who(s, 8).await;
        let ids: Vec<&str> = seen.keys().map(String::as_str).collect();
        if ids == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "still served by {seen:?}, want {want:?}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_whose_addresses_change_moves_traffic_without_a_reload() {
    let (one, two) = two_backends().await;
    let ip1: Ipv4Addr = "127.0.0.1".parse().unwrap();
    let ip2: Ipv4Addr = "127.0.0.2".parse().unwrap();
    let dns = DnsServer::start("svc.test", &[ip1]).await;
    let s = Sluice::with_config(config(dns.addr, one.addr.port()))
        .admin_token("t0ken")
        .start()
        .await;
    assert_eq!(who(&s, 4).await.keys().collect::<Vec<_>>(), ["one"]);
    let status = s.admin_json("/status").await.to_string();
    assert!(
        status.contains(&format!("svc.test:{}/127.0.0.1", one.addr.port())),
        "{status}"
    );

    // A slow request in flight on 127.0.0.1 when the name moves to 127.0.0.2 finishes there.
    let slow = {
        let url = s.url("/delay/1500");
        tokio::spawn(async move { client(None).get(url).send().await.map(|r| r.status()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    dns.set("svc.test", &[ip2]);
    until_served_by(&s, &["two"]).await;
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the drained request finished"
    );

    // Both addresses: both members.
    dns.set("svc.test", &[ip1, ip2]);
    until_served_by(&s, &["one", "two"]).await;

    // The DNS fails: the last good set stays, and the failures are counted.
    dns.fail();
    let m = s
        .metrics_when(|m| {
            m.contains("sluice_dns_lookups_total{name=\"svc.test\",result=\"failed\"}")
        })
        .await;
    assert!(
        m.contains("sluice_dns_lookups_total{name=\"svc.test\",result=\"changed\"}"),
        "{m}"
    );
    until_served_by(&s, &["one", "two"]).await;
    // No reload: the generation moved with the addresses alone.
    assert!(
        m.contains("sluice_config_reloads_total{result=\"ok\"} 0\n"),
        "{m}"
    );
    assert!(!m.contains("sluice_config_generation 1\n"), "{m}");
    assert!(dns.queries() >= 3);
    drop(two);
}

#[test]
fn a_name_that_does_not_resolve_is_a_check_error_naming_the_backend() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dns = rt.block_on(DnsServer::start(
        "svc.test",
        &["127.0.0.1".parse().unwrap()],
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let body = format!(
        "[dns]\nnameservers = [\"{}\"]\n\
         [upstreams.api]\nbackends = [{{ addr = \"svc.test:9001\" }}, {{ addr = \"missing.test:9002\" }}]\n{}",
        dns.addr,
        route_all("api")
    );
    std::fs::write(&path, &body).unwrap();
    let (status, _, err) = run_sluice(&["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("upstreams.api.backends[1].addr"), "{err}");
    assert!(err.contains("`missing.test` does not resolve"), "{err}");
    assert!(!err.contains("backends[0]"), "{err}");
    // The same with only the good name passes.
    std::fs::write(
        &path,
        body.replace(", { addr = \"missing.test:9002\" }", ""),
    )
    .unwrap();
    let (status, out, err) = run_sluice(&["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(0), "{out}{err}");
}
