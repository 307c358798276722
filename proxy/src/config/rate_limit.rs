//! `[rate_limit]`: tiers, identities (API keys, JWT, trusted proxies), the Redis failure policy. The file structs (serde, `deny_unknown_fields`) and their validation into
//! the model.

use serde::Deserialize;

use super::*;

/// `[rate_limit]`: per-client limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    /// `enforce` or `shadow`.
    pub mode: Option<String>,
    /// `local`, `open` or `closed`.
    pub on_redis_error: Option<String>,
    /// Sluice instances sharing the limits (the local fallback divides limits by it).
    pub instances: Option<i64>,
    /// Requests counted per Redis call for large limits (0: one per request).
    pub lease_batch: Option<i64>,
    /// Header carrying an API key.
    pub api_key_header: Option<String>,
    /// Redis hash mapping API keys to `client:tier`.
    pub api_keys_redis_hash: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Path prefixes never limited.
    pub exempt_paths: Option<Vec<String>>,
    /// Prefix of every Redis key.
    pub key_prefix: Option<String>,
    /// Bearer-token verification.
    pub jwt: Option<FileJwt>,
    /// Limits per tier.
    pub tiers: Option<std::collections::BTreeMap<String, FileLimit>>,
    /// API keys known from the config.
    pub api_keys: Option<Vec<FileApiKey>>,
}

/// `[rate_limit.jwt]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJwt {
    /// HS256 shared secret.
    pub hs256_secret: Option<String>,
    /// Environment variable holding the HS256 secret.
    pub hs256_secret_env: Option<String>,
    /// RS256 public key (PEM file).
    pub rs256_public_key: Option<String>,
    /// ES256 public key (PEM file).
    pub es256_public_key: Option<String>,
    /// Claim naming the client's tier.
    pub tier_claim: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds.
    pub leeway_seconds: Option<i64>,
}

/// A limit: `{ limit, window_ms, algorithm, burst }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimit {
    /// Requests per window.
    pub limit: Option<i64>,
    /// Window length.
    pub window_ms: Option<i64>,
    /// `sliding_window_log`, `fixed_window`, `sliding_window` or `gcra`.
    pub algorithm: Option<String>,
    /// GCRA: requests allowed at once.
    pub burst: Option<i64>,
    /// Routes only: `true` turns limiting off for the route.
    pub off: Option<bool>,
}

/// One `[[rate_limit.api_keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApiKey {
    /// The key as clients send it.
    pub key: String,
    /// Client id used for the limit.
    pub client: String,
    /// Tier name.
    pub tier: Option<String>,
}

impl Validator {
    /// A limit table; `default` fills what it leaves out.
    pub(super) fn limit(
        &mut self,
        path: &str,
        l: FileLimit,
        default: Option<LimitPolicy>,
    ) -> Option<LimitPolicy> {
        let FileLimit {
            limit,
            window_ms,
            algorithm,
            burst,
            off,
        } = l;
        if off.is_some() {
            self.problem(
                format!("{path}.off"),
                "`off` is only meaningful on a route's rate_limit",
            );
        }
        let algorithm = match algorithm.as_deref() {
            None => Some(default.map_or(Algorithm::SlidingWindow, |d| d.algorithm)),
            Some(a) => Algorithm::parse(a).or_else(|| {
                self.problem(
                    format!("{path}.algorithm"),
                    format!(
                        "unknown algorithm `{a}`, expected one of: {}",
                        Algorithm::NAMES
                    ),
                );
                None
            }),
        };
        let limit = match (limit, default) {
            (None, Some(d)) => Some(d.limit as i64),
            (None, None) => {
                self.problem(
                    format!("{path}.limit"),
                    "missing: requests allowed per window",
                );
                None
            }
            (Some(v), _) => self.int_in(&format!("{path}.limit"), Some(v), 0, 1, 1_000_000_000),
        };
        let window = self.int_in(
            &format!("{path}.window_ms"),
            window_ms,
            default.map_or(DEFAULT_WINDOW_MS, |d| d.window_ms) as i64,
            1,
            86_400_000 * 30,
        );
        let burst = match (burst, limit) {
            (Some(b), _) => self.int_in(&format!("{path}.burst"), Some(b), 0, 1, 1_000_000_000),
            (None, Some(l)) => Some(l),
            (None, None) => None,
        };
        Some(LimitPolicy {
            algorithm: algorithm?,
            limit: limit? as u64,
            window_ms: window? as u64,
            burst: burst? as u64,
        })
    }

