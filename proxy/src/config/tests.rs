//! Unit tests for config loading: defaults, and every problem reported at once with its place.

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str(text, Path::new("test.toml"), Path::new("."))
}

const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
threads = 2

[upstreams.api]
strategy = "weighted"
retries = 1
backends = [
  { addr = "127.0.0.1:9001", weight = 5 },
  { addr = "127.0.0.1:9002" },
]

[[routes]]
host = "*.Example.com"
path_prefix = "/api"
upstream = "api"
"#;

#[test]
fn good_config_has_defaults_filled_in() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.server.threads, 2);
    assert_eq!(
        c.server.grace_period.as_secs(),
        DEFAULT_GRACE_PERIOD_SECONDS
    );
    let u = &c.upstreams[0];
    assert_eq!(u.strategy, Strategy::Weighted);
    assert_eq!(u.retries, 1);
    assert_eq!(
        u.connect_timeout.as_millis() as u64,
        DEFAULT_CONNECT_TIMEOUT_MS
    );
    assert_eq!(u.backends[0].weight, 5);
    assert_eq!(u.backends[1].weight, DEFAULT_WEIGHT);
    assert_eq!(c.routes[0].host, HostMatch::Suffix(".example.com".into()));
    assert_eq!(c.routes[0].upstream, Some(0));
}

#[test]
fn every_problem_is_reported_at_once_with_its_place() {
    let text = r#"[server]
listen = ["nonsense"]
threads = 0

[upstreams.api]
strategy = "fastest"
backends = [
  { addr = "127.0.0.1:9001", weight = 0 },
  { addr = "127.0.0.1:9001" },
  { addr = "not an address" },
]

[upstreams.empty]
backends = []

[upstreams.typo]
backend = []

[[routes]]
upstream = "missing"
"#;
    let err = load(text).unwrap_err();
    let shown = err.to_string();
    let expect = [
        ("server.listen[0]", 2),
        ("server.threads", 3),
        ("upstreams.api.strategy", 6),
        ("upstreams.api.backends[0].weight", 8),
        ("upstreams.api.backends[1].addr", 9),
        ("upstreams.api.backends[2].addr", 10),
        ("upstreams.empty.backends", 14),
        ("routes[0].upstream", 20),
    ];
    for (path, line) in expect {
        let p = err
            .problems
            .iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem for {path} in:\n{shown}"));
        assert_eq!(p.location.map(|l| l.0), Some(line), "{path} in:\n{shown}");
    }
    // The unknown key names the key and where it is.
    let typo = err
        .problems
        .iter()
        .find(|p| p.path.starts_with("upstreams.typo"))
        .unwrap();
    assert!(typo.message.contains("unknown field `backend`"), "{shown}");
    assert!(
        shown.contains("test.toml:3:1: server.threads: must be 1..=1024, got 0"),
        "{shown}"
    );
}

#[test]
fn wrong_types_name_the_nested_key() {
    let text = "[upstreams.api]\nbackends = [{ addr = \"127.0.0.1:1\", weight = \"heavy\" }]\n[[routes]]\nupstream = \"api\"\n";
    let err = load(text).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].path, "upstreams.api.backends[0].weight");
    assert!(err.problems[0].message.contains("invalid type"), "{err}");
    assert_eq!(err.problems[0].location.map(|l| l.0), Some(2));
}

#[test]
fn syntax_errors_have_a_line() {
    let err = load("[server\nthreads = 1\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(err.problems[0].message.starts_with("invalid TOML"));
    assert_eq!(err.problems[0].location.map(|l| l.0), Some(1));
}

#[test]
fn unknown_top_level_sections_and_missing_routes_are_named() {
    let err = load("[upstream.api]\nbackends = []\n").unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["upstream", "upstreams", "routes"], "{err}");
}

#[test]
fn tls_files_must_exist() {
    let text = "[server]\n[[server.tls]]\nlisten = \"127.0.0.1:8443\"\ncert = \"nope.pem\"\nkey = \"nope.key\"\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n";
    let err = load(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["server.tls[0].cert", "server.tls[0].key"], "{err}");
}

#[test]
fn every_bad_server_and_upstream_number_is_named_at_once() {
    // Each of these used to stop the checks of its section at the first bad value.
    let text = r#"[server]
threads = 0
grace_period_seconds = -1
client_header_timeout_ms = 0
max_connections = 0

[upstreams.api]
connect_timeout_ms = 0
retries = 99
max_fails = -1
websocket_idle_timeout_ms = 0
backends = [{ addr = "127.0.0.1:1" }]

[[routes]]
upstream = "api"
"#;
    let err = load(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server.threads",
            "server.grace_period_seconds",
            "server.client_header_timeout_ms",
            "server.max_connections",
            "upstreams.api.connect_timeout_ms",
            "upstreams.api.websocket_idle_timeout_ms",
            "upstreams.api.retries",
            "upstreams.api.max_fails",
        ],
        "{err}"
    );
}

