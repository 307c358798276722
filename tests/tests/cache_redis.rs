//! The response cache on Redis, shared by every instance: a hit on a second instance, chunked
//! bodies byte-exact, revalidation refreshing the stored entry, hash-tagged expiring keys,
//! Redis stopped mid-load (no errors, hits resume), and the same hit on a Redis Cluster.

mod support;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::*;

fn config(b: &Backend, redis: &str) -> String {
    format!(
        "{redis}\n[cache]\nchunk_bytes = 65536\nttl_mode = \"override\"\n[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\n",
        backends_toml(&[(b.addr, None)])
    )
}

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache")
        .map_or("-".into(), |v| v.to_str().unwrap().to_owned())
}

/// RFC 9111 §4.3: a stale entry with a validator stays in Redis (`stale_retention_seconds`),
/// so the next request revalidates it (a conditional request, a 304, the stored body) instead
/// of fetching it whole; before, Redis dropped it about twice its lifetime after storing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc9111_4_3_a_stale_entry_with_a_validator_stays_for_revalidation() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[redis]\nurl = \"{}\"\n[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\n",
        redis.url(),
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/respond/kept?cache-control=max-age%3D1&etag=%22k1%22");
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let first = r.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(x_cache(&r), "REVALIDATED");
    assert_eq!(r.text().await.unwrap(), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_fetched_by_one_instance_is_a_hit_on_another() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = config(&bs[0], &format!("[redis]\nurl = \"{}\"\n", redis.url()));
    let (a, b) = (Sluice::start(body.clone()).await, Sluice::start(body).await);
    let c = client(None);
    let r = c.get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let first = r.text().await.unwrap();
    for s in [&b, &a, &b] {
        let r = c.get(s.url("/cache/60")).send().await.unwrap();
        assert_eq!(x_cache(&r), "HIT");
        assert!(r.headers().contains_key("age"));
        assert_eq!(r.text().await.unwrap(), first);
    }
    assert_eq!(served(&bs, "/cache/60")["b1"], 1);

    // The entry is hash-tagged under the namespace and expires.
    let mut rc = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("{sluice:cache:") && keys[0].ends_with("}:m"),
        "{keys:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut rc)
        .await
        .unwrap();
    // max-age=60, then (it has an ETag) the stale retention of 3600 s for revalidation.
    assert!(ttl > 3_600_000 && ttl <= 3_660_000, "{ttl}");

    // A 5 MB body goes into 80 chunks of 64 KiB and comes back byte-exact from the other one.
    let sha = |x: &[u8]| hex::encode(Sha256::digest(x));
    let r = c.get(a.url("/bytes/5242880")).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let direct = sha(&r.bytes().await.unwrap());
    let r = c.get(b.url("/bytes/5242880")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    let cached = r.bytes().await.unwrap();
    assert_eq!(cached.len(), 5 << 20);
    assert_eq!(sha(&cached), direct);
    let chunks: Vec<String> = redis::cmd("KEYS")
        .arg("*:b:*")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(chunks.len(), 80);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_refreshes_the_shared_entry() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = config(&bs[0], &format!("[redis]\nurl = \"{}\"\n", redis.url()));
    let (a, b) = (Sluice::start(body.clone()).await, Sluice::start(body).await);
    let c = client(None);
    let r = c.get(a.url("/cache/1")).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    // A hit on `a` while fresh: `a` keeps the metadata it decoded for this entry.
    let r = c.get(a.url("/cache/1")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(b.url("/cache/1")).send().await.unwrap();
    assert_eq!(x_cache(&r), "REVALIDATED");
    assert_eq!(r.text().await.unwrap(), "cacheable for 1 s\n");
    // The refreshed entry is fresh for the other instance too: it reads the new metadata `b`
    // wrote, not what it decoded before (which has expired by now).
    let r = c.get(a.url("/cache/1")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    // The refresh replaced the stored metadata and kept the inline body beside it.
    assert_eq!(r.text().await.unwrap(), "cacheable for 1 s\n");
    assert_eq!(served(&bs, "/cache/1")["b1"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_costs_no_errors_and_hits_resume() {
    let mut redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(config(
        &bs[0],
        &format!(
            "[redis]\nurl = \"{}\"\nbreaker_failures = 2\nbreaker_cooldown_ms = 500\n",
            redis.url()
        ),
    ))
    .await;
    let c = client(None);
    let get = |path: &'static str| {
        let (c, url) = (c.clone(), sluice.url(path));
        async move {
            let t = Instant::now();
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let x = x_cache(&r);
            r.bytes().await.unwrap();
            (x, t.elapsed())
        }
    };
    assert_eq!(get("/cache/60").await.0, "MISS");
    assert_eq!(get("/cache/60").await.0, "HIT");
    redis.kill();
    for i in 0..30 {
        let (x, took) = get("/cache/60").await;
        assert_eq!(x, "MISS", "request {i} while Redis is down");
        assert!(took < Duration::from_secs(1), "request {i} took {took:?}");
    }
    redis.restart().await;
    let end = Instant::now() + Duration::from_secs(15);
    // Hits resume once the breaker probes Redis again and the entry is stored anew.
    loop {
        if get("/cache/60").await.0 == "HIT" {
            break;
        }
        assert!(Instant::now() < end, "no hit after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_hits_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let bs = backends(1).await;
    let body = config(
        &bs[0],
        &format!(
            "[redis]\ncluster = {}\ncommand_timeout_ms = 500\n",
            cluster.urls_toml()
        ),
    );
    let a = Sluice::with_config(body.clone())
        .admin_token("t")
        .start()
        .await;
    let b = Sluice::with_config(body).admin_token("t").start().await;
    let c = client(None);
    let paths = [
        "/cache/60",
        "/cache/61",
        "/bytes/300000",
        "/respond/t1?cache-tag=red",
        "/respond/t2?cache-tag=red",
        "/respond/t3?cache-tag=blue",
    ];
    for (i, path) in paths.iter().enumerate() {
        let r = c.get(a.url(path)).send().await.unwrap();
        assert_eq!(x_cache(&r), "MISS", "{i}");
        let first = r.bytes().await.unwrap();
        let r = c.get(b.url(path)).send().await.unwrap();
        assert_eq!(x_cache(&r), "HIT", "{i}");
        assert_eq!(r.bytes().await.unwrap(), first);
    }
    // Purges reach entries on every master.
    let admin = |path: &'static str, body: serde_json::Value| {
        let a = &a;
        async move {
            let (status, v) = a.admin_post(path, "t", Some(body)).await;
            assert_eq!(status, 200, "{v}");
            v["removed"].as_u64().unwrap()
        }
    };
    assert_eq!(
        admin("/cache/purge", serde_json::json!({"tags": ["red"]})).await,
        2
    );
    assert_eq!(
        admin("/cache/purge", serde_json::json!({"pattern": "*/cache/6?"})).await,
        2
    );
    for (p, want) in [
        (paths[0], "MISS"),
        (paths[1], "MISS"),
        (paths[2], "HIT"),
        (paths[3], "MISS"),
        (paths[4], "MISS"),
        (paths[5], "HIT"),
    ] {
        assert_eq!(x_cache(&c.get(b.url(p)).send().await.unwrap()), want, "{p}");
    }
    assert!(admin("/cache/flush", serde_json::json!({})).await >= 4);
    assert_eq!(
        x_cache(&c.get(b.url(paths[5])).send().await.unwrap()),
        "MISS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_purges_are_seen_by_every_instance() {
    const TOKEN: &str = "cache-admin";
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = config(&bs[0], &format!("[redis]\nurl = \"{}\"\n", redis.url()));
    let a = Sluice::with_config(body.clone())
        .admin_token(TOKEN)
        .start()
        .await;
    let b = Sluice::with_config(body).admin_token(TOKEN).start().await;
    let c = client(None);
    let warm = |paths: &'static [&'static str]| {
        let (c, a) = (c.clone(), a.url(""));
        async move {
            for p in paths {
                c.get(format!("{a}{p}")).send().await.unwrap();
            }
        }
    };
    let on_b = |p: &'static str| {
        let (c, u) = (c.clone(), b.url(p));
        async move { x_cache(&c.get(u).send().await.unwrap()) }
    };
    let paths: &[&str] = &["/api/1", "/api/2", "/img/a.png", "/img/b.png", "/other"];
    warm(paths).await;
    // A miss is stored in Redis as its response ends, and counted in the logging phase, both
    // of which can be after the client has it (a CI run once asked the other instance first):
    // wait until all five are there and counted.
    let stats = a
        .admin_json_when("/cache/stats", |s| {
            s["entries"] == 5 && s["tiers"]["warm"]["results"]["miss"].as_u64() >= Some(5)
        })
        .await;
    for p in paths {
        assert_eq!(on_b(p).await, "HIT", "{p}");
    }
    // Stats (A's, read above: B's hits change neither) and health from the admin API.
    assert_eq!(stats["store"], "redis");
    assert_eq!(stats["entries"], 5);
    assert_eq!(stats["tiers"]["warm"]["results"]["miss"], 5);
    let health = c.get(b.admin_url("/cache/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Mutating calls need the token.
    let r = c.post(a.admin_url("/cache/flush")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // One URL (the key's host has no port, so both instances share it), deleted through A.
    let r = c
        .delete(a.admin_url("/cache?url=http%3A%2F%2F127.0.0.1%2Fapi%2F1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["removed"], 1, "{v}");
    assert_eq!(on_b("/api/1").await, "MISS");
    assert_eq!(
        x_cache(&c.get(a.url("/api/2")).send().await.unwrap()),
        "HIT"
    );

    // A glob over URLs, scanned on the server.
    let r = c
        .post(b.admin_url("/cache/purge"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"pattern": "*/img/*.png"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["removed"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        x_cache(&c.get(a.url("/img/a.png")).send().await.unwrap()),
        "MISS"
    );
    assert_eq!(
        x_cache(&c.get(a.url("/other")).send().await.unwrap()),
        "HIT"
    );

    // Flush: the namespace only.
    let mut rc = redis.client().await;
    let _: () = redis::cmd("SET")
        .arg("unrelated")
        .arg("1")
        .query_async(&mut rc)
        .await
        .unwrap();
    let r = c
        .post(a.admin_url("/cache/flush"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        x_cache(&c.get(a.url("/other")).send().await.unwrap()),
        "MISS"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(keys.contains(&"unrelated".to_owned()), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_cold_requests_over_two_instances_cause_one_origin_fetch() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = config(&bs[0], &format!("[redis]\nurl = \"{}\"\n", redis.url()));
    let (a, b) = (Sluice::start(body.clone()).await, Sluice::start(body).await);
    // A slow origin, so every request arrives while the first fetch is in flight.
    bs[0].shared.set_delay_ms(400);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = if i % 2 == 0 {
            a.url("/respond/cold")
        } else {
            b.url("/respond/cold")
        };
        tasks.push(tokio::spawn(async move {
            let r = client(None).get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            (x_cache(&r), r.text().await.unwrap())
        }));
    }
    let mut bodies = std::collections::BTreeSet::new();
    let mut results = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let (x, body) = t.await.unwrap();
        *results.entry(x).or_default() += 1;
        bodies.insert(body);
    }
    assert_eq!(served(&bs, "/respond/cold")["b1"], 1, "{results:?}");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(results.get("MISS"), Some(&1), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_tag_removes_every_entry_carrying_it_for_every_instance() {
    const TOKEN: &str = "tags";
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = format!(
        "[redis]\nurl = \"{}\"\n[upstreams.api]\n{}\n[[routes]]\npath_prefix = \"/respond/shop\"\nupstream = \"api\"\ncache = \"warm\"\ncache_ttl_mode = \"override\"\ncache_tags = [\"shop\"]\n[[routes]]\nupstream = \"api\"\ncache = \"warm\"\ncache_ttl_mode = \"override\"\n",
        redis.url(),
        backends_toml(&[(bs[0].addr, None)])
    );
    let a = Sluice::with_config(body.clone())
        .admin_token(TOKEN)
        .start()
        .await;
    let b = Sluice::with_config(body).admin_token(TOKEN).start().await;
    let c = client(None);
    let paths = [
        "/respond/p1?cache-tag=product-1,catalog",
        "/respond/p2?surrogate-key=product-2%20catalog",
        "/respond/p3?cache-tag=product-3",
        "/respond/shop/cart",
    ];
    for p in paths {
        let r = c.get(a.url(p)).send().await.unwrap();
        assert_eq!(x_cache(&r), "MISS");
        // The origin's tag headers never reach the client.
        assert!(r.headers().get("cache-tag").is_none(), "{p}");
        assert!(r.headers().get("surrogate-key").is_none(), "{p}");
        assert!(r.headers().get("x-sluice-cache-tags").is_none(), "{p}");
    }
    for p in paths {
        let r = c.get(b.url(p)).send().await.unwrap();
        assert_eq!(x_cache(&r), "HIT", "{p}");
        assert!(r.headers().get("cache-tag").is_none(), "{p}");
        assert!(r.headers().get("x-sluice-cache-tags").is_none(), "{p}");
    }
    let purge = |tags: serde_json::Value| {
        let b = &b;
        async move {
            let body = serde_json::json!({ "tags": tags });
            let (status, v) = b.admin_post("/cache/purge", TOKEN, Some(body)).await;
            assert_eq!(status, 200, "{v}");
            v["removed"].as_u64().unwrap()
        }
    };
    // "catalog" tags p1 (Cache-Tag) and p2 (Surrogate-Key); purged through B, gone for A.
    assert_eq!(purge(serde_json::json!(["catalog"])).await, 2);
    for (p, want) in [
        (paths[0], "MISS"),
        (paths[1], "MISS"),
        (paths[2], "HIT"),
        (paths[3], "HIT"),
    ] {
        assert_eq!(x_cache(&c.get(a.url(p)).send().await.unwrap()), want, "{p}");
    }
    // A route's own tag.
    assert_eq!(purge(serde_json::json!(["shop"])).await, 1);
    assert_eq!(
        x_cache(&c.get(a.url(paths[3])).send().await.unwrap()),
        "MISS"
    );
    // Tag sets expire like their entries.
    let mut rc = redis.client().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("{sluice:cache:tag:product-3}")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(ttl > 0, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_on_hits_read_only_what_they_need() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(config(
        &bs[0],
        &format!("[redis]\nurl = \"{}\"\n", redis.url()),
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/bytes/300000");
    let full = c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(full.len(), 300_000);
    for (range, start, end) in [
        ("bytes=0-99", 0usize, 100usize),
        ("bytes=65530-65545", 65_530, 65_546),
        ("bytes=200000-", 200_000, 300_000),
        ("bytes=-10", 299_990, 300_000),
    ] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(x_cache(&r), "HIT", "{range}");
        let body = r.bytes().await.unwrap();
        assert_eq!(&body[..], &full[start..end], "{range}");
    }
    assert_eq!(served(&bs, "/bytes/300000")["b1"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_variants_are_shared_and_invalidated_across_instances() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let body = config(&bs[0], &format!("[redis]\nurl = \"{}\"\n", redis.url()));
    let (a, b) = (Sluice::start(body.clone()).await, Sluice::start(body).await);
    let c = client(None);
    let ask = |s: &Sluice, lang: &'static str| {
        let (c, url) = (c.clone(), s.url("/respond/vr?vary=accept-language"));
        async move {
            let r = c
                .get(url)
                .header("accept-language", lang)
                .send()
                .await
                .unwrap();
            (x_cache(&r), r.text().await.unwrap())
        }
    };
    let (x, fr) = ask(&a, "fr").await;
    assert_eq!(x, "MISS");
    let (x, de) = ask(&a, "de").await;
    assert_eq!(x, "MISS");
    assert_eq!(ask(&b, "fr").await, ("HIT".to_owned(), fr));
    assert_eq!(ask(&b, "de").await, ("HIT".to_owned(), de));
    let r = c
        .post(b.url("/respond/vr?vary=accept-language"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ask(&a, "fr").await.0, "MISS");
    assert_eq!(ask(&a, "de").await.0, "MISS");
}

/// One Sluice on `redis` in front of `b`, with `/cache/60` stored by a first request (a MISS):
/// the instance, the body it answered, and the entry's meta key in Redis.
async fn one_stored_entry(redis: &RedisServer, b: &Backend) -> (Sluice, String, String) {
    let a = Sluice::start(config(b, &format!("[redis]\nurl = \"{}\"\n", redis.url()))).await;
    let r = client(None).get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(x_cache(&r), "MISS");
    let body = r.text().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*:m")
        .query_async(&mut redis.client().await)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    (a, body, keys[0].clone())
}

/// A corrupted entry (another writer, a bad restore) is never answered from the metadata an
/// instance decoded earlier for the same key: the bytes read from Redis no longer match, they
/// fail to decode, and the request is fetched from the backend instead (no error, no stale hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_entry_is_refetched_not_served_from_what_was_decoded_before() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let (a, body, key) = one_stored_entry(&redis, &bs[0]).await;
    let c = client(None);
    let r = c.get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");

    let mut rc = redis.client().await;
    // The packed value keeps its layout (format, shape, the two metadata lengths, the inline
    // body); only the serialized metadata becomes garbage.
    let p: Vec<u8> = redis::cmd("HGET")
        .arg(&key)
        .arg("p")
        .query_async(&mut rc)
        .await
        .unwrap();
    let len_at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap()) as usize;
    let (internal, header) = (&b"\x00garbage"[..], &b"\xffnot zstd"[..]);
    let mut bad = p[..33].to_vec();
    bad.extend_from_slice(&(internal.len() as u32).to_le_bytes());
    bad.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bad.extend_from_slice(internal);
    bad.extend_from_slice(header);
    bad.extend_from_slice(&p[41 + len_at(33) + len_at(37)..]);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("p")
        .arg(bad)
        .query_async(&mut rc)
        .await
        .unwrap();

    let r = c.get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(x_cache(&r), "HIT");
    assert_eq!(r.text().await.unwrap(), body);
    assert_eq!(served(&bs, "/cache/60")["b1"], 2);
}

/// An entry in the layout Sluice wrote before the packed value (seven fields, `i` `h` `v` `n`
/// `l` `c` `b`, no `p`), as an older instance sharing the Redis still writes during a rolling
/// upgrade: a miss, fetched from the backend and written again in the packed layout, never an
/// error or a half-read entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_in_the_older_layout_is_refetched_and_rewritten() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let (a, body, key) = one_stored_entry(&redis, &bs[0]).await;
    let c = client(None);

    let mut rc = redis.client().await;
    let _: () = redis::cmd("HDEL")
        .arg(&key)
        .arg("p")
        .query_async(&mut rc)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("i")
        .arg("x")
        .arg("h")
        .arg("y")
        .arg("l")
        .arg(body.len())
        .arg("c")
        .arg(65536)
        .arg("b")
        .arg(&body)
        .query_async(&mut rc)
        .await
        .unwrap();

    let r = c.get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&r), "MISS");
    assert_eq!(r.text().await.unwrap(), body);
    let r = c.get(a.url("/cache/60")).send().await.unwrap();
    assert_eq!(x_cache(&r), "HIT");
    assert_eq!(r.text().await.unwrap(), body);
    assert_eq!(served(&bs, "/cache/60")["b1"], 2);
}
