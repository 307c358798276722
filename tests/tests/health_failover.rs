//! Active and passive health, failover rules, backups, retry budget and slow start, against
//! real backend processes that are killed, restarted, flipped unhealthy and made to fail.

mod support;

use std::time::{Duration, Instant};

use support::*;

fn pool(name: &str, settings: &str, members: &[String]) -> String {
    format!(
        "[upstreams.{name}]\n{settings}\nbackends = [{}]\n",
        members.join(", ")
    )
}

fn member(addr: impl std::fmt::Display) -> String {
    format!("{{ addr = \"{addr}\" }}")
}

const FAST_HEALTH: &str = "[upstreams.api.health]\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 200\nrise = 2\nfall = 2\n";

/// GET `url` `n` times, asserting every answer is a 200; returns how many each backend served.
async fn steady_gets(
    c: &reqwest::Client,
    url: &str,
    n: usize,
) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for i in 0..n {
        let r = c
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200, "request {i}");
        *by.entry(backend_of(&r)).or_insert(0) += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_ejected_without_client_errors_and_returns_after_rise() {
    let mut bs = Vec::new();
    for id in ["b1", "b2", "b3"] {
        bs.push(BackendProc::start(id).await);
    }
    let members: Vec<_> = bs.iter().map(|b| member(b.addr)).collect();
    let sluice = Sluice::start(format!(
        "{}{FAST_HEALTH}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nconnect_timeout_ms = 500",
            &members
        ),
        route_all("api")
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/steady");
    steady_gets(&c, &url, 30).await;

    let b2 = bs[1].addr.to_string();
    bs[1].kill();
    let killed = Instant::now();
    // A steady stream while b2 is dead: connect failures are retried elsewhere.
    let mut ejected_after = None;
    while killed.elapsed() < Duration::from_secs(3) {
        let by = steady_gets(&c, &url, 5).await;
        assert!(!by.contains_key("b2"));
        if ejected_after.is_none() && sluice.count_log(&["left rotation", &b2]) > 0 {
            ejected_after = Some(killed.elapsed());
        }
    }
    let ejected_after = ejected_after.expect("b2 was never taken out of rotation");
    // fall (2) x interval (100 ms), plus a probe timeout and scheduling slack.
    assert!(
        ejected_after < Duration::from_millis(1200),
        "{ejected_after:?}"
    );
    let line = sluice
        .wait_log(&["left rotation", &b2], Duration::from_secs(1))
        .await;
    assert!(
        line.contains("old=\"healthy\"") && line.contains("new=\"unhealthy\""),
        "{line}"
    );

    bs[1].restart().await;
    let back = sluice
        .wait_log(&["back in rotation", &b2], Duration::from_secs(5))
        .await;
    assert!(
        back.contains("successes=2"),
        "returns after rise probes: {back}"
    );
    let by = steady_gets(&c, &url, 30).await;
    assert_eq!(by.get("b2"), Some(&10), "{by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_flipping_health_to_503_leaves_and_rejoins() {
    let b1 = BackendProc::start("b1").await;
    let b2 = BackendProc::start("b2").await;
    let sluice = Sluice::start(format!(
        "{}{FAST_HEALTH}{}",
        pool("api", "", &[member(b1.addr), member(b2.addr)]),
        route_all("api")
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/flip");
    b1.control("health", "status=503").await;
    sluice
        .wait_log(
            &["left rotation", &b1.addr.to_string(), "status 503"],
            Duration::from_secs(3),
        )
        .await;
    let by = steady_gets(&c, &url, 20).await;
    assert_eq!(by.get("b2"), Some(&20), "{by:?}");
    b1.control("health", "status=200").await;
    sluice
        .wait_log(
            &["back in rotation", &b1.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    let by = steady_gets(&c, &url, 20).await;
    assert_eq!(by.get("b1"), Some(&10), "{by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_is_handled_by_timeouts_and_retries() {
    let hang = HangingServer::start().await;
    let b1 = BackendProc::start("b1").await;
    let sluice = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nread_timeout_ms = 300\nmax_fails = 0",
            &[member(hang.addr), member(b1.addr)]
        ),
        route_all("api")
    ))
    .await;
    let c = client(None);
    let t = Instant::now();
    let by = steady_gets(&c, &sluice.url("/hang"), 6).await;
    assert_eq!(by.get("b1"), Some(&6));
    // Three of the six went to the hung backend first and waited one read timeout each.
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_once_the_backend_read_it_but_is_after_a_failed_connect() {
    let dying = RawServer::start(b"").await;
    let b1 = BackendProc::start("b1").await;
    let sluice = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nmax_fails = 0",
            &[member(dying.addr), member(b1.addr)]
        ),
        route_all("api")
    ))
    .await;
    let c = client(None);
    let (mut ok, mut bad) = (0, 0);
    for _ in 0..4 {
        let r = c
            .post(sluice.url("/order"))
            .body("pay once")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            502 => bad += 1,
            s => panic!("unexpected {s}"),
        }
    }
    // Round-robin: two POSTs reached the dying backend, which read them: never replayed.
    assert_eq!((ok, bad), (2, 2));
    assert_eq!(dying.seen(), 2);
    assert_eq!(b1.served_on("/order").await, 2);
    // The same failure on a GET is retried on the other backend.
    let by = steady_gets(&c, &sluice.url("/read"), 4).await;
    assert_eq!(by.get("b1"), Some(&4));

    // A POST whose connect failed never reached anything: it goes to another backend.
    let dead = format!("127.0.0.1:{}", free_port());
    let sluice2 = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"",
            &[member(&dead), member(b1.addr)]
        ),
        route_all("api")
    ))
    .await;
    for _ in 0..4 {
        let r = c
            .post(sluice2.url("/order2"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(b1.served_on("/order2").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_takes_over_when_all_primaries_are_down_and_hands_back() {
    let b1 = BackendProc::start("b1").await;
    let b2 = BackendProc::start("b2").await;
    let b3 = BackendProc::start("b3").await;
    let members = [
        member(b1.addr),
        member(b2.addr),
        format!("{{ addr = \"{}\", backup = true }}", b3.addr),
    ];
    let health =
        "[upstreams.api.health]\ninterval_ms = 100\ntimeout_ms = 200\nrise = 1\nfall = 1\n";
    let sluice = Sluice::start(format!(
        "{}{health}{}",
        pool("api", "", &members),
        route_all("api")
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/b");
    let by = steady_gets(&c, &url, 20).await;
    assert!(!by.contains_key("b3"), "{by:?}");

    for b in [&b1, &b2] {
        b.control("health", "status=503").await;
    }
    for b in [&b1, &b2] {
        sluice
            .wait_log(
                &["left rotation", &b.addr.to_string()],
                Duration::from_secs(3),
            )
            .await;
    }
    let by = steady_gets(&c, &url, 10).await;
    assert_eq!(by.get("b3"), Some(&10), "{by:?}");

    b1.control("health", "status=200").await;
    sluice
        .wait_log(
            &["back in rotation", &b1.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    let by = steady_gets(&c, &url, 10).await;
    assert_eq!(by.get("b1"), Some(&10), "hands back: {by:?}");

    // Everything down: 503 at once with Retry-After, no waiting on timeouts.
    b1.control("health", "status=503").await;
    b3.control("health", "status=503").await;
    // b1 left rotation once already: wait for its second time (a wait for any line with it
    // returned at once and the request below could still reach b1).
    for (b, times) in [(&b1, 2), (&b3, 1)] {
        let needles = ["left rotation", &b.addr.to_string()];
        eventually(
            Duration::from_secs(3),
            "the backend to leave rotation",
            || (sluice.count_log(&needles) >= times).then_some(()),
        )
        .await;
    }
    let t = Instant::now();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_mode_tries_every_backend_when_none_is_healthy() {
    let b1 = BackendProc::start("b1").await;
    let health = "[upstreams.api.health]\ninterval_ms = 100\nrise = 1\nfall = 1\n";
    let sluice = Sluice::start(format!(
        "{}{health}{}",
        pool("api", "panic_mode = true", &[member(b1.addr)]),
        route_all("api")
    ))
    .await;
    b1.control("health", "status=503").await;
    sluice
        .wait_log(
            &["left rotation", &b1.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    // The probe says down, but the backend still serves: panic mode sends traffic anyway.
    let by = steady_gets(&client(None), &sluice.url("/p"), 5).await;
    assert_eq!(by.get("b1"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_without_probes_and_readmits_after_fail_timeout() {
    let b1 = BackendProc::start("b1").await;
    let b2 = BackendProc::start("b2").await;
    let sluice = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nmax_fails = 2\nfail_timeout_ms = 1500\nfail_on_5xx = true",
            &[member(b1.addr), member(b2.addr)]
        ),
        route_all("api")
    ))
    .await;
    b1.control("fail", "status=500").await;
    let c = client(None);
    let url = sluice.url("/pass");
    let mut errors = 0;
    for _ in 0..20 {
        let r = c.get(&url).send().await.unwrap();
        if r.status() == 500 {
            errors += 1;
        }
    }
    // 500 is passed to the client (not in next_upstream) but counted: two strikes, then out.
    assert_eq!(errors, 2);
    let line = sluice
        .wait_log(
            &["backend_ejected", &b1.addr.to_string()],
            Duration::from_secs(1),
        )
        .await;
    assert!(line.contains("reason=\"status\""), "{line}");
    b1.control("fail", "status=0").await;
    // After fail_timeout it takes traffic again.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        if backend_of(&r) == "b1" {
            break;
        }
        assert!(Instant::now() < end, "b1 never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_status_retries_are_capped_by_the_retry_budget() {
    let b1 = BackendProc::start("b1").await;
    let b2 = BackendProc::start("b2").await;
    let sluice = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nretries = 1\nnext_upstream = [\"http_503\"]\nretry_budget_percent = 20\nretry_budget_min_per_second = 0\nmax_fails = 0",
            &[member(b1.addr), member(b2.addr)]
        ),
        route_all("api")
    ))
    .await;
    b1.control("fail", "status=503").await;
    let c = client(None);
    let mut client_503 = 0u64;
    for _ in 0..100 {
        let r = c.get(sluice.url("/budget")).send().await.unwrap();
        match r.status().as_u16() {
            200 => assert_eq!(backend_of(&r), "b2"),
            503 => client_503 += 1,
            s => panic!("unexpected {s}"),
        }
    }
    let first_on_b1 = b1.served_on("/budget").await;
    let on_b2 = b2.served_on("/budget").await;
    let retries = on_b2 - (100 - first_on_b1);
    assert!(first_on_b1 >= 30, "{first_on_b1}");
    // 20% of 100 requests: about 20 retries; without a budget it would be every failure.
    assert!((15..=21).contains(&retries), "retries {retries}");
    assert_eq!(client_503, first_on_b1 - retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_returning_backend() {
    let b1 = BackendProc::start("b1").await;
    let b2 = BackendProc::start("b2").await;
    let health = "[upstreams.api.health]\ninterval_ms = 50\ntimeout_ms = 200\nrise = 1\nfall = 1\n";
    let sluice = Sluice::start(format!(
        "{}{health}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nslow_start_ms = 3000",
            &[member(b1.addr), member(b2.addr)]
        ),
        route_all("api")
    ))
    .await;
    b2.control("health", "status=503").await;
    sluice
        .wait_log(
            &["left rotation", &b2.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    b2.control("health", "status=200").await;
    sluice
        .wait_log(
            &["back in rotation", &b2.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    let back = Instant::now();
    let c = client(None);
    let share = |from: f64, to: f64| {
        let c = c.clone();
        let url = sluice.url("/ramp");
        async move {
            while back.elapsed().as_secs_f64() < from {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let (mut n, mut on_b2) = (0, 0);
            while back.elapsed().as_secs_f64() < to {
                let r = c.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                n += 1;
                if backend_of(&r) == "b2" {
                    on_b2 += 1;
                }
            }
            on_b2 as f64 / n as f64
        }
    };
    let early = share(0.0, 0.6).await;
    let late = share(2.1, 2.9).await;
    // Round-robin alone would give 0.5 throughout.
    assert!(early < 0.2, "early share {early}");
    assert!(late > early + 0.15, "early {early}, late {late}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_timeout_stops_retrying_after_its_deadline() {
    let h1 = HangingServer::start().await;
    let h2 = HangingServer::start().await;
    let b1 = BackendProc::start("b1").await;
    let members = [member(h1.addr), member(h2.addr), member(b1.addr)];
    let settings = "strategy = \"round_robin\"\nread_timeout_ms = 300\nmax_fails = 0";
    // Without a deadline: two read timeouts, then b1 answers.
    let patient = Sluice::start(format!(
        "{}{}",
        pool("api", settings, &members),
        route_all("api")
    ))
    .await;
    let r = client(None).get(patient.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // With a 400 ms deadline: the second timeout ends after it, so the 504 is final.
    let hasty = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            &format!("{settings}\nretry_timeout_ms = 400"),
            &members
        ),
        route_all("api")
    ))
    .await;
    let r = client(None).get(hasty.url("/slow")).send().await.unwrap();
    assert_eq!(r.status(), 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_configured_initially_unhealthy_wait_for_rise_probes() {
    let b1 = BackendProc::start("b1").await;
    b1.control("health", "status=503").await;
    let health =
        "[upstreams.api.health]\ninterval_ms = 100\nrise = 2\nfall = 1\ninitial = \"unhealthy\"\n";
    let sluice = Sluice::start(format!(
        "{}{health}{}",
        pool("api", "", &[member(b1.addr)]),
        route_all("api")
    ))
    .await;
    let c = client(None);
    assert_eq!(c.get(sluice.url("/i")).send().await.unwrap().status(), 503);
    b1.control("health", "status=200").await;
    let line = sluice
        .wait_log(
            &["back in rotation", &b1.addr.to_string()],
            Duration::from_secs(3),
        )
        .await;
    assert!(line.contains("successes=2"), "{line}");
    assert_eq!(c.get(sluice.url("/i")).send().await.unwrap().status(), 200);
    assert_eq!(
        b1.served_on("/i").await,
        1,
        "nothing reached it before it was healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_retried_once_response_bytes_reached_the_client() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers headers and 5 of 100 promised bytes, then hangs up.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let partial = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nx-backend-id: partial\r\n\r\nhello",
                )
                .await;
            let _ = s.flush().await;
        }
    });
    let b1 = BackendProc::start("b1").await;
    let sluice = Sluice::start(format!(
        "{}{}",
        pool(
            "api",
            "strategy = \"round_robin\"\nmax_fails = 0\nnext_upstream = [\"error\", \"timeout\"]",
            &[member(partial), member(b1.addr)]
        ),
        route_all("api")
    ))
    .await;
    let r = client(None).get(sluice.url("/half")).send().await.unwrap();
    // The headers went out: the client sees the partial response fail, not a replay elsewhere.
    assert_eq!(backend_of(&r), "partial");
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must not look complete"
    );
    assert_eq!(b1.served_on("/half").await, 0);
    server.abort();
}
