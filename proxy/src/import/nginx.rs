//! nginx directives to Sluice's TOML, pure (no file is read here but through `parse`): what
//! each directive becomes, with nginx's inheritance (a level that sets any `proxy_set_header`,
//! `add_header`, `allow`/`deny` or `limit_req` replaces the outer level's list), its defaults
//! where they differ from Sluice's (`client_max_body_size 1m`, `max_fails=1 fail_timeout=10s`,
//! 60 s proxy timeouts, `Host: $proxy_host`), and `proxy_pass`'s path rule. Every directive gets
//! one [`Outcome`], written as a comment next to what it became.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::parse::Directive;
use super::values::{self, Listen};
use crate::config::{OWNED_REQUEST_FIELDS, OWNED_RESPONSE_FIELDS};

/// How one nginx directive was carried over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Sluice does the same.
    Translated,
    /// Sluice does nearly the same; the note says what differs.
    Approximated,
    /// Dropped: Sluice has no equivalent.
    NotTranslated,
    /// Has no effect on what a proxy answers (buffers, worker tuning, MIME types...).
    NotNeeded,
}

/// One directive's outcome, with where it was written and why.
#[derive(Debug, Clone)]
pub struct Note {
    /// What happened to it.
    pub outcome: Outcome,
    /// The directive as written (name and arguments, shortened).
    pub directive: String,
    /// `file:line`.
    pub at: String,
    /// Why (empty for a plain translation).
    pub why: String,
    /// The output block it is written next to (0: the file's head).
    block: usize,
}

/// The translated configuration and what happened to each directive.
#[derive(Debug)]
pub struct Import {
    /// The Sluice configuration, TOML with comments.
    pub toml: String,
    /// One note per directive read.
    pub notes: Vec<Note>,
}

impl Import {
    /// How many directives had this outcome.
    pub fn count(&self, o: Outcome) -> usize {
        self.notes.iter().filter(|n| n.outcome == o).count()
    }

    /// Whether anything was dropped (the command's exit code says so).
    pub fn dropped(&self) -> bool {
        self.count(Outcome::NotTranslated) > 0
    }

    /// The summary for stderr: counts, then every dropped and approximated directive.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} translated, {} approximated, {} not translated, {} not needed\n",
            self.count(Outcome::Translated),
            self.count(Outcome::Approximated),
            self.count(Outcome::NotTranslated),
            self.count(Outcome::NotNeeded)
        );
        for n in &self.notes {
            let what = match n.outcome {
                Outcome::NotTranslated => "not translated",
                Outcome::Approximated => "approximated",
                _ => continue,
            };
            let _ = writeln!(s, "  {}: {what}: {} ({})", n.at, n.directive, n.why);
        }
        s
    }
}

/// Translate a parsed configuration. `base` is the main file's directory: relative file names
/// (certificates) are made absolute against it, as nginx takes them from its prefix.
pub fn translate(directives: &[Directive], base: &Path) -> Import {
    let mut t = Tr {
        base: base.to_owned(),
        notes: Vec::new(),
        blocks: 1,
        upstreams: BTreeMap::new(),
        zones: HashMap::new(),
        cache_zones: HashSet::new(),
        global: Global::default(),
        servers: Vec::new(),
        pools: Vec::new(),
        tiers: BTreeMap::new(),
        rate_section: false,
    };
    t.main(directives);
    let toml = t.render();
    Import {
        toml,
        notes: t.notes,
    }
}

/// `name args...`, shortened for a comment.
fn text(d: &Directive) -> String {
    let mut s = d.name.clone();
    for a in &d.args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push('"');
            s.push_str(a);
            s.push('"');
        } else {
            s.push_str(a);
        }
    }
    if s.chars().count() > 100 {
        s = s.chars().take(97).collect::<String>() + "...";
    }
    s.replace('\n', " ")
}

fn at(d: &Directive) -> String {
    format!("{}:{}", d.file.display(), d.line)
}

/// One comment line: nginx's words may hold line breaks (a quoted word can), which would end
/// the comment.
fn comment(text: &str) -> String {
    format!("# {}\n", text.replace(['\n', '\r'], " "))
}

