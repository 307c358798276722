//! The response cache with the embedded store (no Redis): miss then hit, tier TTLs and origin
//! freshness, what is never stored, `Vary`, 304 revalidation, size cap and byte-exact bodies,
//! and `X-Cache` / `Cache-Status` on every response of a caching route.

mod support;

use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

/// One pool over `b` and routes: `/` with `cache = tier` in `ttl_mode = "override"` (most tests
/// here cache the sample backend's header-less answers for the tier's lifetime), `/off`
/// without caching.
fn config(b: &Backend, tier: &str, extra: &str) -> String {
    config_mode(b, tier, "override", extra)
}

/// [`config`] with the route's `cache_ttl_mode`.
fn config_mode(b: &Backend, tier: &str, mode: &str, extra: &str) -> String {
    format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"{tier}\"\ncache_ttl_mode = \"{mode}\"\n{extra}\n[[routes]]\npath_prefix = \"/off\"\nupstream = \"api\"\n",
        backends_toml(&[(b.addr, None)])
    )
}

fn x_cache(r: &reqwest::Response) -> &str {
    r.headers()
        .get("x-cache")
        .map_or("-", |v| v.to_str().unwrap())
}

async fn get(c: &reqwest::Client, url: &str) -> (String, String, reqwest::header::HeaderMap) {
    let r = c.get(url).send().await.unwrap();
    assert!(
        r.status().is_success() || r.status() == 304,
        "{}",
        r.status()
    );
    let x = x_cache(&r).to_owned();
    let h = r.headers().clone();
    (x, r.text().await.unwrap(), h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_hits_served_from_the_cache() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let (x, body, h) = get(&c, &sluice.url("/cache/60")).await;
    assert_eq!(x, "MISS");
    assert_eq!(h["cache-status"], "sluice; fwd=miss");
    for _ in 0..5 {
        let (x, again, h) = get(&c, &sluice.url("/cache/60")).await;
        assert_eq!(x, "HIT");
        assert_eq!(again, body);
        assert!(h.contains_key("age"), "{h:?}");
        assert_eq!(h["cache-status"], "sluice; hit");
        assert_eq!(h["etag"], "\"c60\"");
    }
    assert_eq!(served(&bs, "/cache/60")["b1"], 1);
    // The query is part of the key.
    let (x, _, _) = get(&c, &sluice.url("/cache/60?v=2")).await;
    assert_eq!(x, "MISS");
    // A route without caching says nothing and always goes to the backend.
    for _ in 0..2 {
        let r = c.get(sluice.url("/off/cache/60")).send().await.unwrap();
        assert!(r.headers().get("x-cache").is_none());
    }
    assert_eq!(served(&bs, "/off/cache/60")["b1"], 2);
    // Unsafe methods on a caching route bypass it.
    let r = c.post(sluice.url("/cache/60")).send().await.unwrap();
    assert_eq!(x_cache(&r), "BYPASS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_ttl_applies_only_when_the_origin_gives_no_freshness() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "hot", "")).await;
    let c = client(None);
    // No freshness from the origin: the hot tier's 60 s.
    let (x, first, _) = get(&c, &sluice.url("/respond/plain")).await;
    assert_eq!(x, "MISS");
    let (x, second, _) = get(&c, &sluice.url("/respond/plain")).await;
    assert_eq!((x.as_str(), second), ("HIT", first));
    // The origin's max-age=1 wins over the tier: stale after a second, fetched again (whole:
    // without a validator nothing could revalidate it, so the store did not keep it).
    let url = sluice.url("/respond/short?cache-control=max-age%3D1");
    assert_eq!(get(&c, &url).await.0, "MISS");
    assert_eq!(get(&c, &url).await.0, "HIT");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&c, &url).await.0, "MISS");
    assert_eq!(served(&bs, "/respond/short")["b1"], 2);
}

