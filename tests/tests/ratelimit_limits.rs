//! Rate limiting end to end: each algorithm's exact allow/deny counts and headers, on a real
//! redis-server and on the embedded store; tiers by API key and JWT; trusted proxies; exemptions;
//! per-route overrides; shadow mode; key expiry.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::header::HeaderMap;
use support::*;

fn pool(backend: SocketAddr) -> String {
    format!("[upstreams.api]\nbackends = [{{ addr = \"{backend}\" }}]\n")
}

fn routes(extra: &str) -> String {
    format!("[[routes]]\nupstream = \"api\"\n{extra}")
}

/// `n` GETs to `url` with `headers`; the statuses in order, and the last response's headers.
async fn statuses(
    c: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (Vec<u16>, HeaderMap) {
    let mut out = Vec::new();
    let mut last = HeaderMap::new();
    for _ in 0..n {
        let mut rq = c.get(url);
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        let r = rq.send().await.unwrap();
        out.push(r.status().as_u16());
        last = r.headers().clone();
    }
    (out, last)
}

fn allowed(s: &[u16]) -> usize {
    s.iter().filter(|&&c| c == 200).count()
}

async fn each_algorithm(redis: Option<&RedisServer>) {
    let bs = backends(1).await;
    for algo in RATE_LIMIT_ALGORITHMS {
        let redis_section = redis.map_or(String::new(), |r| {
            format!("[redis]\nurl = \"{}\"\n", r.url())
        });
        let sluice = Sluice::start(format!(
            "{}{}{redis_section}[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 5\nwindow_ms = 60000\nalgorithm = \"{algo}\"\n",
            pool(bs[0].addr),
            routes("")
        ))
        .await;
        let c = client(None);
        let url = sluice.url("/limited");
        for expect_remaining in (0..5).rev() {
            let r = c.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{algo}");
            let h = r.headers();
            assert_eq!(h["x-ratelimit-limit"], "5", "{algo}");
            assert_eq!(
                h["x-ratelimit-remaining"],
                expect_remaining.to_string().as_str(),
                "{algo}"
            );
            let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&reset), "{algo}: reset {reset}");
            assert_eq!(h["ratelimit-policy"], "\"anonymous\";q=5;w=60", "{algo}");
            assert_eq!(
                h["ratelimit"].to_str().unwrap(),
                format!("\"anonymous\";r={expect_remaining};t={reset}"),
                "{algo}"
            );
        }
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 429, "{algo}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{algo}: retry-after {retry}");
        assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        assert!(r.headers().contains_key("x-request-id"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["limit"], 5);
        let (s, _) = statuses(&c, &url, &[], 5).await;
        assert_eq!(allowed(&s), 0, "{algo}: {s:?}");
        assert_eq!(
            bs[0].shared.served().get("/limited").copied().unwrap_or(0) % 5,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_algorithm_allows_exactly_the_limit_on_redis() {
    let redis = RedisServer::start().await;
    each_algorithm(Some(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_algorithm_allows_exactly_the_limit_embedded() {
    each_algorithm(None).await;
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_by_api_key_and_jwt_and_bad_credentials_are_401() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        r#"{}{}[redis]
url = "{}"
[rate_limit]
[rate_limit.jwt]
hs256_secret = "test-secret"
[rate_limit.tiers.anonymous]
limit = 1
[rate_limit.tiers.authenticated]
limit = 2
[rate_limit.tiers.premium]
limit = 3
[[rate_limit.api_keys]]
key = "k-acme"
client = "acme"
"#,
        pool(bs[0].addr),
        routes(""),
        redis.url()
    ))
    .await;
    let c = client(None);
    let url = sluice.url("/t");
    let (s, h) = statuses(&c, &url, &[("x-api-key", "k-acme")], 4).await;
    assert_eq!(s, [200, 200, 200, 429], "premium by API key");
    assert_eq!(h["ratelimit-policy"], "\"premium\";q=3;w=60");

    let user = hs256(
        serde_json::json!({"sub": "alice", "exp": now_s() + 600}),
        "test-secret",
    );
    let bearer = format!("Bearer {user}");
    let (s, _) = statuses(&c, &url, &[("authorization", &bearer)], 3).await;
    assert_eq!(s, [200, 200, 429], "authenticated by JWT");
    let vip = hs256(
        serde_json::json!({"sub": "bob", "tier": "premium", "exp": now_s() + 600}),
        "test-secret",
    );
    let (s, _) = statuses(&c, &url, &[("authorization", &format!("Bearer {vip}"))], 4).await;
    assert_eq!(s, [200, 200, 200, 429], "tier claim");

    let expired = hs256(
        serde_json::json!({"sub": "carol", "exp": now_s() - 3600}),
        "test-secret",
    );
    let forged = hs256(
        serde_json::json!({"sub": "alice", "exp": now_s() + 600}),
        "wrong-secret",
    );
    for (what, h) in [
        ("expired", format!("Bearer {expired}")),
        ("wrong signature", format!("Bearer {forged}")),
        ("garbage", "Bearer not.a.jwt".to_owned()),
    ] {
        let r = c.get(&url).header("authorization", h).send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
    }
    let r = c
        .get(&url)
        .header("x-api-key", "k-unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "unknown API key is not an anonymous pass");

    let (s, _) = statuses(&c, &url, &[], 2).await;
    assert_eq!(s, [200, 429], "anonymous by IP");
    assert_eq!(bs[0].shared.served()["/t"], 3 + 2 + 3 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_and_api_keys_in_a_redis_hash() {
    let redis = RedisServer::start().await;
    let mut conn = redis.client().await;
    let _: () = redis::cmd("HSET")
        .arg("sluice:apikeys")
        .arg("k-redis")
        .arg("globex:authenticated")
        .query_async(&mut conn)
        .await
        .unwrap();
    let bs = backends(1).await;
    let fixtures = workspace_root().join("tests/fixtures/jwt");
    for (alg, public, private) in [
        (
            jsonwebtoken::Algorithm::RS256,
            "rs256-public.pem",
            "rs256-private.pem",
        ),
        (
            jsonwebtoken::Algorithm::ES256,
            "es256-public.pem",
            "es256-private.pem",
        ),
    ] {
        // Counters are shared through Redis: start each algorithm's round from zero.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("{sluice:rl:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        for k in keys {
            let _: () = redis::cmd("DEL")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let key_line = match alg {
            jsonwebtoken::Algorithm::RS256 => "rs256_public_key",
            _ => "es256_public_key",
        };
        let sluice = Sluice::start(format!(
            "{}{}[redis]\nurl = \"{}\"\n[rate_limit]\napi_keys_redis_hash = \"sluice:apikeys\"\n[rate_limit.jwt]\n{key_line} = \"{}\"\n[rate_limit.tiers.authenticated]\nlimit = 2\n",
            pool(bs[0].addr),
            routes(""),
            redis.url(),
            fixtures.join(public).display()
        ))
        .await;
        let pem = std::fs::read(fixtures.join(private)).unwrap();
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = encode(
            &Header::new(alg),
            &serde_json::json!({"sub": "dave", "exp": now_s() + 600}),
            &key,
        )
        .unwrap();
        let c = client(None);
        let (s, _) = statuses(
            &c,
            &sluice.url("/a"),
            &[("authorization", &format!("Bearer {token}"))],
            3,
        )
        .await;
        assert_eq!(s, [200, 200, 429], "{alg:?}");
        let (s, _) = statuses(&c, &sluice.url("/a"), &[("x-api-key", "k-redis")], 3).await;
        assert_eq!(
            s,
            [200, 200, 429],
            "API key from the Redis hash, its tier from the value"
        );
        let (s, _) = statuses(&c, &sluice.url("/a"), &[("x-api-key", "k-nope")], 1).await;
        assert_eq!(s, [401]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}{}[rate_limit]\ntrusted_proxies = [\"127.0.0.2/32\"]\n[rate_limit.tiers.anonymous]\nlimit = 2\n",
        pool(bs[0].addr),
        routes("")
    ))
    .await;
    let url = sluice.url("/x");
    // An untrusted client cannot pick a fresh identity per request.
    let untrusted = client(Some(IpAddr::from([127, 0, 0, 3])));
    let mut s = Vec::new();
    for i in 0..3 {
        let r = untrusted
            .get(&url)
            .header("x-forwarded-for", format!("9.9.9.{i}"))
            .send()
            .await
            .unwrap();
        s.push(r.status().as_u16());
    }
    assert_eq!(s, [200, 200, 429]);
    // Behind the trusted proxy, each forwarded client has its own limit.
    let proxy = client(Some(IpAddr::from([127, 0, 0, 2])));
    for i in 0..3 {
        let r = proxy
            .get(&url)
            .header("x-forwarded-for", format!("9.9.9.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (s, _) = statuses(&proxy, &url, &[("x-forwarded-for", "9.9.9.0")], 2).await;
    assert_eq!(s, [200, 429], "9.9.9.0 has used its 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemptions_route_overrides_and_shadow_mode() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let routes = "[[routes]]\nupstream = \"api\"\n[[routes]]\npath_prefix = \"/login\"\nupstream = \"api\"\nrate_limit = { limit = 2, window_ms = 60000, algorithm = \"fixed_window\" }\n[[routes]]\npath_prefix = \"/free\"\nupstream = \"api\"\nrate_limit = { off = true }\n";
    let sluice = Sluice::start(format!(
        "{}{routes}[redis]\nurl = \"{}\"\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 5\n",
        pool(bs[0].addr),
        redis.url()
    ))
    .await;
    let c = client(None);
    let (s, h) = statuses(&c, &sluice.url("/login"), &[], 3).await;
    assert_eq!(s, [200, 200, 429], "per-route override");
    assert_eq!(h["ratelimit-policy"], "\"route\";q=2;w=60");
    let (s, _) = statuses(&c, &sluice.url("/other"), &[], 5).await;
    assert_eq!(
        allowed(&s),
        5,
        "the route's count is separate from the tier's"
    );
    assert_eq!(statuses(&c, &sluice.url("/other"), &[], 1).await.0, [429]);
    let (s, h) = statuses(&c, &sluice.url("/health"), &[], 10).await;
    assert_eq!(allowed(&s), 10, "exempt by default");
    assert!(!h.contains_key("x-ratelimit-limit"));
    assert_eq!(
        allowed(&statuses(&c, &sluice.url("/free/x"), &[], 10).await.0),
        10
    );

    let shadow = Sluice::start(format!(
        "{}{}[rate_limit]\nmode = \"shadow\"\n[rate_limit.tiers.anonymous]\nlimit = 2\n",
        pool(bs[0].addr),
        "[[routes]]\nupstream = \"api\"\n"
    ))
    .await;
    let (s, h) = statuses(&c, &shadow.url("/s"), &[], 4).await;
    assert_eq!(s, [200, 200, 200, 200], "shadow never rejects");
    assert_eq!(h["x-ratelimit-remaining"], "0", "but reports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_key_expires_after_its_window() {
    let redis = RedisServer::start().await;
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "{}{}[redis]\nurl = \"{}\"\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 50\nwindow_ms = 2000\nalgorithm = \"sliding_window_log\"\n[rate_limit.tiers.authenticated]\nlimit = 50\nwindow_ms = 2000\nalgorithm = \"gcra\"\n[rate_limit.jwt]\nhs256_secret = \"s\"\n",
        pool(bs[0].addr),
        routes("[[routes]]\npath_prefix = \"/f\"\nupstream = \"api\"\nrate_limit = { limit = 5, window_ms = 2000, algorithm = \"fixed_window\" }\n[[routes]]\npath_prefix = \"/w\"\nupstream = \"api\"\nrate_limit = { limit = 5, window_ms = 2000, algorithm = \"sliding_window\" }\n"),
        redis.url()
    ))
    .await;
    let c = client(None);
    let token = hs256(serde_json::json!({"sub": "eve", "exp": now_s() + 600}), "s");
    statuses(&c, &sluice.url("/x"), &[], 2).await;
    statuses(
        &c,
        &sluice.url("/x"),
        &[("authorization", &format!("Bearer {token}"))],
        2,
    )
    .await;
    statuses(&c, &sluice.url("/f"), &[], 2).await;
    statuses(&c, &sluice.url("/w"), &[], 2).await;
    let mut conn = redis.client().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for k in &keys {
        assert!(
            k.starts_with("{sluice:rl:"),
            "hash-tagged under the prefix: {k}"
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 4000, "{k} has ttl {ttl}");
    }
}

/// The rate-limit fields are written as raw HTTP/1 lines after the response's map (vendored
/// pingora-http); over HTTP/2 the server folds them into the map. Either way a client sees each
/// field once, with the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_are_the_same_over_http1_and_http2() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "{}{}[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 5\nwindow_ms = 60000\nalgorithm = \"fixed_window\"\n",
        pool(bs[0].addr),
        routes("")
    ))
    .tls()
    .start()
    .await;
    let port = sluice.tls_addr.unwrap().port();
    let h2 = demo_tls_client().build().unwrap();
    let plain = client(None);
    for (i, (version, r)) in [
        (
            reqwest::Version::HTTP_2,
            h2.get(format!("https://localhost:{port}/a"))
                .send()
                .await
                .unwrap(),
        ),
        (
            reqwest::Version::HTTP_11,
            plain.get(sluice.url("/b")).send().await.unwrap(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200, "{version:?}");
        let h = r.headers();
        for name in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-policy",
            "ratelimit",
        ] {
            assert_eq!(h.get_all(name).iter().count(), 1, "{version:?} {name}");
        }
        let remaining = 4 - i;
        assert_eq!(h["x-ratelimit-limit"], "5", "{version:?}");
        assert_eq!(
            h["x-ratelimit-remaining"],
            remaining.to_string().as_str(),
            "{version:?}"
        );
        let reset: u64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "{version:?}: reset {reset}");
        assert_eq!(
            h["ratelimit-policy"], "\"anonymous\";q=5;w=60",
            "{version:?}"
        );
        assert_eq!(
            h["ratelimit"].to_str().unwrap(),
            format!("\"anonymous\";r={remaining};t={reset}"),
            "{version:?}"
        );
        // The backend's own fields and Sluice's request id are still there.
        assert!(h.contains_key("x-request-id"), "{version:?}");
        assert!(h.contains_key("x-backend-id"), "{version:?}");
    }
}
