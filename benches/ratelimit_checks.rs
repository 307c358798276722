//! Rate-limit checks per second through Sluice's `RateLimiter`, on Redis (`REDIS_URL`) and on the
//! embedded store. Run by `benches/ratelimit.sh`; prints one JSON line per store.
//!
//! `CONCURRENCY` (default 64) tasks check distinct keys (so no limit is reached) for `SECONDS`
//! (default 5) each.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::{load_str, Config};
use sluice::ratelimit::{Identity, RateLimiter};

fn config(redis: Option<&str>) -> Config {
    let redis = redis.map_or(String::new(), |u| {
        format!("[redis]\nurl = \"{u}\"\ncommand_timeout_ms = 1000\n")
    });
    let text = format!(
        "[upstreams.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n[[routes]]\nupstream = \"a\"\n{redis}[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 1000000000\n"
    );
    load_str(&text, Path::new("bench.toml"), Path::new(".")).expect("bench config")
}

async fn run(store: &str, redis: Option<&str>, concurrency: usize, seconds: u64) {
    let cfg = config(redis);
    let spec = Arc::new(cfg.rate_limit.clone().unwrap());
    let metrics = sluice::metrics::Metrics::new().expect("metrics");
    let limiter = RateLimiter::new(cfg.redis.as_ref(), &metrics).expect("limiter");
    let policy = spec.tiers["anonymous"];
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // Warm up (connect, load the script).
    let warm = Identity {
        key: "ip:warm".into(),
        tier: "anonymous".into(),
    };
    limiter
        .check(
            &sluice::ratelimit::key("bench", &warm, &policy, None),
            &policy,
            &spec,
        )
        .await;
    let want_redis = redis.is_some();
    let run_for = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (limiter, spec, done, count, failed) = (
            limiter.clone(),
            spec.clone(),
            done.clone(),
            count.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            // The embedded store never awaits: check a clock deadline (not only the flag, whose
            // timer needs a free worker) and yield now and then so the runtime stays live.
            while !done.load(Ordering::Relaxed) && start.elapsed() < run_for {
                if i % 256 == 255 {
                    tokio::task::yield_now().await;
                }
                let id = Identity {
                    key: format!("ip:10.{t}.{}", i % 1000),
                    tier: "anonymous".into(),
                };
                let key = sluice::ratelimit::key("bench", &id, &policy, None);
                let (d, source) = limiter.check(&key, &policy, &spec).await;
                if !d.allowed || (want_redis && source != sluice::ratelimit::Source::Redis) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    println!(
        "{{\"store\":\"{store}\",\"concurrency\":{concurrency},\"seconds\":{elapsed:.2},\"checks\":{n},\"checks_per_sec\":{:.0},\"not_from_store_or_denied\":{}}}",
        n as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
}

fn main() {
    let concurrency = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let seconds = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(url) = std::env::var("REDIS_URL") {
            run("redis", Some(&url), concurrency, seconds).await;
        }
    });
    // The embedded store, without Redis.
    std::env::remove_var("REDIS_URL");
    rt.block_on(run("embedded", None, concurrency, seconds));
}
