//! Connect failures are retried on another backend of the pool, at most `retries` times.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

/// An address where nothing listens (a port that was free a moment ago).
/// The statuses of `n` GETs of `url`, sorted (round-robin order does not matter).
async fn sorted_statuses(url: &str, n: usize) -> Vec<u16> {
    let c = client(None);
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(c.get(url).send().await.unwrap().status().as_u16());
    }
    statuses.sort();
    statuses
}

fn dead_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_skipped_with_no_client_error() {
    let bs = backends(2).await;
    let dead = dead_addr();
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nstrategy = \"round_robin\"\nretries = 2\nconnect_timeout_ms = 1000\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None), (dead, None), (bs[1].addr, None)])
    ))
    .await;
    let c = client(None);
    for m in ["GET", "POST", "PUT"] {
        for i in 0..30 {
            let r = c
                .request(m.parse().unwrap(), sluice.url("/f"))
                .body("payload")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{m} request {i}");
        }
    }
    let s = served(&bs, "/f");
    assert_eq!(s["b1"] + s["b2"], 90, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_retries_run_out_the_client_gets_502_quickly() {
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nretries = 1\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[
            (dead_addr(), None),
            (dead_addr(), None),
            (dead_addr(), None)
        ])
    ))
    .await;
    let t = Instant::now();
    let r = client(None).get(sluice.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_zero_means_one_attempt() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nstrategy = \"round_robin\"\nretries = 0\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(dead_addr(), None), (bs[0].addr, None)])
    ))
    .await;
    let statuses = sorted_statuses(&sluice.url("/z"), 4).await;
    assert_eq!(statuses, [200, 200, 502, 502]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_slower_than_read_timeout_gives_504() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nread_timeout_ms = 200\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let c = client(None);
    let t = Instant::now();
    let r = c.get(sluice.url("/delay/3000")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A fast request on the same pool still works.
    let r = c.get(sluice.url("/delay/10")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A client that hangs up while its request is in flight is the client's doing, not the
/// backend's: it must never count toward passive ejection (a load generator stopping 64
/// connections at once used to eject the only backend for `fail_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_hanging_up_never_eject_a_backend() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nmax_fails = 2\nfail_timeout_ms = 30000\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..6 {
        let r = impatient.get(sluice.url("/delay/1000")).send().await;
        assert!(r.is_err(), "the client should have given up first: {r:?}");
    }
    let r = client(None).get(sluice.url("/after")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the backend was ejected by client hang-ups"
    );
    assert_eq!(sluice.count_log(&["backend_ejected"]), 0);
}

/// nginx's `invalid_header`: a malformed response head is retried only when listed (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_head_is_retried_only_with_invalid_header() {
    let garbage = RawServer::start(b"HTTP/1.1 abc what\r\n\x01\x02\r\n\r\n").await;
    let bs = backends(1).await;
    for (next, want) in [
        ("[\"error\", \"timeout\"]", [200, 200, 502, 502]),
        (
            "[\"error\", \"timeout\", \"invalid_header\"]",
            [200, 200, 200, 200],
        ),
    ] {
        let sluice = Sluice::start(format!(
            "[upstreams.api]\nstrategy = \"round_robin\"\nmax_fails = 0\nnext_upstream = {next}\n{}\n[[routes]]\nupstream = \"api\"\n",
            backends_toml(&[(garbage.addr, None), (bs[0].addr, None)])
        ))
        .await;
        let statuses = sorted_statuses(&sluice.url("/h"), 4).await;
        assert_eq!(statuses, want, "next_upstream = {next}");
    }
}