#[test]
fn bad_cache_freshness_keys_are_all_named() {
    let text = r#"[cache]
ttl_mode = "sometimes"
targeted_cache_control = "CDN-Cache-Control"
stale_retention_seconds = -1

[upstreams.a]
backends = [{ addr = "127.0.0.1:1" }]

[[routes]]
upstream = "a"
cache = "warm"
cache_ttl_mode = "never"
"#;
    let err = load(text).unwrap_err();
    let mut paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "cache.stale_retention_seconds",
            "cache.targeted_cache_control",
            "cache.ttl_mode",
            "routes[0].cache_ttl_mode",
        ],
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("`sometimes`: expected `origin` or `override`"),
        "{err}"
    );
}

#[test]
fn an_empty_ignored_query_parameter_glob_is_refused() {
    let text = "[cache]\nignore_query_params = [\"utm_*\", \"\", \"filter[x]\"]\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n";
    let err = load(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["cache.ignore_query_params[1]"], "{err}");
}

#[test]
fn failover_and_health_keys_are_validated_together() {
    let text = r#"[upstreams.api]
next_upstream = ["error", "http_418"]
slow_start_ms = -1
backends = [{ addr = "127.0.0.1:1", backup = true }]

[upstreams.api.health]
kind = "udp"
path = "health"
expect_status = "200-99"
rise = 0

[[routes]]
upstream = "api"
"#;
    let err = load(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "upstreams.api.next_upstream[1]",
            "upstreams.api.slow_start_ms",
            "upstreams.api.health.kind",
            "upstreams.api.health.path",
            "upstreams.api.health.expect_status",
            "upstreams.api.health.rise",
            "upstreams.api.backends",
        ],
        "{err}"
    );
    assert!(
        err.to_string().contains("every backend is a backup"),
        "{err}"
    );
}

#[test]
fn failover_and_health_defaults() {
    let c = load(
        "[upstreams.api]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[upstreams.api.health]\n[[routes]]\nupstream = \"api\"\n",
    )
    .unwrap();
    let u = &c.upstreams[0];
    assert_eq!(u.next_upstream, NextUpstream::DEFAULT);
    assert_eq!(u.retry_timeout, None);
    assert_eq!(u.passive.max_fails, DEFAULT_MAX_FAILS);
    assert_eq!(
        u.websocket_idle_timeout.as_millis() as u64,
        DEFAULT_WEBSOCKET_IDLE_TIMEOUT_MS
    );
    let h = u.health.as_ref().unwrap();
    assert_eq!(h.http_path.as_deref(), Some(DEFAULT_HEALTH_PATH));
    assert_eq!(
        (h.rise, h.fall, h.expect_status),
        (DEFAULT_RISE, DEFAULT_FALL, (200, 399))
    );
    assert!(h.initial_healthy);
}

/// `GET /config` shows the route rules as written (issue 15): path rules flattened under their
/// key names, templates and patterns as their source, networks as CIDRs.
#[test]
fn route_rules_are_shown_as_written() {
    let c = load(
        r#"
[upstreams.api]
backends = [{ addr = "127.0.0.1:1" }]
[[routes]]
path_regex = "^/v[0-9]+/"
methods = ["GET"]
scheme = "https"
upstream = "api"
rewrite = { pattern = "^/v1/(.*)$", to = "/$1" }
request_headers = { set = { "x-ip" = "{client_ip}" }, remove = ["x-debug"] }
allow = ["10.0.0.1/8"]
compression = { algorithms = ["br"] }
[[routes]]
path_exact = "/old"
redirect = { to = "https://{host}/new" }
"#,
    )
    .unwrap();
    let v = serde_json::to_value(&c.routes).unwrap();
    assert_eq!(v[0]["path_regex"], "^/v[0-9]+/");
    assert_eq!(v[0]["methods"][0], "GET");
    assert_eq!(v[0]["tls"], "https");
    assert_eq!(v[0]["rules"]["rewrite"]["pattern"], "^/v1/(.*)$");
    assert_eq!(
        v[0]["rules"]["request_headers"]["set"]["x-ip"],
        "{client_ip}"
    );
    assert_eq!(v[0]["rules"]["request_headers"]["remove"][0], "x-debug");
    assert_eq!(
        v[0]["rules"]["allow"][0], "10.0.0.0/8",
        "stored as its network"
    );
    assert_eq!(v[0]["rules"]["compression"]["algorithms"][0], "br");
    assert_eq!(v[1]["path_exact"], "/old");
    assert_eq!(v[1]["upstream"], serde_json::Value::Null);
    assert_eq!(v[1]["rules"]["redirect"]["to"], "https://{host}/new");
    assert_eq!(v[1]["rules"]["redirect"]["status"], 308);
}

