//! Test harness: real Sluice processes on free ports, in-process backend-sample servers bound to
//! port 0, readiness by polling with a deadline, everything stopped on drop.
#![allow(dead_code)]

pub mod ca;
pub mod dns;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use backend_sample::Handle as Backend;

/// Path of the Sluice binary under test.
pub const SLUICE_BIN: &str = env!("CARGO_BIN_EXE_sluice-under-test");
/// Path of the backend-sample binary under test.
pub const BACKEND_BIN: &str = env!("CARGO_BIN_EXE_backend-under-test");

/// Every rate-limit algorithm, by its config name.
pub const RATE_LIMIT_ALGORITHMS: [&str; 4] = [
    "fixed_window",
    "sliding_window",
    "sliding_window_log",
    "gcra",
];

/// The workspace root (for `conf/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A port that was free a moment ago and that this process has not handed out before, taken
/// below the kernel's ephemeral range (`ip_local_port_range`), where neither a `bind` to port 0
/// nor an outgoing connection can land. A port from port 0 is back in that pool once probed: a
/// CI run had a backend-sample of another test bind it before Sluice did, Sluice failed to
/// listen while its admin API was already up, and the test talked to the backend.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    const BASE: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(BASE);
    assert!(
        span >= 1_000,
        "ip_local_port_range starts at {ephemeral}: no room below it for the tests' ports"
    );
    // Each test process starts at its own place (by pid), so two at once rarely meet; the
    // probe below settles it when they do.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = (BASE + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {BASE}..{ephemeral}");
}

/// Poll `f` until it returns `Some`, or panic with `what` after `deadline`.
pub async fn eventually<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Read one response from an open raw connection: its head (lower-cased) and what followed it
/// (at least `Content-Length` bytes; the sample backend sets it). `None` when the connection
/// closed or failed before a head came; a panic when none came within 5 s.
pub async fn read_response(s: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("no answer in 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        assert!(n > 0, "body cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf.split_off(head_end)))
}

/// Start `n` in-process backends named b1..bn on free ports.
pub async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 1..=n {
        v.push(
            Backend::spawn("127.0.0.1:0".parse().unwrap(), &format!("b{i}"))
                .await
                .expect("spawn backend"),
        );
    }
    v
}

/// `backends = [...]` TOML for `addrs` with optional weights.
pub fn backends_toml(addrs: &[(SocketAddr, Option<u32>)]) -> String {
    let items: Vec<String> = addrs
        .iter()
        .map(|(a, w)| match w {
            Some(w) => format!("{{ addr = \"{a}\", weight = {w} }}"),
            None => format!("{{ addr = \"{a}\" }}"),
        })
        .collect();
    format!("backends = [{}]", items.join(", "))
}

/// A config with one pool `api` of the backends at `addrs` (default settings) and one route
/// sending everything to it.
pub fn one_pool(addrs: &[SocketAddr]) -> String {
    let members: Vec<_> = addrs.iter().map(|a| (*a, None)).collect();
    format!(
        "[upstreams.api]\n{}\n{}",
        backends_toml(&members),
        route_all("api")
    )
}

/// A running Sluice process.
pub struct Sluice {
    child: Child,
    /// The plain HTTP listener.
    pub addr: SocketAddr,
    /// The TLS listener, when one was asked for.
    pub tls_addr: Option<SocketAddr>,
    /// The admin API listener.
    pub admin: SocketAddr,
    /// The `[server]` and `[admin]` sections the harness wrote before the test's body.
    pub head: String,
    dir: tempfile::TempDir,
}

/// How to start a Sluice process.
#[derive(Default)]
pub struct SluiceBuilder {
    body: String,
    tls: bool,
    threads: Option<usize>,
    admin_token: Option<String>,
    /// Lines added to `[admin]`, and whether it binds the wildcard address (not loopback).
    admin_extra: String,
    admin_any: bool,
    /// Lay the config file out as a Kubernetes ConfigMap volume does (symlinks through `..data`).
    configmap_layout: bool,
    grace: u64,
    server_extra: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    listen_port: Option<u16>,
}

