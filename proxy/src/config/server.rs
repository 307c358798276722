//! `[server]` (and `[[server.tls]]`): listeners, threads, process and client-side limits. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use std::collections::HashMap;

use super::*;

/// `[server]`: settings fixed for the life of the process (a reload may not change them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    /// Plain HTTP listeners (`ip:port`).
    pub listen: Option<Vec<String>>,
    /// Worker threads for the proxy service.
    pub threads: Option<i64>,
    /// TLS listeners.
    pub tls: Option<Vec<FileTls>>,
    /// Seconds a graceful stop waits for in-flight requests.
    pub grace_period_seconds: Option<i64>,
    /// Idle upstream connections kept for reuse, across all pools.
    pub upstream_keepalive_pool_size: Option<i64>,
    /// Unix socket over which listeners are handed to a new process (`--upgrade`).
    pub upgrade_sock: Option<String>,
    /// After SIGTERM, keep serving this long with `/readyz` at 503 before closing listeners.
    pub drain_delay_ms: Option<i64>,
    /// Where `--daemon` writes the process id.
    pub pid_file: Option<String>,
    /// Keep the case of HTTP/1 header field names as received (default: lowercase them).
    pub preserve_header_case: Option<bool>,
    /// Milliseconds within which a whole request head must arrive.
    pub client_header_timeout_ms: Option<i64>,
    /// Milliseconds of the longest wait for each read of a request body.
    pub client_body_timeout_ms: Option<i64>,
    /// Milliseconds an idle keep-alive client connection waits for its next request.
    pub keepalive_timeout_ms: Option<i64>,
    /// Largest request head (request line and fields) in bytes.
    pub max_request_header_bytes: Option<i64>,
    /// Most open client connections on the proxy listeners.
    pub max_connections: Option<i64>,
    /// Normalise request paths (dot segments, `//`, percent-encoding) before routing.
    pub normalize_path: Option<bool>,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listeners.
    pub h2c: Option<bool>,
}

/// `[[server.tls]]`: one TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// `ip:port` to listen on.
    pub listen: String,
    /// PEM certificate chain path, relative to the config file's directory unless absolute.
    pub cert: Option<String>,
    /// PEM private key path, relative to the config file's directory unless absolute.
    pub key: Option<String>,
    /// Several certificates, chosen by server name (the first is the default).
    pub certs: Option<Vec<FileCertPair>>,
    /// `default` (serve the first certificate) or `reject` (fail the handshake) for a name no
    /// certificate covers.
    pub unknown_sni: Option<String>,
    /// Lowest TLS version offered: `1.2` or `1.3`.
    pub min_version: Option<String>,
    /// Client certificates: `off`, `optional` or `required`.
    pub client_auth: Option<String>,
    /// PEM bundle of the CAs that may sign client certificates.
    pub client_ca: Option<String>,
    /// Request field carrying the verified client certificate's subject to the backends.
    pub client_subject_header: Option<String>,
    /// A certificate obtained and renewed from an ACME CA.
    pub acme: Option<FileAcme>,
}

/// `acme = { ... }` of a TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAcme {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact address given to the CA.
    pub email: Option<String>,
    /// The names the certificate is for.
    pub hosts: Vec<String>,
    /// Directory holding the account key, certificates and keys.
    pub storage: String,
    /// PEM CA bundle trusted for the directory's own HTTPS (a private ACME CA).
    pub directory_ca: Option<String>,
    /// `http-01` or `tls-alpn-01`.
    pub challenge: Option<String>,
}

/// One entry of `certs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCertPair {
    /// PEM certificate chain path.
    pub cert: String,
    /// PEM private key path.
    pub key: String,
}

/// `[server]`'s integer keys as (key, default, min, max), in the order
/// [`Validator::server`] passes their values.
const INT_KEYS: [(&str, i64, i64, i64); 9] = [
    ("threads", DEFAULT_THREADS as i64, 1, 1024),
    (
        "grace_period_seconds",
        DEFAULT_GRACE_PERIOD_SECONDS as i64,
        0,
        3600,
    ),
    (
        "upstream_keepalive_pool_size",
        DEFAULT_KEEPALIVE_POOL_SIZE as i64,
        0,
        1_000_000,
    ),
    ("drain_delay_ms", 0, 0, 600_000),
    (
        "client_header_timeout_ms",
        DEFAULT_CLIENT_HEADER_TIMEOUT_MS as i64,
        1,
        86_400_000,
    ),
    (
        "client_body_timeout_ms",
        DEFAULT_CLIENT_BODY_TIMEOUT_MS as i64,
        1,
        86_400_000,
    ),
    (
        "keepalive_timeout_ms",
        DEFAULT_CLIENT_KEEPALIVE_TIMEOUT_MS as i64,
        1,
        86_400_000,
    ),
    (
        "max_request_header_bytes",
        DEFAULT_MAX_REQUEST_HEADER_BYTES as i64,
        1024,
        1 << 20,
    ),
    (
        "max_connections",
        DEFAULT_MAX_CONNECTIONS as i64,
        1,
        10_000_000,
    ),
];