/// A TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
fn arr(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Directives that do not change what a proxy answers.
const NOT_NEEDED: &[(&str, &str)] = &[
    (
        "user",
        "Sluice runs as the user its service manager gives it",
    ),
    (
        "pid",
        "Sluice's pid file is [server] pid_file, used with --daemon",
    ),
    ("error_log", "Sluice logs to stderr ([logging])"),
    ("daemon", "Sluice runs in the foreground unless --daemon"),
    ("master_process", "one Sluice process"),
    (
        "worker_rlimit_nofile",
        "Sluice raises its open-file limit for max_connections",
    ),
    ("multi_accept", "connection accepting is Pingora's"),
    ("use", "Sluice uses epoll through tokio"),
    ("accept_mutex", "connection accepting is Pingora's"),
    ("include", "expanded in place"),
    (
        "types",
        "MIME types matter only to files nginx serves itself",
    ),
    (
        "default_type",
        "MIME types matter only to files nginx serves itself",
    ),
    ("charset", "only for files nginx serves itself"),
    ("sendfile", "only for files nginx serves itself"),
    ("tcp_nopush", "socket tuning"),
    ("tcp_nodelay", "Sluice always sets TCP_NODELAY"),
    (
        "log_format",
        "Sluice's access log has its own formats ([logging] access_log_format)",
    ),
    ("server_tokens", "Sluice does not announce a version"),
    ("server_names_hash_bucket_size", "hash tuning"),
    ("server_names_hash_max_size", "hash tuning"),
    ("types_hash_max_size", "hash tuning"),
    ("types_hash_bucket_size", "hash tuning"),
    ("variables_hash_max_size", "hash tuning"),
    ("variables_hash_bucket_size", "hash tuning"),
    ("map_hash_bucket_size", "hash tuning"),
    ("proxy_buffering", "Sluice streams responses"),
    ("proxy_buffers", "Sluice streams responses"),
    ("proxy_buffer_size", "Sluice streams responses"),
    ("proxy_busy_buffers_size", "Sluice streams responses"),
    (
        "proxy_max_temp_file_size",
        "Sluice streams responses; nothing goes to temporary files",
    ),
    (
        "proxy_temp_file_write_size",
        "Sluice streams responses; nothing goes to temporary files",
    ),
    ("proxy_temp_path", "nothing goes to temporary files"),
    ("proxy_request_buffering", "Sluice streams request bodies"),
    ("client_body_buffer_size", "Sluice streams request bodies"),
    ("client_body_temp_path", "nothing goes to temporary files"),
    ("fastcgi_temp_path", "nothing goes to temporary files"),
    ("uwsgi_temp_path", "nothing goes to temporary files"),
    ("scgi_temp_path", "nothing goes to temporary files"),
    ("client_header_buffer_size", "buffer tuning"),
    (
        "proxy_http_version",
        "Sluice speaks HTTP/1.1 (or HTTP/2 with protocol) to backends",
    ),
    (
        "gzip_vary",
        "Sluice always adds Vary: Accept-Encoding to compressible responses",
    ),
    ("gzip_buffers", "buffer tuning"),
    ("gzip_http_version", "buffer tuning"),
    (
        "gzip_comp_level",
        "Sluice compresses at gzip level 1, nginx's default",
    ),
    (
        "ssl_session_cache",
        "rustls keeps its own session cache and tickets",
    ),
    (
        "ssl_session_timeout",
        "rustls keeps its own session cache and tickets",
    ),
    (
        "ssl_session_tickets",
        "rustls keeps its own session cache and tickets",
    ),
    (
        "ssl_prefer_server_ciphers",
        "rustls chooses among its own safe suites",
    ),
    ("ssl_dhparam", "rustls does not use finite-field DH"),
    ("ssl_ecdh_curve", "rustls chooses its own curves"),
    ("ssl_buffer_size", "buffer tuning"),
    ("ssl_stapling", "OCSP stapling is not done by Sluice"),
    ("ssl_stapling_verify", "OCSP stapling is not done by Sluice"),
    ("resolver_timeout", "see [dns] timeout_ms"),
    (
        "proxy_cache_lock",
        "Sluice always lets one miss fetch while the others wait",
    ),
    ("proxy_cache_lock_timeout", "see [cache] lock_timeout_ms"),
    (
        "proxy_cache_key",
        "Sluice's cache key is the host and the URI",
    ),
    (
        "reset_timedout_connection",
        "Sluice closes timed-out connections",
    ),
    ("send_timeout", "socket tuning"),
    ("open_file_cache", "only for files nginx serves itself"),
    ("http2", "Sluice's TLS listeners offer HTTP/2 by ALPN"),
    (
        "absolute_redirect",
        "redirects are written by the route's template",
    ),
    (
        "port_in_redirect",
        "redirects are written by the route's template",
    ),
    (
        "server_name_in_redirect",
        "redirects are written by the route's template",
    ),
    (
        "keepalive_requests",
        "Sluice keeps a client connection while it is used",
    ),
    (
        "worker_shutdown_timeout",
        "see [server] grace_period_seconds",
    ),
    (
        "real_ip_recursive",
        "Sluice takes the right-most untrusted address, as recursive",
    ),
    (
        "real_ip_header",
        "Sluice reads X-Forwarded-For from trusted_proxies",
    ),
    (
        "limit_req_log_level",
        "Sluice logs every limited request in its access log",
    ),
    (
        "proxy_ignore_client_abort",
        "Sluice ends the backend request when the client leaves",
    ),
];

/// Directives Sluice cannot express, with why.
const NOT_TRANSLATED: &[(&str, &str)] = &[
    ("root", "Sluice does not serve files"),
    ("alias", "Sluice does not serve files"),
    ("index", "Sluice does not serve files"),
    ("try_files", "Sluice does not serve files"),
    ("autoindex", "Sluice does not serve files"),
    (
        "expires",
        "Sluice does not set Expires/Cache-Control on its own",
    ),
    (
        "error_page",
        "Sluice does not replace backend or error bodies",
    ),
    (
        "proxy_intercept_errors",
        "Sluice does not replace backend error bodies",
    ),
    ("if", "Sluice has no conditional directives"),
    ("set", "Sluice has no variables"),
    ("geo", "Sluice has no variables"),
    (
        "auth_basic",
        "Sluice authenticates API keys and JWTs, not basic auth",
    ),
    (
        "auth_basic_user_file",
        "Sluice authenticates API keys and JWTs, not basic auth",
    ),
    ("auth_request", "no subrequests"),
    ("sub_filter", "Sluice does not rewrite bodies"),
    (
        "limit_conn",
        "Sluice limits request rates, not connections per key",
    ),
    (
        "limit_conn_zone",
        "Sluice limits request rates, not connections per key",
    ),
    ("limit_rate", "Sluice does not shape bandwidth"),
    ("fastcgi_pass", "only HTTP backends"),
    ("uwsgi_pass", "only HTTP backends"),
    (
        "grpc_pass",
        "use an upstream with protocol = \"h2c\" or \"h2\" instead",
    ),
    ("proxy_cache_bypass", "no per-request cache conditions"),
    ("proxy_no_cache", "no per-request cache conditions"),
    ("proxy_cache_methods", "Sluice caches GET and HEAD"),
    (
        "proxy_ignore_headers",
        "Sluice follows the origin's Cache-Control",
    ),
    ("proxy_pass_header", "Sluice passes the backend's fields"),
    ("proxy_cookie_domain", "Sluice does not rewrite cookies"),
    ("proxy_cookie_path", "Sluice does not rewrite cookies"),
    (
        "ssl_verify_depth",
        "the chain is verified to a root in client_ca",
    ),
    ("satisfy", "Sluice has no alternative access rules"),
    ("stream", "TCP/UDP proxying (stream) is not Sluice's"),
    ("mail", "mail proxying is not Sluice's"),
];

#[derive(Default)]
struct Global {
    threads: Option<u64>,
    max_connections: Option<u64>,
    keepalive_ms: Option<u64>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_header_bytes: Option<u64>,
    keepalive_pool: Option<u64>,
    nameservers: Vec<String>,
    trusted: Vec<String>,
    access_log_off: bool,
    limit_dry_run: bool,
    cache_memory: Option<u64>,
}

/// A header rule of `proxy_set_header`.
#[derive(Clone, Debug, PartialEq)]
enum ReqAction {
    Set(String),
    Remove,
    /// Sluice does it itself (X-Forwarded-*, X-Real-IP, X-Request-Id, Host kept as sent).
    Builtin,
    /// `Upgrade`/`Connection` of the WebSocket pattern.
    Upgrade,
    /// Could not be translated (counted where written).
    Dropped,
}

#[derive(Clone, Debug)]
struct LimitReq {
    zone: String,
    burst: u64,
}

#[derive(Clone, Default, Debug)]
struct UpTls {
    verify: Option<bool>,
    ca: Option<String>,
    name: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Settings that nested levels inherit (`None`: not set at this level).
#[derive(Clone, Default, Debug)]
struct Ctx {
    set_headers: Option<Vec<(String, ReqAction)>>,
    add_headers: Option<Vec<(String, String)>>,
    hide_headers: Option<Vec<String>>,
    connect_ms: Option<u64>,
    read_ms: Option<u64>,
    send_ms: Option<u64>,
    next_upstream: Option<Vec<String>>,
    tries: Option<u64>,
    access: Option<Vec<(bool, String)>>,
    limit_req: Option<LimitReq>,
    cache: Option<Option<String>>,
    cache_valid: Option<u64>,
    gzip: Option<bool>,
    gzip_types: Option<Vec<String>>,
    gzip_min: Option<u64>,
    max_body: Option<u64>,
    ssl_cert: Option<String>,
    ssl_key: Option<String>,
    ssl_min: Option<String>,
    client_ca: Option<String>,
    verify_client: Option<String>,
    access_log_off: Option<bool>,
    up_tls: UpTls,
}

macro_rules! inherit {
    ($child:expr, $parent:expr, $($f:ident),*) => {
        $( if $child.$f.is_none() { $child.$f = $parent.$f.clone(); } )*
    };
}

impl Ctx {
    /// This level's settings over the outer level's.
    fn under(&self, parent: &Ctx) -> Ctx {
        let mut c = self.clone();
        inherit!(
            c,
            parent,
            set_headers,
            add_headers,
            hide_headers,
            connect_ms,
            read_ms,
            send_ms,
            next_upstream,
            tries,
            access,
            limit_req,
            cache,
            cache_valid,
            gzip,
            gzip_types,
            gzip_min,
            max_body,
            ssl_cert,
            ssl_key,
            ssl_min,
            client_ca,
            verify_client,
            access_log_off
        );
        inherit!(c.up_tls, parent.up_tls, verify, ca, name, cert, key);
        c
    }
}

#[derive(Clone, Debug)]
enum PathRule {
    Prefix(String),
    Exact(String),
    Regex(String),
}

#[derive(Clone, Debug)]
struct ProxyPass {
    tls: bool,
    /// An `upstream` block's name, or `host:port`.
    target: String,
    /// The URI part (`proxy_pass http://b/v1/;` -> `/v1/`).
    uri: Option<String>,
    /// What nginx sends as Host by default (`$proxy_host`).
    proxy_host: String,
}

#[derive(Clone, Debug)]
enum Answer {
    Redirect(String, u16),
    /// `return 403` and the like: everyone refused.
    Deny,
}

#[derive(Clone, Debug)]
struct LocDef {
    block: usize,
    origin: String,
    rule: PathRule,
    ctx: Ctx,
    proxy_pass: Option<ProxyPass>,
    answer: Option<Answer>,
    rewrite: Option<(String, String)>,
    /// Dropped whole (its note says why): written as comments only.
    dropped: bool,
}

#[derive(Clone, Debug)]
struct ServerDef {
    block: usize,
    origin: String,
    listens: Vec<Listen>,
    names: Vec<String>,
    locs: Vec<LocDef>,
    ctx: Ctx,
}

#[derive(Clone, Debug)]
struct UpstreamDef {
    block: usize,
    origin: String,
    strategy: &'static str,
    servers: Vec<(String, u64, bool)>,
    max_fails: Option<u64>,
    fail_timeout_ms: Option<u64>,
    keepalive_timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PoolKey {
    target: String,
    tls: bool,
    connect: u64,
    read: u64,
    send: u64,
    next: Vec<String>,
    tries: u64,
    verify: bool,
    ca: Option<String>,
    sni: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

struct Tr {
    base: PathBuf,
    notes: Vec<Note>,
    blocks: usize,
    upstreams: BTreeMap<String, UpstreamDef>,
    zones: HashMap<String, (u64, u64)>,
    cache_zones: HashSet<String>,
    global: Global,
    servers: Vec<ServerDef>,
    pools: Vec<(PoolKey, String)>,
    tiers: BTreeMap<&'static str, u64>,
    /// Whether the output has `[rate_limit]` (then routes without a limit say `off`).
    rate_section: bool,
}

/// nginx's default proxy timeouts (connect, read, send): 60 s each.
const NGINX_PROXY_TIMEOUT_MS: u64 = 60_000;

impl Tr {
    fn note(&mut self, d: &Directive, block: usize, outcome: Outcome, why: impl Into<String>) {
        self.notes.push(Note {
            outcome,
            directive: text(d),
            at: at(d),
            why: why.into(),
            block,
        });
    }

    fn ok(&mut self, d: &Directive, block: usize) {
        self.note(d, block, Outcome::Translated, "");
    }

    fn new_block(&mut self) -> usize {
        self.blocks += 1;
        self.blocks - 1
    }

    fn path(&self, p: &str) -> String {
        let p = Path::new(p);
        if p.is_absolute() {
            p.display().to_string()
        } else {
            self.base.join(p).display().to_string()
        }
    }

    /// Directives nobody needs or nobody can have, by name; `true` when handled.
    fn by_table(&mut self, d: &Directive, block: usize) -> bool {
        if let Some((_, why)) = NOT_NEEDED.iter().find(|(n, _)| *n == d.name) {
            self.note(d, block, Outcome::NotNeeded, *why);
            return true;
        }
        if let Some((_, why)) = NOT_TRANSLATED.iter().find(|(n, _)| *n == d.name) {
            self.note(d, block, Outcome::NotTranslated, *why);
            return true;
        }
        false
    }

    fn main(&mut self, ds: &[Directive]) {
        for d in ds {
            match d.name.as_str() {
                "http" => self.http(d.block.as_deref().unwrap_or(&[])),
                "events" => {
                    for e in d.block.as_deref().unwrap_or(&[]) {
                        if e.name == "worker_connections" {
                            match e.args.first().and_then(|a| a.parse().ok()) {
                                Some(n) => {
                                    self.global.max_connections = Some(n);
                                    self.note(
                                        e,
                                        0,
                                        Outcome::Approximated,
                                        "to [server] max_connections (Sluice's limit counts client connections only)",
                                    );
                                }
                                None => self.note(e, 0, Outcome::NotTranslated, "not a number"),
                            }
                        } else if !self.by_table(e, 0) {
                            self.note(e, 0, Outcome::NotNeeded, "event loop tuning");
                        }
                    }
                }
                "worker_processes" => match d.args.first().map(String::as_str) {
                    Some("auto") => self.note(
                        d,
                        0,
                        Outcome::Approximated,
                        "Sluice's [server] threads has no \"auto\"; its default is kept",
                    ),
                    Some(n) => match n.parse() {
                        Ok(n) => {
                            self.global.threads = Some(n);
                            self.ok(d, 0);
                        }
                        Err(_) => self.note(d, 0, Outcome::NotTranslated, "not a number"),
                    },
                    None => self.note(d, 0, Outcome::NotTranslated, "no value"),
                },
                _ => {
                    if !self.by_table(d, 0) {
                        self.note(d, 0, Outcome::NotTranslated, "unknown to the importer");
                    }
                }
            }
        }
    }

    fn http(&mut self, ds: &[Directive]) {
        let mut ctx = Ctx::default();
        // Everything but servers first: zones and upstreams must be known to the locations.
        for d in ds {
            match d.name.as_str() {
                "server" => {}
                "upstream" => self.upstream(d),
                "limit_req_zone" => self.limit_zone(d),
                "proxy_cache_path" => self.cache_path(d),
                "map" => {
                    if d.args.len() == 2 && d.args[0] == "$http_upgrade" {
                        self.note(
                            d,
                            0,
                            Outcome::NotNeeded,
                            "the WebSocket Connection idiom: Sluice forwards upgrades itself",
                        );
                    } else {
                        self.note(d, 0, Outcome::NotTranslated, "Sluice has no variables");
                    }
                }
                "keepalive_timeout" => self.global_ms(d, |g, v| g.keepalive_ms = Some(v)),
                "client_header_timeout" => self.global_ms(d, |g, v| g.header_timeout_ms = Some(v)),
                "client_body_timeout" => self.global_ms(d, |g, v| g.body_timeout_ms = Some(v)),
                "large_client_header_buffers" => {
                    match (
                        d.args.first().and_then(|n| n.parse::<u64>().ok()),
                        d.args.get(1).and_then(|s| values::size_bytes(s)),
                    ) {
                        (Some(n), Some(s)) => {
                            self.global.max_header_bytes = Some(n * s);
                            self.note(d, 0, Outcome::Approximated, "to [server] max_request_header_bytes = number x size (nginx also limits each line to size)");
                        }
                        _ => self.note(d, 0, Outcome::NotTranslated, "expected: number size"),
                    }
                }
                "resolver" => {
                    let mut ns = Vec::new();
                    for a in &d.args {
                        if a.contains('=') {
                            continue;
                        }
                        if a.parse::<std::net::IpAddr>().is_ok() {
                            let a = if a.contains(':') {
                                format!("[{a}]:53")
                            } else {
                                format!("{a}:53")
                            };
                            ns.push(a);
                        } else if a.parse::<std::net::SocketAddr>().is_ok() {
                            ns.push(a.clone());
                        }
                    }
                    self.global.nameservers = ns;
                    self.note(d, 0, Outcome::Translated, "to [dns] nameservers; Sluice re-resolves backend names every resolve_interval_ms");
                }
                "set_real_ip_from" => {
                    if let Some(a) = d.args.first() {
                        self.global.trusted.push(a.clone());
                        self.note(d, 0, Outcome::Translated, "to [rate_limit] trusted_proxies");
                    }
                }
                _ => {
                    if !self.settings(d, &mut ctx, 0) && !self.by_table(d, 0) {
                        self.note(d, 0, Outcome::NotTranslated, "unknown to the importer");
                    }
                }
            }
        }
        if ctx.access_log_off == Some(true) {
            self.global.access_log_off = true;
        }
        for d in ds.iter().filter(|d| d.name == "server") {
            self.server(d, &ctx);
        }
    }

    fn global_ms(&mut self, d: &Directive, set: impl FnOnce(&mut Global, u64)) {
        match d.args.first().and_then(|a| values::time_ms(a)) {
            Some(0) => self.note(d, 0, Outcome::NotTranslated, "0 (off) has no equivalent"),
            Some(v) => {
                set(&mut self.global, v);
                self.ok(d, 0);
            }
            None => self.note(d, 0, Outcome::NotTranslated, "not a time"),
        }
    }

    fn limit_zone(&mut self, d: &Directive) {
        let zone = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("zone="))
            .and_then(|z| z.split(':').next());
        let rate = d.args.iter().find_map(|a| values::rate(a));
        match (zone, rate) {
            (Some(z), Some(r)) => {
                self.zones.insert(z.to_owned(), r);
                let key = d.args.first().map(String::as_str).unwrap_or("");
                if key == "$binary_remote_addr" || key == "$remote_addr" {
                    self.note(d, 0, Outcome::Translated, "each limit_req of this zone becomes the route's rate_limit, counted per client address");
                } else {
                    self.note(d, 0, Outcome::Approximated, format!("Sluice counts per client (API key, token subject or address), not per {key}"));
                }
            }
            _ => self.note(
                d,
                0,
                Outcome::NotTranslated,
                "expected zone=NAME:SIZE rate=Nr/s",
            ),
        }
    }

    fn cache_path(&mut self, d: &Directive) {
        let zone = d
            .args
            .iter()
            .find_map(|a| a.strip_prefix("keys_zone="))
            .and_then(|z| z.split(':').next());
        match zone {
            Some(z) => {
                self.cache_zones.insert(z.to_owned());
                if let Some(max) = d
                    .args
                    .iter()
                    .find_map(|a| a.strip_prefix("max_size="))
                    .and_then(values::size_bytes)
                {
                    self.global.cache_memory = Some(max);
                }
                self.note(d, 0, Outcome::Approximated, "Sluice caches in memory (or in Redis with [redis]), not on disk: max_size to [cache] memory_bytes");
            }
            None => self.note(d, 0, Outcome::NotTranslated, "no keys_zone"),
        }
    }

    fn upstream(&mut self, d: &Directive) {
        let block = self.new_block();
        let Some(name) = d.args.first().cloned() else {
            self.note(d, block, Outcome::NotTranslated, "upstream without a name");
            return;
        };
        let mut u = UpstreamDef {
            block,
            origin: format!("{}: upstream {name}", at(d)),
            strategy: "weighted",
            servers: Vec::new(),
            max_fails: None,
            fail_timeout_ms: None,
            keepalive_timeout_ms: None,
        };
        self.ok(d, block);
        let mut fails: HashSet<(Option<u64>, Option<u64>)> = HashSet::new();
        for s in d.block.as_deref().unwrap_or(&[]) {
            match s.name.as_str() {
                "server" => {
                    let Some(addr) = s.args.first() else {
                        self.note(s, block, Outcome::NotTranslated, "no address");
                        continue;
                    };
                    if addr.starts_with("unix:") {
                        self.note(
                            s,
                            block,
                            Outcome::NotTranslated,
                            "unix sockets are not supported",
                        );
                        continue;
                    }
                    let addr = if addr
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    {
                        addr.clone()
                    } else if addr.contains(':') && !addr.starts_with('[') {
                        format!("[{addr}]:80")
                    } else {
                        format!("{addr}:80")
                    };
                    let mut weight = 1;
                    let mut backup = false;
                    let mut down = false;
                    let (mut mf, mut ft) = (None, None);
                    let mut why = Vec::new();
                    for a in &s.args[1..] {
                        if let Some(w) = a.strip_prefix("weight=") {
                            weight = w.parse().unwrap_or(1);
                        } else if let Some(m) = a.strip_prefix("max_fails=") {
                            mf = m.parse().ok();
                        } else if let Some(t) = a.strip_prefix("fail_timeout=") {
                            ft = values::time_ms(t);
                        } else if a == "backup" {
                            backup = true;
                        } else if a == "down" {
                            down = true;
                        } else {
                            why.push(a.clone());
                        }
                    }
                    fails.insert((mf, ft));
                    u.max_fails = u.max_fails.or(mf);
                    u.fail_timeout_ms = u.fail_timeout_ms.or(ft);
                    if down {
                        self.note(s, block, Outcome::Translated, "down: left out of the pool");
                        continue;
                    }
                    u.servers.push((addr, weight.clamp(1, 1000), backup));
                    if why.is_empty() {
                        self.ok(s, block);
                    } else {
                        self.note(
                            s,
                            block,
                            Outcome::Approximated,
                            format!("{} not translated", why.join(" ")),
                        );
                    }
                }
                "least_conn" => {
                    u.strategy = "least_conn";
                    self.ok(s, block);
                }
                "ip_hash" => {
                    u.strategy = "ip_hash";
                    self.note(s, block, Outcome::Approximated, "Sluice hashes the whole client address on a consistent ring (nginx: the first three octets of IPv4)");
                }
                "hash" => {
                    let key = s.args.first().map(String::as_str).unwrap_or("");
                    u.strategy = "ip_hash";
                    if key == "$remote_addr" || key == "$binary_remote_addr" {
                        self.note(
                            s,
                            block,
                            Outcome::Translated,
                            "ip_hash: a consistent ring of client addresses",
                        );
                    } else {
                        self.note(
                            s,
                            block,
                            Outcome::Approximated,
                            format!("Sluice hashes the client address, not {key}"),
                        );
                    }
                }
                "random" => {
                    if s.args.first().map(String::as_str) == Some("two") {
                        u.strategy = "p2c";
                        self.note(
                            s,
                            block,
                            Outcome::Translated,
                            "p2c: two random choices, the less loaded wins",
                        );
                    } else {
                        u.strategy = "random";
                        self.ok(s, block);
                    }
                }
                "keepalive" => match s.args.first().and_then(|a| a.parse::<u64>().ok()) {
                    Some(n) => {
                        let pool = self.global.keepalive_pool.get_or_insert(0);
                        *pool = (*pool).max(n);
                        self.note(s, block, Outcome::Approximated, "to [server] upstream_keepalive_pool_size, which Sluice shares among all pools");
                    }
                    None => self.note(s, block, Outcome::NotTranslated, "not a number"),
                },
                "keepalive_timeout" => match s.args.first().and_then(|a| values::time_ms(a)) {
                    Some(v) => {
                        u.keepalive_timeout_ms = Some(v);
                        self.ok(s, block);
                    }
                    None => self.note(s, block, Outcome::NotTranslated, "not a time"),
                },
                "keepalive_requests" | "keepalive_time" => {
                    self.note(s, block, Outcome::NotNeeded, "connection reuse tuning")
                }
                "zone" => self.note(
                    s,
                    block,
                    Outcome::NotNeeded,
                    "Sluice's pool state is shared by its threads",
                ),
                _ => self.note(s, block, Outcome::NotTranslated, "unknown to the importer"),
            }
        }
        if fails.len() > 1 {
            self.notes.push(Note {
                outcome: Outcome::Approximated,
                directive: format!("upstream {name}: max_fails/fail_timeout"),
                at: at(d),
                why: "Sluice has one max_fails and fail_timeout per pool: the first server's are used".into(),
                block,
            });
        }
        // nginx's default is smooth weighted round-robin: plain rotation when all weights are 1.
        if u.strategy == "weighted" && u.servers.iter().all(|s| s.1 == 1) {
            u.strategy = "round_robin";
        }
        if u.servers.is_empty() {
            self.notes.push(Note {
                outcome: Outcome::NotTranslated,
                directive: format!("upstream {name}"),
                at: at(d),
                why: "no usable server".into(),
                block,
            });
        }
        self.upstreams.insert(name, u);
    }

    /// Directives valid at http, server and location level; `false` when `d` is not one.
    fn settings(&mut self, d: &Directive, ctx: &mut Ctx, block: usize) -> bool {
        let a0 = d.args.first().map(String::as_str).unwrap_or("");
        match d.name.as_str() {
            "proxy_set_header" => {
                let (name, value) = (
                    a0.to_ascii_lowercase(),
                    d.args.get(1).cloned().unwrap_or_default(),
                );
                let action = self.req_header(d, block, &name, &value);
                ctx.set_headers
                    .get_or_insert_with(Vec::new)
                    .push((name, action));
            }
            "add_header" => {
                let name = a0.to_ascii_lowercase();
                let value = d.args.get(1).cloned().unwrap_or_default();
                let always = d.args.get(2).map(String::as_str) == Some("always");
                let list = ctx.add_headers.get_or_insert_with(Vec::new);
                if OWNED_RESPONSE_FIELDS.contains(&name.as_str()) {
                    self.note(d, block, Outcome::NotTranslated, "Sluice owns this field");
                    return true;
                }
                match values::template(&value) {
                    Ok(t) => {
                        list.push((name, t));
                        if always {
                            self.ok(d, block);
                        } else {
                            self.note(d, block, Outcome::Approximated, "Sluice adds it to every response; nginx without `always` only to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308");
                        }
                    }
                    Err(v) => self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        format!("{v} has no Sluice equivalent"),
                    ),
                }
            }
            "proxy_hide_header" => {
                ctx.hide_headers
                    .get_or_insert_with(Vec::new)
                    .push(a0.to_ascii_lowercase());
                self.note(d, block, Outcome::Translated, "to response_headers remove");
            }
            "proxy_connect_timeout" | "proxy_read_timeout" | "proxy_send_timeout" => {
                match values::time_ms(a0) {
                    Some(v) if v > 0 => {
                        match d.name.as_str() {
                            "proxy_connect_timeout" => ctx.connect_ms = Some(v),
                            "proxy_read_timeout" => ctx.read_ms = Some(v),
                            _ => ctx.send_ms = Some(v),
                        }
                        self.ok(d, block);
                    }
                    _ => self.note(d, block, Outcome::NotTranslated, "not a time"),
                }
            }
            "proxy_next_upstream" => {
                let mut next = Vec::new();
                let mut why = Vec::new();
                for a in &d.args {
                    match a.as_str() {
                        "error" | "timeout" | "invalid_header" | "http_500" | "http_502"
                        | "http_503" | "http_504" | "http_429" => next.push(a.clone()),
                        "off" => next.clear(),
                        "non_idempotent" => why.push("non_idempotent (Sluice retries a non-idempotent request only when the backend cannot have seen it)"),
                        "http_403" | "http_404" => why.push("http_403/http_404 (Sluice retries 5xx and 429 only)"),
                        _ => why.push("an unknown condition"),
                    }
                }
                if d.args.iter().any(|a| a == "off") {
                    next.clear();
                }
                ctx.next_upstream = Some(next);
                if why.is_empty() {
                    self.ok(d, block);
                } else {
                    self.note(d, block, Outcome::Approximated, why.join("; "));
                }
            }
            "proxy_next_upstream_tries" => match a0.parse::<u64>() {
                Ok(n) => {
                    ctx.tries = Some(n);
                    self.note(
                        d,
                        block,
                        Outcome::Translated,
                        "to the pool's retries (tries - 1)",
                    );
                }
                Err(_) => self.note(d, block, Outcome::NotTranslated, "not a number"),
            },
            "proxy_next_upstream_timeout" => match values::time_ms(a0) {
                Some(_) => self.note(
                    d,
                    block,
                    Outcome::Approximated,
                    "Sluice's retry_timeout_ms is per pool: not carried over",
                ),
                None => self.note(d, block, Outcome::NotTranslated, "not a time"),
            },
            "allow" | "deny" => {
                let allow = d.name == "allow";
                let list = ctx.access.get_or_insert_with(Vec::new);
                if a0 == "unix:" {
                    self.note(d, block, Outcome::NotTranslated, "unix sockets");
                } else if a0 == "all"
                    || a0.parse::<ipnet::IpNet>().is_ok()
                    || a0.parse::<std::net::IpAddr>().is_ok()
                {
                    // nginx: first match wins; Sluice: deny wins. A deny after an allow that
                    // overlaps it lets fewer addresses in under Sluice.
                    let shadowed = !allow
                        && a0 != "all"
                        && list.iter().any(|(a, w)| *a && w != "all" && overlap(w, a0));
                    list.push((allow, a0.to_owned()));
                    if shadowed {
                        self.note(d, block, Outcome::Approximated, "an earlier allow overlaps it: nginx lets those addresses in, Sluice's deny wins");
                    } else {
                        self.ok(d, block);
                    }
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        "not an address or network",
                    );
                }
            }
            "limit_req" => {
                let zone = d
                    .args
                    .iter()
                    .find_map(|a| a.strip_prefix("zone="))
                    .unwrap_or("");
                let burst = d
                    .args
                    .iter()
                    .find_map(|a| a.strip_prefix("burst="))
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(0);
                let nodelay = d.args.iter().any(|a| a == "nodelay");
                if !self.zones.contains_key(zone) {
                    self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        format!("no limit_req_zone {zone}"),
                    );
                } else if ctx.limit_req.is_some() {
                    self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        "Sluice has one limit per route: the first limit_req is used",
                    );
                } else {
                    ctx.limit_req = Some(LimitReq {
                        zone: zone.to_owned(),
                        burst,
                    });
                    if nodelay || burst == 0 {
                        self.note(
                            d,
                            block,
                            Outcome::Translated,
                            "to the route's rate_limit (gcra, burst + 1 at once)",
                        );
                    } else {
                        self.note(d, block, Outcome::Approximated, "Sluice answers the burst at once (as nodelay); nginx delays it to the rate");
                    }
                }
            }
            "limit_req_status" => {
                if a0 == "429" {
                    self.ok(d, block);
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::Approximated,
                        "Sluice refuses with 429 Too Many Requests",
                    );
                }
            }
            "limit_req_dry_run" => {
                if a0 == "on" {
                    self.global.limit_dry_run = true;
                    self.note(
                        d,
                        block,
                        Outcome::Approximated,
                        "to [rate_limit] mode = \"shadow\", for every route",
                    );
                } else {
                    self.ok(d, block);
                }
            }
            "proxy_cache" => {
                if a0 == "off" {
                    ctx.cache = Some(None);
                    self.ok(d, block);
                } else if self.cache_zones.contains(a0) {
                    ctx.cache = Some(Some(a0.to_owned()));
                    self.note(d, block, Outcome::Translated, "to the route's cache tier");
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        format!("no proxy_cache_path with keys_zone={a0}"),
                    );
                }
            }
            "proxy_cache_valid" => {
                let time = d.args.last().and_then(|t| values::time_ms(t));
                let codes = &d.args[..d.args.len().saturating_sub(1)];
                let for_200 = codes.is_empty() || codes.iter().any(|c| c == "200" || c == "any");
                match time {
                    Some(t) if for_200 => {
                        ctx.cache_valid = Some(t / 1000);
                        self.note(d, block, Outcome::Approximated, "the lifetime of 200s sets the tier's ttl_seconds; Sluice caches other statuses by their own freshness");
                    }
                    Some(_) => self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        "Sluice's tier lifetime is for 200 responses",
                    ),
                    None => self.note(d, block, Outcome::NotTranslated, "not a time"),
                }
            }
            "proxy_cache_use_stale" => self.note(
                d,
                block,
                Outcome::Approximated,
                "Sluice serves stale entries on errors when the origin allows stale-if-error",
            ),
            "gzip" => {
                ctx.gzip = Some(a0 == "on");
                self.ok(d, block);
            }
            "gzip_types" => {
                ctx.gzip_types = Some(d.args.clone());
                self.ok(d, block);
            }
            "gzip_min_length" => match a0.parse() {
                Ok(n) => {
                    ctx.gzip_min = Some(n);
                    self.ok(d, block);
                }
                Err(_) => self.note(d, block, Outcome::NotTranslated, "not a number"),
            },
            "gzip_proxied" => {
                if d.args.iter().any(|a| a == "any") {
                    self.ok(d, block);
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::Approximated,
                        "Sluice compresses whatever the request's Via says",
                    );
                }
            }
            "gzip_disable" => {
                self.note(d, block, Outcome::NotTranslated, "no per-client exceptions")
            }
            "client_max_body_size" => match values::size_bytes(a0) {
                Some(n) => {
                    ctx.max_body = Some(n);
                    self.ok(d, block);
                }
                None => self.note(d, block, Outcome::NotTranslated, "not a size"),
            },
            "ssl_certificate" => {
                ctx.ssl_cert = Some(self.path(a0));
                self.ok(d, block);
            }
            "ssl_certificate_key" => {
                ctx.ssl_key = Some(self.path(a0));
                self.ok(d, block);
            }
            "ssl_protocols" => {
                let min = if d.args.iter().any(|a| a == "TLSv1.2") {
                    "1.2"
                } else {
                    "1.3"
                };
                ctx.ssl_min = Some(min.into());
                if d.args
                    .iter()
                    .any(|a| a == "TLSv1" || a == "TLSv1.1" || a == "SSLv3")
                {
                    self.note(
                        d,
                        block,
                        Outcome::Approximated,
                        "Sluice speaks TLS 1.2 and 1.3 only",
                    );
                } else {
                    self.ok(d, block);
                }
            }
            "ssl_ciphers" => self.note(
                d,
                block,
                Outcome::Approximated,
                "rustls offers its own safe suites (ECDHE with AES-GCM or ChaCha20)",
            ),
            "ssl_client_certificate" | "ssl_trusted_certificate" => {
                if d.name == "ssl_client_certificate" {
                    ctx.client_ca = Some(self.path(a0));
                    self.ok(d, block);
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::NotNeeded,
                        "OCSP stapling is not done by Sluice",
                    );
                }
            }
            "ssl_verify_client" => {
                ctx.verify_client = Some(a0.to_owned());
                if a0 == "optional_no_ca" {
                    self.note(
                        d,
                        block,
                        Outcome::Approximated,
                        "to optional: Sluice verifies every certificate it is shown",
                    );
                } else {
                    self.ok(d, block);
                }
            }
            "proxy_ssl_verify" => {
                ctx.up_tls.verify = Some(a0 == "on");
                self.ok(d, block);
            }
            "proxy_ssl_trusted_certificate" => {
                ctx.up_tls.ca = Some(self.path(a0));
                self.ok(d, block);
            }
            "proxy_ssl_name" => match values::template(a0) {
                Ok(t) if !t.contains('{') => {
                    ctx.up_tls.name = Some(a0.to_owned());
                    self.ok(d, block);
                }
                _ => self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    "Sluice's sni is a fixed name",
                ),
            },
            "proxy_ssl_server_name" => self.note(
                d,
                block,
                Outcome::NotNeeded,
                "Sluice always sends SNI to TLS backends",
            ),
            "proxy_ssl_certificate" => {
                ctx.up_tls.cert = Some(self.path(a0));
                self.ok(d, block);
            }
            "proxy_ssl_certificate_key" => {
                ctx.up_tls.key = Some(self.path(a0));
                self.ok(d, block);
            }
            "proxy_ssl_protocols" | "proxy_ssl_ciphers" | "proxy_ssl_session_reuse" => {
                self.note(d, block, Outcome::NotNeeded, "rustls's defaults");
            }
            "access_log" => {
                if a0 == "off" {
                    ctx.access_log_off = Some(true);
                    self.ok(d, block);
                } else {
                    ctx.access_log_off = Some(false);
                    self.note(d, block, Outcome::Approximated, "Sluice writes its own access log ([logging] access_log_path, access_log_format)");
                }
            }
            "proxy_redirect" => {
                if a0 == "off" {
                    self.note(
                        d,
                        block,
                        Outcome::NotNeeded,
                        "Sluice does not rewrite Location",
                    );
                } else {
                    self.note(
                        d,
                        block,
                        Outcome::NotTranslated,
                        "Sluice does not rewrite the backend's Location",
                    );
                }
            }
            _ => return false,
        }
        true
    }

    /// One `proxy_set_header NAME VALUE`.
    fn req_header(&mut self, d: &Directive, block: usize, name: &str, value: &str) -> ReqAction {
        let v = value.trim();
        let builtin = match (name, v) {
            ("x-forwarded-for", "$proxy_add_x_forwarded_for") => {
                Some("Sluice appends the client to X-Forwarded-For itself")
            }
            ("x-real-ip", "$remote_addr") => Some("Sluice sends X-Real-IP itself"),
            ("x-forwarded-proto", "$scheme") => Some("Sluice sends X-Forwarded-Proto itself"),
            ("x-forwarded-host", "$host") | ("x-forwarded-host", "$http_host") => {
                Some("Sluice sends X-Forwarded-Host itself (the Host the client sent)")
            }
            ("x-request-id", "$request_id") => {
                Some("Sluice sends X-Request-Id itself (the client's, or a new one)")
            }
            ("host", "$http_host") => Some("Sluice keeps the client's Host"),
            _ => None,
        };
        if let Some(why) = builtin {
            self.note(d, block, Outcome::Translated, why);
            return ReqAction::Builtin;
        }
        if name == "upgrade"
            || (name == "connection"
                && (v == "$connection_upgrade" || v.eq_ignore_ascii_case("upgrade")))
        {
            self.note(
                d,
                block,
                Outcome::Translated,
                "WebSocket: Sluice forwards upgrades on every route",
            );
            return ReqAction::Upgrade;
        }
        if name == "connection" && v.is_empty() {
            self.note(
                d,
                block,
                Outcome::NotNeeded,
                "Sluice keeps backend connections alive itself",
            );
            return ReqAction::Builtin;
        }
        if OWNED_REQUEST_FIELDS.contains(&name) {
            self.note(
                d,
                block,
                Outcome::Approximated,
                "Sluice sets this field itself and does not let a rule change it",
            );
            return ReqAction::Builtin;
        }
        if v.is_empty() {
            self.note(d, block, Outcome::Translated, "to request_headers remove");
            return ReqAction::Remove;
        }
        if name == "host" && (v == "$proxy_host") {
            self.ok(d, block);
            return ReqAction::Set(String::new());
        }
        match values::template(v) {
            Ok(t) => {
                self.ok(d, block);
                ReqAction::Set(t)
            }
            Err(var) => {
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    format!("{var} has no Sluice equivalent"),
                );
                ReqAction::Dropped
            }
        }
    }

    fn server(&mut self, d: &Directive, http: &Ctx) {
        let block = self.new_block();
        let ds = d.block.as_deref().unwrap_or(&[]);
        let mut own = Ctx::default();
        let mut s = ServerDef {
            block,
            origin: format!("{}: server", at(d)),
            listens: Vec::new(),
            names: Vec::new(),
            locs: Vec::new(),
            ctx: Ctx::default(),
        };
        let mut server_answer: Option<(Answer, String)> = None;
        for x in ds {
            match x.name.as_str() {
                "location" => {}
                "listen" => match values::listen(&x.args) {
                    Ok(l) => {
                        if l.unsupported.is_empty() {
                            self.ok(x, block);
                        } else {
                            self.note(
                                x,
                                block,
                                Outcome::Approximated,
                                format!("{} not supported", l.unsupported.join(" ")),
                            );
                        }
                        s.listens.push(l);
                    }
                    Err(e) => self.note(x, block, Outcome::NotTranslated, e),
                },
                "server_name" => {
                    let mut why = Vec::new();
                    for n in &x.args {
                        let n = n.to_ascii_lowercase();
                        if n.starts_with('~') {
                            why.push(format!("{n}: regular expression names"));
                        } else if n.ends_with(".*") {
                            why.push(format!("{n}: trailing wildcards"));
                        } else if let Some(rest) = n.strip_prefix('.') {
                            s.names.push(rest.to_owned());
                            s.names.push(format!("*.{rest}"));
                        } else {
                            s.names.push(n);
                        }
                    }
                    if why.is_empty() {
                        self.ok(x, block);
                    } else {
                        self.note(x, block, Outcome::NotTranslated, why.join("; "));
                    }
                }
                "return" => {
                    if let Some(a) = self.answer(x, block) {
                        server_answer = Some((a, at(x)));
                    }
                }
                "rewrite" => {
                    // Only the literal-path redirect is a route of its own.
                    self.note(x, block, Outcome::NotTranslated, "server-level rewrites run before location matching; Sluice has no equivalent (move it into a location)");
                }
                _ => {
                    if !self.settings(x, &mut own, block) && !self.by_table(x, block) {
                        self.note(x, block, Outcome::NotTranslated, "unknown to the importer");
                    }
                }
            }
        }
        s.ctx = own.under(http);
        if s.listens.is_empty() {
            s.listens.push(Listen {
                addr: "0.0.0.0:80".into(),
                ssl: false,
                http2: false,
                default: false,
                unsupported: Vec::new(),
            });
        }
        if let Some((answer, origin)) = server_answer {
            // `return` at server level answers before any location is chosen.
            s.locs.push(LocDef {
                block,
                origin: format!("{origin}: return (server level)"),
                rule: PathRule::Prefix("/".into()),
                ctx: s.ctx.clone(),
                proxy_pass: None,
                answer: Some(answer),
                rewrite: None,
                dropped: false,
            });
            for x in ds.iter().filter(|x| x.name == "location") {
                self.skip_location(x, block);
            }
        } else {
            let ctx = s.ctx.clone();
            for x in ds.iter().filter(|x| x.name == "location") {
                self.location(x, &ctx, None, &mut s.locs);
            }
            s.locs = self.slash_redirects(std::mem::take(&mut s.locs));
        }
        self.servers.push(s);
    }

    fn skip_location(&mut self, d: &Directive, block: usize) {
        self.note(
            d,
            block,
            Outcome::NotNeeded,
            "never reached: the server's return answers first",
        );
    }

    /// `return`: a redirect or a refusal.
    fn answer(&mut self, d: &Directive, block: usize) -> Option<Answer> {
        let (code, target) = match d.args.as_slice() {
            [url]
                if url.starts_with("http://")
                    || url.starts_with("https://")
                    || url.starts_with("$scheme") =>
            {
                (302, Some(url.clone()))
            }
            [code] => (code.parse().unwrap_or(0), None),
            [code, rest] => (code.parse().unwrap_or(0), Some(rest.clone())),
            _ => (0, None),
        };
        match (code, target) {
            (301 | 302 | 303 | 307 | 308, Some(url)) => {
                let url = if url.starts_with('/') {
                    format!("$scheme://$host{url}")
                } else {
                    url
                };
                match values::template(&url) {
                    Ok(t) => {
                        self.ok(d, block);
                        Some(Answer::Redirect(t, code))
                    }
                    Err(v) => {
                        self.note(
                            d,
                            block,
                            Outcome::NotTranslated,
                            format!("{v} has no Sluice equivalent"),
                        );
                        None
                    }
                }
            }
            (403, None) => {
                self.note(
                    d,
                    block,
                    Outcome::Approximated,
                    "to deny = [\"0.0.0.0/0\", \"::/0\"]: a 403 with Sluice's own body",
                );
                Some(Answer::Deny)
            }
            _ => {
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    "Sluice answers only redirects and refusals itself",
                );
                None
            }
        }
    }

    fn location(
        &mut self,
        d: &Directive,
        parent: &Ctx,
        outer: Option<&PathRule>,
        out: &mut Vec<LocDef>,
    ) {
        let block = self.new_block();
        let (rule, caret) = match d.args.as_slice() {
            [m, p] if m == "=" => (PathRule::Exact(p.clone()), false),
            [m, p] if m == "~" => (PathRule::Regex(p.clone()), false),
            [m, p] if m == "~*" => (PathRule::Regex(format!("(?i){p}")), false),
            [m, p] if m == "^~" => (PathRule::Prefix(p.clone()), true),
            [p] if p.starts_with('@') => {
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    "named locations are reached only by error_page/try_files",
                );
                out.push(Self::dropped_loc(d, block));
                return;
            }
            [p] => (PathRule::Prefix(p.clone()), false),
            _ => {
                self.note(d, block, Outcome::NotTranslated, "unknown location form");
                out.push(Self::dropped_loc(d, block));
                return;
            }
        };
        if let PathRule::Regex(r) = &rule {
            if let Err(e) = regex::Regex::new(r) {
                let e = e.to_string();
                let e = e.lines().last().unwrap_or("").trim().to_owned();
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    format!("the regex crate does not read this pattern ({e})"),
                );
                out.push(Self::dropped_loc(d, block));
                return;
            }
        }
        let label = text(d);
        let mut why = Vec::new();
        if caret {
            why.push("^~: Sluice tries regex routes before prefixes, so a regex that matches below this prefix wins in Sluice".to_string());
        }
        if matches!(rule, PathRule::Regex(_)) && outer.is_some() {
            why.push(
                "a regex nested in a location: Sluice tries it on every path of the host".into(),
            );
        }
        if why.is_empty() {
            self.ok(d, block);
        } else {
            self.note(d, block, Outcome::Approximated, why.join("; "));
        }
        let mut own = Ctx::default();
        let mut loc = LocDef {
            block,
            origin: format!("{}: {label}", at(d)),
            rule,
            ctx: Ctx::default(),
            proxy_pass: None,
            answer: None,
            rewrite: None,
            dropped: false,
        };
        let ds = d.block.as_deref().unwrap_or(&[]);
        let mut rewrites = 0;
        for x in ds {
            match x.name.as_str() {
                "location" => {}
                "proxy_pass" => self.proxy_pass(x, block, &mut loc),
                "return" => loc.answer = self.answer(x, block),
                "rewrite" => {
                    rewrites += 1;
                    if rewrites > 1 {
                        self.note(
                            x,
                            block,
                            Outcome::NotTranslated,
                            "Sluice has one rewrite per route",
                        );
                        continue;
                    }
                    self.rewrite(x, block, &mut loc);
                }
                _ => {
                    if !self.settings(x, &mut own, block) && !self.by_table(x, block) {
                        self.note(x, block, Outcome::NotTranslated, "unknown to the importer");
                    }
                }
            }
        }
        loc.ctx = own.under(parent);
        if loc.proxy_pass.is_none() && loc.answer.is_none() {
            let serves_files = ds.iter().all(|x| x.name != "location")
                || ds
                    .iter()
                    .any(|x| matches!(x.name.as_str(), "root" | "alias" | "try_files" | "index"));
            if serves_files {
                self.notes.push(Note {
                    outcome: Outcome::NotTranslated,
                    directive: label.clone(),
                    at: at(d),
                    why: "no proxy_pass or return: nginx serves files here, Sluice does not".into(),
                    block,
                });
            }
        }
        let ctx = loc.ctx.clone();
        let rule = loc.rule.clone();
        out.push(loc);
        for x in ds.iter().filter(|x| x.name == "location") {
            self.location(x, &ctx, Some(&rule), out);
        }
    }

    /// nginx answers `/app` with a 301 to `/app/` when `location /app/` proxies and no location
    /// names `/app` itself: an exact route with that redirect after each such location.
    fn slash_redirects(&mut self, locs: Vec<LocDef>) -> Vec<LocDef> {
        let named: HashSet<String> = locs
            .iter()
            .filter(|l| !l.dropped)
            .filter_map(|l| match &l.rule {
                PathRule::Prefix(p) | PathRule::Exact(p) => Some(p.clone()),
                PathRule::Regex(_) => None,
            })
            .collect();
        let mut out = Vec::with_capacity(locs.len());
        for l in locs {
            let extra = match &l.rule {
                PathRule::Prefix(p)
                    if p.len() > 1
                        && p.ends_with('/')
                        && l.proxy_pass.is_some()
                        && l.answer.is_none()
                        && !l.dropped
                        && !named.contains(p.trim_end_matches('/')) =>
                {
                    let bare = p.trim_end_matches('/').to_owned();
                    let to = p.replace('{', "{{").replace('}', "}}");
                    Some(LocDef {
                        block: self.new_block(),
                        origin: format!(
                            "{}: {bare} is answered 301 to {p}, as nginx does for a proxied location ending in / (relative Location, query not kept)",
                            l.origin.split(": ").next().unwrap_or("")
                        ),
                        rule: PathRule::Exact(bare),
                        ctx: l.ctx.clone(),
                        proxy_pass: None,
                        answer: Some(Answer::Redirect(to, 301)),
                        rewrite: None,
                        dropped: false,
                    })
                }
                _ => None,
            };
            out.push(l);
            out.extend(extra);
        }
        out
    }

    /// A location dropped whole: only its comments are written.
    fn dropped_loc(d: &Directive, block: usize) -> LocDef {
        LocDef {
            block,
            origin: format!("{}: {}", at(d), text(d)),
            rule: PathRule::Prefix("/".into()),
            ctx: Ctx::default(),
            proxy_pass: None,
            answer: None,
            rewrite: None,
            dropped: true,
        }
    }

    fn proxy_pass(&mut self, d: &Directive, block: usize, loc: &mut LocDef) {
        let url = d.args.first().map(String::as_str).unwrap_or("");
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "only http:// and https:// backends",
            );
            return;
        };
        if rest.contains('$') {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "a backend chosen by variables",
            );
            return;
        }
        let (hostport, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        };
        if hostport.starts_with("unix:") {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "unix sockets are not supported",
            );
            return;
        }
        if uri.is_some() && matches!(loc.rule, PathRule::Regex(_)) {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "nginx refuses a URI part in a regex location",
            );
            return;
        }
        let has_port = hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let target = if self.upstreams.contains_key(hostport) || has_port {
            hostport.to_owned()
        } else {
            format!("{hostport}:{}", if tls { 443 } else { 80 })
        };
        loc.proxy_pass = Some(ProxyPass {
            tls,
            target,
            uri,
            // nginx's $proxy_host leaves out the scheme's default port.
            proxy_host: hostport
                .strip_suffix(if tls { ":443" } else { ":80" })
                .unwrap_or(hostport)
                .to_owned(),
        });
        self.ok(d, block);
    }

    fn rewrite(&mut self, d: &Directive, block: usize, loc: &mut LocDef) {
        let (Some(re), Some(repl)) = (d.args.first(), d.args.get(1)) else {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "expected: rewrite regex replacement [flag]",
            );
            return;
        };
        let flag = d.args.get(2).map(String::as_str).unwrap_or("");
        if regex::Regex::new(re).is_err() {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "the regex crate does not read this pattern",
            );
            return;
        }
        let redirect = flag == "redirect"
            || flag == "permanent"
            || repl.starts_with("http://")
            || repl.starts_with("https://")
            || repl.starts_with("$scheme");
        if redirect {
            // The whole path, query appended by nginx: `{uri}`.
            let whole = matches!(
                re.as_str(),
                "^(.*)$" | "^(.*)" | "(.*)" | "^/(.*)$" | "^/(.*)"
            );
            let status = if flag == "permanent" { 301 } else { 302 };
            let target = if whole {
                let slash = re.contains("^/(");
                repl.replace(if slash { "/$1" } else { "$1" }, "$request_uri")
            } else {
                repl.clone()
            };
            if !whole && !matches!(loc.rule, PathRule::Exact(_)) {
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    "a redirect of part of a location: Sluice redirects a whole route",
                );
                return;
            }
            let target = if target.starts_with('/') {
                format!("$scheme://$host{target}")
            } else {
                target
            };
            match values::template(&target) {
                Ok(t) if !target.contains('?') => {
                    loc.answer = Some(Answer::Redirect(t, status));
                    self.ok(d, block);
                }
                Ok(_) => self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    "a replacement with its own query",
                ),
                Err(v) => self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    format!("{v} has no Sluice equivalent"),
                ),
            }
            return;
        }
        if repl.contains('?') {
            self.note(
                d,
                block,
                Outcome::NotTranslated,
                "a replacement with its own query",
            );
            return;
        }
        let to = match values::replacement(repl) {
            Ok(t) => t,
            Err(v) => {
                self.note(
                    d,
                    block,
                    Outcome::NotTranslated,
                    format!("{v} in a replacement"),
                );
                return;
            }
        };
        // nginx replaces the whole path when the regex matches anywhere; Sluice replaces the
        // match: anchor it on both ends, keeping the group numbers.
        let pattern = if re.starts_with('^') && re.ends_with('$') && !re.ends_with("\\$") {
            re.clone()
        } else {
            format!("^.*?(?:{re}).*$")
        };
        loc.rewrite = Some((pattern, to));
        match flag {
            "break" => self.ok(d, block),
            "last" | "" => self.note(d, block, Outcome::Approximated, "Sluice does not look for another route with the new path: it goes to this route's upstream"),
            _ => self.note(d, block, Outcome::NotTranslated, "unknown flag"),
        }
    }
}