impl SluiceBuilder {
    /// Put the plain listener on `port` (chosen by the test, e.g. because another process must
    /// know it first).
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = Some(port);
        self
    }

    /// Add a TLS listener with the demo certificate in `conf/tls/`.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Proxy worker threads (default 2).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// `server.grace_period_seconds` (the harness's default is 0 so tests stop fast).
    pub fn grace(mut self, secs: u64) -> Self {
        self.grace = secs;
        self
    }

    /// Require this bearer token on the admin API.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Write the config as a Kubernetes ConfigMap volume holds it: `sluice.toml ->
    /// ..data/sluice.toml`, `..data -> ..v1` (see [`Sluice::configmap_update`]).
    pub fn configmap_layout(mut self) -> Self {
        self.configmap_layout = true;
        self
    }

    /// Bind the admin API on `0.0.0.0` (a non-loopback listener, reached at 127.0.0.1), with
    /// `extra` lines in `[admin]`.
    pub fn admin_off_loopback(mut self, extra: &str) -> Self {
        self.admin_any = true;
        self.admin_extra = extra.to_owned();
        self
    }

    /// Extra lines for the `[server]` section.
    pub fn server_extra(mut self, lines: &str) -> Self {
        self.server_extra.push_str(lines);
        self.server_extra.push('\n');
        self
    }

    /// Extra command-line arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    /// An environment variable for the process.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Start it and wait until every listener accepts connections.
    pub async fn start(self) -> Sluice {
        // A port can be taken between our probe and Sluice's bind: try a few fresh ones.
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let addr: SocketAddr =
                format!("127.0.0.1:{}", self.listen_port.unwrap_or_else(free_port))
                    .parse()
                    .unwrap();
            let tls_addr: Option<SocketAddr> = self
                .tls
                .then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut server = format!(
                "[server]\nlisten = [\"{addr}\"]\nthreads = {}\ngrace_period_seconds = {}\nupgrade_sock = \"{}\"\n{}",
                self.threads.unwrap_or(2),
                self.grace,
                dir.path().join("upgrade.sock").display(),
                self.server_extra,
            );
            if let Some(t) = tls_addr {
                let tls_dir = workspace_root().join("conf/tls");
                server.push_str(&format!(
                    "[[server.tls]]\nlisten = \"{t}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    tls_dir.join("cert.pem").display(),
                    tls_dir.join("key.pem").display()
                ));
            }
            let bind = if self.admin_any {
                format!("0.0.0.0:{}", admin.port())
            } else {
                admin.to_string()
            };
            server.push_str(&format!(
                "[admin]\nlisten = \"{bind}\"\n{}",
                self.admin_extra
            ));
            if let Some(t) = &self.admin_token {
                server.push_str(&format!("token = \"{t}\"\n"));
            }
            let config = dir.path().join("sluice.toml");
            let text = format!("{server}\n{}", self.body);
            if self.configmap_layout {
                let v1 = dir.path().join("..v1");
                std::fs::create_dir(&v1).unwrap();
                std::fs::write(v1.join("sluice.toml"), text).unwrap();
                std::os::unix::fs::symlink("..v1", dir.path().join("..data")).unwrap();
                std::os::unix::fs::symlink("..data/sluice.toml", &config).unwrap();
            } else {
                std::fs::write(&config, text).unwrap();
            }
            let log = dir.path().join("sluice.log");
            let child = spawn_sluice(&config, &log, &self.args, &self.env);
            let mut s = Sluice {
                child,
                addr,
                tls_addr,
                admin,
                head: server,
                dir,
            };
            match s.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return s,
                Err(log) => last_log = log,
            }
        }
        panic!("sluice did not start; last log:\n{last_log}");
    }
}

/// Run the Sluice binary on `config` with extra `args` and `env`, its stderr to `log`
/// (`SLUICE_TEST_LOG` sets its `RUST_LOG`).
fn spawn_sluice(config: &Path, log: &Path, args: &[String], env: &[(String, String)]) -> Child {
    Command::new(SLUICE_BIN)
        .arg("--config")
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| {
                "info,pingora_core=warn,pingora_proxy=warn,pingora=warn".into()
            }),
        )
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn sluice")
}

