//! Distribution for every strategy, counted from what each backend itself served.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use support::*;

async fn pool_with(strategy: &str, weights: &[Option<u32>]) -> (Vec<Backend>, Sluice) {
    let bs = backends(weights.len()).await;
    let addrs: Vec<_> = bs.iter().zip(weights).map(|(b, w)| (b.addr, *w)).collect();
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nstrategy = \"{strategy}\"\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&addrs)
    ))
    .await;
    (bs, sluice)
}

fn counts(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
    v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact() {
    let (bs, sluice) = pool_with("round_robin", &[None, None, None]).await;
    get_n(&client(None), &sluice.url("/rr"), 300).await;
    assert_eq!(
        served(&bs, "/rr"),
        counts(&[("b1", 100), ("b2", 100), ("b3", 100)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_is_smooth_and_proportional() {
    let (bs, sluice) = pool_with("weighted", &[Some(5), Some(1), Some(1)]).await;
    let c = client(None);
    let mut order = Vec::new();
    for _ in 0..7 {
        let r = c.get(sluice.url("/w")).send().await.unwrap();
        order.push(backend_of(&r));
    }
    assert_eq!(order, ["b1", "b1", "b2", "b1", "b3", "b1", "b1"]);
    get_n(&c, &sluice.url("/w"), 693).await;
    assert_eq!(
        served(&bs, "/w"),
        counts(&[("b1", 500), ("b2", 100), ("b3", 100)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_sequential_requests_evenly() {
    let (bs, sluice) = pool_with("least_conn", &[None, None, None]).await;
    get_n(&client(None), &sluice.url("/lc"), 300).await;
    // One request at a time: every backend has 0 in flight, ties rotate.
    assert_eq!(
        served(&bs, "/lc"),
        counts(&[("b1", 100), ("b2", 100), ("b3", 100)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reaches_every_backend_by_weight() {
    let (bs, sluice) = pool_with("random", &[Some(2), Some(1), Some(1)]).await;
    get_n(&client(None), &sluice.url("/r"), 400).await;
    let s = served(&bs, "/r");
    assert_eq!(s.values().sum::<u64>(), 400);
    assert!((140..=260).contains(&s["b1"]), "{s:?}");
    assert!(s["b2"] >= 50 && s["b3"] >= 50, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_reaches_every_backend() {
    let (bs, sluice) = pool_with("p2c", &[None, None, None]).await;
    get_n(&client(None), &sluice.url("/p"), 300).await;
    let s = served(&bs, "/p");
    assert_eq!(s.values().sum::<u64>(), 300);
    assert!(s.values().all(|&n| n > 0), "{s:?}");
}

/// Source addresses 127.0.0.2 .. 127.0.0.(n+1): Linux routes all of 127/8 to loopback.
fn sources(n: u8) -> Vec<IpAddr> {
    (2..2 + n).map(|i| IpAddr::from([127, 0, 0, i])).collect()
}

async fn home_of(sluice: &Sluice, ip: IpAddr, requests: usize) -> String {
    let c = client(Some(ip));
    let mut seen = Vec::new();
    for _ in 0..requests {
        let r = c.get(sluice.url("/sticky")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        seen.push(backend_of(&r));
    }
    seen.dedup();
    assert_eq!(
        seen.len(),
        1,
        "client {ip} moved between backends: {seen:?}"
    );
    seen.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_is_sticky_and_remaps_only_the_removed_backends_clients() {
    let bs = backends(3).await;
    let all: Vec<_> = bs.iter().map(|b| (b.addr, None)).collect();
    let config = |addrs: &[(std::net::SocketAddr, Option<u32>)]| {
        format!(
            "[upstreams.ws]\nstrategy = \"ip_hash\"\n{}\n[[routes]]\nupstream = \"ws\"\n",
            backends_toml(addrs)
        )
    };
    let full = Sluice::start(config(&all)).await;
    // Same backends written without b2: what a client sees when b2 leaves the pool.
    let without_b2 = Sluice::start(config(&[all[0], all[2]])).await;

    let mut before = BTreeMap::new();
    for ip in sources(40) {
        before.insert(ip, home_of(&full, ip, 3).await);
    }
    let mut per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for b in before.values() {
        *per_backend.entry(b.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_backend.len(),
        3,
        "40 clients should reach all 3: {per_backend:?}"
    );

    for (ip, home) in &before {
        let after = home_of(&without_b2, *ip, 2).await;
        if home != "b2" {
            assert_eq!(&after, home, "{ip} was on {home} and moved to {after}");
        } else {
            assert_ne!(after, "b2");
        }
    }
}
