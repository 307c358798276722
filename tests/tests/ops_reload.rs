//! Live reload: by file change, SIGHUP and `POST /reload`, under a steady stream of requests and
//! open WebSockets; invalid files and restart-only changes keep the old config serving.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "reload-test-token";

/// A weighted pool over `bs` with `weights`, and one route.
fn weighted(bs: &[Backend], weights: &[u32]) -> String {
    let members: Vec<_> = bs
        .iter()
        .zip(weights)
        .map(|(b, w)| (b.addr, Some(*w)))
        .collect();
    format!(
        "[upstreams.api]\nstrategy = \"weighted\"\n{}\n[[routes]]\nname = \"all\"\nupstream = \"api\"\n",
        backends_toml(&members)
    )
}

async fn generation(sluice: &Sluice) -> u64 {
    let v = sluice.admin_json("/readyz").await;
    v["generation"].as_u64().unwrap()
}

/// Poll until the config generation reaches `want`.
async fn wait_generation(sluice: &Sluice, want: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let g = generation(sluice).await;
        if g >= want {
            assert_eq!(g, want, "more reloads than triggers");
            return;
        }
        assert!(
            Instant::now() < end,
            "generation {g}, waited for {want}:\n{}",
            sluice.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Share of each backend over `n` requests.
async fn shares(c: &reqwest::Client, sluice: &Sluice, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let r = c.get(sluice.url("/share")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        *m.entry(backend_of(&r)).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_lose_nothing_and_apply_new_weights() {
    let bs = backends(3).await;
    let sluice = Sluice::with_config(weighted(&bs, &[1, 1, 1]))
        .admin_token(TOKEN)
        .start()
        .await;
    let c = client(None);

    // Open WebSockets that must survive every reload.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sluice.addr))
            .await
            .expect("websocket through sluice");
        assert_eq!(resp.status(), 101);
        let hello = ws.next().await.unwrap().unwrap();
        assert!(hello.to_text().unwrap().starts_with("hello from "));
        sockets.push(ws);
    }

    // A steady stream of requests from 4 clients while reloading.
    let load = SteadyLoad::start(sluice.url("/load"), 4);

    // Twenty reloads, by every trigger, alternating weights.
    for i in 0..20u64 {
        let w: [u32; 3] = if i % 2 == 0 { [5, 1, 1] } else { [1, 1, 5] };
        sluice.write_body(&weighted(&bs, &w));
        match i % 3 {
            0 => {} // the file watch picks it up
            1 => sluice.signal("HUP"),
            _ => {
                let r = c
                    .post(sluice.admin_url("/reload"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
            }
        }
        wait_generation(&sluice, 2 + i).await;
        // The file watch must not apply the same content again afterwards.
    }
    let (ok, failures) = load.stop().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(ok > 100, "too little load: {ok}");

    // The last reload (i = 19) set weights 1,1,5: b3 gets 5 of every 7.
    let s = shares(&c, &sluice, 70).await;
    assert_eq!(s.get("b3"), Some(&50), "{s:?}");
    assert_eq!(s.get("b1"), Some(&10), "{s:?}");

    // Every WebSocket opened before the reloads still echoes.
    for ws in &mut sockets {
        ws.send(Message::Text("still here".into())).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(m.to_text().unwrap(), "still here");
    }
    // And no extra reload was applied by the watcher after the last trigger.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(generation(&sluice).await, 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_old_config_serving_and_says_why() {
    let bs = backends(2).await;
    let sluice = Sluice::with_config(weighted(&bs, &[1, 1]))
        .admin_token(TOKEN)
        .start()
        .await;
    let c = client(None);
    sluice.write_body(&format!(
        "{}\n[upstreams.extra]\nstrategy = \"fastest\"\nbackends = []\n",
        weighted(&bs, &[0, 1])
    ));
    // The watcher finds the bad file first: it logs every problem and changes nothing.
    sluice
        .wait_log(
            &["config_reload_failed", "trigger=\"file\""],
            Duration::from_secs(5),
        )
        .await;
    let (status, v) = sluice.admin_post("/reload", TOKEN, None).await;
    assert_eq!(status, 422);
    assert_eq!(v["error"], "invalid_config");
    let keys: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    for k in [
        "upstreams.api.backends[0].weight",
        "upstreams.extra.strategy",
        "upstreams.extra.backends",
    ] {
        assert!(keys.contains(&k), "{k} not reported: {v:#}");
    }
    assert!(v["problems"][0]["line"].as_u64().is_some(), "{v:#}");
    // Each problem was logged once, by the watcher; the admin call re-read the same file.
    assert_eq!(
        sluice.count_log(&[
            "config_reload_failed",
            "trigger=\"file\"",
            "upstreams.extra.strategy"
        ]),
        1
    );
    assert_eq!(generation(&sluice).await, 1);
    get_n(&c, &sluice.url("/still"), 10).await;
    sluice
        .metrics_when(|m| m.contains("sluice_config_reloads_total{result=\"invalid\"} 2"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_only_change_is_refused_by_name() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(weighted(&bs, &[1]))
        .admin_token(TOKEN)
        .start()
        .await;
    let c = client(None);
    // Rewrite the whole file with other listeners and thread count.
    let other = format!("127.0.0.1:{}", free_port());
    let head = sluice
        .head
        .replace(&sluice.addr.to_string(), &other)
        .replace("threads = 2", "threads = 3");
    let tmp = sluice.config_path().with_extension("tmp");
    std::fs::write(&tmp, format!("{head}\n{}", weighted(&bs, &[1]))).unwrap();
    std::fs::rename(&tmp, sluice.config_path()).unwrap();
    let (status, v) = sluice.admin_post("/reload", TOKEN, None).await;
    assert_eq!(status, 422);
    assert_eq!(v["error"], "restart_required");
    assert_eq!(
        v["keys"],
        serde_json::json!(["server.listen", "server.threads"])
    );
    assert_eq!(generation(&sluice).await, 1);
    get_n(&c, &sluice.url("/still"), 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes() {
    let bs = backends(2).await;
    let one = |b: &Backend| {
        format!(
            "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
            backends_toml(&[(b.addr, None)])
        )
    };
    let sluice = Sluice::with_config(one(&bs[0])).start().await;
    let c = client(None);
    let r = c.get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(backend_of(&r), "b1");
    // Turn the watcher off in the new file, so only the signal can apply it.
    sluice.write_body(&format!("[reload]\nwatch = false\n{}", one(&bs[1])));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // `watch = false` only takes effect once loaded: the watcher may have applied this file.
    let g = generation(&sluice).await;
    if g == 1 {
        sluice.signal("HUP");
        wait_generation(&sluice, 2).await;
    }
    let r = c.get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(backend_of(&r), "b2");
    sluice.write_body(&format!("[reload]\nwatch = false\n{}", one(&bs[0])));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let g2 = generation(&sluice).await;
    assert_eq!(
        g2, 2,
        "the watch is off: a file change alone must not reload"
    );
    sluice.signal("HUP");
    wait_generation(&sluice, 3).await;
    let r = c.get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(backend_of(&r), "b1");
}

/// `available` and `in_flight` of every backend in `/status`, by backend address.
async fn backend_status(sluice: &Sluice) -> BTreeMap<String, (bool, u64)> {
    let v = sluice.admin_json("/status").await;
    v["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backend"].as_str().unwrap().to_owned(),
                (
                    b["available"].as_bool().unwrap(),
                    b["in_flight"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_verdicts_and_least_conn_counts_survive_a_reload() {
    let bs = backends(3).await;
    let pool = |members: &[&Backend]| {
        let m: Vec<_> = members.iter().map(|b| (b.addr, None)).collect();
        format!(
            "[upstreams.api]\nstrategy = \"least_conn\"\n{}\n[upstreams.api.health]\ninterval_ms = 100\nfall = 1\nrise = 50\n[[routes]]\nupstream = \"api\"\n",
            backends_toml(&m)
        )
    };
    let sluice = Sluice::with_config(pool(&[&bs[0], &bs[1]]))
        .admin_token(TOKEN)
        .start()
        .await;
    let c = client(None);
    // b2 fails its probes and leaves rotation; it needs 50 good probes (5 s) to come back.
    bs[1].shared.set_health(503);
    let end = Instant::now() + Duration::from_secs(5);
    while backend_status(&sluice).await[&bs[1].addr.to_string()].0 {
        assert!(Instant::now() < end, "b2 never left rotation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bs[1].shared.set_health(200);
    // An open WebSocket holds one unit of least_conn load on b1 (the only one in rotation).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", sluice.addr))
        .await
        .unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    assert_eq!(hello.to_text().unwrap(), "hello from b1");

    // Reload: b3 joins, b1 and b2 stay.
    sluice.write_body(&pool(&[&bs[0], &bs[1], &bs[2]]));
    assert_eq!(sluice.admin_post("/reload", TOKEN, None).await.0, 200);
    let s = backend_status(&sluice).await;
    assert_eq!(s.len(), 3);
    assert_eq!(
        s[&bs[0].addr.to_string()],
        (true, 1),
        "b1 lost its WebSocket count: {s:?}"
    );
    assert!(
        !s[&bs[1].addr.to_string()].0,
        "b2's health verdict was reset: {s:?}"
    );
    // least_conn now prefers the new, idle b3 over b1 (which holds the WebSocket); b2 stays out.
    let r = c.get(sluice.url("/x")).send().await.unwrap();
    assert_eq!(backend_of(&r), "b3");
    ws.send(Message::Text("after reload".into())).await.unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.to_text().unwrap(), "after reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_change_live() {
    let bs = backends(1).await;
    let limited = |limit: u32| {
        format!(
            "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = {limit}\nalgorithm = \"fixed_window\"\n",
            backends_toml(&[(bs[0].addr, None)])
        )
    };
    let sluice = Sluice::with_config(limited(3))
        .admin_token(TOKEN)
        .start()
        .await;
    let c = client(None);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            c.get(sluice.url("/r"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    sluice.write_body(&limited(10));
    assert_eq!(sluice.admin_post("/reload", TOKEN, None).await.0, 200);
    // The new limit applies at once; the same window's counter (keyed by the limit) starts over.
    let r = c.get(sluice.url("/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "10");
}

/// Issue 15: route rules change live; a reload with a bad rule keeps the old ones serving and
/// names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_change_live_and_a_bad_rule_keeps_the_old_ones() {
    let bs = backends(1).await;
    let with = |rules: &str| {
        format!(
            "[reload]\nwatch = false\n[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n{rules}\n",
            backends_toml(&[(bs[0].addr, None)])
        )
    };
    let sluice = Sluice::with_config(with(
        "response_headers = { set = { \"x-gen\" = \"one\" } }\nstrip_prefix = \"/v1\"",
    ))
    .admin_token(TOKEN)
    .start()
    .await;
    let c = client(None);
    let check = |want_gen: &'static str, want_path: &'static str| {
        let c = c.clone();
        let url = sluice.url("/v1/x");
        async move {
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.headers()["x-gen"], want_gen);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["path"], want_path);
        }
    };
    check("one", "/x").await;
    sluice.write_body(&with(
        "response_headers = { set = { \"x-gen\" = \"two\" } }\nrewrite = { pattern = \"^/v1/\", to = \"/v2/\" }",
    ));
    assert_eq!(sluice.admin_post("/reload", TOKEN, None).await.0, 200);
    check("two", "/v2/x").await;
    // An unknown template variable: refused, the old rules keep serving.
    sluice.write_body(&with(
        "response_headers = { set = { \"x-gen\" = \"{server_name}\" } }",
    ));
    let (status, v) = sluice.admin_post("/reload", TOKEN, None).await;
    assert_ne!(status, 200);
    assert!(v.to_string().contains("{server_name}"), "{v}");
    check("two", "/v2/x").await;
}

/// Issue 17: the file watch follows a Kubernetes ConfigMap volume's update (the `..data`
/// symlink swapped to a new directory, the old one deleted), again and again. It used to read
/// the path resolved at start, inside the deleted directory, and never reloaded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_watch_follows_a_configmap_symlink_swap() {
    let bs = backends(1).await;
    let body = |tag: &str| {
        format!(
            "[reload]\nwatch = true\ndebounce_ms = 100\n[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\nresponse_headers = {{ set = {{ \"x-config\" = \"{tag}\" }} }}\n",
            backends_toml(&[(bs[0].addr, None)])
        )
    };
    let sluice = Sluice::with_config(body("v1"))
        .configmap_layout()
        .start()
        .await;
    let c = client(None);
    let tag = || {
        let c = c.clone();
        let url = sluice.url("/x");
        async move {
            let r = c.get(url).send().await.unwrap();
            r.headers()["x-config"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(tag().await, "v1");
    for v in 2..=4u32 {
        sluice.configmap_update(&body(&format!("v{v}")), v);
        wait_generation(&sluice, v as u64).await;
        assert_eq!(tag().await, format!("v{v}"));
    }
    // A bad edit arriving the same way is refused and v4 keeps serving; the next good one is
    // still followed.
    sluice.configmap_update(&body("{not_a_variable}"), 5);
    sluice
        .wait_log(
            &["config_reload_failed", "not_a_variable"],
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(tag().await, "v4");
    sluice.configmap_update(&body("v6"), 6);
    wait_generation(&sluice, 5).await;
    assert_eq!(tag().await, "v6");
}
