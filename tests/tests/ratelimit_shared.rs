//! Limits shared by several Sluice processes through Redis (one node and a 3-master Cluster), and
//! what happens when Redis dies mid-stream under each failure policy.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

fn config(backend: SocketAddr, redis: &str, rate_limit: &str) -> String {
    format!(
        "[upstreams.api]\nbackends = [{{ addr = \"{backend}\" }}]\n[[routes]]\nupstream = \"api\"\n{redis}[rate_limit]\n{rate_limit}"
    )
}

/// 30 requests spread round-robin over `sluices`; how many were allowed.
async fn combined_allowed(sluices: &[Sluice], path: &str) -> usize {
    let c = client(None);
    let mut ok = 0;
    for i in 0..30 {
        let r = c
            .get(sluices[i % sluices.len()].url(path))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_enforce_one_combined_limit() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    for algo in RATE_LIMIT_ALGORITHMS {
        let body = config(
            bs[0].addr,
            &format!("[redis]\nurl = \"{}\"\n", redis.url()),
            &format!("[rate_limit.tiers.anonymous]\nlimit = 10\nalgorithm = \"{algo}\"\n"),
        );
        let sluices = vec![
            Sluice::start(body.clone()).await,
            Sluice::start(body.clone()).await,
            Sluice::start(body).await,
        ];
        let path = format!("/shared-{algo}");
        assert_eq!(combined_allowed(&sluices, &path).await, 10, "{algo}");
        let mut conn = redis.client().await;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_enforce_one_combined_limit() {
    let cluster = RedisCluster::start().await;
    let bs = backends(1).await;
    let body = config(
        bs[0].addr,
        &format!("[redis]\ncluster = {}\ncommand_timeout_ms = 500\n", cluster.urls_toml()),
        "[rate_limit.tiers.anonymous]\nlimit = 10\n[rate_limit.tiers.premium]\nlimit = 7\nalgorithm = \"gcra\"\n[[rate_limit.api_keys]]\nkey = \"k1\"\nclient = \"one\"\n[[rate_limit.api_keys]]\nkey = \"k2\"\nclient = \"two\"\n",
    );
    let sluices = vec![
        Sluice::start(body.clone()).await,
        Sluice::start(body.clone()).await,
        Sluice::start(body).await,
    ];
    assert_eq!(combined_allowed(&sluices, "/c").await, 10);
    // Different clients hash to different slots (and nodes): each has its own combined limit.
    let c = client(None);
    for key in ["k1", "k2"] {
        let mut ok = 0;
        for i in 0..12 {
            let r = c
                .get(sluices[i % 3].url("/c"))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok, 7, "{key}");
    }
}

/// Kill Redis mid-stream under `policy`; returns the statuses seen while it was down.
/// The backends come back too, to stay alive while the caller uses Sluice.
async fn redis_outage(policy: &str, limit: u32) -> (Vec<u16>, Sluice, RedisServer, Vec<Backend>) {
    let mut redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(config(
        bs[0].addr,
        &format!(
            "[redis]\nurl = \"{}\"\ncommand_timeout_ms = 50\nbreaker_failures = 3\nbreaker_cooldown_ms = 500\n",
            redis.url()
        ),
        &format!("on_redis_error = \"{policy}\"\ninstances = 2\n[rate_limit.tiers.anonymous]\nlimit = {limit}\n"),
    ))
    .await;
    let c = client(None);
    for _ in 0..3 {
        assert_eq!(c.get(sluice.url("/o")).send().await.unwrap().status(), 200);
    }
    redis.kill();
    let mut seen = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let t = Instant::now();
        let r = c.get(sluice.url("/o")).send().await.unwrap();
        slowest = slowest.max(t.elapsed());
        seen.push(r.status().as_u16());
    }
    // Bounded by the 50 ms command timeout (and the breaker after 3 failures), never hanging.
    assert!(
        slowest < Duration::from_millis(600),
        "{policy}: slowest request {slowest:?}"
    );
    let _ = sluice
        .wait_log(&["redis_breaker_open"], Duration::from_secs(2))
        .await;
    (seen, sluice, redis, bs)
}

async fn redis_backed_again(sluice: &Sluice, redis: &mut RedisServer) {
    redis.restart().await;
    let c = client(None);
    let mut conn = redis.client().await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(sluice.url("/o")).send().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if r.status() == 200 && !keys.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "Redis-backed limiting did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_local_policy_falls_back_to_a_divided_local_limit() {
    let (seen, sluice, mut redis, _bs) = redis_outage("local", 10).await;
    // 10 shared by 2 instances: this one allows 5 on its own while Redis is away.
    let ok = seen.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok, 5, "{seen:?}");
    assert!(seen.iter().all(|&s| s == 200 || s == 429), "{seen:?}");
    redis_backed_again(&sluice, &mut redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_open_policy_allows_everything() {
    let (seen, sluice, mut redis, _bs) = redis_outage("open", 10).await;
    assert!(seen.iter().all(|&s| s == 200), "{seen:?}");
    redis_backed_again(&sluice, &mut redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_closed_policy_rejects_quickly() {
    let (seen, sluice, mut redis, _bs) = redis_outage("closed", 1000).await;
    assert!(seen.iter().all(|&s| s == 503), "{seen:?}");
    redis_backed_again(&sluice, &mut redis).await;
}

/// Calls of EVALSHA that Redis has served so far.
async fn evalsha_calls(redis: &RedisServer) -> u64 {
    let mut c = redis.client().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_cut_redis_calls_on_large_limits_and_keep_the_combined_limit() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    // lease_batch = 2: limits of 200 and more are leased two requests at a time while far from
    // the limit (at least 2 x 3 instances left), and checked one by one near it.
    let body = config(
        bs[0].addr,
        &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        "instances = 3\nlease_batch = 2\n[rate_limit.tiers.anonymous]\nlimit = 200\nalgorithm = \"fixed_window\"\nwindow_ms = 600000\n",
    );
    let sluices = [
        Sluice::start(body.clone()).await,
        Sluice::start(body.clone()).await,
        Sluice::start(body).await,
    ];
    let before = evalsha_calls(&redis).await;
    let c = client(None);
    let mut allowed = 0;
    for i in 0..240 {
        let s = &sluices[(i / 2) % 3];
        let r = c.get(s.url("/l")).send().await.unwrap();
        match r.status().as_u16() {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    let calls = evalsha_calls(&redis).await - before;
    // Requests counted ahead and not used before their lease expired are lost, never granted
    // twice: at most one per instance here.
    assert!(
        (197..=200).contains(&allowed),
        "allowed {allowed} of a combined limit of 200"
    );
    assert!(
        calls < 170,
        "{calls} Redis checks for 240 requests: leases were not used"
    );
    // Small limits are never leased: the default tiers stay exact per request (tested above).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_redis_calls_and_stay_exact() {
    // Checks made while another is in flight go to Redis together, in one EVALSHA of the batch
    // script: fewer calls than requests, and still exactly the limit, for each algorithm that
    // counts requests one by one (GCRA's burst is its limit: 100 at once, then one per 36 s).
    use futures_util::stream::{self, StreamExt};
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    for algo in RATE_LIMIT_ALGORITHMS {
        let body = config(
            bs[0].addr,
            &format!("[redis]\nurl = \"{}\"\n", redis.url()),
            &format!(
                "[rate_limit.tiers.anonymous]\nlimit = 100\nwindow_ms = 3600000\nalgorithm = \"{algo}\"\n"
            ),
        );
        let sluice = Sluice::start(body).await;
        let c = client(None);
        let before = evalsha_calls(&redis).await;
        let path = format!("/batch-{algo}");
        let statuses: Vec<u16> = stream::iter(0..300)
            .map(|_| {
                let c = c.clone();
                let url = sluice.url(&path);
                async move { c.get(url).send().await.unwrap().status().as_u16() }
            })
            .buffer_unordered(48)
            .collect()
            .await;
        let calls = evalsha_calls(&redis).await - before;
        let allowed = statuses.iter().filter(|s| **s == 200).count();
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{algo}: {statuses:?}"
        );
        assert_eq!(allowed, 100, "{algo}: allowed {allowed} of a limit of 100");
        assert!(
            calls < 250,
            "{algo}: {calls} Redis calls for 300 concurrent requests: nothing was coalesced"
        );
        let mut conn = redis.client().await;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}
