//! `[admin]`, `[logging]` and `[reload]`: the operator-facing sections. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use super::*;

/// `[admin]`: the admin API listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Whether the admin listener runs.
    pub enabled: Option<bool>,
    /// `ip:port` of the admin listener.
    pub listen: Option<String>,
    /// Bearer token, inline.
    pub token: Option<String>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// `GET /metrics` without the token off loopback (for scrapers that cannot send one).
    pub public_metrics: Option<bool>,
}

/// `[logging]`: log format and the access log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogging {
    /// `text` or `json`.
    pub format: Option<String>,
    /// One line per request (routes may turn it off).
    pub access_log: Option<bool>,
    /// `stderr`, `stdout` or a file path.
    pub access_log_path: Option<String>,
    /// `json`, `text` or a `$field` template.
    pub access_log_format: Option<String>,
    /// Lines the writer's queue holds before new ones are dropped.
    pub access_log_buffer: Option<i64>,
    /// Fraction of requests logged (routes may override).
    pub access_log_sample: Option<f64>,
}

/// `[reload]`: what triggers a live reload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReload {
    /// Watch the config file and reload when it changes.
    pub watch: Option<bool>,
    /// How often the file is looked at, and how long it must stay unchanged before a reload.
    pub debounce_ms: Option<i64>,
}

impl Validator {
    pub(super) fn admin(&mut self, a: Option<FileAdmin>) -> Option<AdminSettings> {
        let FileAdmin {
            enabled,
            listen,
            token,
            token_env,
            public_metrics,
        } = a.unwrap_or(FileAdmin {
            enabled: None,
            listen: None,
            token: None,
            token_env: None,
            public_metrics: None,
        });
        let listen_text = listen.unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
        let addr = match listen_text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    "admin.listen",
                    format!("`{listen_text}` is not a listen address: expected ip:port, e.g. 127.0.0.1:9901"),
                );
                None
            }
        };
        let token = match (token, token_env) {
            (Some(_), Some(_)) => {
                self.problem("admin", "give either `token` or `token_env`, not both");
                return None;
            }
            (Some(t), None) if t.trim().is_empty() => {
                self.problem("admin.token", "empty: give a secret or leave the key out");
                return None;
            }
            (Some(t), None) => Some(t),
            (None, Some(var)) => match std::env::var(&var) {
                Ok(t) if !t.trim().is_empty() => Some(t),
                _ => {
                    self.problem(
                        "admin.token_env",
                        format!("environment variable `{var}` is not set or empty"),
                    );
                    return None;
                }
            },
            (None, None) => None,
        };
        let enabled = enabled.unwrap_or(true);
        let addr = addr?;
        if enabled && token.is_none() && !addr.ip().is_loopback() {
            self.problem(
                "admin.listen",
                format!(
                    "`{addr}` is not a loopback address, so the admin API needs a bearer token: \
                     set `token` or `token_env`"
                ),
            );
            return None;
        }
        Some(AdminSettings {
            listen: enabled.then_some(addr),
            token,
            public_metrics: public_metrics.unwrap_or(false),
        })
    }

    pub(super) fn logging(
        &mut self,
        l: Option<FileLogging>,
        base_dir: &Path,
    ) -> Option<LoggingSettings> {
        let FileLogging {
            format,
            access_log,
            access_log_path,
            access_log_format,
            access_log_buffer,
            access_log_sample,
        } = l.unwrap_or(FileLogging {
            format: None,
            access_log: None,
            access_log_path: None,
            access_log_format: None,
            access_log_buffer: None,
            access_log_sample: None,
        });
        let buffer = self.int_in(
            "logging.access_log_buffer",
            access_log_buffer,
            DEFAULT_ACCESS_LOG_BUFFER as i64,
            1,
            10_000_000,
        );
        let sample = self.fraction("logging.access_log_sample", access_log_sample);
        let path = match access_log_path.as_deref() {
            None => Some(Destination::Stderr),
            Some("") => {
                self.problem(
                    "logging.access_log_path",
                    "empty: expected stderr, stdout or a file path",
                );
                None
            }
            Some(p) => match Destination::parse(p) {
                Destination::File(f) => {
                    let f = if f.is_absolute() { f } else { base_dir.join(f) };
                    // The directory must exist: the file is created at start, not its parents.
                    match f.parent() {
                        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                            self.problem(
                                "logging.access_log_path",
                                format!(
                                    "the directory {} does not exist (the file is created, its directory is not)",
                                    dir.display()
                                ),
                            );
                            None
                        }
                        _ => Some(Destination::File(f)),
                    }
                }
                d => Some(d),
            },
        };
        let format = match format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "logging.format",
                    format!("unknown format `{other}`, expected one of: text, json"),
                );
                // Go on with the default, so that the other keys' problems are named too.
                LogFormat::Text
            }
        };
        let access_format = match access_log_format.as_deref() {
            // The process log's format, as before the key existed.
            None => Some(match format {
                LogFormat::Text => AccessFormat::Text,
                LogFormat::Json => AccessFormat::Json,
            }),
            Some(s) => match AccessFormat::parse(s) {
                Ok(f) => Some(f),
                Err(problems) => {
                    for p in problems {
                        self.problem(
                            "logging.access_log_format",
                            format!(
                                "{p}: expected json, text or a template of literal text and $field variables (fields: {})",
                                crate::accesslog::format::field_names()
                            ),
                        );
                    }
                    None
                }
            },
        };
        Some(LoggingSettings {
            format,
            access_log: access_log.unwrap_or(true),
            access_log_path: path?,
            access_log_format: access_format?,
            access_log_buffer: buffer? as usize,
            access_log_sample: sample?,
        })
    }

    pub(super) fn reload(&mut self, r: Option<FileReload>) -> Option<ReloadSettings> {
        let (watch, debounce) = r.map_or((None, None), |r| (r.watch, r.debounce_ms));
        let debounce = self.int_in(
            "reload.debounce_ms",
            debounce,
            DEFAULT_RELOAD_DEBOUNCE_MS as i64,
            10,
            60_000,
        )?;
        Some(ReloadSettings {
            watch: watch.unwrap_or(true),
            debounce: Duration::from_millis(debounce as u64),
        })
    }
}