/// `[route_defaults]` (issue 15): a route takes each default it does not set itself; a key it
/// sets replaces the default whole; a bad default is named once, under its own key path.
#[test]
fn route_defaults_fill_what_a_route_leaves_out() {
    let c = load(
        r#"
[route_defaults]
security_headers = "basic"
max_body_bytes = 1000
response_headers = { remove = ["server"] }
[upstreams.api]
backends = [{ addr = "127.0.0.1:1" }]
[[routes]]
upstream = "api"
[[routes]]
path_prefix = "/big"
upstream = "api"
max_body_bytes = 5000
response_headers = { add = { "x-a" = "1" } }
"#,
    )
    .unwrap();
    let (a, b) = (&c.routes[0].rules, &c.routes[1].rules);
    assert_eq!(a.security_headers, crate::rules::SecurityHeaders::Basic);
    assert_eq!(a.max_body_bytes, Some(1000));
    assert_eq!(a.response_headers.remove.len(), 1);
    assert_eq!(b.security_headers, crate::rules::SecurityHeaders::Basic);
    assert_eq!(b.max_body_bytes, Some(5000));
    assert!(
        b.response_headers.remove.is_empty(),
        "replaced whole, as nginx's add_header"
    );
    assert_eq!(b.response_headers.add.len(), 1);

    let e = load(
        r#"
[route_defaults]
security_headers = "max"
rewrite = { pattern = "x", to = "y" }
[upstreams.api]
backends = [{ addr = "127.0.0.1:1" }]
[[routes]]
upstream = "api"
[[routes]]
path_prefix = "/b"
upstream = "api"
"#,
    )
    .unwrap_err();
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["route_defaults.rewrite"], "{e}");
    let e = load(
        r#"
[route_defaults]
security_headers = "max"
[upstreams.api]
backends = [{ addr = "127.0.0.1:1" }]
[[routes]]
upstream = "api"
[[routes]]
path_prefix = "/b"
upstream = "api"
"#,
    )
    .unwrap_err();
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["route_defaults.security_headers"],
        "named once: {e}"
    );
}

#[test]
fn access_log_keys_are_validated_together() {
    let text = r#"[logging]
format = "yaml"
access_log_path = "/no/such/dir/access.log"
access_log_format = "$client $bogus ${status"
access_log_buffer = 0
access_log_sample = 1.5

[upstreams.a]
backends = [{ addr = "127.0.0.1:1" }]

[[routes]]
upstream = "a"
access_log_sample = -0.1
"#;
    let err = load(text).unwrap_err();
    let mut paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "logging.access_log_buffer",
            "logging.access_log_format",
            "logging.access_log_format",
            "logging.access_log_path",
            "logging.access_log_sample",
            "logging.format",
            "routes[0].access_log_sample",
        ],
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("unknown field `$bogus`"), "{msg}");
    assert!(
        msg.contains("$user_agent"),
        "the known fields are listed: {msg}"
    );
    assert!(msg.contains("/no/such/dir"), "{msg}");
}

#[test]
fn access_log_defaults_follow_the_process_log_format() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.logging.access_log_path, Destination::Stderr);
    assert_eq!(c.logging.access_log_format, AccessFormat::Text);
    assert_eq!(c.logging.access_log_buffer, DEFAULT_ACCESS_LOG_BUFFER);
    assert_eq!(c.routes[0].access_log_sample, 1.0);
    let c = load(&format!(
        "[logging]\nformat = \"json\"\naccess_log_sample = 0.25\n{GOOD}"
    ))
    .unwrap();
    assert_eq!(c.logging.access_log_format, AccessFormat::Json);
    assert_eq!(c.routes[0].access_log_sample, 0.25);
    // An integer is a fraction too (TOML `1` is not `1.0`).
    let c = load(&format!("[logging]\naccess_log_sample = 1\n{GOOD}"));
    assert!(c.is_ok(), "{:?}", c.err().map(|e| e.to_string()));
}

#[test]
fn a_tier_name_that_cannot_be_sent_in_a_header_is_refused() {
    let text = "[rate_limit.tiers.\"free plan\"]\nlimit = 5\n[rate_limit.tiers.\"a\\\"b\"]\nlimit = 5\n[rate_limit.tiers.gold-2]\nlimit = 5\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n";
    let err = load(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["rate_limit.tiers.a\"b", "rate_limit.tiers.free plan"],
        "{err}"
    );
}
