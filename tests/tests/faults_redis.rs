//! Redis dying and coming back under load: rate limiting (each `on_redis_error` policy) and the
//! cache degrade as configured with no dropped connection and latency bounded by the command
//! timeout, and the circuit breaker closes on the first probe once Redis is back.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// What a load of concurrent GET loops saw: statuses, transport errors, the slowest answer.
#[derive(Default, Debug)]
struct Seen {
    statuses: BTreeMap<u16, u64>,
    errors: Vec<String>,
    slowest: Duration,
}

/// `clients` loops of GETs to `url` until the returned flag is set; the joined result.
fn load(url: String, clients: usize) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Seen>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
            tokio::spawn(async move {
                let c = client(None);
                while !stop.load(Relaxed) {
                    let t = Instant::now();
                    let r = c.get(&url).send().await;
                    let r = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            r.bytes().await.map(|_| s)
                        }
                        Err(e) => Err(e),
                    };
                    let took = t.elapsed();
                    let mut seen = seen.lock().unwrap();
                    seen.slowest = seen.slowest.max(took);
                    match r {
                        Ok(s) => *seen.statuses.entry(s).or_default() += 1,
                        Err(e) => seen.errors.push(format!("{e:?}")),
                    }
                }
            })
        })
        .collect();
    let joined = tokio::spawn(async move {
        for t in tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
    });
    (stop, joined)
}

/// Kill Redis under load, keep the load on for a while, restart it, keep going, stop.
async fn outage_under_load(url: String, redis: &mut RedisServer) -> Seen {
    let (stop, joined) = load(url, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Relaxed);
    joined.await.unwrap()
}

fn redis_section(redis: &RedisServer) -> String {
    format!(
        "[redis]\nurl = \"{}\"\ncommand_timeout_ms = 50\nbreaker_failures = 3\nbreaker_cooldown_ms = 500\n",
        redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_survives_redis_dying_under_load_with_every_policy() {
    for (policy, allowed) in [
        ("local", &[200, 429][..]),
        ("open", &[200][..]),
        ("closed", &[200, 503][..]),
    ] {
        let mut redis = RedisServer::start().await;
        let bs = backends(1).await;
        let s = Sluice::start(format!(
            "{}{}[rate_limit]\non_redis_error = \"{policy}\"\n[rate_limit.tiers.anonymous]\nlimit = 1000000\n",
            one_pool(&[bs[0].addr]),
            redis_section(&redis)
        ))
        .await;
        let seen = outage_under_load(s.url("/p"), &mut redis).await;
        assert!(
            seen.errors.is_empty(),
            "{policy}: dropped: {:?}",
            seen.errors
        );
        assert!(
            seen.statuses.keys().all(|s| allowed.contains(s)),
            "{policy}: {:?}",
            seen.statuses
        );
        assert!(
            seen.slowest < Duration::from_millis(1500),
            "{policy}: slowest {:?} (command timeout 50 ms)",
            seen.slowest
        );
        // Back on Redis after the outage.
        let r = client(None).get(s.url("/p")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_redis_dying_under_load() {
    let mut redis = RedisServer::start().await;
    let bs = backends(1).await;
    let s = Sluice::start(format!(
        "{}[cache]\ncommand_timeout_ms = 50\nttl_mode = \"override\"\n[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\n",
        redis_section(&redis),
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let seen = outage_under_load(s.url("/cache/60"), &mut redis).await;
    assert!(seen.errors.is_empty(), "dropped: {:?}", seen.errors);
    assert_eq!(
        seen.statuses.keys().collect::<Vec<_>>(),
        [&200],
        "{:?}",
        seen.statuses
    );
    assert!(
        seen.slowest < Duration::from_millis(1500),
        "{:?}",
        seen.slowest
    );
}

/// Issue 12, defect 8: after Redis came back, the breaker's first probe was reported to fail on
/// the dead connection (the connection manager reconnects only after a failed command), keeping
/// the breaker open a second cool-down: with `on_redis_error = "closed"`, 503s while Redis was
/// already back. Sluice now retries a command once when the connection itself broke, within the
/// same timeout. With redis-rs 1.8 on this machine the probe succeeded even without that retry,
/// so this test guards the behaviour rather than reproducing the report; what did fail before is
/// asserted too: the closing is logged and both transitions are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_closes_on_the_first_probe_after_redis_returns() {
    let mut redis = RedisServer::start().await;
    let bs = backends(1).await;
    let s = Sluice::start(format!(
        "{}[redis]\nurl = \"{}\"\ncommand_timeout_ms = 50\nbreaker_failures = 2\nbreaker_cooldown_ms = 1000\n[rate_limit]\non_redis_error = \"closed\"\n[rate_limit.tiers.anonymous]\nlimit = 1000\n",
        one_pool(&[bs[0].addr]),
        redis.url()
    ))
    .await;
    let c = client(None);
    assert_eq!(c.get(s.url("/p")).send().await.unwrap().status(), 200);
    redis.kill();
    for _ in 0..3 {
        assert_eq!(c.get(s.url("/p")).send().await.unwrap().status(), 503);
    }
    s.wait_log(&["redis_breaker_open"], Duration::from_secs(5))
        .await;
    // A probe while Redis is still down: the connection manager keeps its failed reconnect,
    // which the next command (the probe after Redis returns) used to get as its answer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.get(s.url("/p")).send().await.unwrap().status(), 503);
    redis.restart().await;
    // Past the cool-down, the next request is the probe: it must find Redis back.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = c.get(s.url("/p")).send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the first probe after Redis returned failed"
    );
    s.wait_log(&["redis_breaker_closed"], Duration::from_secs(2))
        .await;
    let metrics = s
        .metrics_when(|m| m.contains("component=\"ratelimit\",to=\"closed\"} 1"))
        .await;
    assert!(
        metrics.contains(
            "sluice_redis_breaker_transitions_total{component=\"ratelimit\",to=\"open\"} 1"
        ),
        "{metrics}"
    );
    // With Redis configured (the cache on it too), Prometheus' linter accepts the exposition.
    Sluice::promtool_check(&metrics);
}
