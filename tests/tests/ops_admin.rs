//! The admin API: authorization, readiness, status, effective config with secrets redacted, and
//! Prometheus metrics that parse and move with traffic.

mod support;

use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "s3cret-admin-token";

/// Every metric family Sluice exports (docs/operations.md lists them; the Grafana dashboard
/// in docker/ queries them).
const FAMILIES: [&str; 31] = [
    "sluice_requests_total",
    "sluice_request_duration_seconds",
    "sluice_upstream_duration_seconds",
    "sluice_requests_in_flight",
    "sluice_websockets_open",
    "sluice_client_connections_open",
    "sluice_backend_up",
    "sluice_backend_in_flight",
    "sluice_backend_selections_total",
    "sluice_backend_failures_total",
    "sluice_backend_ejections_total",
    "sluice_backend_retries_total",
    "sluice_ratelimit_checks_total",
    "sluice_ratelimit_near_limit_total",
    "sluice_ratelimit_redis_errors_total",
    "sluice_ratelimit_breaker_open",
    "sluice_redis_breaker_transitions_total",
    "sluice_config_reloads_total",
    "sluice_config_generation",
    "sluice_build_info",
    "sluice_cache_requests_total",
    "sluice_cache_purged_total",
    "sluice_cache_stored_total",
    "sluice_cache_stored_bytes_total",
    "sluice_cache_entries",
    "sluice_cache_bytes",
    "sluice_cache_redis_duration_seconds",
    "sluice_cache_redis_errors_total",
    "sluice_cache_breaker_open",
    "sluice_access_log_lines_total",
    "sluice_access_log_dropped_total",
];

