//! Configuration: reading the TOML file, validating it into the runtime [`Config`], and reporting
//! every problem at once with file, line:column, key path and what was expected.
//!
//! Pipeline: text -> TOML syntax check -> each top-level section deserialized on its own (so one
//! broken section does not hide another) -> semantic validation -> [`Config`].

mod admin;
mod cache;
pub mod model;
mod rate_limit;
mod redis;
mod route;
mod rules;
pub mod ser;
mod server;
mod span;
mod tracing;
mod upstream;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

pub use model::*;
pub use rules::{OWNED_REQUEST_FIELDS, OWNED_RESPONSE_FIELDS};

use admin::{FileAdmin, FileLogging, FileReload};
use cache::FileCache;
use rate_limit::{FileLimit, FileRateLimit};
use redis::FileRedis;
use route::FileRoute;
use server::FileServer;
use span::{LineIndex, SpanIndex};
use tracing::FileTracing;
use upstream::FileUpstream;

/// The file's top-level sections. They are deserialized one by one (see [`load_str`]), each into
/// the serde structs of its own module (`server.rs`, `upstream.rs`, ...), so that a problem in one
/// section does not hide problems in another.
const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "admin",
    "logging",
    "tracing",
    "dns",
    "reload",
    "upstreams",
    "routes",
    "route_defaults",
    "redis",
    "rate_limit",
    "cache",
];

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `upstreams.api.backends[2].weight` (empty for whole-file problems).
    pub path: String,
    /// Line and column (1-based) where the key is written, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A config file that cannot be used, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file as named by the user.
    pub file: PathBuf,
    /// All problems, in the order they were found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{}: {n} problem{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  {}", self.file.display())?;
            if let Some((l, c)) = p.location {
                write!(f, ":{l}:{c}")?;
            }
            if p.path.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Read and validate the config file at `path`. Relative paths inside it (TLS files) are
/// resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            path: String::new(),
            location: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    load_str(&text, path, base)
}

/// Validate config `text`, reporting problems against `file`; relative paths resolve against
/// `base_dir`.
pub fn load_str(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
    let mut v = Validator {
        problems: Vec::new(),
        warnings: Vec::new(),
        spans: SpanIndex::default(),
    };
    let config = match toml::from_str::<toml::Table>(text) {
        Ok(table) => {
            v.spans = SpanIndex::build(text);
            v.config(table, base_dir)
        }
        Err(e) => {
            let location = e.span().map(|s| LineIndex::new(text).locate(s.start));
            v.problems.push(Problem {
                path: String::new(),
                location,
                message: format!("invalid TOML: {}", e.message()),
            });
            None
        }
    };
    match config {
        Some(mut c) if v.problems.is_empty() => {
            c.warnings = v
                .warnings
                .into_iter()
                .map(|w| match w.location {
                    Some((l, col)) => {
                        format!("{}:{l}:{col}: {}: {}", file.display(), w.path, w.message)
                    }
                    None => format!("{}: {}: {}", file.display(), w.path, w.message),
                })
                .collect();
            Ok(c)
        }
        _ => Err(ConfigError {
            file: file.to_owned(),
            problems: v.problems,
        }),
    }
}

/// A [`ConfigError`] for problems found after validation (a backend name that does not
/// resolve), each located in `text` by its key path.
pub fn later_problems(file: &Path, text: &str, problems: Vec<(String, String)>) -> ConfigError {
    let spans = SpanIndex::build(text);
    ConfigError {
        file: file.to_owned(),
        problems: problems
            .into_iter()
            .map(|(path, message)| Problem {
                location: spans.locate(&path),
                path,
                message,
            })
            .collect(),
    }
}

/// Collects problems while turning file structs into the runtime model.
struct Validator {
    problems: Vec<Problem>,
    /// Not errors, but worth telling (a certificate about to expire).
    warnings: Vec<Problem>,
    spans: SpanIndex,
}

