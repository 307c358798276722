//! Process lifecycle and logs: SIGTERM drains in-flight requests and exits early, readiness turns
//! 503 while draining, `--upgrade` takes the listeners over with no request lost, and the access
//! log (text and JSON) has one line per request, switchable per route.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn pool(b: &Backend) -> String {
    format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(b.addr, None)])
    )
}

async fn in_flight(sluice: &Sluice) -> i64 {
    let v = sluice.admin_json("/status").await;
    v["in_flight"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_a_slow_request_then_exits_before_the_grace_period() {
    let bs = backends(1).await;
    let mut sluice = Sluice::with_config(pool(&bs[0]))
        .grace(20)
        .server_extra("drain_delay_ms = 1000")
        .start()
        .await;
    let admin = client(None);
    // A pooled admin connection, reused after the listeners close.
    assert_eq!(
        admin
            .get(sluice.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let url = sluice.url("/delay/1500");
    let slow = tokio::spawn(async move { client(None).get(url).send().await });
    let end = Instant::now() + Duration::from_secs(5);
    // In flight counts proxied requests only (not admin calls).
    while in_flight(&sluice).await < 1 {
        assert!(Instant::now() < end, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = Instant::now();
    sluice.signal("TERM");
    // During the drain delay: not ready, but still serving.
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    loop {
        let r = fresh()
            .get(sluice.admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["draining"], true);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "never reported not ready"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = fresh()
        .get(sluice.url("/during-delay"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "requests are still served during the drain delay"
    );
    // After the delay, new connections are refused.
    loop {
        if fresh().get(sluice.url("/new")).send().await.is_err() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "still accepting after the drain delay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(r.status(), 200);
    let st = sluice
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits once drained");
    assert!(st.success(), "{st}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited {:?}: it should exit once drained, not after the 20 s grace period",
        t.elapsed()
    );
    assert!(
        sluice.log().contains("event=\"drained\""),
        "{}",
        sluice.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_during_a_stream_of_requests_loses_none() {
    let bs = backends(1).await;
    let mut old = Sluice::with_config(pool(&bs[0])).grace(10).start().await;
    let old_pid = old.pid();
    let load = SteadyLoad::start(old.url("/up"), 4);
    load.wait_more(50, "the load never got going").await;
    let new = old.upgrade().await;
    // The old process hands over, drains and exits; the new one serves alone.
    let st = old
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the old process exits after the hand-over");
    assert!(st.success());
    // The new process alone keeps serving the stream.
    load.wait_more(50, "nothing served after the old process exited")
        .await;
    let (_, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "lost requests: {failures:?}\nold log:\n{}\nnew log:\n{}",
        old.log(),
        new.log()
    );
    let v = new.admin_json("/status").await;
    assert_ne!(v["pid"].as_u64().unwrap(), u64::from(old_pid));
    assert_eq!(v["pid"].as_u64().unwrap(), u64::from(new.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request_and_routes_can_opt_out() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[logging]\nformat = \"json\"\n[upstreams.api]\n{}\n[[routes]]\nname = \"quiet\"\npath_prefix = \"/quiet\"\nupstream = \"api\"\naccess_log = false\n[[routes]]\nname = \"main\"\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .env("RUST_LOG", "info,pingora=warn")
    .start()
    .await;
    let c = client(None);
    // The opted-out request first: on one keep-alive connection its logging phase ends before
    // the next request is read, so once req-2 is logged, a line for it would be there too.
    c.get(sluice.url("/quiet/x")).send().await.unwrap();
    for i in 0..3 {
        let r = c
            .get(sluice.url(&format!("/logged/{i}?q=1")))
            .header("x-request-id", format!("req-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    sluice.wait_log(&["req-2"], Duration::from_secs(5)).await;
    let log = sluice.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // The process log's lines have a `level`; access-log lines do not.
        .filter(|v| v.get("level").is_none() && v.get("request_id").is_some())
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    let l = &lines[1];
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/logged/1");
    assert_eq!(l["query"], "q=1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["client"], "127.0.0.1");
    assert_eq!(l["upstream"], "api");
    assert_eq!(l["backend"], bs[0].addr.to_string());
    assert_eq!(l["retries"], 0);
    assert_eq!(l["request_id"], "req-1");
    assert_eq!(l["ratelimit"], "-");
    assert!(l["bytes"].as_u64().unwrap() > 0);
    assert!(l["duration_ms"].as_f64().is_some());
    assert!(l["timestamp"].as_str().is_some());
    assert!(!log.contains("/quiet/x"), "{log}");
}

/// Kills a daemon the test started when the test ends, even by a failed assertion.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

fn read_pid(path: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Poll until the PID file names a live process other than `not`.
async fn wait_pid(path: &std::path::Path, not: Option<u32>) -> u32 {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = read_pid(path).filter(|p| Some(*p) != not && alive(*p)) {
            return p;
        }
        assert!(Instant::now() < end, "no new pid in {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--daemon` returns once serving and writes `server.pid_file`; the upgrade steps of a
/// `Type=forking` unit (SIGQUIT to the running process, then `--daemon --upgrade`) replace it
/// with a new process that serves on the same listeners. (The shipped unit is `Type=notify`:
/// `ops_systemd.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_and_the_systemd_reload_upgrade() {
    use std::process::Command;
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_port(), free_port());
    let pid_file = dir.path().join("sluice.pid");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{listen}\"]\nthreads = 1\ngrace_period_seconds = 5\npid_file = \"{}\"\nupgrade_sock = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{}",
            pid_file.display(),
            dir.path().join("upgrade.sock").display(),
            pool(&bs[0])
        ),
    )
    .unwrap();
    let sluice = |extra: &[&str], log: &str| {
        Command::new(SLUICE_BIN)
            .arg("--daemon")
            .args(extra)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,pingora=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let c = client(None);
    let status_pid = |c: reqwest::Client| async move {
        let v: serde_json::Value = c
            .get(format!("http://127.0.0.1:{admin}/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["pid"].as_u64()
    };

    // ExecStart: the launcher returns after the fork; the PID file and the listeners follow (as
    // systemd does for Type=forking, wait for the PID file).
    let st = sluice(&[], "start.log").wait().unwrap();
    assert!(st.success(), "{st}");
    let first = wait_pid(&pid_file, None).await;
    let _first_guard = KillOnDrop(first);
    assert!(alive(first));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match status_pid(c.clone()).await {
            Some(p) => {
                assert_eq!(p, u64::from(first));
                break;
            }
            None => assert!(Instant::now() < end, "the daemon never served"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get_n(&c, &format!("http://127.0.0.1:{listen}/a"), 5).await;

    // ExecReload: SIGQUIT to $MAINPID, then the new daemon with --upgrade.
    assert!(Command::new("kill")
        .args(["-QUIT", &first.to_string()])
        .status()
        .unwrap()
        .success());
    let st = sluice(&["--upgrade"], "upgrade.log").wait().unwrap();
    assert!(
        st.success(),
        "{st}: {}",
        std::fs::read_to_string(dir.path().join("upgrade.log")).unwrap_or_default()
    );
    let second = wait_pid(&pid_file, Some(first)).await;
    let _second_guard = KillOnDrop(second);
    assert_ne!(first, second);
    let end = Instant::now() + Duration::from_secs(20);
    while alive(first) {
        assert!(Instant::now() < end, "the old daemon never exited");
        get_n(&c, &format!("http://127.0.0.1:{listen}/during"), 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(status_pid(fresh).await, Some(u64::from(second)));
    get_n(&c, &format!("http://127.0.0.1:{listen}/b"), 5).await;

    // systemctl stop: SIGTERM.
    assert!(Command::new("kill")
        .args(["-TERM", &second.to_string()])
        .status()
        .unwrap()
        .success());
    let end = Instant::now() + Duration::from_secs(10);
    while alive(second) {
        assert!(Instant::now() < end, "the daemon did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next message a service manager's socket got, within 10 s.
async fn notified(sock: &tokio::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("no message from sluice in 10 s")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Issue 17: under a `Type=notify` unit (`NOTIFY_SOCKET` set), Sluice reports `READY=1` once its
/// proxy listener accepts connections, and `STOPPING=1` when a graceful stop begins. The test
/// plays the service manager with its own datagram socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_stopping_are_reported_to_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let bs = backends(1).await;
    let mut sluice = Sluice::with_config(one_pool(&[bs[0].addr]))
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .start()
        .await;
    let ready = notified(&sock).await;
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("MAINPID={}", sluice.pid())),
        "{ready}"
    );
    // Ready means accepting: a request goes through.
    let r = client(None).get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sluice.signal("TERM");
    let stopping = notified(&sock).await;
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    sluice
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
}

/// The service manager's socket is gone (or `NOTIFY_SOCKET` is wrong): Sluice says so and
/// serves anyway; readiness reporting never stops the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_notify_socket_is_logged_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("no-such.sock");
    let bs = backends(1).await;
    let sluice = Sluice::with_config(one_pool(&[bs[0].addr]))
        .env("NOTIFY_SOCKET", gone.to_str().unwrap())
        .start()
        .await;
    let r = client(None).get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sluice
        .wait_log(
            &["could not notify the service manager"],
            Duration::from_secs(10),
        )
        .await;
}