/// RFC 9111 §3 and §4.2.2 in `ttl_mode = "origin"` (the default): a response without
/// freshness or a validator is never stored; with `Last-Modified` it is heuristically fresh (a
/// tenth of its age, capped by the tier); with only an `ETag` it is stored stale and every
/// use is revalidated (a 304 from the origin, `REVALIDATED` to the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9111_origin_mode_stores_only_responses_with_freshness_or_a_validator() {
    let bs = backends(1).await;
    // No cache_ttl_mode on the route: `[cache] ttl_mode` defaults to origin.
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let c = client(None);
    for _ in 0..2 {
        assert_eq!(get(&c, &sluice.url("/respond/plain")).await.0, "MISS");
    }
    assert_eq!(served(&bs, "/respond/plain")["b1"], 2);

    let modified =
        httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let url = sluice.url(&format!(
        "/respond/lm?last-modified={}",
        modified.replace(' ', "%20").replace(',', "%2C")
    ));
    assert_eq!(get(&c, &url).await.0, "MISS");
    assert_eq!(get(&c, &url).await.0, "HIT");
    assert_eq!(served(&bs, "/respond/lm")["b1"], 1);

    let url = sluice.url("/respond/tagged?etag=%22v1%22");
    let (x, first, _) = get(&c, &url).await;
    assert_eq!(x, "MISS");
    let (x, body, _) = get(&c, &url).await;
    // The stored body, confirmed by the origin's 304.
    assert_eq!((x.as_str(), body), ("REVALIDATED", first));
    assert_eq!(get(&c, &url).await.0, "REVALIDATED");
    // Every use asked the origin (a 304 each time after the first answer).
    assert_eq!(served(&bs, "/respond/tagged")["b1"], 3);
}

