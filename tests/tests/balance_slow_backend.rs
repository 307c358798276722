//! least_conn and p2c steer traffic away from a backend that answers slowly.

mod support;

use std::time::Duration;

use support::*;

/// 6 concurrent clients x 40 requests over 3 backends, b3 slowed by 60 ms per request; returns
/// b3's share of the requests.
async fn slow_share(strategy: &str) -> f64 {
    let bs = backends(3).await;
    bs[2].shared.set_delay_ms(60);
    let addrs: Vec<_> = bs.iter().map(|b| (b.addr, None)).collect();
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nstrategy = \"{strategy}\"\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&addrs)
    ))
    .await;
    let url = sluice.url("/work");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client(None);
            for _ in 0..40 {
                let r = tokio::time::timeout(Duration::from_secs(10), c.get(&url).send())
                    .await
                    .expect("request timed out")
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = served(&bs, "/work");
    assert_eq!(s.values().sum::<u64>(), 240, "{s:?}");
    s["b3"] as f64 / 240.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_steers_away_from_a_slow_backend() {
    let share = slow_share("least_conn").await;
    // Round-robin would give it a third.
    assert!(share < 0.15, "slow backend got {:.0}%", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_steers_away_from_a_slow_backend() {
    let share = slow_share("p2c").await;
    assert!(share < 0.15, "slow backend got {:.0}%", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_does_not_steer_which_is_why_the_others_exist() {
    let share = slow_share("round_robin").await;
    assert!((0.30..0.37).contains(&share), "{share}");
}