    pub(super) fn rate_limit(
        &mut self,
        r: FileRateLimit,
        base_dir: &Path,
    ) -> Option<RateLimitSpec> {
        let FileRateLimit {
            mode,
            on_redis_error,
            instances,
            lease_batch,
            api_key_header,
            api_keys_redis_hash,
            trusted_proxies,
            exempt_paths,
            key_prefix,
            jwt,
            tiers,
            api_keys,
        } = r;
        let mode = self.one_of(
            "rate_limit.mode",
            mode.as_deref(),
            "enforce",
            &[
                ("enforce", LimitMode::Enforce),
                ("shadow", LimitMode::Shadow),
            ],
        );
        let on_error = self.one_of(
            "rate_limit.on_redis_error",
            on_redis_error.as_deref(),
            "local",
            &[
                ("local", OnRedisError::Local),
                ("open", OnRedisError::Open),
                ("closed", OnRedisError::Closed),
            ],
        );
        let instances = self.int_in("rate_limit.instances", instances, 1, 1, 10_000);
        let lease_batch = self.int_in(
            "rate_limit.lease_batch",
            lease_batch,
            DEFAULT_LEASE_BATCH as i64,
            0,
            100_000,
        );
        let header = api_key_header
            .unwrap_or_else(|| DEFAULT_API_KEY_HEADER.to_owned())
            .to_ascii_lowercase();
        let header = match http::HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => name,
            Err(_) => {
                self.problem(
                    "rate_limit.api_key_header",
                    format!("`{header}` is not a header name"),
                );
                http::HeaderName::from_static(DEFAULT_API_KEY_HEADER)
            }
        };
        let proxies = self.trusted_proxies(trusted_proxies.unwrap_or_default());
        let exempt = self.exempt_paths(exempt_paths);
        let tier_map = self.tiers(tiers.unwrap_or_default());
        let keys = self.api_keys(api_keys.unwrap_or_default(), &tier_map);
        let jwt = jwt.and_then(|j| self.jwt(j, base_dir));
        Some(RateLimitSpec {
            mode: mode?,
            on_redis_error: on_error?,
            instances: instances? as u32,
            lease_batch: lease_batch? as u64,
            api_key_header: header,
            api_keys_redis_hash,
            trusted_proxies: proxies,
            exempt_paths: exempt,
            key_prefix: key_prefix.unwrap_or_else(|| DEFAULT_RATE_LIMIT_PREFIX.to_owned()),
            jwt,
            tiers: tier_map,
            api_keys: keys,
        })
    }

    /// `exempt_paths` (default: the health and metrics paths): each starts with `/`.
    fn exempt_paths(&mut self, paths: Option<Vec<String>>) -> Vec<String> {
        let exempt =
            paths.unwrap_or_else(|| DEFAULT_EXEMPT_PATHS.iter().map(|s| s.to_string()).collect());
        for (i, p) in exempt.iter().enumerate() {
            if !p.starts_with('/') {
                self.problem(
                    format!("rate_limit.exempt_paths[{i}]"),
                    format!("`{p}` must start with `/`"),
                );
            }
        }
        exempt
    }

    /// `trusted_proxies`: IPs or CIDRs whose `X-Forwarded-For` is believed.
    fn trusted_proxies(&mut self, list: Vec<String>) -> Vec<ipnet::IpNet> {
        self.networks("rate_limit.trusted_proxies", list)
    }

    /// A list of IPs or CIDRs (`path[i]` names each bad one).
    pub(super) fn networks(&mut self, path: &str, list: Vec<String>) -> Vec<ipnet::IpNet> {
        let mut nets = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let parsed = p
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => nets.push(n),
                Err(_) => self.problem(
                    format!("{path}[{i}]"),
                    format!("`{p}` is not an IP or CIDR, e.g. 10.0.0.0/8"),
                ),
            }
        }
        nets
    }

    /// `[rate_limit.tiers.NAME]` over the built-in anonymous, authenticated and premium tiers.
    fn tiers(
        &mut self,
        tiers: std::collections::BTreeMap<String, FileLimit>,
    ) -> std::collections::BTreeMap<String, LimitPolicy> {
        let builtin = |limit| LimitPolicy {
            algorithm: Algorithm::SlidingWindow,
            limit,
            window_ms: DEFAULT_WINDOW_MS,
            burst: limit,
        };
        let mut tier_map = std::collections::BTreeMap::from([
            (TIER_ANONYMOUS.to_owned(), builtin(100)),
            (TIER_AUTHENTICATED.to_owned(), builtin(500)),
            (TIER_PREMIUM.to_owned(), builtin(5000)),
        ]);
        for (name, l) in tiers {
            // A tier's name is sent in `RateLimit-Policy` and `RateLimit` as a quoted string,
            // on every limited response: only characters that need no escaping there.
            let sendable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || name.len() > 64 || !name.chars().all(sendable) {
                self.problem(
                    format!("rate_limit.tiers.{name}"),
                    "a tier name is sent in the RateLimit-Policy response header: 1 to 64 \
                     letters, digits, `-`, `_` or `.`"
                        .to_owned(),
                );
            }
            let default = tier_map.get(&name).copied();
            if let Some(p) = self.limit(&format!("rate_limit.tiers.{name}"), l, default) {
                tier_map.insert(name, p);
            }
        }
        tier_map
    }

    /// `[[rate_limit.api_keys]]`: each key once, each naming a defined tier.
    fn api_keys(
        &mut self,
        list: Vec<FileApiKey>,
        tier_map: &std::collections::BTreeMap<String, LimitPolicy>,
    ) -> std::collections::HashMap<String, ApiKeyOwner> {
        let mut keys = std::collections::HashMap::new();
        for (i, FileApiKey { key, client, tier }) in list.into_iter().enumerate() {
            let tier = tier.unwrap_or_else(|| TIER_PREMIUM.to_owned());
            if !tier_map.contains_key(&tier) {
                self.problem(
                    format!("rate_limit.api_keys[{i}].tier"),
                    format!(
                        "no tier named `{tier}` (defined: {})",
                        tier_map.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            if key.is_empty() || keys.insert(key, ApiKeyOwner { client, tier }).is_some() {
                self.problem(
                    format!("rate_limit.api_keys[{i}].key"),
                    "empty or listed twice",
                );
            }
        }
        keys
    }

    pub(super) fn jwt(&mut self, j: FileJwt, base_dir: &Path) -> Option<JwtSpec> {
        let FileJwt {
            hs256_secret,
            hs256_secret_env,
            rs256_public_key,
            es256_public_key,
            tier_claim,
            leeway_seconds,
        } = j;
        let given = [
            hs256_secret.is_some(),
            hs256_secret_env.is_some(),
            rs256_public_key.is_some(),
            es256_public_key.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            self.problem(
                "rate_limit.jwt",
                "give exactly one of hs256_secret, hs256_secret_env, rs256_public_key, es256_public_key",
            );
            return None;
        }
        let key = if let Some(s) = hs256_secret {
            Some(JwtKey::Hs256(s.into_bytes()))
        } else if let Some(var) = hs256_secret_env {
            match std::env::var(&var) {
                Ok(v) if !v.is_empty() => Some(JwtKey::Hs256(v.into_bytes())),
                _ => {
                    self.problem(
                        "rate_limit.jwt.hs256_secret_env",
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            }
        } else {
            let (path, pem, rsa) = match (rs256_public_key, es256_public_key) {
                (Some(p), _) => ("rate_limit.jwt.rs256_public_key", p, true),
                (_, Some(p)) => ("rate_limit.jwt.es256_public_key", p, false),
                _ => unreachable!("exactly one key source was checked above"),
            };
            let file = self.existing_file(path, &pem, base_dir)?;
            match std::fs::read(&file) {
                Ok(bytes) => {
                    let ok = if rsa {
                        jsonwebtoken::DecodingKey::from_rsa_pem(&bytes).is_ok()
                    } else {
                        jsonwebtoken::DecodingKey::from_ec_pem(&bytes).is_ok()
                    };
                    if !ok {
                        self.problem(
                            path,
                            format!("`{}` is not a PEM public key of that type", file.display()),
                        );
                        None
                    } else if rsa {
                        Some(JwtKey::Rs256(bytes))
                    } else {
                        Some(JwtKey::Es256(bytes))
                    }
                }
                Err(e) => {
                    self.problem(path, format!("cannot read `{}`: {e}", file.display()));
                    None
                }
            }
        };
        let leeway = self.int_in("rate_limit.jwt.leeway_seconds", leeway_seconds, 30, 0, 3600);
        Some(JwtSpec {
            key: key?,
            tier_claim: tier_claim.unwrap_or_else(|| DEFAULT_TIER_CLAIM.to_owned()),
            leeway_seconds: leeway? as u64,
        })
    }
}