impl Validator {
    /// `[server]`: every key checked (all problems reported), then the settings.
    pub(super) fn server(&mut self, s: FileServer, base_dir: &Path) -> Option<ServerSettings> {
        let FileServer {
            listen,
            threads,
            tls,
            grace_period_seconds,
            upstream_keepalive_pool_size,
            upgrade_sock,
            drain_delay_ms,
            pid_file,
            preserve_header_case,
            client_header_timeout_ms,
            client_body_timeout_ms,
            keepalive_timeout_ms,
            max_request_header_bytes,
            max_connections,
            normalize_path,
            h2c,
        } = s;
        let (plain, tls_out) = self.listeners(listen, tls, base_dir);
        let values = [
            threads,
            grace_period_seconds,
            upstream_keepalive_pool_size,
            drain_delay_ms,
            client_header_timeout_ms,
            client_body_timeout_ms,
            keepalive_timeout_ms,
            max_request_header_bytes,
            max_connections,
        ];
        let ints: [Option<i64>; INT_KEYS.len()] = std::array::from_fn(|i| {
            let (key, default, min, max) = INT_KEYS[i];
            self.int_in(&format!("server.{key}"), values[i], default, min, max)
        });
        let [threads, grace, pool, drain, header, body, keepalive, head_bytes, connections] =
            ints.map(|v| v.map(|v| v as u64));
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        Some(ServerSettings {
            client_header_timeout: ms(header)?,
            client_body_timeout: ms(body)?,
            keepalive_timeout: ms(keepalive)?,
            max_request_header_bytes: head_bytes? as usize,
            max_connections: connections? as usize,
            normalize_path: normalize_path.unwrap_or(true),
            h2c: h2c.unwrap_or(false),
            listen: plain,
            tls: tls_out,
            threads: threads? as usize,
            grace_period: Duration::from_secs(grace?),
            upstream_keepalive_pool_size: pool? as usize,
            upgrade_sock: PathBuf::from(
                upgrade_sock.unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.into()),
            ),
            drain_delay: ms(drain)?,
            pid_file: PathBuf::from(pid_file.unwrap_or_else(|| DEFAULT_PID_FILE.into())),
            preserve_header_case: preserve_header_case.unwrap_or(false),
        })
    }

    /// `listen` and `[[server.tls]]`: addresses, each once, and certificate pairs that load.
    fn listeners(
        &mut self,
        listen: Option<Vec<String>>,
        tls: Option<Vec<FileTls>>,
        base_dir: &Path,
    ) -> (Vec<SocketAddr>, Vec<TlsListener>) {
        let mut seen = HashSet::new();
        let mut plain = Vec::new();
        let listen = listen.unwrap_or_else(|| vec![DEFAULT_LISTEN.to_owned()]);
        let tls = tls.unwrap_or_default();
        if listen.is_empty() && tls.is_empty() {
            self.problem("server.listen", "no listener: give at least one address");
        }
        for (i, a) in listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            if let Some(addr) = self.listen_addr(&path, a, &mut seen) {
                plain.push(addr);
            }
        }
        let mut tls_out = Vec::new();
        for (i, t) in tls.into_iter().enumerate() {
            let path = format!("server.tls[{i}]");
            let listen = self.listen_addr(&format!("{path}.listen"), &t.listen, &mut seen);
            let reject_unknown_sni = match t.unknown_sni.as_deref() {
                None | Some("default") => Some(false),
                Some("reject") => Some(true),
                Some(other) => {
                    self.problem(
                        format!("{path}.unknown_sni"),
                        format!("`{other}`: expected `default` (serve the first certificate) or `reject` (fail the handshake)"),
                    );
                    None
                }
            };
            let tls13_only = match t.min_version.as_deref() {
                None | Some("1.2") => Some(false),
                Some("1.3") => Some(true),
                Some(other) => {
                    self.problem(
                        format!("{path}.min_version"),
                        format!("`{other}`: expected \"1.2\" or \"1.3\" (older versions are not offered)"),
                    );
                    None
                }
            };
            let client = self.client_auth(
                &path,
                t.client_auth.as_deref(),
                t.client_ca.as_deref(),
                t.client_subject_header.as_deref(),
                base_dir,
            );
            let acme = t
                .acme
                .and_then(|a| self.acme(&format!("{path}.acme"), a, base_dir));
            let acme_given = acme.is_some();
            let pairs: Vec<(String, String, String)> = match (t.cert, t.key, t.certs) {
                // ACME alone: its certificate is the listener's (and the default).
                (None, None, None) if acme_given => Vec::new(),
                (Some(c), Some(k), None) => vec![(path.clone(), c, k)],
                (None, None, Some(list)) if !list.is_empty() => list
                    .into_iter()
                    .enumerate()
                    .map(|(j, p)| (format!("{path}.certs[{j}]"), p.cert, p.key))
                    .collect(),
                (None, None, Some(_)) => {
                    self.problem(
                        format!("{path}.certs"),
                        "empty: give at least one { cert, key }",
                    );
                    continue;
                }
                (c, k, None) => {
                    // One of the pair is missing.
                    for (key, v) in [("cert", c), ("key", k)] {
                        if v.is_none() {
                            self.problem(
                                format!("{path}.{key}"),
                                "missing: give cert and key, or certs = [{ cert = ..., key = ... }, ...]",
                            );
                        }
                    }
                    continue;
                }
                (_, _, Some(_)) => {
                    self.problem(
                        format!("{path}.certs"),
                        "give either cert and key (one certificate) or certs (several), not both",
                    );
                    continue;
                }
            };
            let several = pairs.len() > 1;
            let mut certs = Vec::new();
            let mut owner: HashMap<String, String> = HashMap::new();
            for (p, c, k) in pairs {
                let cert = self.existing_file(&format!("{p}.cert"), &c, base_dir);
                let key = self.existing_file(&format!("{p}.key"), &k, base_dir);
                let (Some(cert), Some(key)) = (cert, key) else {
                    continue;
                };
                // Parsed and matched here, as the listener will: a bad pair is a config error,
                // never a listener that fails at start.
                match crate::tlsfiles::load_pair(&cert, &key) {
                    Ok(loaded) => {
                        self.expiry_warning(&format!("{p}.cert"), &cert, loaded.not_after);
                        if several && !certs.is_empty() && loaded.names.is_empty() {
                            self.problem(
                                format!("{p}.cert"),
                                "has no DNS name in its subjectAltName: no client could be given it (only the first certificate serves clients without a name)",
                            );
                        }
                        for n in &loaded.names {
                            if let Some(first) = owner.insert(n.clone(), p.clone()) {
                                self.problem(
                                    format!("{p}.cert"),
                                    format!("`{n}` is also a name of {first}: each name must belong to one certificate"),
                                );
                            }
                        }
                        certs.push(CertPair { cert, key });
                    }
                    Err(why) => self.problem(format!("{p}.cert"), why),
                }
            }
            if let (Some(listen), Some(reject_unknown_sni), Some(tls13_only), Some(client)) =
                (listen, reject_unknown_sni, tls13_only, client)
            {
                tls_out.push(TlsListener {
                    listen,
                    certs,
                    reject_unknown_sni,
                    tls13_only,
                    client_auth: client.0,
                    client_ca: client.1,
                    client_subject_header: client.2,
                    acme,
                });
            }
        }
        (plain, tls_out)
    }

    /// A warning when the certificate at `file` (key `path`) has expired or expires within
    /// [`EXPIRY_WARNING_DAYS`].
    pub(super) fn expiry_warning(&mut self, path: &str, file: &Path, not_after: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let left = not_after - now;
        if left >= EXPIRY_WARNING_DAYS * 86_400 {
            return;
        }
        let message = if left < 0 {
            format!(
                "`{}` expired {} days ago: clients refuse it",
                file.display(),
                -left / 86_400
            )
        } else {
            format!(
                "`{}` expires in {} days ({} hours): renew it",
                file.display(),
                left / 86_400,
                left / 3600
            )
        };
        self.warning(path, message);
    }

    /// `acme` of the listener at `path`.
    fn acme(&mut self, path: &str, a: FileAcme, base_dir: &Path) -> Option<AcmeSpec> {
        let before = self.problems.len();
        match url::Url::parse(&a.directory) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            _ => self.problem(
                format!("{path}.directory"),
                format!(
                    "`{}` is not an https URL; e.g. \"https://acme-v02.api.letsencrypt.org/directory\"",
                    a.directory
                ),
            ),
        }
        if a.hosts.is_empty() {
            self.problem(format!("{path}.hosts"), "empty: name at least one host");
        }
        let mut hosts = Vec::with_capacity(a.hosts.len());
        for (i, h) in a.hosts.iter().enumerate() {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            let valid = !h.is_empty()
                && h.contains('.')
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !valid {
                self.problem(
                    format!("{path}.hosts[{i}]"),
                    format!("`{h}` is not a DNS name the CA can validate over HTTP (no wildcards, no IP addresses)"),
                );
            } else if hosts.contains(&h) {
                self.problem(
                    format!("{path}.hosts[{i}]"),
                    format!("`{h}` is listed twice"),
                );
            } else {
                hosts.push(h);
            }
        }
        if let Some(e) = &a.email {
            if !e.contains('@') || e.contains(char::is_whitespace) {
                self.problem(
                    format!("{path}.email"),
                    format!("`{e}` is not an email address"),
                );
            }
        }
        let storage = {
            let p = Path::new(&a.storage);
            if p.is_absolute() {
                p.to_owned()
            } else {
                base_dir.join(p)
            }
        };
        // Created on first use; its parent must exist.
        if !storage.is_dir() && !storage.parent().is_some_and(Path::is_dir) {
            self.problem(
                format!("{path}.storage"),
                format!(
                    "neither `{}` nor its parent directory exists",
                    storage.display()
                ),
            );
        }
        let directory_ca = a.directory_ca.and_then(|c| {
            let key = format!("{path}.directory_ca");
            let file = self.existing_file(&key, &c, base_dir)?;
            match crate::tlsfiles::load_ca(&file) {
                Ok(_) => Some(file),
                Err(why) => {
                    self.problem(key, why);
                    None
                }
            }
        });
        let challenge = match a.challenge.as_deref() {
            None | Some("http-01") => AcmeChallenge::Http01,
            Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some(other) => {
                self.problem(
                    format!("{path}.challenge"),
                    format!("`{other}`: expected \"http-01\" or \"tls-alpn-01\""),
                );
                AcmeChallenge::Http01
            }
        };
        (self.problems.len() == before).then_some(AcmeSpec {
            challenge,
            directory: a.directory,
            email: a.email,
            hosts,
            storage,
            directory_ca,
        })
    }

    /// `client_auth`, `client_ca` and `client_subject_header` of the listener at `path`.
    fn client_auth(
        &mut self,
        path: &str,
        mode: Option<&str>,
        ca: Option<&str>,
        header: Option<&str>,
        base_dir: &Path,
    ) -> Option<(ClientAuthMode, Option<PathBuf>, String)> {
        let before = self.problems.len();
        let mode = match mode {
            None | Some("off") => ClientAuthMode::Off,
            Some("optional") => ClientAuthMode::Optional,
            Some("required") => ClientAuthMode::Required,
            Some(other) => {
                self.problem(
                    format!("{path}.client_auth"),
                    format!("`{other}`: expected \"off\", \"optional\" or \"required\""),
                );
                ClientAuthMode::Off
            }
        };
        let header = header
            .unwrap_or(DEFAULT_CLIENT_SUBJECT_HEADER)
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            self.problem(
                format!("{path}.client_subject_header"),
                format!("`{header}` is not a valid header name"),
            );
        }
        let ca = match (ca, mode) {
            (Some(c), _) => {
                let key = format!("{path}.client_ca");
                self.existing_file(&key, c, base_dir).and_then(|file| {
                    let checked = crate::tlsfiles::load_ca(&file)
                        .and_then(|der| crate::tlsfiles::client_verifier(&der, false));
                    match checked {
                        Ok(_) => Some(file),
                        Err(why) => {
                            self.problem(key, why);
                            None
                        }
                    }
                })
            }
            (None, ClientAuthMode::Off) => None,
            (None, _) => {
                self.problem(
                    format!("{path}.client_ca"),
                    "missing: client_auth needs the PEM bundle of the CAs that sign client certificates",
                );
                None
            }
        };
        (self.problems.len() == before).then_some((mode, ca, header))
    }

    pub(super) fn listen_addr(
        &mut self,
        path: &str,
        value: &str,
        seen: &mut HashSet<SocketAddr>,
    ) -> Option<SocketAddr> {
        match value.parse::<SocketAddr>() {
            Ok(a) if !seen.insert(a) => {
                self.problem(path, format!("`{value}` is listed twice"));
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    path,
                    format!(
                        "`{value}` is not a listen address: expected ip:port, e.g. 0.0.0.0:8080"
                    ),
                );
                None
            }
        }
    }
}