impl Sluice {
    /// Start Sluice with a whole config file of the test's (e.g. one `sluice import` wrote),
    /// listening on `http` (and `https`, when it has a TLS listener there). The harness only adds
    /// its own `upgrade_sock`, a zero grace period and an `[admin]` listener on a free port.
    pub async fn start_whole(text: &str, http: SocketAddr, https: Option<SocketAddr>) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let head = format!(
            "[server]\nupgrade_sock = \"{}\"\ngrace_period_seconds = 0\n",
            dir.path().join("upgrade.sock").display()
        );
        assert!(
            text.contains("\n[server]\n"),
            "the config has a [server] table"
        );
        let text = text.replacen("\n[server]\n", &format!("\n{head}"), 1)
            + &format!("\n[admin]\nlisten = \"{admin}\"\n");
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, &text).unwrap();
        let log = dir.path().join("sluice.log");
        let child = spawn_sluice(&config, &log, &[], &[]);
        let mut s = Sluice {
            child,
            addr: http,
            tls_addr: https,
            admin,
            head,
            dir,
        };
        if let Err(log) = s.wait_ready(Duration::from_secs(30)).await {
            panic!("sluice did not start with\n{text}\n{log}");
        }
        s
    }

    /// A builder whose config is `[server]` (chosen by the harness) followed by `body`.
    pub fn with_config(body: impl Into<String>) -> SluiceBuilder {
        SluiceBuilder {
            body: body.into(),
            ..SluiceBuilder::default()
        }
    }

    /// Start Sluice with `body` after a harness-made `[server]` section.
    pub async fn start(body: impl Into<String>) -> Sluice {
        Self::with_config(body).start().await
    }

    /// Poll until every listener accepts, or return the log if the process exited.
    async fn wait_ready(&mut self, deadline: Duration) -> Result<(), String> {
        let end = Instant::now() + deadline;
        let addrs: Vec<SocketAddr> = [self.addr, self.admin]
            .into_iter()
            .chain(self.tls_addr)
            .collect();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            // Something answering on the ports is not enough (it could be another process on
            // a port Sluice then failed to bind): Sluice's own `/readyz` must say its listeners
            // are open.
            if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) && self.listening().await {
                return Ok(());
            }
            if Instant::now() > end {
                return Err(format!("not listening after {deadline:?}:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the admin API's `/readyz` reports `"listening": true` (the proxy listeners are
    /// open; readiness may still wait on health checks or cache warming).
    async fn listening(&self) -> bool {
        let req = client(None).get(self.admin_url("/readyz"));
        let Ok(r) = req.timeout(Duration::from_secs(2)).send().await else {
            return false;
        };
        r.json::<serde_json::Value>()
            .await
            .is_ok_and(|v| v["listening"] == true)
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What Sluice has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET path` on the admin API (no token: loopback reads need none); status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = client(None).get(self.admin_url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The value of an unlabelled sample `name` in `/metrics` text, if it is there.
    pub fn sample(metrics: &str, name: &str) -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The current value of the unlabelled metric `name` (a gauge or a counter); the test fails
    /// when `/metrics` does not have it.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, metrics) = self.admin_get("/metrics").await;
        Self::sample(&metrics, name).unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    }

    /// The `/metrics` text once `settled` accepts it. Request metrics are recorded in the
    /// logging phase, after the client already has its response, so a scrape right after the
    /// last response can miss it: poll until the expected count shows, or panic after 5 s.
    pub async fn metrics_when(&self, settled: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, text) = self.admin_get("/metrics").await;
            assert_eq!(status, 200);
            if settled(&text) {
                return text;
            }
            assert!(Instant::now() < end, "metrics never settled:\n{text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Poll `GET /status` (every 20 ms, up to 10 s) until its JSON text contains `needle`; on
    /// timeout the test fails with the last status and the log.
    pub async fn status_contains(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.admin_json("/status").await.to_string();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < end,
                "/status never contained {needle}: {text}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Run Prometheus' linter on the exposition `text` (`promtool check metrics`): it must
    /// accept it without a single message. `promtool` comes with Debian's `prometheus`
    /// package, which `scripts/install-deps.sh` installs.
    pub fn promtool_check(text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs (scripts/install-deps.sh installs Debian's prometheus package)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `GET path` on the admin API, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.admin_get(path).await.1).expect("admin API answers JSON")
    }

    /// `GET path` on the admin API, as JSON, once `settled` accepts it. Like
    /// [`Sluice::metrics_when`]: the cache's hit and miss counts are recorded in the logging
    /// phase, after the client already has its response, so poll (every 10 ms, up to 5 s).
    pub async fn admin_json_when(
        &self,
        path: &str,
        settled: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.admin_json(path).await;
            if settled(&v) {
                return v;
            }
            assert!(Instant::now() < end, "{path} never settled: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `POST path` on the admin API with bearer `token` (and a JSON body); the status and the
    /// JSON answer.
    pub async fn admin_post(
        &self,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = client(None).post(self.admin_url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The config file Sluice was started with (tests rewrite it to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.toml")
    }

    /// Replace the test's part of the config file (the harness's head is kept).
    pub fn write_body(&self, body: &str) {
        let tmp = self.dir.path().join("sluice.toml.tmp");
        std::fs::write(&tmp, format!("{}\n{body}", self.head)).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// Update a [`SluiceBuilder::configmap_layout`] config as the kubelet does: the new file in
    /// a new directory, `..data` swapped to it by an atomic rename, the old directory deleted.
    pub fn configmap_update(&self, body: &str, version: u32) {
        let dir = self.dir.path();
        let new = dir.join(format!("..v{version}"));
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("sluice.toml"), format!("{}\n{body}", self.head)).unwrap();
        let old = std::fs::read_link(dir.join("..data")).unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }

    /// Send signal `sig` (`TERM`, `HUP`, `QUIT`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {}", self.pid());
    }

    /// Wait for the process to exit, up to `deadline`; its status, or `None` if still running.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start a second Sluice with `--upgrade` on the same config (and upgrade socket), then
    /// send this one SIGQUIT once the new one waits for the listeners. Returns the new process.
    pub async fn upgrade(&self) -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sluice.log");
        let sock = self.dir.path().join("upgrade.sock");
        let child = Command::new(SLUICE_BIN)
            .arg("--config")
            .arg(self.config_path())
            .arg("--upgrade")
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG")
                    .unwrap_or_else(|_| "info,pingora_core=info,pingora=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn upgraded sluice");
        let mut new = Sluice {
            child,
            addr: self.addr,
            tls_addr: self.tls_addr,
            admin: self.admin,
            head: self.head.clone(),
            dir,
        };
        // The new process listens on the upgrade socket before it asks for the listeners.
        let end = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            if let Ok(Some(st)) = new.child.try_wait() {
                panic!(
                    "upgraded sluice exited with {st}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < end, "no upgrade socket after 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal("QUIT");
        new
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the Sluice binary with `args` to completion (e.g. `--check`).
pub fn run_sluice(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(SLUICE_BIN)
        .args(args)
        .output()
        .expect("run sluice");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether process `pid` exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// A client builder that trusts the demo certificate (`conf/tls/cert.pem`, for `localhost`), the
/// one the harness's `.tls()` listener serves.
pub fn demo_tls_client() -> reqwest::ClientBuilder {
    let pem = std::fs::read(workspace_root().join("conf/tls/cert.pem")).expect("demo certificate");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("demo certificate"))
        .no_proxy()
}

/// An HTTP client that keeps connections alive; `local` binds its source address.
pub fn client(local: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_proxy();
    if let Some(ip) = local {
        b = b.local_address(ip);
    }
    b.build().expect("client")
}

/// `x-backend-id` of a response.
pub fn backend_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-backend-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Requests served per backend id for `path`, counted by the backends themselves.
pub fn served(backends: &[Backend], path: &str) -> BTreeMap<String, u64> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("b{}", i + 1),
                b.shared.served().get(path).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// Send `n` sequential GETs to `url`, asserting each one is a 200.
pub async fn get_n(client: &reqwest::Client, url: &str, n: usize) {
    for i in 0..n {
        let r = client
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200, "request {i} to {url}");
        r.bytes().await.unwrap();
    }
}

/// A backend-sample running as its own process (so it can be killed and restarted on the same
/// port, closing every connection as a real crash does).
pub struct BackendProc {
    child: Option<Child>,
    /// Where it listens (kept across restarts).
    pub addr: SocketAddr,
    /// Its id (`x-backend-id`).
    pub id: String,
    extra: Vec<String>,
}

impl BackendProc {
    /// Start backend `id` on a free port and wait until it accepts connections.
    pub async fn start(id: &str) -> BackendProc {
        Self::start_with(id, &[]).await
    }

    /// Like [`BackendProc::start`] with extra arguments (e.g. `["--redis", url]`).
    pub async fn start_with(id: &str, extra: &[&str]) -> BackendProc {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut b = BackendProc {
            child: None,
            addr,
            id: id.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        b.restart().await;
        b
    }

    /// Start it again on the same address (after [`BackendProc::kill`]).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.id);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let mut child = Command::new(BACKEND_BIN)
                .args([
                    "--listen",
                    &self.addr.to_string(),
                    "--id",
                    &self.id,
                    "--threads",
                    "1",
                ])
                .args(&self.extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn backend-sample");
            // Ready when it answers; a port still held by the old process makes it exit: retry.
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(self.addr).is_ok() {
                    self.child = Some(child);
                    return;
                }
                assert!(Instant::now() < end, "backend {} did not start", self.id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                Instant::now() < end,
                "backend {} could not bind {}",
                self.id,
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send signal `sig` (`STOP`, `CONT`, ...) to the running process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("backend is running").id();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {pid}");
    }

    /// SIGKILL it and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET /control/stats`: requests served per path.
    pub async fn served(&self) -> BTreeMap<String, u64> {
        let v: serde_json::Value = client(None)
            .get(format!("http://{}/control/stats", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    }

    /// Requests served on `path`.
    pub async fn served_on(&self, path: &str) -> u64 {
        self.served().await.get(path).copied().unwrap_or(0)
    }

    /// `POST /control/<what>?<query>`, e.g. `control("health", "status=503")`.
    pub async fn control(&self, what: &str, query: &str) {
        let r = client(None)
            .post(format!("http://{}/control/{what}?{query}", self.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "control {what}?{query} on {}", self.id);
    }
}

impl Drop for BackendProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP server that accepts connections and never answers (a hung backend). Each accepted
/// socket is held until the server is dropped.
pub struct HangingServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HangingServer {
    /// Start it on a free port.
    pub async fn start() -> HangingServer {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        HangingServer { addr, task }
    }
}

impl Drop for HangingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that answers each connection's first request head with fixed raw bytes, then
/// closes it: with no bytes, a backend that dies mid-request; else one that cuts a body short,
/// ends a WebSocket right after its `101`, or sends fields a test wants to see handled. Counts
/// the request heads it read.
pub struct RawServer {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Start it on a free port, answering `answer`.
    pub async fn start(answer: &'static [u8]) -> RawServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = s.write_all(answer).await;
                            return;
                        }
                    }
                });
            }
        });
        RawServer { addr, seen, task }
    }

    /// Request heads read so far.
    pub fn seen(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sluice {
    /// Poll the log until a line contains every one of `needles`; returns that line.
    pub async fn wait_log(&self, needles: &[&str], deadline: Duration) -> String {
        let what = format!("a log line with {needles:?}");
        eventually(deadline, &what, || {
            self.log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_owned)
        })
        .await
    }

    /// How many log lines contain every one of `needles`.
    pub fn count_log(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }
}