/// One route to write.
struct RouteOut {
    comments: Vec<String>,
    name: String,
    host: String,
    scheme: Option<&'static str>,
    rule: PathRule,
    lines: Vec<String>,
}

impl Tr {
    /// The pool a location's proxy_pass goes to, made on first use.
    fn pool(&mut self, pp: &ProxyPass, ctx: &Ctx) -> String {
        let members = self
            .upstreams
            .get(&pp.target)
            .map_or(1, |u| u.servers.len().max(1));
        let tries = ctx.tries.unwrap_or(0);
        let key = PoolKey {
            target: pp.target.clone(),
            tls: pp.tls,
            connect: ctx.connect_ms.unwrap_or(NGINX_PROXY_TIMEOUT_MS),
            read: ctx.read_ms.unwrap_or(NGINX_PROXY_TIMEOUT_MS),
            send: ctx.send_ms.unwrap_or(NGINX_PROXY_TIMEOUT_MS),
            next: ctx
                .next_upstream
                .clone()
                .unwrap_or_else(|| vec!["error".into(), "timeout".into()]),
            tries: if tries == 0 { members as u64 } else { tries },
            verify: ctx.up_tls.verify.unwrap_or(true),
            ca: ctx.up_tls.ca.clone(),
            sni: ctx.up_tls.name.clone(),
            cert: ctx.up_tls.cert.clone(),
            key: ctx.up_tls.key.clone(),
        };
        if let Some((_, name)) = self.pools.iter().find(|(k, _)| *k == key) {
            return name.clone();
        }
        let base: String = pp
            .target
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut name = base.clone();
        let mut n = 1;
        while self.pools.iter().any(|(_, p)| *p == name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.pools.push((key, name.clone()));
        name
    }

    fn render(&mut self) -> String {
        let mut out = String::new();
        out.push_str(
            "# Made by `sluice import nginx`. Each block names the nginx file:line it came from;\n",
        );
        out.push_str("# `not translated` marks what Sluice does not do, `approximated` what it does differently.\n");
        out.push_str("# Differences that hold for every import: docs/migrating-from-nginx.md.\n");
        self.comments(&mut out, 0);

        self.rate_section = !self.global.trusted.is_empty()
            || self
                .servers
                .iter()
                .any(|s| s.locs.iter().any(|l| l.ctx.limit_req.is_some()));
        // Routes first (they make the pools), written after the pools.
        let routes = self.routes();
        let any_tls = self.servers.iter().any(|s| s.listens.iter().any(|l| l.ssl));
        let any_plain = self
            .servers
            .iter()
            .any(|s| s.listens.iter().any(|l| !l.ssl));

        // [server]
        let mut plain: Vec<String> = Vec::new();
        let mut h2c = false;
        for s in &self.servers {
            for l in s.listens.iter().filter(|l| !l.ssl) {
                if !plain.contains(&l.addr) {
                    plain.push(l.addr.clone());
                }
                h2c |= l.http2;
            }
        }
        let g = &self.global;
        out.push_str("\n[server]\n");
        let _ = writeln!(out, "listen = {}", arr(&plain));
        if let Some(t) = g.threads {
            let _ = writeln!(out, "threads = {t}");
        }
        if let Some(v) = g.max_connections {
            let _ = writeln!(out, "max_connections = {v}");
        }
        let _ = writeln!(
            out,
            "keepalive_timeout_ms = {}                # nginx's keepalive_timeout",
            g.keepalive_ms.unwrap_or(75_000)
        );
        let _ = writeln!(
            out,
            "client_header_timeout_ms = {}            # nginx's client_header_timeout",
            g.header_timeout_ms.unwrap_or(60_000)
        );
        let _ = writeln!(
            out,
            "client_body_timeout_ms = {}              # nginx's client_body_timeout",
            g.body_timeout_ms.unwrap_or(60_000)
        );
        if let Some(v) = g.max_header_bytes {
            let _ = writeln!(out, "max_request_header_bytes = {v}");
        }
        if let Some(v) = g.keepalive_pool {
            let _ = writeln!(out, "upstream_keepalive_pool_size = {v}");
        }
        if h2c {
            out.push_str("h2c = true                            # listen ... http2 without ssl\n");
        }
        // TLS listeners: one per address, each server's certificate (the default server's first).
        let mut tls_addrs: Vec<String> = Vec::new();
        for s in &self.servers {
            for l in s.listens.iter().filter(|l| l.ssl) {
                if !tls_addrs.contains(&l.addr) {
                    tls_addrs.push(l.addr.clone());
                }
            }
        }
        for addr in &tls_addrs {
            let mut servers: Vec<&ServerDef> = self
                .servers
                .iter()
                .filter(|s| s.listens.iter().any(|l| l.ssl && l.addr == *addr))
                .collect();
            servers.sort_by_key(|s| !s.listens.iter().any(|l| l.addr == *addr && l.default));
            let mut pairs: Vec<(String, String)> = Vec::new();
            for s in &servers {
                if let (Some(c), Some(k)) = (&s.ctx.ssl_cert, &s.ctx.ssl_key) {
                    if !pairs.iter().any(|(pc, _)| pc == c) {
                        pairs.push((c.clone(), k.clone()));
                    }
                }
            }
            if pairs.is_empty() {
                // A listener without a certificate would fail --check: left out, and said.
                let why = "no ssl_certificate for its servers: the listener is left out";
                self.notes.push(Note {
                    outcome: Outcome::NotTranslated,
                    directive: format!("listen {addr} ssl"),
                    at: servers.first().map_or(String::new(), |s| s.origin.clone()),
                    why: why.into(),
                    block: usize::MAX,
                });
                out.push('\n');
                out.push_str(&comment(&format!(
                    "not translated: listen {addr} ssl ({why})"
                )));
                continue;
            }
            out.push_str("\n[[server.tls]]\n");
            let _ = writeln!(out, "listen = {}", q(addr));
            match pairs.as_slice() {
                [] => {}
                [(c, k)] => {
                    let _ = writeln!(out, "cert = {}\nkey = {}", q(c), q(k));
                }
                many => {
                    let items: Vec<String> = many
                        .iter()
                        .map(|(c, k)| format!("{{ cert = {}, key = {} }}", q(c), q(k)))
                        .collect();
                    let _ = writeln!(out, "certs = [\n  {},\n]                                      # chosen by SNI from each certificate's names; the first is the default", items.join(",\n  "));
                }
            }
            if let Some(min) = servers.iter().find_map(|s| s.ctx.ssl_min.clone()) {
                let _ = writeln!(out, "min_version = {}", q(&min));
            }
            if let Some(s) = servers
                .iter()
                .find(|s| s.ctx.verify_client.as_deref().is_some_and(|v| v != "off"))
            {
                let mode = if s.ctx.verify_client.as_deref() == Some("on") {
                    "required"
                } else {
                    "optional"
                };
                let _ = writeln!(out, "client_auth = {}", q(mode));
                if let Some(ca) = &s.ctx.client_ca {
                    let _ = writeln!(out, "client_ca = {}", q(ca));
                }
            }
        }
        let g = &self.global;
        if !g.nameservers.is_empty() {
            let _ = write!(out, "\n[dns]\nnameservers = {}\n", arr(&g.nameservers));
        }
        if g.access_log_off {
            out.push_str("\n[logging]\naccess_log = false\n");
        }
        if self.rate_section {
            out.push_str("\n[rate_limit]                          # only routes with their own rate_limit are limited\n");
            out.push_str("exempt_paths = []\n");
            if !g.trusted.is_empty() {
                let _ = writeln!(out, "trusted_proxies = {}", arr(&g.trusted));
            }
            if g.limit_dry_run {
                out.push_str("mode = \"shadow\"\n");
            }
        }
        if !self.tiers.is_empty() || g.cache_memory.is_some() {
            out.push_str("\n[cache]\n");
            if let Some(m) = g.cache_memory {
                let _ = writeln!(
                    out,
                    "memory_bytes = {m}                # proxy_cache_path max_size"
                );
            }
            for (tier, ttl) in &self.tiers {
                let _ = write!(out, "\n[cache.tiers.{tier}]\nttl_seconds = {ttl}\n");
            }
        }

        // Upstreams no route uses make no pool: say so where they would have been.
        let unused: Vec<String> = self
            .upstreams
            .iter()
            .filter(|(name, _)| !self.pools.iter().any(|(k, _)| &k.target == *name))
            .map(|(_, u)| u.origin.clone())
            .collect();
        for origin in unused {
            out.push('\n');
            out.push_str(&comment(&format!(
                "{origin}: not needed: no translated proxy_pass uses it, so it makes no pool"
            )));
        }

        // Pools.
        let pools = self.pools.clone();
        for (key, name) in &pools {
            let up = self.upstreams.get(&key.target).cloned();
            out.push('\n');
            match &up {
                Some(u) => {
                    out.push_str(&comment(&u.origin));
                    self.comments(&mut out, u.block);
                }
                None => {
                    out.push_str(&comment(&format!(
                        "proxy_pass {}://{}",
                        if key.tls { "https" } else { "http" },
                        key.target
                    )));
                }
            }
            let _ = writeln!(out, "[upstreams.{name}]");
            let servers: Vec<(String, u64, bool)> = match &up {
                Some(u) => u.servers.clone(),
                None => vec![(key.target.clone(), 1, false)],
            };
            if let Some(u) = &up {
                if u.strategy != "round_robin" {
                    let _ = writeln!(out, "strategy = {}", q(u.strategy));
                }
            }
            let _ = writeln!(out, "connect_timeout_ms = {}", key.connect);
            let _ = writeln!(out, "read_timeout_ms = {}", key.read);
            let _ = writeln!(out, "write_timeout_ms = {}", key.send);
            let _ = writeln!(out, "websocket_idle_timeout_ms = {}        # an idle WebSocket closes after proxy_read_timeout, as in nginx", key.read);
            let _ = writeln!(out, "next_upstream = {}", arr(&key.next));
            let retries = if key.next.is_empty() {
                0
            } else {
                key.tries
                    .min(servers.len() as u64)
                    .saturating_sub(1)
                    .min(16)
            };
            let _ = writeln!(out, "retries = {retries}");
            let (mf, ft, kt) = up.as_ref().map_or((None, None, None), |u| {
                (u.max_fails, u.fail_timeout_ms, u.keepalive_timeout_ms)
            });
            let _ = writeln!(out, "max_fails = {}                          # nginx's default max_fails=1 fail_timeout=10s unless set", mf.unwrap_or(1));
            let _ = writeln!(out, "fail_timeout_ms = {}", ft.unwrap_or(10_000));
            if let Some(k) = kt {
                let _ = writeln!(out, "keepalive_timeout_ms = {k}");
            }
            out.push_str("backends = [\n");
            for (addr, weight, backup) in &servers {
                let mut item = format!("  {{ addr = {}", q(addr));
                if *weight != 1 {
                    let _ = write!(item, ", weight = {weight}");
                }
                if *backup {
                    item.push_str(", backup = true");
                }
                item.push_str(" },\n");
                out.push_str(&item);
            }
            out.push_str("]\n");
            if key.tls {
                let _ = writeln!(out, "[upstreams.{name}.tls]");
                if !key.verify {
                    out.push_str("verify = false\n");
                }
                if let Some(ca) = &key.ca {
                    let _ = writeln!(out, "ca = {}", q(ca));
                }
                if let Some(sni) = &key.sni {
                    let _ = writeln!(out, "sni = {}", q(sni));
                }
                if let (Some(c), Some(k)) = (&key.cert, &key.key) {
                    let _ = writeln!(out, "client_cert = {}\nclient_key = {}", q(c), q(k));
                }
            }
        }

        // Routes.
        let scheme_matters = any_tls && any_plain;
        for r in routes {
            out.push('\n');
            for c in &r.comments {
                out.push_str(c);
            }
            if r.name.is_empty() {
                continue;
            }
            out.push_str("[[routes]]\n");
            let _ = writeln!(out, "name = {}", q(&r.name));
            if r.host != "*" {
                let _ = writeln!(out, "host = {}", q(&r.host));
            }
            if let (true, Some(s)) = (scheme_matters, r.scheme) {
                let _ = writeln!(out, "scheme = {}", q(s));
            }
            match &r.rule {
                PathRule::Prefix(p) if p == "/" => {}
                PathRule::Prefix(p) => {
                    let _ = writeln!(out, "path_prefix = {}", q(p));
                }
                PathRule::Exact(p) => {
                    let _ = writeln!(out, "path_exact = {}", q(p));
                }
                PathRule::Regex(p) => {
                    let _ = writeln!(out, "path_regex = {}", q(p));
                }
            }
            for l in &r.lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        // Values went through `q()` (escaped); only comments can hold raw characters.
        Self::clean_comments(out)
    }

    /// Comments carry nginx's own words, which may hold characters a TOML comment may not (the
    /// fuzzer found a directive named `\x08`): those become U+FFFD.
    fn clean_comments(out: String) -> String {
        let bad = |c: char| c.is_control() && c != '\t' && c != '\n';
        if !out.chars().any(bad) {
            return out;
        }
        out.chars()
            .map(|c| if bad(c) { '\u{fffd}' } else { c })
            .collect()
    }

    /// The notes written next to `block`, prefixed.
    fn comments(&self, out: &mut String, block: usize) {
        for n in self.notes.iter().filter(|n| n.block == block) {
            let what = match n.outcome {
                Outcome::Translated => continue,
                Outcome::Approximated => "approximated",
                Outcome::NotTranslated => "not translated",
                Outcome::NotNeeded => "not needed",
            };
            out.push_str(&comment(&format!(
                "{what}: {} ({}) [{}]",
                n.directive, n.why, n.at
            )));
        }
    }

    /// Every route, in the order the servers and locations were written.
    fn routes(&mut self) -> Vec<RouteOut> {
        // The default server of each listen address also takes hosts no server names.
        let mut defaults: HashMap<String, usize> = HashMap::new();
        for (i, s) in self.servers.iter().enumerate() {
            for l in &s.listens {
                if l.default {
                    defaults.insert(l.addr.clone(), i);
                }
            }
        }
        for (i, s) in self.servers.iter().enumerate() {
            for l in &s.listens {
                defaults.entry(l.addr.clone()).or_insert(i);
            }
        }
        let servers = self.servers.clone();
        let mut out: Vec<RouteOut> = Vec::new();
        let mut seen: Vec<(String, String, Option<&'static str>)> = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        let mut catch_all: HashSet<Option<&'static str>> = HashSet::new();
        for (i, s) in servers.iter().enumerate() {
            let ssl = s.listens.iter().filter(|l| l.ssl).count();
            let scheme = if ssl == s.listens.len() {
                Some("https")
            } else if ssl == 0 {
                Some("http")
            } else {
                None
            };
            let mut hosts: Vec<String> = s
                .names
                .iter()
                .filter(|n| !n.is_empty() && *n != "_" && *n != "localhost")
                .cloned()
                .collect();
            if s.names.iter().any(|n| n == "localhost") {
                hosts.push("localhost".into());
            }
            let is_default = defaults.values().any(|d| *d == i);
            // The only server of its kind (plain or TLS) gets every host: one catch-all route
            // per location says so without a copy per name.
            let alone = !servers.iter().enumerate().any(|(j, o)| {
                j != i
                    && o.listens
                        .iter()
                        .any(|ol| s.listens.iter().any(|sl| sl.ssl == ol.ssl))
            });
            if alone && is_default {
                hosts.clear();
            }
            if is_default && !catch_all.contains(&scheme) {
                catch_all.insert(scheme);
                hosts.push("*".into());
            }
            let mut unique: Vec<String> = Vec::new();
            for h in hosts {
                if !unique.contains(&h) {
                    unique.push(h);
                }
            }
            let hosts = unique;
            let mut first = true;
            let server_comments = |t: &Tr| {
                let mut c = comment(&format!("{} {}", s.origin, s.names.join(" ")));
                t.comments(&mut c, s.block);
                c
            };
            for loc in &s.locs {
                if loc.dropped || hosts.is_empty() {
                    let mut comments = Vec::new();
                    if first {
                        comments.push(server_comments(self));
                        first = false;
                    }
                    comments.push(comment(&loc.origin));
                    let mut c = String::new();
                    self.comments(&mut c, loc.block);
                    comments.push(c);
                    out.push(RouteOut::comments_only(comments));
                    continue;
                }
                let mut first_of_loc = true;
                for host in &hosts {
                    let mut comments = Vec::new();
                    if first {
                        comments.push(server_comments(self));
                        first = false;
                    }
                    if first_of_loc {
                        comments.push(comment(&loc.origin));
                        if loc.block != s.block {
                            let mut c = String::new();
                            self.comments(&mut c, loc.block);
                            comments.push(c);
                        }
                        first_of_loc = false;
                    }
                    let rule_key = match &loc.rule {
                        PathRule::Prefix(p) => format!("prefix {p}"),
                        PathRule::Exact(p) => format!("exact {p}"),
                        PathRule::Regex(p) => format!("regex {p}"),
                    };
                    if seen.iter().any(|(h, r, sc)| {
                        h == host && *r == rule_key && (sc.is_none() || *sc == scheme)
                    }) {
                        comments.push(comment(&format!("not translated: the same host and path as an earlier route (Sluice routes by host and scheme, not by listen port): {host} {rule_key}")));
                        out.push(RouteOut::comments_only(comments));
                        continue;
                    }
                    let Some(lines) = self.route_lines(loc) else {
                        out.push(RouteOut::comments_only(comments));
                        continue;
                    };
                    seen.push((host.clone(), rule_key.clone(), scheme));
                    let path_part = match &loc.rule {
                        PathRule::Prefix(p) => p.clone(),
                        PathRule::Exact(p) => format!("={p}"),
                        PathRule::Regex(_) => format!("~{}", out.len() + 1),
                    };
                    let mut name: String = format!("{host}{path_part}")
                        .chars()
                        .filter(|c| !c.is_control() && *c != '"' && *c != '\\' && *c != '\'')
                        .take(110)
                        .collect();
                    if names.contains(&name) {
                        if let Some(sc) = scheme {
                            name = format!("{name} {sc}");
                        }
                        let base = name.clone();
                        let mut n = 2;
                        while names.contains(&name) {
                            name = format!("{base} #{n}");
                            n += 1;
                        }
                    }
                    names.insert(name.clone());
                    out.push(RouteOut {
                        comments,
                        name,
                        host: host.clone(),
                        scheme,
                        rule: loc.rule.clone(),
                        lines,
                    });
                }
            }
            if first {
                // Nothing of this server became a route: its notes still go into the file.
                out.push(RouteOut::comments_only(vec![server_comments(self)]));
            }
        }
        out.retain(|r| !r.name.is_empty() || !r.comments.is_empty());
        out
    }

    /// A route's keys after its path rule, or `None` when it has nothing to do (comments only).
    fn route_lines(&mut self, loc: &LocDef) -> Option<Vec<String>> {
        let ctx = &loc.ctx;
        let mut lines = Vec::new();
        match &loc.answer {
            Some(Answer::Redirect(to, status)) => {
                lines.push(format!(
                    "redirect = {{ to = {}, status = {status} }}",
                    q(to)
                ));
                return Some(lines);
            }
            Some(Answer::Deny) => {
                // Needs an upstream only when proxying; a refusal of everyone never proxies,
                // but Sluice wants either upstream or redirect: point at any pool.
                let pp = loc.proxy_pass.clone()?;
                let pool = self.pool(&pp, ctx);
                lines.push(format!("upstream = {}", q(&pool)));
                lines.push("deny = [\"0.0.0.0/0\", \"::/0\"]".into());
                return Some(lines);
            }
            None => {}
        }
        let pp = loc.proxy_pass.clone()?;
        let pool = self.pool(&pp, ctx);
        lines.push(format!("upstream = {}", q(&pool)));
        // The forwarded path.
        if let Some((pattern, to)) = &loc.rewrite {
            lines.push(format!(
                "rewrite = {{ pattern = {}, to = {} }}",
                q(pattern),
                q(to)
            ));
        } else if let Some(uri) = &pp.uri {
            let prefix = match &loc.rule {
                PathRule::Prefix(p) | PathRule::Exact(p) => p.clone(),
                PathRule::Regex(_) => String::new(),
            };
            if prefix != *uri {
                if uri == "/"
                    && prefix.ends_with('/')
                    && prefix.len() > 1
                    && matches!(loc.rule, PathRule::Prefix(_))
                {
                    lines.push(format!(
                        "strip_prefix = {}      # proxy_pass with the URI /",
                        q(prefix.trim_end_matches('/'))
                    ));
                } else {
                    lines.push(format!(
                        "rewrite = {{ pattern = {}, to = {} }}   # proxy_pass with a URI replaces the location's prefix",
                        q(&format!("^{}", regex::escape(&prefix))),
                        q(&uri.replace('$', "$$"))
                    ));
                }
            }
        }
        // Request fields.
        let mut set: Vec<(String, String)> = Vec::new();
        let mut remove: Vec<String> = Vec::new();
        let mut host_named = false;
        for (name, action) in ctx.set_headers.iter().flatten() {
            if name == "host" {
                host_named = true;
            }
            match action {
                ReqAction::Set(v) if name == "host" && v.is_empty() => {
                    set.push((name.clone(), pp.proxy_host.clone()))
                }
                ReqAction::Set(v) => set.push((name.clone(), v.clone())),
                ReqAction::Remove => remove.push(name.clone()),
                _ => {}
            }
        }
        if !host_named {
            // nginx's default: `proxy_set_header Host $proxy_host`.
            set.push(("host".into(), pp.proxy_host.clone()));
        }
        lines.push(format!("request_headers = {}", fields(&set, &[], &remove)));
        let add = ctx.add_headers.clone().unwrap_or_default();
        let hide = ctx.hide_headers.clone().unwrap_or_default();
        if !add.is_empty() || !hide.is_empty() {
            lines.push(format!("response_headers = {}", fields(&[], &add, &hide)));
        }
        if ctx.gzip == Some(true) {
            let mut types = vec!["text/html".to_string()];
            for t in ctx.gzip_types.iter().flatten() {
                if t == "*" {
                    types = vec![
                        "text/*".into(),
                        "application/*".into(),
                        "image/svg+xml".into(),
                    ];
                    break;
                }
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
            lines.push(format!(
                "compression = {{ algorithms = [\"gzip\"], min_bytes = {}, types = {} }}",
                ctx.gzip_min.unwrap_or(20),
                arr(&types)
            ));
        }
        match ctx.max_body.unwrap_or(1 << 20) {
            0 => {}
            n => lines.push(format!(
                "max_body_bytes = {n}                # nginx's client_max_body_size (default 1m)"
            )),
        }
        if let Some(rules) = &ctx.access {
            let (allow, deny) = access_lists(rules);
            if let Some(a) = allow {
                lines.push(format!("allow = {}", arr(&a)));
            }
            if !deny.is_empty() {
                lines.push(format!("deny = {}", arr(&deny)));
            }
        }
        if let Some(l) = &ctx.limit_req {
            if let Some((limit, window)) = self.zones.get(&l.zone) {
                lines.push(format!(
                    "rate_limit = {{ limit = {limit}, window_ms = {window}, algorithm = \"gcra\", burst = {} }}   # limit_req zone={}",
                    l.burst + 1,
                    l.zone
                ));
            }
        } else if self.rate_section {
            lines.push("rate_limit = { off = true }".into());
        }
        if let Some(Some(_zone)) = &ctx.cache {
            let ttl = ctx.cache_valid.unwrap_or(600);
            let (tier, lo, hi) = if ttl <= 300 {
                ("hot", 60, 300)
            } else if ttl <= 600 {
                ("warm", 300, 600)
            } else {
                ("cold", 600, 3600)
            };
            let ttl = ttl.clamp(lo, hi);
            self.tiers.entry(tier).or_insert(ttl);
            lines.push(format!("cache = \"{tier}\""));
        }
        if ctx.access_log_off == Some(true) && !self.global.access_log_off {
            lines.push("access_log = false".into());
        }
        Some(lines)
    }
}

impl RouteOut {
    /// Notes only: written as comments, no `[[routes]]` table.
    fn comments_only(comments: Vec<String>) -> RouteOut {
        RouteOut {
            comments,
            name: String::new(),
            host: String::new(),
            scheme: None,
            rule: PathRule::Prefix("/".into()),
            lines: Vec::new(),
        }
    }
}

/// `{ set = {...}, add = {...}, remove = [...] }`.
fn fields(set: &[(String, String)], add: &[(String, String)], remove: &[String]) -> String {
    let table = |v: &[(String, String)]| {
        let items: Vec<String> = v
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        if items.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", items.join(", "))
        }
    };
    // `add` may name a field twice (add_header twice): keep the last, as a table must.
    let mut add_unique: Vec<(String, String)> = Vec::new();
    for (k, v) in add {
        add_unique.retain(|(k2, _)| k2 != k);
        add_unique.push((k.clone(), v.clone()));
    }
    let mut set_unique: Vec<(String, String)> = Vec::new();
    for (k, v) in set {
        set_unique.retain(|(k2, _)| k2 != k);
        set_unique.push((k.clone(), v.clone()));
    }
    format!(
        "{{ set = {}, add = {}, remove = {} }}",
        table(&set_unique),
        table(&add_unique),
        arr(remove)
    )
}

/// Whether two addresses or networks share an address.
fn overlap(a: &str, b: &str) -> bool {
    let net = |s: &str| {
        s.parse::<ipnet::IpNet>()
            .ok()
            .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
    };
    match (net(a), net(b)) {
        (Some(a), Some(b)) => a.contains(&b.network()) || b.contains(&a.network()),
        _ => false,
    }
}

/// nginx's ordered allow/deny (first match wins) as Sluice's lists (deny wins): `(allow, deny)`.
/// Rules after `allow all`/`deny all` are never reached.
fn access_lists(rules: &[(bool, String)]) -> (Option<Vec<String>>, Vec<String>) {
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for (is_allow, what) in rules {
        if what == "all" {
            if *is_allow {
                return (None, deny);
            }
            if allow.is_empty() {
                deny.push("0.0.0.0/0".into());
                deny.push("::/0".into());
                return (None, deny);
            }
            return (Some(allow), deny);
        }
        if *is_allow {
            allow.push(what.clone());
        } else {
            deny.push(what.clone());
        }
    }
    // No `all` at the end: anyone not named is allowed.
    (None, deny)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::parse::parse_str;

    fn import(text: &str) -> Import {
        let d = parse_str(text, Path::new("/etc/nginx/nginx.conf")).unwrap();
        translate(&d, Path::new("/etc/nginx"))
    }

    /// The output parsed back, and its routes.
    fn parsed(i: &Import) -> (toml::Value, Vec<toml::Value>) {
        let v: toml::Value = toml::from_str(&i.toml).unwrap_or_else(|e| panic!("{e}\n{}", i.toml));
        let routes = v
            .get("routes")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        (v, routes)
    }

    fn route<'a>(routes: &'a [toml::Value], name: &str) -> &'a toml::Value {
        routes
            .iter()
            .find(|r| r["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no route {name} in {routes:#?}"))
    }

    fn server(body: &str) -> String {
        format!("http {{ upstream b {{ server 10.0.0.1:80; }} server {{ listen 8080; {body} }} }}")
    }

    #[test]
    fn proxy_pass_uri_replaces_the_location_prefix_as_nginx_does() {
        let i = import(&server(
            "location /a/ { proxy_pass http://b/; }
             location /v { proxy_pass http://b/v2; }
             location = /login { proxy_pass http://b/auth/login; }
             location /keep/ { proxy_pass http://b; }
             location /same/ { proxy_pass http://b/same/; }",
        ));
        let (_, routes) = parsed(&i);
        assert_eq!(route(&routes, "*/a/")["strip_prefix"].as_str(), Some("/a"));
        let v = &route(&routes, "*/v")["rewrite"];
        assert_eq!(v["pattern"].as_str(), Some("^/v"));
        assert_eq!(v["to"].as_str(), Some("/v2"));
        let l = &route(&routes, "*=/login")["rewrite"];
        assert_eq!(l["pattern"].as_str(), Some("^/login"));
        assert_eq!(l["to"].as_str(), Some("/auth/login"));
        for n in ["*/keep/", "*/same/"] {
            let r = route(&routes, n);
            assert!(
                r.get("rewrite").is_none() && r.get("strip_prefix").is_none(),
                "{n}"
            );
        }
        // The Sluice regex replaces exactly what nginx would: /v/x -> /v2/x, /vx -> /v2x.
        let re = regex::Regex::new("^/v").unwrap();
        assert_eq!(re.replace("/v/x", "/v2"), "/v2/x");
        assert_eq!(re.replace("/vx", "/v2"), "/v2x");
    }

    #[test]
    fn a_regex_location_with_a_uri_part_is_refused_as_nginx_refuses_it() {
        let i = import(&server("location ~ ^/x { proxy_pass http://b/y; }"));
        assert!(i.dropped());
        assert!(i.toml.contains("nginx refuses a URI part"), "{}", i.toml);
    }

    #[test]
    fn rewrites_are_anchored_so_the_whole_path_is_replaced() {
        let i = import(&server(
            "location / { rewrite /old/(\\d+) /new/$1 break; proxy_pass http://b; }
             location /x/ { rewrite ^/x/(.*)$ /y/$1 last; proxy_pass http://b; }",
        ));
        let (_, routes) = parsed(&i);
        let r = &route(&routes, "*/")["rewrite"];
        let re = regex::Regex::new(r["pattern"].as_str().unwrap()).unwrap();
        // nginx: the URI becomes the replacement, whatever surrounds the match.
        assert_eq!(
            re.replace("/a/old/12/b", r["to"].as_str().unwrap()),
            "/new/12"
        );
        assert_eq!(
            re.replace("/a/other", r["to"].as_str().unwrap()),
            "/a/other"
        );
        assert_eq!(i.count(Outcome::Approximated), 1, "last: {}", i.summary());
    }

    #[test]
    fn inner_levels_replace_header_lists_and_defaults_are_nginx_s() {
        let i = import(&server(
            "proxy_set_header Host $host; add_header X-A 1 always;
             location / { proxy_pass http://b; }
             location /own/ { proxy_set_header X-Env prod; add_header X-B 2 always; proxy_pass http://b; }",
        ));
        let (v, routes) = parsed(&i);
        let all = route(&routes, "*/");
        assert_eq!(
            all["request_headers"]["set"]["host"].as_str(),
            Some("{host}")
        );
        assert_eq!(all["response_headers"]["add"]["x-a"].as_str(), Some("1"));
        assert_eq!(all["max_body_bytes"].as_integer(), Some(1 << 20));
        let own = route(&routes, "*/own/");
        // nginx: the location's own list replaces the server's, so Host is $proxy_host again.
        assert_eq!(own["request_headers"]["set"]["host"].as_str(), Some("b"));
        assert_eq!(
            own["request_headers"]["set"]["x-env"].as_str(),
            Some("prod")
        );
        assert!(own["response_headers"]["add"].get("x-a").is_none());
        let pool = &v["upstreams"]["b"];
        assert_eq!(pool["max_fails"].as_integer(), Some(1));
        assert_eq!(pool["fail_timeout_ms"].as_integer(), Some(10_000));
        assert_eq!(pool["connect_timeout_ms"].as_integer(), Some(60_000));
    }

    #[test]
    fn different_timeouts_on_one_upstream_make_two_pools() {
        let i = import(&server(
            "location / { proxy_pass http://b; }
             location /slow/ { proxy_read_timeout 5m; proxy_pass http://b; }",
        ));
        let (v, routes) = parsed(&i);
        assert_eq!(route(&routes, "*/")["upstream"].as_str(), Some("b"));
        assert_eq!(route(&routes, "*/slow/")["upstream"].as_str(), Some("b_2"));
        assert_eq!(
            v["upstreams"]["b_2"]["read_timeout_ms"].as_integer(),
            Some(300_000)
        );
    }

    #[test]
    fn ordered_allow_deny_become_sluice_lists() {
        let l = |rules: &[(bool, &str)]| {
            access_lists(
                &rules
                    .iter()
                    .map(|(a, w)| (*a, w.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            l(&[(true, "10.0.0.0/8"), (false, "all")]),
            (Some(vec!["10.0.0.0/8".into()]), vec![])
        );
        assert_eq!(
            l(&[(false, "1.2.3.4"), (true, "all")]),
            (None, vec!["1.2.3.4".into()])
        );
        assert_eq!(
            l(&[(false, "all")]),
            (None, vec!["0.0.0.0/0".into(), "::/0".into()])
        );
        assert_eq!(
            l(&[
                (false, "10.1.0.0/16"),
                (true, "10.0.0.0/8"),
                (false, "all"),
                (true, "1.1.1.1")
            ]),
            (Some(vec!["10.0.0.0/8".into()]), vec!["10.1.0.0/16".into()])
        );
        assert_eq!(l(&[(false, "1.2.3.4")]), (None, vec!["1.2.3.4".into()]));
        assert!(overlap("10.0.0.0/8", "10.1.2.3"));
        assert!(overlap("10.1.2.3", "10.0.0.0/8"));
        assert!(!overlap("10.0.0.0/8", "11.0.0.0/8"));
        assert!(!overlap("10.0.0.0/8", "::/0"));
        let i = import(&server(
            "location / { allow 10.1.2.3; deny 10.1.2.0/24; allow all; proxy_pass http://b; }",
        ));
        assert_eq!(i.count(Outcome::Approximated), 1, "{}", i.summary());
    }

    #[test]
    fn upstream_methods_weights_backups_and_down() {
        let i = import(
            "http {
               upstream a { least_conn; server 10.0.0.1:81 weight=3 max_fails=2 fail_timeout=5s; server 10.0.0.2 backup; server 10.0.0.3:81 down; keepalive 16; }
               upstream c { random two least_conn; server 10.0.0.4:80; }
               upstream d { server 10.0.0.5:80 weight=2; server 10.0.0.6:80; }
               server { location /a/ { proxy_pass http://a; } location /c/ { proxy_pass http://c; } location /d/ { proxy_pass http://d; } }
             }",
        );
        let (v, _) = parsed(&i);
        let a = &v["upstreams"]["a"];
        assert_eq!(a["strategy"].as_str(), Some("least_conn"));
        assert_eq!(a["max_fails"].as_integer(), Some(2));
        assert_eq!(a["fail_timeout_ms"].as_integer(), Some(5000));
        let b = a["backends"].as_array().unwrap();
        assert_eq!(b.len(), 2, "down is left out");
        assert_eq!(b[0]["weight"].as_integer(), Some(3));
        assert_eq!(b[1]["addr"].as_str(), Some("10.0.0.2:80"));
        assert_eq!(b[1]["backup"].as_bool(), Some(true));
        assert_eq!(v["upstreams"]["c"]["strategy"].as_str(), Some("p2c"));
        assert_eq!(v["upstreams"]["d"]["strategy"].as_str(), Some("weighted"));
        assert_eq!(
            v["server"]["upstream_keepalive_pool_size"].as_integer(),
            Some(16)
        );
        assert_eq!(v["server"]["listen"][0].as_str(), Some("0.0.0.0:80"));
        let nocert = import(
            "http { server { listen 443 ssl; location / { proxy_pass http://10.0.0.1:80; } } }",
        );
        assert!(nocert.dropped());
        assert!(!nocert.toml.contains("[[server.tls]]"), "{}", nocert.toml);
        assert!(
            nocert
                .toml
                .contains("not translated: listen 0.0.0.0:443 ssl"),
            "{}",
            nocert.toml
        );
        let unused = import("http { upstream spare { server 10.0.0.9:80; } server { location / { proxy_pass http://10.0.0.1:80; } } }");
        assert!(
            unused
                .toml
                .contains("upstream spare: not needed: no translated proxy_pass uses it"),
            "{}",
            unused.toml
        );
    }

    #[test]
    fn tls_servers_share_a_listener_by_sni_and_plain_ones_redirect() {
        let i = import(
            "http {
               server { listen 80 default_server; server_name _; return 301 https://$host$request_uri; location / { proxy_pass http://x:1; } }
               server { listen 443 ssl http2; server_name a.test; ssl_certificate a.pem; ssl_certificate_key a.key; ssl_protocols TLSv1.3;
                        location / { proxy_pass http://10.0.0.1:80; } }
               server { listen 443 ssl default_server; server_name b.test; ssl_certificate /c/b.pem; ssl_certificate_key /c/b.key;
                        location / { proxy_pass http://10.0.0.1:80; } }
             }",
        );
        let (v, routes) = parsed(&i);
        let tls = &v["server"]["tls"][0];
        assert_eq!(tls["listen"].as_str(), Some("0.0.0.0:443"));
        let certs = tls["certs"].as_array().unwrap();
        // The default server's certificate first; relative names from the main file's directory.
        assert_eq!(certs[0]["cert"].as_str(), Some("/c/b.pem"));
        assert_eq!(certs[1]["cert"].as_str(), Some("/etc/nginx/a.pem"));
        assert_eq!(tls["min_version"].as_str(), Some("1.3"));
        let redirect = route(&routes, "*/");
        assert_eq!(redirect["scheme"].as_str(), Some("http"));
        assert_eq!(
            redirect["redirect"]["to"].as_str(),
            Some("https://{host}{uri}")
        );
        assert_eq!(redirect["redirect"]["status"].as_integer(), Some(301));
        assert_eq!(route(&routes, "a.test/")["scheme"].as_str(), Some("https"));
        assert!(route(&routes, "*/ https").get("host").is_none());
        // The plain server's location is never reached: no pool for it.
        assert!(v["upstreams"].get("x_1").is_none(), "{}", i.toml);
        // nginx's $proxy_host leaves the default port out.
        let set = &route(&routes, "a.test/")["request_headers"]["set"];
        assert_eq!(set["host"].as_str(), Some("10.0.0.1"));
    }

    #[test]
    fn limits_caches_and_gzip() {
        let i = import(
            "http {
               limit_req_zone $binary_remote_addr zone=z:10m rate=10r/s;
               proxy_cache_path /var/cache/nginx keys_zone=c:10m max_size=100m;
               gzip on; gzip_types application/json;
               server {
                 location /api/ { limit_req zone=z burst=5 nodelay; proxy_pass http://10.0.0.1:80; }
                 location /cached/ { proxy_cache c; proxy_cache_valid 200 10m; proxy_pass http://10.0.0.1:80; }
                 location /open/ { gzip off; proxy_pass http://10.0.0.1:80; }
               }
             }",
        );
        let (v, routes) = parsed(&i);
        let api = route(&routes, "*/api/");
        assert_eq!(api["rate_limit"]["limit"].as_integer(), Some(10));
        assert_eq!(api["rate_limit"]["window_ms"].as_integer(), Some(1000));
        assert_eq!(api["rate_limit"]["burst"].as_integer(), Some(6));
        assert_eq!(
            route(&routes, "*/open/")["rate_limit"]["off"].as_bool(),
            Some(true)
        );
        assert!(route(&routes, "*/open/").get("compression").is_none());
        assert_eq!(
            v["rate_limit"]["exempt_paths"].as_array().map(Vec::len),
            Some(0)
        );
        let cached = route(&routes, "*/cached/");
        assert_eq!(cached["cache"].as_str(), Some("warm"));
        assert_eq!(
            v["cache"]["tiers"]["warm"]["ttl_seconds"].as_integer(),
            Some(600)
        );
        assert_eq!(v["cache"]["memory_bytes"].as_integer(), Some(100 << 20));
        let c = &cached["compression"];
        assert_eq!(c["min_bytes"].as_integer(), Some(20));
        assert_eq!(c["types"][1].as_str(), Some("application/json"));
    }

    #[test]
    fn a_slash_ended_prefix_redirects_the_bare_path_as_nginx_does() {
        let i = import(&server(
            "location /app/ { proxy_pass http://b; }
             location /both/ { proxy_pass http://b; }
             location = /both { proxy_pass http://b; }",
        ));
        let (_, routes) = parsed(&i);
        let r = route(&routes, "*=/app");
        assert_eq!(r["redirect"]["to"].as_str(), Some("/app/"));
        assert_eq!(r["redirect"]["status"].as_integer(), Some(301));
        // An exact location of its own keeps the path.
        assert_eq!(route(&routes, "*=/both")["upstream"].as_str(), Some("b"));
    }

    /// Found by `scripts/fuzz.sh nginx_parse`: a directive named `\x08` made a comment TOML
    /// refuses; line breaks in quoted words would end a comment early.
    #[test]
    fn nginx_words_never_break_the_toml_comments() {
        for text in [
            "\u{8}{}",
            "http { server { server_name \"a\nb = 1\"; listen \"80\n[x]\"; location \"/a\n\" { proxy_pass \"http://h\nx:1\"; } } }",
            "http { upstream \"u\r\" { server 1.2.3.4 \"weird\u{7f}\"; } }",
        ] {
            let i = import(text);
            toml::from_str::<toml::Value>(&i.toml).unwrap_or_else(|e| panic!("{text:?}\n{e}\n{}", i.toml));
        }
    }

    /// Directive trees made of nginx's vocabulary with odd arguments: the translation never
    /// panics and its output is always TOML (the long fuzz is `scripts/fuzz.sh nginx_parse`).
    #[test]
    fn arbitrary_directive_trees_translate_without_panic() {
        let names = [
            "server",
            "location",
            "listen",
            "server_name",
            "proxy_pass",
            "upstream",
            "return",
            "rewrite",
            "proxy_set_header",
            "add_header",
            "allow",
            "deny",
            "limit_req",
            "limit_req_zone",
            "proxy_cache",
            "proxy_cache_valid",
            "gzip",
            "gzip_types",
            "client_max_body_size",
            "ssl_certificate",
            "proxy_read_timeout",
            "if",
            "http",
            "keepalive",
            "hash",
            "random",
            "map",
            "proxy_next_upstream",
            "resolver",
        ];
        let args = [
            "",
            "/",
            "/a/",
            "=",
            "~",
            "^~",
            "~*",
            "http://b",
            "http://b/x",
            "https://h:1/",
            "80",
            "[::]:443",
            "ssl",
            "default_server",
            "$host",
            "${x",
            "1m",
            "10s",
            "zone=z",
            "rate=1r/s",
            "burst=2",
            "all",
            "10.0.0.0/8",
            "301",
            "https://$host$request_uri",
            "(",
            "^/(.*)$",
            "$1",
            "weight=0",
            "a\nb",
            "\u{8}",
            "x\r",
            "}",
            "backup",
            "down",
            "unix:/s",
            "*",
            "é",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for _ in 0..3000 {
            let mut text = String::from("http { ");
            let mut depth = 1;
            for _ in 0..next(30) {
                let name = names[next(names.len())];
                text.push_str(name);
                for _ in 0..next(4) {
                    text.push_str(" \"");
                    text.push_str(args[next(args.len())]);
                    text.push('"');
                }
                match next(4) {
                    0 => {
                        text.push_str(" { ");
                        depth += 1;
                    }
                    1 if depth > 1 => {
                        text.push_str("; } ");
                        depth -= 1;
                    }
                    _ => text.push_str("; "),
                }
            }
            text.push_str(&"}".repeat(depth));
            let Ok(d) = parse_str(&text, Path::new("/etc/nginx/nginx.conf")) else {
                continue;
            };
            let i = translate(&d, Path::new("/etc/nginx"));
            toml::from_str::<toml::Value>(&i.toml)
                .unwrap_or_else(|e| panic!("{text}\n{e}\n{}", i.toml));
        }
    }
}
