//! The Kubernetes manifests in `docker/kubernetes/` (issue 17): the example overlay renders with
//! `kubectl kustomize`, every object validates against the Kubernetes schemas offline
//! (`kubernetes-validate`, strict), the probes and ports match the config in the ConfigMap, the
//! pod is locked down as the docs say, and that config passes `sluice --check`.

mod support;

use std::process::Command;

use serde_yaml::Value;
use support::*;

/// `kubectl kustomize` of the example overlay, or `None` (with a message) without kubectl.
fn render() -> Option<String> {
    let dir = workspace_root().join("docker/kubernetes/overlays/example");
    let out = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: kubectl is not installed ({e}); the manifests were not rendered");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "kubectl kustomize failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, prefix: &str) -> &'a Value {
    objs.iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {prefix}*"))
}

#[test]
fn the_manifests_render_validate_and_match_the_config() {
    let Some(yaml) = render() else { return };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    // scripts/install-deps.sh installs kubernetes-validate (PyPI) with the other test tools.
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(file.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let objs = objects(&yaml);
    let kinds: Vec<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "StatefulSet",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }

    let config_map = find(&objs, "ConfigMap", "sluice-config-");
    let text = config_map["data"]["sluice.toml"].as_str().unwrap();
    let config: toml::Table = toml::from_str(text).unwrap();
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    let admin_port = port_of(config["admin"]["listen"].as_str().unwrap());
    let http_port = port_of(config["server"]["listen"][0].as_str().unwrap());

    let deploy = find(&objs, "Deployment", "sluice");
    let spec = &deploy["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let named = |name: &str| -> i64 {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no port named {name}"))
    };
    assert_eq!(named("admin"), admin_port, "admin port vs [admin] listen");
    assert_eq!(named("http"), http_port, "http port vs [server] listen");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "admin", "{probe}");
        // The probes send no token: the admin API must answer them without one.
        assert!(get.get("httpHeaders").is_none(), "{probe}");
    }
    // Shutdown: preStop, then Sluice's drain delay and grace period, all within the pod's grace.
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_i64()
        .unwrap();
    let drain = config["server"]["drain_delay_ms"].as_integer().unwrap() / 1000;
    let grace = config["server"]["grace_period_seconds"]
        .as_integer()
        .unwrap();
    let pod_grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        pod_grace > pre_stop + drain + grace,
        "terminationGracePeriodSeconds {pod_grace} <= {pre_stop} + {drain} + {grace}"
    );
    // Locked down.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    // The token comes from the Secret, under the name the config reads.
    let env = &c["env"][0];
    assert_eq!(
        env["name"].as_str(),
        config["admin"]["token_env"].as_str(),
        "token_env vs the container's env"
    );
    let secret = find(&objs, "Secret", "sluice-admin");
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["name"],
        secret["metadata"]["name"]
    );
    // Scrape annotation on the admin port; /metrics open to it by the config.
    let ann = &spec["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], admin_port.to_string().as_str());
    assert_eq!(config["admin"]["public_metrics"].as_bool(), Some(true));

    let hpa = find(&objs, "HorizontalPodAutoscaler", "sluice");
    assert_eq!(hpa["spec"]["minReplicas"], 3);
    assert_eq!(hpa["spec"]["maxReplicas"], 20);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let pdb = find(&objs, "PodDisruptionBudget", "sluice");
    assert_eq!(pdb["spec"]["minAvailable"], 2);

    // The config itself is valid (cluster names swapped for addresses this machine resolves).
    let dir = tempfile::tempdir().unwrap();
    let local = text
        .replace("api.default.svc.cluster.local:80", "127.0.0.1:9")
        .replace("redis.sluice.svc.cluster.local:6379", "127.0.0.1:6379");
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, local).unwrap();
    let out = Command::new(SLUICE_BIN)
        .args(["--check", "--config"])
        .arg(&path)
        .env("SLUICE_ADMIN_TOKEN", "test-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's config fails --check:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