/// RFC 9111 §4 and §4.2.3: a hit keeps the origin's `Date` (stock Pingora rewrote it) and its
/// `Age` continues from the `Age` the response arrived with; a response already older than
/// its lifetime is not reused; RFC 9213: `CDN-Cache-Control` outranks `Cache-Control`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9111_4_a_hit_keeps_the_stored_date_and_ages_from_the_origins_age() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config_mode(&bs[0], "warm", "origin", "")).await;
    let c = client(None);
    let url = sluice.url("/respond/aged?cache-control=max-age%3D3600&age=30");
    let (x, _, first) = get(&c, &url).await;
    assert_eq!(x, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (x, _, hit) = get(&c, &url).await;
    assert_eq!(x, "HIT");
    assert_eq!(hit["date"], first["date"], "a hit keeps the stored Date");
    let age: u64 = hit["age"].to_str().unwrap().parse().unwrap();
    assert!(
        (31..40).contains(&age),
        "Age {age} continues from the origin's 30"
    );

    // Older than its lifetime on arrival: never reused.
    let old = sluice.url("/respond/old?cache-control=max-age%3D3600&age=7200");
    assert_eq!(get(&c, &old).await.0, "MISS");
    assert_ne!(get(&c, &old).await.0, "HIT");
    assert_eq!(served(&bs, "/respond/old")["b1"], 2);

    // The targeted field wins: Cache-Control says no-store, CDN-Cache-Control a minute.
    let cdn = sluice.url("/respond/cdn?cache-control=no-store&cdn-cache-control=max-age%3D60");
    assert_eq!(get(&c, &cdn).await.0, "MISS");
    assert_eq!(get(&c, &cdn).await.0, "HIT");
    // And the other way round: CDN-Cache-Control private beats a long max-age.
    let private = sluice.url("/respond/cdnp?cache-control=max-age%3D600&cdn-cache-control=private");
    assert_eq!(get(&c, &private).await.0, "MISS");
    assert_eq!(get(&c, &private).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_set_cookie_vary_star_and_authorization_are_not_stored() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    for (path, query) in [
        ("/respond/nostore", "cache-control=no-store"),
        (
            "/respond/private",
            "cache-control=private%2C%20max-age%3D60",
        ),
        ("/respond/cookie", "set-cookie=session%3Dabc"),
        ("/respond/varystar", "vary=*"),
    ] {
        for _ in 0..2 {
            let (x, _, _) = get(&c, &sluice.url(&format!("{path}?{query}"))).await;
            assert_eq!(x, "MISS", "{path}");
        }
        assert_eq!(served(&bs, path)["b1"], 2, "{path} was stored");
    }
    // no-cache: stored, but revalidated with the origin every time (no validator here, so a full
    // fetch each time).
    let url = sluice.url("/respond/nocache?cache-control=no-cache");
    assert_eq!(get(&c, &url).await.0, "MISS");
    assert_eq!(get(&c, &url).await.0, "EXPIRED");
    assert_eq!(served(&bs, "/respond/nocache")["b1"], 2);
    // Authorization: not stored unless the response allows it (public).
    let authed = |url: String| {
        let c = c.clone();
        async move {
            let r = c.get(url).bearer_auth("t").send().await.unwrap();
            x_cache(&r).to_owned()
        }
    };
    assert_eq!(authed(sluice.url("/respond/auth")).await, "MISS");
    assert_eq!(authed(sluice.url("/respond/auth")).await, "MISS");
    assert_eq!(authed(sluice.url("/cache/30")).await, "MISS");
    assert_eq!(authed(sluice.url("/cache/30")).await, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_store_set_cookie_responses() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "cache_set_cookie = true")).await;
    let c = client(None);
    let url = sluice.url("/respond/cookie?set-cookie=a%3Db");
    assert_eq!(get(&c, &url).await.0, "MISS");
    assert_eq!(get(&c, &url).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_request_header_value() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let url = sluice.url("/respond/v?vary=accept-language");
    let ask = |lang: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c
                .get(url)
                .header("accept-language", lang)
                .send()
                .await
                .unwrap();
            (x_cache(&r).to_owned(), r.text().await.unwrap())
        }
    };
    let (x, fr) = ask("fr").await;
    assert_eq!(x, "MISS");
    let (x, de) = ask("de").await;
    assert_eq!(x, "MISS");
    assert_ne!(fr, de);
    assert_eq!(ask("fr").await, ("HIT".to_owned(), fr));
    assert_eq!(ask("de").await, ("HIT".to_owned(), de));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_revalidated_with_its_etag() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let (x, body, _) = get(&c, &sluice.url("/cache/1")).await;
    assert_eq!(x, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The backend answers the conditional request with 304; the client gets the full body.
    let (x, again, h) = get(&c, &sluice.url("/cache/1")).await;
    assert_eq!(x, "REVALIDATED");
    assert_eq!(again, body);
    assert_eq!(h["cache-status"], "sluice; hit; fwd=stale; fwd-status=304");
    assert_eq!(get(&c, &sluice.url("/cache/1")).await.0, "HIT");
    assert_eq!(served(&bs, "/cache/1")["b1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_round_trip_byte_exact_and_objects_over_the_cap_pass_uncached() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[cache]\nmax_object_bytes = 8388608\nmemory_bytes = 67108864\n{}",
        config(&bs[0], "warm", "")
    ))
    .await;
    let c = client(None);
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    let five = sluice.url("/bytes/5242880");
    let r = c.get(&five).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let direct = sha(&r.bytes().await.unwrap());
    let r = c.get(&five).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 5 << 20);
    assert_eq!(sha(&body), direct);

    let twenty = sluice.url("/bytes/20971520");
    for _ in 0..2 {
        let r = c.get(&twenty).send().await.unwrap();
        assert_eq!(x_cache(&r), "MISS");
        assert_eq!(r.bytes().await.unwrap().len(), 20 << 20);
    }
    assert_eq!(served(&bs, "/bytes/20971520")["b1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let url = sluice.url("/respond/swr?cache-control=max-age%3D1%2C%20stale-while-revalidate%3D30");
    let (x, first, _) = get(&c, &url).await;
    assert_eq!(x, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale: answered from the cache (the old body) while a background request refreshes it.
    bs[0].shared.set_delay_ms(2000);
    let t = std::time::Instant::now();
    let (x, body, _) = get(&c, &url).await;
    assert_eq!(x, "STALE");
    assert_eq!(body, first);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "waited for the origin: {:?}",
        t.elapsed()
    );
    bs[0].shared.set_delay_ms(0);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (x, body, _) = get(&c, &url).await;
        if x == "HIT" && body != first {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "never refreshed: {x} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served(&bs, "/respond/swr")["b1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_old_copy_when_the_origin_fails() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let url = sluice.url("/respond/sie?cache-control=max-age%3D1%2C%20stale-if-error%3D30");
    let (x, first, _) = get(&c, &url).await;
    assert_eq!(x, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bs[0].shared.set_fail_status(503);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&r), "STALE");
    assert_eq!(r.text().await.unwrap(), first);
    // Without stale-if-error the origin's 503 goes through.
    let plain = sluice.url("/respond/plain503?cache-control=max-age%3D1");
    bs[0].shared.set_fail_status(0);
    assert_eq!(get(&c, &plain).await.0, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bs[0].shared.set_fail_status(503);
    let r = c.get(&plain).send().await.unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_unsafe_request_invalidates_the_uri_and_its_location() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    for path in ["/items/1", "/items/2", "/items/3"] {
        assert_eq!(get(&c, &sluice.url(path)).await.0, "MISS");
        assert_eq!(get(&c, &sluice.url(path)).await.0, "HIT");
    }
    // A failed POST changes nothing.
    bs[0].shared.set_fail_status(500);
    let r = c
        .post(sluice.url("/items/1"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    bs[0].shared.set_fail_status(0);
    assert_eq!(get(&c, &sluice.url("/items/1")).await.0, "HIT");
    // A successful one invalidates its target.
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = c
            .request(m.parse().unwrap(), sluice.url("/items/1"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(x_cache(&r), "BYPASS");
        assert_eq!(get(&c, &sluice.url("/items/1")).await.0, "MISS", "{m}");
    }
    // ... and what its Location / Content-Location name on the same host, not elsewhere.
    let r = c
        .post(sluice.url(
            "/respond/create?location=/items/2&content-location=http%3A%2F%2Fother.example%2Fitems%2F3",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&c, &sluice.url("/items/2")).await.0, "MISS");
    assert_eq!(get(&c, &sluice.url("/items/3")).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_reports_and_purges_through_the_admin_api() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(config(&bs[0], "hot", ""))
        .admin_token("t")
        .start()
        .await;
    let c = client(None);
    for p in ["/a/1", "/a/2", "/b/1"] {
        assert_eq!(get(&c, &sluice.url(p)).await.0, "MISS");
        assert_eq!(get(&c, &sluice.url(p)).await.0, "HIT");
    }
    // Hits and misses are counted in the logging phase, after the client has its response
    // (a CI run once read 2 hits here): wait until all six requests are counted.
    let stats = sluice
        .admin_json_when("/cache/stats", |s| {
            s["hits"].as_u64().unwrap_or(0) + s["misses"].as_u64().unwrap_or(0) >= 6
        })
        .await;
    assert_eq!(stats["store"], "memory");
    assert_eq!(stats["entries"], 3);
    assert!(stats["bytes"].as_u64().unwrap() > 0);
    assert_eq!(stats["hits"], 3);
    assert_eq!(stats["misses"], 3);
    assert_eq!(stats["hit_ratio"], 0.5);
    assert_eq!(stats["tiers"]["hot"]["ttl_seconds"], 60);
    let r = c
        .post(sluice.admin_url("/cache/purge"))
        .bearer_auth("t")
        .json(&serde_json::json!({"pattern": "http://127.0.0.1/a/*"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["removed"], 2);
    assert_eq!(get(&c, &sluice.url("/a/1")).await.0, "MISS");
    assert_eq!(get(&c, &sluice.url("/b/1")).await.0, "HIT");
    let r = c
        .post(sluice.admin_url("/cache/flush"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&c, &sluice.url("/b/1")).await.0, "MISS");
    let metrics = sluice
        // The prometheus crate writes label names in sorted order.
        .metrics_when(|m| m.contains("sluice_cache_requests_total{result=\"hit\",tier=\"hot\"} 4"))
        .await;
    assert!(metrics.contains("sluice_cache_purged_total{kind=\"pattern\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_urls_are_fetched_at_start_and_after_a_reload() {
    let bs = backends(1).await;
    let body = |urls: &str| {
        format!(
            "[cache]\nwarm_urls = [{urls}]\nwarm_concurrency = 2\n{}",
            config(&bs[0], "warm", "")
        )
    };
    let sluice = Sluice::with_config(body(
        "\"http://127.0.0.1/respond/w1\", \"http://127.0.0.1/respond/w2\", \"http://127.0.0.1/respond/w3\"",
    ))
    .admin_token("t")
    .start()
    .await;
    let c = client(None);
    // Ready only once warmed.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(sluice.admin_url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["warmed"], true);
            break;
        }
        assert!(std::time::Instant::now() < end, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in ["/respond/w1", "/respond/w2", "/respond/w3"] {
        assert_eq!(get(&c, &sluice.url(p)).await.0, "HIT", "{p}");
        assert_eq!(served(&bs, p)["b1"], 1, "{p}");
    }
    sluice.write_body(&body("\"http://127.0.0.1/respond/w4\""));
    assert_eq!(sluice.admin_post("/reload", "t", None).await.0, 200);
    // Wait until the store holds the fourth entry (no client request may fill it).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = sluice.admin_json("/cache/stats").await;
        if stats["entries"] == 4 {
            break;
        }
        assert!(std::time::Instant::now() < end, "w4 never warmed: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&c, &sluice.url("/respond/w4")).await.0, "HIT");
    assert_eq!(served(&bs, "/respond/w4")["b1"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_and_sorted_query_parameters_share_one_entry() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[cache]\nignore_query_params = [\"utm_*\", \"fbclid\"]\nsort_query_params = true\n{}",
        config(&bs[0], "warm", "")
    ))
    .await;
    let c = client(None);
    assert_eq!(
        get(&c, &sluice.url("/respond/q?b=2&utm_source=x&a=1"))
            .await
            .0,
        "MISS"
    );
    assert_eq!(get(&c, &sluice.url("/respond/q?a=1&b=2")).await.0, "HIT");
    assert_eq!(
        get(&c, &sluice.url("/respond/q?a=1&fbclid=z&b=2&utm_medium=m"))
            .await
            .0,
        "HIT"
    );
    assert_eq!(get(&c, &sluice.url("/respond/q?a=1&b=3")).await.0, "MISS");
    assert_eq!(served(&bs, "/respond/q")["b1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_on_hits_of_the_embedded_store() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let url = sluice.url("/bytes/10000");
    let full = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    let r = c
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(x_cache(&r), "HIT");
    assert_eq!(&r.bytes().await.unwrap()[..], &full[100..200]);
}

/// An HTTP date `secs` from now (negative: in the past).
fn http_date(secs: i64) -> String {
    let t = if secs >= 0 {
        std::time::SystemTime::now() + Duration::from_secs(secs as u64)
    } else {
        std::time::SystemTime::now() - Duration::from_secs((-secs) as u64)
    };
    httpdate::fmt_http_date(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_last_modified_and_304_revalidation() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let enc = |s: &str| {
        s.replace(' ', "%20")
            .replace(',', "%2C")
            .replace(':', "%3A")
    };

    // Expires in the future: fresh; in the past: stored stale, fetched again.
    let future = sluice.url(&format!("/respond/exp1?expires={}", enc(&http_date(3600))));
    assert_eq!(get(&c, &future).await.0, "MISS");
    assert_eq!(get(&c, &future).await.0, "HIT");
    let past = sluice.url(&format!("/respond/exp2?expires={}", enc(&http_date(-3600))));
    assert_eq!(get(&c, &past).await.0, "MISS");
    assert_ne!(get(&c, &past).await.0, "HIT");

    // Last-Modified only: revalidated with If-Modified-Since; the 304 refreshes the entry's
    // freshness (next request is a HIT) and its header fields (x-served counts origin
    // answers) while the body stays.
    let lm = enc(&http_date(-86400));
    let url = sluice.url(&format!(
        "/respond/lm?cache-control=max-age%3D1&last-modified={lm}"
    ));
    let (x, body, h) = get(&c, &url).await;
    assert_eq!(x, "MISS");
    assert_eq!(h["x-served"], "1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (x, again, h) = get(&c, &url).await;
    assert_eq!(x, "REVALIDATED");
    assert_eq!(again, body);
    assert_eq!(h["x-served"], "2", "the 304's fields were not merged");
    assert_eq!(served(&bs, "/respond/lm")["b1"], 2);
    let (x, _, h) = get(&c, &url).await;
    assert_eq!(x, "HIT");
    assert_eq!(h["x-served"], "2", "the merged fields were not stored");

    // must-revalidate: never served stale, even when the origin fails.
    let url = sluice
        .url("/respond/mr?cache-control=max-age%3D1%2C%20must-revalidate%2C%20stale-if-error%3D60");
    assert_eq!(get(&c, &url).await.0, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bs[0].shared.set_fail_status(503);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    bs[0].shared.set_fail_status(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_also_removes_vary_variants() {
    let bs = backends(1).await;
    let sluice = Sluice::start(config(&bs[0], "warm", "")).await;
    let c = client(None);
    let url = sluice.url("/respond/vp?vary=accept-language");
    let ask = |lang: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            x_cache(
                &c.get(url)
                    .header("accept-language", lang)
                    .send()
                    .await
                    .unwrap(),
            )
            .to_owned()
        }
    };
    assert_eq!(ask("fr").await, "MISS");
    assert_eq!(ask("fr").await, "HIT");
    let r = c
        .post(sluice.url("/respond/vp?vary=accept-language"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ask("fr").await, "MISS", "variant survived the invalidation");
}

/// One request on an open raw connection; the response head (lower-cased) and whether the
/// server sent one at all.
async fn exchange(s: &mut tokio::net::TcpStream, req: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    s.write_all(req.as_bytes()).await.ok()?;
    read_response(s).await.map(|(head, _)| head)
}

/// RFC 9112 §9.6: a server that closes a connection after a response says so in that response
/// (`Connection: close`); otherwise a client may send its next request on a socket being closed
/// and lose it. Serving a stale copy after an origin failure (RFC 5861 §4) used to close the
/// client connection silently (the intermittent failure of issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9112_9_6_a_stale_if_error_answer_keeps_the_client_connection() {
    let mut b = BackendProc::start("b1").await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\n",
        backends_toml(&[(b.addr, None)])
    ))
    .await;
    let path = "/respond/sieconn?cache-control=max-age%3D1%2C%20stale-if-error%3D60";
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(sluice.addr).await.unwrap();
    let head = exchange(&mut s, &req).await.expect("first answer");
    assert!(head.contains("x-cache: miss"), "{head}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for failure in ["a 503", "a refused connection"] {
        if failure == "a 503" {
            b.control("fail", "status=503").await;
        } else {
            b.kill();
        }
        let head = exchange(&mut s, &req).await.expect("stale answer");
        assert!(head.contains("x-cache: stale"), "{failure}: {head}");
        // The origin failed, not the client connection: it stays open and serves the next
        // request (the stale copy again).
        assert!(!head.contains("connection: close"), "{failure}: {head}");
        let again = exchange(&mut s, &req).await;
        assert!(again.is_some(), "{failure}: closed silently after:\n{head}");
    }
}
