//! No Docker engine runs here, so the compose stack is checked statically: every file it mounts
//! or builds from exists, the mounted Sluice config passes `sluice --check` with the stack's
//! environment, Prometheus scrapes Sluice's admin port with the stack's token, and the Grafana
//! provisioning and dashboard parse and only query metrics Sluice exports.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use support::*;

fn docker_dir() -> PathBuf {
    workspace_root().join("docker")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Compose files use `<<: *anchor` merge keys.
    v.apply_merge().unwrap();
    v
}

fn compose() -> Value {
    yaml(&docker_dir().join("compose.yml"))
}

/// `(host path, container path)` of every bind mount of `service`.
fn mounts(service: &Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_sequence()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let s = m.as_str().expect("short volume syntax");
                    let mut parts = s.split(':');
                    let host = parts.next().unwrap();
                    let container = parts.next().expect("container path").to_owned();
                    assert!(host.starts_with("./"), "bind mounts are relative: {s}");
                    (docker_dir().join(host), container)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_stack_has_every_service_the_deployment_needs() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for s in [
        "redis",
        "backend1",
        "backend2",
        "backend3",
        "sluice",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(s), "service {s} missing: {names:?}");
    }
    // backend-sample runs from the sluice image with its own entrypoint.
    for b in ["backend1", "backend2", "backend3"] {
        assert_eq!(
            c["services"][b]["entrypoint"][0].as_str(),
            Some("/usr/local/bin/backend-sample"),
            "{b}"
        );
    }
}

#[test]
fn every_mounted_file_and_build_input_exists() {
    let c = compose();
    for (name, service) in c["services"].as_mapping().unwrap() {
        for (host, _) in mounts(service) {
            assert!(
                host.exists(),
                "{name:?} mounts {} which does not exist",
                host.display()
            );
        }
        if let Some(build) = service.get("build") {
            let context = docker_dir().join(build["context"].as_str().unwrap());
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap());
            assert!(dockerfile.exists(), "{}", dockerfile.display());
            assert!(
                context.join("Cargo.toml").exists(),
                "build context is the workspace"
            );
        }
    }
    let dockerfile = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("-p sluice -p backend-sample"));
    assert!(dockerfile.contains("cmake"), "Pingora needs cmake to build");
}

#[test]
fn the_mounted_sluice_config_passes_check_with_the_stack_environment() {
    let c = compose();
    let sluice = &c["services"]["sluice"];
    let (config, _) = mounts(sluice)
        .into_iter()
        .find(|(_, container)| container == "/etc/sluice/sluice.toml")
        .expect("sluice mounts its config at /etc/sluice/sluice.toml");
    // The command names the mounted file.
    let command: Vec<&str> = sluice["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(command, ["--config", "/etc/sluice/sluice.toml"]);
    let env = sluice["environment"].as_mapping().unwrap();
    let mut cmd = std::process::Command::new(SLUICE_BIN);
    cmd.arg("--check").arg("--config").arg(&config);
    for (k, v) in env {
        cmd.env(k.as_str().unwrap(), v.as_str().unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the stack's token variable the public admin address is refused.
    let out = std::process::Command::new(SLUICE_BIN)
        .arg("--check")
        .arg("--config")
        .arg(&config)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn prometheus_scrapes_the_admin_api_with_the_token() {
    let c = compose();
    let token = c["services"]["sluice"]["environment"]["SLUICE_ADMIN_TOKEN"]
        .as_str()
        .unwrap()
        .to_owned();
    let sluice_ip = c["services"]["sluice"]["networks"]["edge"]["ipv4_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let (prom, _) = mounts(&c["services"]["prometheus"])
        .into_iter()
        .find(|(_, container)| container == "/etc/prometheus/prometheus.yml")
        .expect("prometheus config mounted");
    let p = yaml(&prom);
    let job = &p["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["authorization"]["credentials"].as_str(),
        Some(token.as_str())
    );
    let target = job["static_configs"][0]["targets"][0].as_str().unwrap();
    assert_eq!(target, format!("{sluice_ip}:9901"));
    // The admin listener in the mounted config is on that port.
    let config = std::fs::read_to_string(docker_dir().join("sluice.toml")).unwrap();
    assert!(config.contains("listen = \"0.0.0.0:9901\""), "{config}");
}

#[test]
fn grafana_provisioning_and_dashboard_parse_and_query_real_metrics() {
    let c = compose();
    let grafana_mounts = mounts(&c["services"]["grafana"]);
    let provisioning = grafana_mounts
        .iter()
        .find(|(_, ct)| ct == "/etc/grafana/provisioning")
        .map(|(h, _)| h.clone())
        .expect("provisioning mounted");
    let ds = yaml(&provisioning.join("datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    let providers = yaml(&provisioning.join("dashboards/sluice.yml"));
    let dash_path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let (dash_dir, _) = grafana_mounts
        .iter()
        .find(|(_, ct)| ct == dash_path)
        .expect("the provider's dashboard path is mounted");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dash_dir.join("sluice.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 8);
    // Every metric a panel queries is one Sluice exports (histogram series by their family):
    // each component declares its own families, so look through all of proxy/src.
    let mut metrics_src = String::new();
    let mut dirs = vec![workspace_root().join("proxy/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                metrics_src.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("sluice_"))
        {
            let family = name.trim_end_matches("_bucket");
            assert!(
                metrics_src.contains(&format!("\"{family}\""))
                    || metrics_src.contains(&format!("{family}{{")),
                "dashboard queries {name}, which Sluice does not export"
            );
        }
    }
    for needed in [
        "sluice_requests_total",
        "sluice_request_duration_seconds_bucket",
        "sluice_backend_up",
        "sluice_backend_in_flight",
        "result=\"limited\"",
        "sluice_cache_requests_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needed)),
            "no panel uses {needed}"
        );
    }
}
