//! `sluice --check`, and every file in `conf/`.

mod support;

use std::path::Path;

use support::*;

#[test]
fn every_file_in_conf_parses_and_passes_check() {
    let dir = workspace_root().join("conf");
    // conf/ratelimit.toml reads its JWT secret from the environment, as an operator would.
    std::env::set_var("SLUICE_JWT_SECRET", "example-secret");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            sluice::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let (status, stdout, stderr) =
                run_sluice(&["--check", "--config", path.to_str().unwrap()]);
            assert!(status.success(), "{}: {stderr}", path.display());
            assert!(stdout.ends_with(": ok\n"), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}

/// Run `--check` on `text`; it must fail, and its output must contain every one of `expect`.
fn check_fails_naming(text: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    std::fs::write(&file, text).unwrap();
    let (status, _, stderr) = run_sluice(&["--check", "--config", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let shown = stderr.replace(file.to_str().unwrap(), "broken.toml");
    for e in expect {
        assert!(shown.contains(e), "missing {e:?} in:\n{shown}");
    }
}

#[test]
fn check_names_every_problem_with_file_line_and_key() {
    check_fails_naming(
        r#"[server]
listen = ["127.0.0.1:99999"]
threadz = 4

[upstreams.api]
strategy = "round-robin"
retries = -1
backends = [
  { addr = "127.0.0.1:9001", weight = 0 },
  { addr = "127.0.0.1:9001" },
  { addr = "localhost" },
]

[upstreams.none]
backends = []

[[routes]]
host = "bad host!"
path_prefix = "api"
upstream = "apj"
"#,
        &[
            "broken.toml: 10 problems",
            "broken.toml:3:1: server.threadz: unknown field `threadz`",
            "broken.toml:6:1: upstreams.api.strategy: unknown strategy `round-robin`, expected one of: round_robin | weighted",
            "broken.toml:7:1: upstreams.api.retries: must be 0..=16, got -1",
            "broken.toml:9:30: upstreams.api.backends[0].weight: must be 1..=1000, got 0",
            "broken.toml:10:5: upstreams.api.backends[1].addr: duplicate backend `127.0.0.1:9001`: already listed as backends[0]",
            "broken.toml:11:5: upstreams.api.backends[2].addr: `localhost` has no port",
            "broken.toml:15:1: upstreams.none.backends: empty pool",
            "broken.toml:18:1: routes[0].host: `bad host!` is not a host pattern",
            "broken.toml:19:1: routes[0].path_prefix: `api` must start with `/`",
            "broken.toml:20:1: routes[0].upstream: no upstream named `apj` (defined: api, none)",
        ],
    );
}

#[test]
fn check_reports_wrong_types_and_bad_listeners_together() {
    check_fails_naming(
        "[server]\nlisten = [\"nowhere\", 8080]\nthreads = \"two\"\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n",
        &["broken.toml:2:", "server.listen[1]: invalid type: integer `8080`, expected a string"],
    );
    check_fails_naming(
        "[server]\nlisten = [\"nowhere\"]\n[upstreams.a]\nbackends = [{ addr = \"127.0.0.1:1\" }]\n[[routes]]\nupstream = \"a\"\n",
        &["broken.toml:2:", "server.listen[0]: `nowhere` is not a listen address: expected ip:port"],
    );
}

#[test]
fn check_reports_syntax_errors_and_missing_files() {
    check_fails_naming("[server\n", &["broken.toml:1:", "invalid TOML"]);
    let (status, _, stderr) = run_sluice(&["--check", "--config", "/nonexistent/sluice.toml"]);
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("/nonexistent/sluice.toml: cannot read the file"),
        "{stderr}"
    );
    assert!(!Path::new("/nonexistent").exists());
}

#[test]
fn a_bad_config_never_starts_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[upstreams.a]\nbackends = []\n").unwrap();
    let (status, _, stderr) = run_sluice(&["--config", file.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("upstreams.a.backends: empty pool"),
        "{stderr}"
    );
}

#[test]
fn operations_sections_are_validated_together() {
    check_fails_naming(
        r#"[admin]
listen = "nowhere"

[logging]
format = "yaml"

[reload]
debounce_ms = 1

[upstreams.api]
backends = [{ addr = "127.0.0.1:9001" }]

[[routes]]
name = "same"
upstream = "api"

[[routes]]
name = "same"
path_prefix = "/x"
upstream = "api"
"#,
        &[
            "broken.toml:2:1: admin.listen: `nowhere` is not a listen address",
            "broken.toml:5:1: logging.format: unknown format `yaml`, expected one of: text, json",
            "broken.toml:8:1: reload.debounce_ms",
            "routes[1].name: route name `same` is used twice",
        ],
    );
}

/// Issue 17: `--print-config` shows the effective config (defaults filled in, secrets redacted);
/// `--version` names the Pingora release in `Cargo.toml` and the vendored crates.
#[test]
fn print_config_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        "[admin]\ntoken = \"very-secret-admin\"\n[upstreams.api]\nbackends = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\nupstream = \"api\"\n",
    )
    .unwrap();
    let (status, out, err) = run_sluice(&["--print-config", "--config", path.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert!(!out.contains("very-secret-admin"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(
        v["upstreams"][0]["connect_timeout"], 5000,
        "defaults filled in"
    );
    std::fs::write(&path, "[upstreams.api]\nbackends = 3\n").unwrap();
    let (status, _, err) = run_sluice(&["--print-config", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("upstreams.api.backends"), "{err}");

    let (status, out, _) = run_sluice(&["--version"]);
    assert!(status.success());
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let pinned = cargo
        .lines()
        .find_map(|l| l.strip_prefix("pingora = { version = \"="))
        .and_then(|l| l.split('"').next())
        .expect("pingora pinned in Cargo.toml");
    assert!(out.contains(&format!("pingora {pinned},")), "{out}");
    // Every crate patched in Cargo.toml's [patch.crates-io] is named.
    let patched: Vec<&str> = cargo
        .split("[patch.crates-io]")
        .nth(1)
        .expect("a [patch.crates-io] section")
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
        .collect();
    assert!(patched.contains(&"pingora-core"), "{patched:?}");
    for krate in patched {
        assert!(
            out.contains(krate),
            "{krate} missing from --version:\n{out}"
        );
    }
}