impl Validator {
    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let location = self.spans.locate(&path);
        self.warnings.push(Problem {
            path,
            location,
            message: message.into(),
        });
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let location = self.spans.locate(&path);
        self.problems.push(Problem {
            path,
            location,
            message: message.into(),
        });
    }

    /// Deserialize one section, recording a problem (with the exact nested key path) on failure.
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "." | "" => path.to_owned(),
                    _ => format!("{path}.{inner}"),
                };
                let message = e.inner().to_string();
                self.problem(full, message);
                None
            }
        }
    }

    fn config(&mut self, mut table: toml::Table, base_dir: &Path) -> Option<Config> {
        for key in table.keys() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                self.problem(
                    key.clone(),
                    format!(
                        "unknown section `{key}`, expected one of: {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }
        let server = match table.remove("server") {
            Some(v) => self
                .section::<FileServer>("server", v)
                .and_then(|s| self.server(s, base_dir)),
            None => self.server(FileServer::default(), base_dir),
        };

        let admin_file = table
            .remove("admin")
            .and_then(|v| self.section::<FileAdmin>("admin", v));
        let admin = self.admin(admin_file);
        let logging_file = table
            .remove("logging")
            .and_then(|v| self.section::<FileLogging>("logging", v));
        let logging = self.logging(logging_file, base_dir);
        let reload_file = table
            .remove("reload")
            .and_then(|v| self.section::<FileReload>("reload", v));
        let reload = self.reload(reload_file);
        let tracing_file = table
            .remove("tracing")
            .and_then(|v| self.section::<FileTracing>("tracing", v));
        let tracing = self.tracing(tracing_file);
        let dns_file = table
            .remove("dns")
            .and_then(|v| self.section::<upstream::FileDns>("dns", v));
        let dns = self.dns(dns_file);

        let upstreams_value = table.remove("upstreams");
        if upstreams_value.is_none() && !table.contains_key("routes") {
            // A config whose routes all redirect needs no pool; one without routes does.
            self.problem(
                "upstreams",
                "missing: define at least one pool, e.g. [upstreams.api] with backends = [...]",
            );
        }
        let (names, upstreams) = self.upstreams(upstreams_value, base_dir);
        let access_log = logging
            .as_ref()
            .map_or((true, 1.0), |l| (l.access_log, l.access_log_sample));
        let defaults = self.route_defaults(table.remove("route_defaults"));
        let routes = self.routes(
            table.remove("routes"),
            &names,
            &upstreams,
            access_log,
            &defaults,
        );

        let redis = table
            .remove("redis")
            .and_then(|v| self.section::<FileRedis>("redis", v))
            .and_then(|r| self.redis(r));
        let cache_file = table
            .remove("cache")
            .and_then(|v| self.section::<FileCache>("cache", v));
        let cache = self.cache(cache_file);
        let rate_limit = table
            .remove("rate_limit")
            .and_then(|v| self.section::<FileRateLimit>("rate_limit", v))
            .and_then(|r| self.rate_limit(r, base_dir));
        if let Some(server) = &server {
            let asks = server
                .tls
                .iter()
                .any(|t| t.client_auth != ClientAuthMode::Off);
            for (i, r) in routes.iter().enumerate() {
                if r.rules.require_client_cert && !asks {
                    self.problem(
                        format!("routes[{i}].require_client_cert"),
                        "no [[server.tls]] listener asks for client certificates: set client_auth = \"optional\" (or \"required\") and client_ca there, or every request on this route is refused",
                    );
                }
            }
        }

        Some(Config {
            server: server?,
            admin: admin?,
            logging: logging?,
            reload: reload?,
            tracing: tracing?,
            dns: dns?,
            warnings: Vec::new(),
            upstreams,
            routes,
            redis,
            rate_limit,
            cache: cache?,
        })
    }

    /// `[upstreams.NAME]` tables: every name (valid or not, so routes naming a broken pool
    /// are not also reported as naming a missing one) and the valid pools.
    fn upstreams(
        &mut self,
        value: Option<toml::Value>,
        base_dir: &Path,
    ) -> (Vec<String>, Vec<UpstreamSpec>) {
        let mut names: Vec<String> = Vec::new();
        let mut upstreams = Vec::new();
        match value {
            Some(toml::Value::Table(t)) => {
                for (name, value) in t {
                    let path = format!("upstreams.{name}");
                    names.push(name.clone());
                    if let Some(u) = self.section::<FileUpstream>(&path, value) {
                        if let Some(spec) = self.upstream(&path, name, u, base_dir) {
                            upstreams.push(spec);
                        }
                    }
                }
            }
            Some(_) => self.problem("upstreams", "expected a table of pools: [upstreams.NAME]"),
            // A config whose routes only redirect needs no pool; a route naming one that does
            // not exist is reported with the route ("none are defined").
            None => {}
        }
        (names, upstreams)
    }

    /// `[route_defaults]`, checked once under its own key paths. Defaults with a problem are
    /// not applied (the problem is reported here, not again for every route).
    fn route_defaults(&mut self, value: Option<toml::Value>) -> rules::FileRouteDefaults {
        let Some(d) =
            value.and_then(|v| self.section::<rules::FileRouteDefaults>("route_defaults", v))
        else {
            return Default::default();
        };
        match self.route_rules("route_defaults", d.clone().into()) {
            Some(_) => d,
            None => Default::default(),
        }
    }

    /// `[[routes]]`: each route against the pools, names unique.
    fn routes(
        &mut self,
        value: Option<toml::Value>,
        names: &[String],
        upstreams: &[UpstreamSpec],
        access_log: (bool, f64),
        defaults: &rules::FileRouteDefaults,
    ) -> Vec<RouteSpec> {
        let mut routes = Vec::new();
        match value {
            Some(toml::Value::Array(a)) => {
                if a.is_empty() {
                    self.problem("routes", "empty: define at least one [[routes]]");
                }
                let mut route_names = HashSet::new();
                for (i, value) in a.into_iter().enumerate() {
                    let path = format!("routes[{i}]");
                    let Some(r) = self.section::<FileRoute>(&path, value) else {
                        continue;
                    };
                    let Some(spec) = self.route(&path, r, names, upstreams, access_log, defaults)
                    else {
                        continue;
                    };
                    if !route_names.insert(spec.name.clone()) {
                        self.problem(
                            format!("{path}.name"),
                            format!(
                                "route name `{}` is used twice: give each route a unique `name`",
                                spec.name
                            ),
                        );
                    }
                    if let Some(j) = routes.iter().position(|a| rules::shadows(a, &spec)) {
                        let earlier: &RouteSpec = &routes[j];
                        self.problem(
                            path.clone(),
                            format!(
                                "never receives traffic: route `{}` (listed before it) has the same host and path rule and takes every request it would; make them differ (path, methods, match_headers, scheme) or list the narrower one first",
                                earlier.name
                            ),
                        );
                    }
                    routes.push(spec);
                }
            }
            Some(_) => self.problem("routes", "expected an array of tables: [[routes]]"),
            None => self.problem(
                "routes",
                "missing: define at least one [[routes]] with host, path_prefix and upstream",
            ),
        }
        routes
    }

    fn existing_file(&mut self, path: &str, value: &str, base_dir: &Path) -> Option<PathBuf> {
        let p = Path::new(value);
        let full = if p.is_absolute() {
            p.to_owned()
        } else {
            base_dir.join(p)
        };
        if full.is_file() {
            Some(full)
        } else {
            self.problem(
                path,
                format!(
                    "file `{}` does not exist (relative paths start at the config file's directory)",
                    full.display()
                ),
            );
            None
        }
    }

    /// An optional keyword (default `default`) that must be one of `options`.
    fn one_of<T: Copy>(
        &mut self,
        path: &str,
        value: Option<&str>,
        default: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let v = value.unwrap_or(default);
        let found = options.iter().find(|(name, _)| *name == v).map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
            let expected = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            self.problem(path, format!("`{v}`: expected {expected}"));
        }
        found
    }

    /// An optional integer with a default, checked against `min..=max`.
    fn int_in(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Some(v)
        } else {
            self.problem(path, format!("must be {min}..={max}, got {v}"));
            None
        }
    }

    /// An optional fraction `0.0..=1.0`, default 1.
    fn fraction(&mut self, path: &str, value: Option<f64>) -> Option<f64> {
        let v = value.unwrap_or(1.0);
        if (0.0..=1.0).contains(&v) {
            Some(v)
        } else {
            self.problem(
                path,
                format!("must be 0.0..=1.0 (a fraction of requests), got {v}"),
            );
            None
        }
    }

    fn ms(&mut self, path: &str, value: Option<i64>, default: u64) -> Option<Duration> {
        self.int_in(path, value, default as i64, 1, 86_400_000)
            .map(|v| Duration::from_millis(v as u64))
    }
}

#[cfg(test)]
mod tests;