/// `[[routes]]` sending everything to pool `name`.
pub fn route_all(name: &str) -> String {
    format!("[[routes]]\nupstream = \"{name}\"\n")
}

/// A real `redis-server` on a free port with no persistence, its files in a temp dir; stopped on
/// drop. Ready once it answers PING.
pub struct RedisServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one and wait (up to 10 s) until it answers PING.
    pub async fn start() -> RedisServer {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/install-deps.sh)");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port: try another
                }
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let mut buf = [0u8; 7];
                    if s.write_all(b"PING\r\n").is_ok()
                        && s.read_exact(&mut buf).is_ok()
                        && &buf == b"+PONG\r\n"
                    {
                        return RedisServer {
                            child,
                            addr,
                            _dir: dir,
                        };
                    }
                }
                assert!(Instant::now() < end, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real 3-master Redis Cluster on free ports (no replicas), created with
/// `redis-cli --cluster create`; ready once `CLUSTER INFO` says `cluster_state:ok` on every node.
pub struct RedisCluster {
    nodes: Vec<Child>,
    /// The masters' addresses.
    pub addrs: Vec<SocketAddr>,
    _dirs: Vec<tempfile::TempDir>,
}

impl RedisCluster {
    /// Start three nodes and join them into a cluster.
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        let mut addrs = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            // The bus port too: by default it is `port + 10000`, which can be in use.
            let bus = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-port", &bus.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            eventually(Duration::from_secs(10), "cluster node to listen", || {
                TcpStream::connect(addr).ok()
            })
            .await;
            nodes.push(child);
            addrs.push(addr);
            dirs.push(dir);
        }
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(addrs.iter().map(|a| a.to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for a in &addrs {
            let port = a.port().to_string();
            eventually(Duration::from_secs(20), "cluster_state:ok", || {
                let out = Command::new("redis-cli")
                    .args(["-p", &port, "cluster", "info"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .await;
        }
        RedisCluster {
            nodes,
            addrs,
            _dirs: dirs,
        }
    }

    /// The seed list for Sluice's `[redis] cluster = [...]`.
    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self
            .addrs
            .iter()
            .map(|a| format!("\"redis://{a}/\""))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

impl RedisServer {
    /// Kill it (a Redis outage); the address stays reserved for [`RedisServer::restart`].
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) {
        let port = self.addr.port().to_string();
        self.child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let addr = self.addr;
        eventually(Duration::from_secs(10), "redis to restart", || {
            TcpStream::connect(addr).ok()
        })
        .await;
    }

    /// A client connection for inspecting keys.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

/// `clients` concurrent loops of GETs to `url` until [`SteadyLoad::stop`], counting 200s and
/// recording every other outcome.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl SteadyLoad {
    /// Start the load.
    pub fn start(url: String, clients: usize) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let ok = std::sync::Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, url) = (stop.clone(), ok.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client(None);
                    let mut failures = Vec::new();
                    while !stop.load(Relaxed) {
                        match c.get(&url).send().await {
                            Ok(r) if r.status() == 200 => {
                                r.bytes().await.unwrap();
                                ok.fetch_add(1, Relaxed);
                            }
                            Ok(r) => failures.push(format!("status {}", r.status())),
                            Err(e) => failures.push(format!("{e:?}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        SteadyLoad { stop, ok, tasks }
    }

    /// 200 answers so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until `more` further 200 answers arrive, or panic with `what` after 10 s.
    pub async fn wait_more(&self, more: u64, what: &str) {
        let target = self.ok() + more;
        let end = Instant::now() + Duration::from_secs(10);
        while self.ok() < target {
            assert!(Instant::now() < end, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop and return (200 answers, every failure).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        (self.ok.load(std::sync::atomic::Ordering::Relaxed), failures)
    }
}

/// A real nginx (Debian's package; `scripts/install-deps.sh` installs it) run in the foreground
/// with `-p DIR -c DIR/nginx.conf`, stopped on drop.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Start nginx on the config at `dir/nginx.conf` and wait until every address in `addrs`
    /// accepts connections.
    pub async fn start(dir: &Path, addrs: &[SocketAddr]) -> Nginx {
        let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"]
            .into_iter()
            .find(|b| !b.starts_with('/') || Path::new(b).exists())
            .unwrap();
        let log = std::fs::File::create(dir.join("nginx.stderr")).unwrap();
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg("stderr")
            .arg("-g")
            .arg(format!(
                "daemon off; pid {}; error_log stderr warn;",
                dir.join("nginx.pid").display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run nginx (scripts/install-deps.sh installs it)");
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "nginx exited ({st}):\n{}",
                    std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default()
                );
            }
            if addrs.iter().all(|a| TcpStream::connect(a).is_ok()) {
                return Nginx {
                    child,
                    dir: dir.to_owned(),
                };
            }
            assert!(Instant::now() < end, "nginx did not listen on {addrs:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What nginx wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nginx.stderr")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: nginx's fast shutdown, master and workers.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