async fn metrics(c: &reqwest::Client, sluice: &Sluice) -> (String, prometheus_parse::Scrape) {
    let r = c.get(sluice.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let scrape = parse(&text);
    (text, scrape)
}

/// The exposition `text`, parsed (panics when it does not parse).
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a scalar"),
        })
        .collect();
    if found.len() != 1 {
        let all: Vec<_> = s
            .samples
            .iter()
            .filter(|x| x.metric == name)
            .map(|x| (&x.labels, &x.value))
            .collect();
        panic!("{name}{labels:?}: found {found:?} among {all:#?}");
    }
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_need_the_token_and_reads_do_not_on_loopback() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .admin_token(TOKEN)
    .start()
    .await;
    let c = client(None);
    for path in ["/healthz", "/readyz", "/status", "/config", "/metrics"] {
        let r = c.get(sluice.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
    }
    let r = c.post(sluice.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .post(sluice.admin_url("/reload"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(sluice.admin_url("/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(sluice.admin_url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_mutating_calls_are_refused() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let r = client(None)
        .post(sluice.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn a_public_admin_address_without_a_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.toml");
    std::fs::write(
        &f,
        "[admin]\nlisten = \"0.0.0.0:9901\"\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n",
    )
    .unwrap();
    let (st, _, err) = run_sluice(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains("admin.listen") && err.contains("token"),
        "{err}"
    );
    // With the token from the environment, the same address is accepted.
    std::fs::write(
        &f,
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"SLUICE_TEST_ADMIN_TOKEN_UNSET\"\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"a\"\n",
    )
    .unwrap();
    let (st, _, err) = run_sluice(&["--check", "--config", f.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("SLUICE_TEST_ADMIN_TOKEN_UNSET"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_effective_values_with_secrets_redacted() {
    let bs = backends(1).await;
    let sluice = Sluice::with_config(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n[redis]\nurl = \"redis://user:hunter2@127.0.0.1:1/\"\n[rate_limit]\napi_keys = [{{ key = \"k-very-secret\", client = \"acme\", tier = \"premium\" }}]\n[rate_limit.jwt]\nhs256_secret = \"jwt-very-secret\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .admin_token(TOKEN)
    .start()
    .await;
    let text = client(None)
        .get(sluice.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in ["hunter2", "k-very-secret", "jwt-very-secret", TOKEN] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(v["upstreams"][0]["connect_timeout"], 5000);
    assert_eq!(v["upstreams"][0]["strategy"], "round_robin");
    assert_eq!(v["rate_limit"]["api_keys"][0]["client"], "acme");
    assert_eq!(
        v["redis"]["target"]["url"],
        "redis://user:<redacted>@127.0.0.1:1/"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_health_round() {
    // The only backend never answers its probe: the first round takes the probe timeout.
    let hang = HangingServer::start().await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[upstreams.api.health]\ninterval_ms = 500\ntimeout_ms = 1500\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(hang.addr, None)])
    ))
    .await;
    let c = client(None);
    let r = c.get(sluice.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["health_checked"], false);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.get(sluice.admin_url("/readyz")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < end, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.get(sluice.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let bs = backends(2).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\nstrategy = \"round_robin\"\n{}\n[[routes]]\nname = \"api\"\nupstream = \"api\"\n[rate_limit]\n[rate_limit.tiers.anonymous]\nlimit = 30\n",
        backends_toml(&[(bs[0].addr, None), (bs[1].addr, None)])
    ))
    .await;
    let c = client(None);
    let (_, before) = metrics(&c, &sluice).await;
    assert_eq!(
        value(
            &before,
            "sluice_backend_up",
            &[("backend", &bs[0].addr.to_string())]
        ),
        1.0
    );
    assert_eq!(value(&before, "sluice_config_generation", &[]), 1.0);

    // 20 GETs (2xx), 4 GETs of /status/503 (5xx), 2 POSTs (2xx), then 12 GETs of which the
    // last 8 are over the limit of 30 (429).
    for _ in 0..20 {
        c.get(sluice.url("/ok")).send().await.unwrap();
    }
    for _ in 0..4 {
        c.get(sluice.url("/status/503")).send().await.unwrap();
    }
    for _ in 0..2 {
        c.post(sluice.url("/ok")).body("x").send().await.unwrap();
    }
    let mut limited = 0;
    for _ in 0..12 {
        if c.get(sluice.url("/ok")).send().await.unwrap().status() == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 8);
    c.get(sluice.url("/health")).send().await.unwrap(); // exempt from limits

    // Metrics are recorded in the logging phase, after the client has its response: wait
    // until all 39 requests are counted.
    let text = sluice
        .metrics_when(|t| {
            t.contains("sluice_request_duration_seconds_count{route=\"api\",upstream=\"api\"} 39")
        })
        .await;
    let after = parse(&text);
    let req = |m: &str, class: &str| {
        value(
            &after,
            "sluice_requests_total",
            &[
                ("route", "api"),
                ("upstream", "api"),
                ("method", m),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("GET", "2xx"), 25.0); // 20 + 4 allowed + /health
    assert_eq!(req("GET", "5xx"), 4.0);
    assert_eq!(req("POST", "2xx"), 2.0);
    assert_eq!(req("GET", "4xx"), 8.0);
    let sel = |b: usize| {
        value(
            &after,
            "sluice_backend_selections_total",
            &[("backend", &bs[b].addr.to_string())],
        )
    };
    assert_eq!(sel(0) + sel(1), 31.0); // every proxied request, none of the 429s
    assert_eq!(
        value(
            &after,
            "sluice_ratelimit_checks_total",
            &[("tier", "anonymous"), ("result", "allowed")]
        ),
        30.0
    );
    assert_eq!(
        value(
            &after,
            "sluice_ratelimit_checks_total",
            &[("tier", "anonymous"), ("result", "limited")]
        ),
        8.0
    );
    // Near the limit: remaining below 3 (10% of 30) happens for the last 3 allowed.
    assert_eq!(
        value(
            &after,
            "sluice_ratelimit_near_limit_total",
            &[("tier", "anonymous")]
        ),
        3.0
    );
    let count = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_request_duration_seconds" && s.labels.get("route") == Some("api")
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(h) => h.last().unwrap().count,
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(count, 39.0);
    assert!(value(&after, "sluice_client_connections_open", &[]) >= 1.0);

    // Every family is exported (the request families once a request was counted: a family
    // without a series is not written), and Prometheus' own linter accepts the exposition.
    let (text, _) = metrics(&c, &sluice).await;
    for family in FAMILIES {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    Sluice::promtool_check(&text);
}

/// `sluice_client_connections_open` counts client connections on the proxy listeners as they
/// open and close (not the admin API's own), without scanning `/proc` at scrape time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_gauge_follows_clients() {
    use std::io::{Read, Write};
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let open = |n: usize| format!("sluice_client_connections_open {n}\n");
    sluice.metrics_when(|t| t.contains(&open(0))).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(sluice.addr).unwrap();
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        assert!(s.read(&mut buf).unwrap() > 0);
        conns.push(s);
    }
    sluice.metrics_when(|t| t.contains(&open(3))).await;
    conns.truncate(1);
    sluice.metrics_when(|t| t.contains(&open(1))).await;
    drop(conns);
    sluice.metrics_when(|t| t.contains(&open(0))).await;
}

/// Issue 17: on a listener off loopback (here `0.0.0.0`), the probes need no token (a kubelet
/// cannot send one), `/metrics` needs it unless `public_metrics` is set, and everything else,
/// reads included, still needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token_off_loopback_and_metrics_only_by_setting() {
    let bs = backends(1).await;
    let body = format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    );
    for public_metrics in [false, true] {
        let sluice = Sluice::with_config(body.clone())
            .admin_token(TOKEN)
            .admin_off_loopback(&format!("public_metrics = {public_metrics}\n"))
            .start()
            .await;
        let c = client(None);
        let status = |path: &'static str, token: Option<&'static str>| {
            let mut req = c.get(sluice.admin_url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status("/healthz", None).await, 200);
        let ready = status("/readyz", None).await;
        assert!(
            ready == 200 || ready == 503,
            "{ready}: answered, not refused"
        );
        for path in ["/status", "/config", "/cache/stats"] {
            assert_eq!(status(path, None).await, 401, "{path}");
            assert_eq!(status(path, Some("wrong")).await, 401, "{path}");
            assert_eq!(status(path, Some(TOKEN)).await, 200, "{path}");
        }
        let metrics = status("/metrics", None).await;
        assert_eq!(metrics, if public_metrics { 200 } else { 401 });
        assert_eq!(status("/metrics", Some(TOKEN)).await, 200);
        let r = c.post(sluice.admin_url("/reload")).send().await.unwrap();
        assert_eq!(
            r.status(),
            401,
            "state-changing calls always need the token"
        );
    }
}
