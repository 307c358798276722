//! Faults on the cache path: with a Redis cache store, concurrent misses on one key make Pingora
//! disable caching for some of them (cache lock timeout, retry limit) while Sluice's hooks still
//! run; every request must still get an answer, with Redis up and with Redis gone.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

/// `n` GETs of `url`, `concurrency` at a time, each on a fresh connection; the statuses seen,
/// and the requests that got no HTTP answer at all (connection closed, reset, timed out).
async fn hammer(url: &str, n: usize, concurrency: usize) -> (BTreeMap<u16, usize>, Vec<String>) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .no_proxy()
        .build()
        .unwrap();
    let mut statuses = BTreeMap::new();
    let mut lost = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(concurrency);
        left -= batch;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (c, url) = (c.clone(), url.to_owned());
            set.spawn(async move {
                match c.get(&url).send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        r.bytes().await.map(|_| s).map_err(|e| format!("{e:?}"))
                    }
                    Err(e) => Err(format!("{e:?}")),
                }
            });
        }
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(s) => *statuses.entry(s).or_default() += 1,
                Err(e) => lost.push(e),
            }
        }
    }
    (statuses, lost)
}

fn config(b: &Backend, redis: &str) -> String {
    format!(
        "[redis]\nurl = \"{redis}\"\ncommand_timeout_ms = 50\n[cache]\nlock_timeout_ms = 200\n\
         [upstreams.api]\n{}\nmax_fails = 0\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\ncache_ttl_mode = \"override\"\n",
        backends_toml(&[(b.addr, None)])
    )
}

/// Regression (issue 12, defect 1): `proxy_upstream_filter` asked pingora-cache whether the
/// request held the cache lock after Pingora had disabled caching for it; pingora-cache unwraps
/// the missing state, the request task panicked, and the client's connection closed with no
/// answer (965 of 1000 lost on `06a5769`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_errors_under_concurrency_are_all_answered_with_redis_up() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], &redis.url())).await;
    let (statuses, lost) = hammer(&sluice.url("/status/503"), 300, 32).await;
    assert!(
        lost.is_empty(),
        "{} lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert_eq!(statuses.get(&503), Some(&300), "{statuses:?}");
    assert!(
        !sluice.log().contains("panicked"),
        "a request handler panicked:\n{}",
        sluice.log()
    );
}

/// The same with Redis gone: every cache call fails within `command_timeout_ms`, the cache
/// degrades to a pass-through, and no connection is dropped (1,733 of 2,000 lost on `06a5769`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacheable_misses_are_all_answered_with_redis_down() {
    let mut redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], &redis.url())).await;
    redis.kill();
    let (statuses, lost) = hammer(&sluice.url("/cache/60"), 300, 32).await;
    assert!(
        lost.is_empty(),
        "{} lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert_eq!(statuses.get(&200), Some(&300), "{statuses:?}");
    assert!(!sluice.log().contains("panicked"), "{}", sluice.log());
}
