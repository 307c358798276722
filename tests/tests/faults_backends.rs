//! Backends failing under load: one killed with SIGKILL, one frozen with SIGSTOP. Idempotent
//! requests are retried on the others and no client sees a failure.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_a_frozen_backend_fail_no_idempotent_request() {
    let b1 = BackendProc::start("b1").await;
    let mut b2 = BackendProc::start("b2").await;
    let b3 = BackendProc::start("b3").await;
    let s = Sluice::start(format!(
        "[upstreams.api]\n{}\nread_timeout_ms = 500\nconnect_timeout_ms = 500\nretries = 2\n{}",
        backends_toml(&[(b1.addr, None), (b2.addr, None), (b3.addr, None)]),
        route_all("api")
    ))
    .await;
    let load = SteadyLoad::start(s.url("/ping"), 8);
    load.wait_more(200, "no traffic before the faults").await;
    b2.kill();
    load.wait_more(200, "traffic stopped after SIGKILL").await;
    b3.signal("STOP");
    load.wait_more(300, "traffic stopped after SIGSTOP").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    load.wait_more(100, "traffic stopped while b3 is frozen")
        .await;
    let (ok, failures) = load.stop().await;
    b3.signal("CONT");
    assert!(
        failures.is_empty(),
        "{} of {ok} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // b1 is never ejected: it is the last one standing.
    assert_eq!(
        s.count_log(&["backend_ejected", &b1.addr.to_string()]),
        0,
        "{}",
        s.log()
    );
}
