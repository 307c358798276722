//! Issue 17: the access log. To a file rotated by rename + SIGUSR1 under load with no line lost
//! or doubled; a custom field list; per-route sampling; a destination that blocks never slows
//! requests (lines are dropped and counted instead); hostile field values never split a line.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

fn pool(b: &Backend) -> String {
    format!(
        "[upstreams.api]\n{}\n[[routes]]\nname = \"main\"\nupstream = \"api\"\n",
        backends_toml(&[(b.addr, None)])
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_rotated_by_rename_and_sigusr1_under_load_loses_and_doubles_nothing() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::start(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = \"json\"\n{}",
        log.display(),
        pool(&bs[0])
    ))
    .await;

    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 300;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, sent) = (sluice.url("/r"), sent.clone());
            tokio::spawn(async move {
                let client = client(None);
                for i in 0..PER_CLIENT {
                    let r = client
                        .get(&url)
                        .header("x-request-id", format!("c{c}-{i}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Rotate twice while the load runs, as logrotate (without copytruncate) does.
    let total = CLIENTS * PER_CLIENT;
    for (n, at) in [(1, total / 3), (2, 2 * total / 3)] {
        eventually(Duration::from_secs(30), "load progresses", || {
            (sent.load(std::sync::atomic::Ordering::Relaxed) >= at).then_some(())
        })
        .await;
        std::fs::rename(&log, dir.path().join(format!("access.log.{n}"))).unwrap();
        sluice.signal("USR1");
    }
    for t in tasks {
        t.await.unwrap();
    }

    let files = [
        dir.path().join("access.log.1"),
        dir.path().join("access.log.2"),
        log.clone(),
    ];
    let all = eventually(Duration::from_secs(10), "every line written", || {
        let all: Vec<String> = files.iter().flat_map(|f| lines(f)).collect();
        (all.len() >= total).then_some(all)
    })
    .await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in &all {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        *seen
            .entry(v["request_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "written twice: {doubled:?}");
    assert_eq!(seen.len(), total, "lost lines");
    for f in &files {
        assert!(!lines(f).is_empty(), "{} got no line", f.display());
    }
    sluice
        .wait_log(&["access_log_reopened"], Duration::from_secs(5))
        .await;
    let metrics = sluice.admin_get("/metrics").await.1;
    assert!(
        metrics.contains("sluice_access_log_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_field_list_writes_exactly_those_fields() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::start(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = '$client \"$method $uri $protocol\" $status $request_id $route $upstream \"$user_agent\" \"$referer\" $tls $$'\n{}",
        log.display(),
        pool(&bs[0])
    ))
    .await;
    let r = client(None)
        .get(sluice.url("/path/x?a=1"))
        .header("x-request-id", "rid-1")
        // A client trying to forge fields: quotes and bytes outside ASCII are escaped.
        .header("user-agent", "ua\" 500 \"forged")
        .header(
            "referer",
            reqwest::header::HeaderValue::from_bytes(b"https://r.example/\xff").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually(Duration::from_secs(5), "the line", || {
        lines(&log).into_iter().next()
    })
    .await;
    assert_eq!(
        line,
        "127.0.0.1 \"GET /path/x?a=1 HTTP/1.1\" 200 rid-1 main api \"ua\\x22 500 \\x22forged\" \"https://r.example/\\xFF\" - $"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_sample_their_lines_and_can_opt_out() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::start(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = '$route $request_id'\n[upstreams.api]\n{}\n\
         [[routes]]\nname = \"half\"\npath_prefix = \"/half\"\nupstream = \"api\"\naccess_log_sample = 0.5\n\
         [[routes]]\nname = \"none\"\npath_prefix = \"/none\"\nupstream = \"api\"\naccess_log_sample = 0\n\
         [[routes]]\nname = \"off\"\npath_prefix = \"/off\"\nupstream = \"api\"\naccess_log = false\n\
         [[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        log.display(),
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let c = client(None);
    const N: usize = 400;
    for i in 0..N {
        for p in ["/half", "/none", "/off"] {
            c.get(sluice.url(p)).send().await.unwrap();
        }
        c.get(sluice.url("/all"))
            .header("x-request-id", format!("all-{i}"))
            .send()
            .await
            .unwrap();
    }
    // Every `all` line is there once the last one is: lines are written in order.
    let all = eventually(Duration::from_secs(10), "the last line", || {
        let l = lines(&log);
        l.iter()
            .any(|l| l == &format!("all all-{}", N - 1))
            .then_some(l)
    })
    .await;
    let count = |route: &str| {
        all.iter()
            .filter(|l| l.starts_with(&format!("{route} ")))
            .count()
    };
    assert_eq!(count("all"), N);
    assert_eq!(count("none"), 0);
    assert_eq!(count("off"), 0);
    // Binomial(400, 0.5): 30%..70% is ten standard deviations wide.
    let half = count("half");
    assert!((N * 3 / 10..=N * 7 / 10).contains(&half), "{half} of {N}");
}

/// The destination stops taking lines (a pipe nobody reads, a hung NFS mount): requests go on
/// at full speed, lines beyond the queue are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_destination_drops_lines_and_never_slows_a_request() {
    use std::os::unix::fs::OpenOptionsExt;
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A reader that never reads: Sluice's open succeeds, its writes block once the pipe's
    // buffer (64 KiB) is full.
    let _reader = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let sluice = Sluice::start(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = \"json\"\naccess_log_buffer = 64\n{}",
        fifo.display(),
        pool(&bs[0])
    ))
    .await;
    let c = client(None);
    // Long user agents fill the pipe sooner.
    let ua = "x".repeat(2000);
    let started = Instant::now();
    for _ in 0..300 {
        let r = c
            .get(sluice.url("/r"))
            .header("user-agent", &ua)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "requests slowed down: {:?}",
        started.elapsed()
    );
    let metrics = sluice
        .metrics_when(|m| {
            Sluice::sample(m, "sluice_access_log_dropped_total").is_some_and(|v| v > 0.0)
        })
        .await;
    assert!(
        metrics.contains("sluice_access_log_lines_total"),
        "{metrics}"
    );
}

/// `$tls` names the client connection's TLS version (`-` on plain HTTP) and `$protocol` the
/// HTTP version the client spoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_version_and_protocol_fields() {
    let bs = backends(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let sluice = Sluice::with_config(format!(
        "[logging]\naccess_log_path = \"{}\"\naccess_log_format = '$request_id $tls $protocol'\n{}",
        log.display(),
        pool(&bs[0])
    ))
    .tls()
    .start()
    .await;
    let tls = demo_tls_client().build().unwrap();
    let r = tls
        .get(format!(
            "https://localhost:{}/t",
            sluice.tls_addr.unwrap().port()
        ))
        .header("x-request-id", "over-tls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client(None)
        .get(sluice.url("/t"))
        .header("x-request-id", "plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = eventually(Duration::from_secs(5), "two lines", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (t.lines().count() >= 2).then_some(t)
    })
    .await;
    let tls_line = text.lines().find(|l| l.starts_with("over-tls ")).unwrap();
    assert!(tls_line == "over-tls TLSv1.3 HTTP/2", "{text}");
    assert!(text.contains("plain - HTTP/1.1\n"), "{text}");
}
