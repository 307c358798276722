//! ACME certificates (RFC 8555) for a TLS listener's `acme = { directory, hosts, ... }`: one
//! certificate for all its hosts, ordered with the HTTP-01 challenge (answered by Sluice's own
//! plain listeners through [`Challenges`]), stored on disk (`storage`) and renewed at two thirds
//! of its lifetime. The order itself is [`order`] (instant-acme); `reload::AcmeService` decides
//! when, and swaps the listener's certificates after.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use crate::config::{AcmeChallenge, AcmeSpec};
use crate::tlsfiles::LoadedCert;

/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ALPN_ACME_TLS: &[u8] = b"acme-tls/1";

/// The path prefix of HTTP-01 challenge requests.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The HTTP-01 answers being offered now: token -> key authorization; with `[redis]`, also
/// those of the other instances (the CA's request may reach any of them).
#[derive(Default)]
pub struct Challenges {
    tokens: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: the validation certificate of each host being validated.
    alpn: RwLock<HashMap<String, std::sync::Arc<pingora::tls::sign::CertifiedKey>>>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges").finish_non_exhaustive()
    }
}

impl Challenges {
    /// Answers of this instance, and of the others through `redis` when given.
    pub fn new(redis: Option<&crate::config::RedisSpec>) -> Self {
        Challenges {
            tokens: RwLock::default(),
            alpn: RwLock::default(),
            shared: redis.map(Shared::new),
        }
    }

    /// The key authorization for `token`, if an order (of any instance) is waiting on it.
    pub async fn answer(&self, token: &str) -> Option<String> {
        let local = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        match (local, &self.shared) {
            (Some(a), _) => Some(a),
            (None, Some(sh)) => sh.challenge(token).await,
            (None, None) => None,
        }
    }

    async fn offer(&self, token: &str, key_authorization: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), key_authorization.to_owned());
        if let Some(sh) = &self.shared {
            // Best effort: without Redis only this instance can answer.
            let _ = sh.offer_challenge(token, key_authorization).await;
        }
    }

    fn withdraw(&self, tokens: &[String]) {
        let mut t = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let mut a = self.alpn.write().unwrap_or_else(|e| e.into_inner());
        for k in tokens {
            t.remove(k);
            a.remove(k);
        }
    }

    /// TLS-ALPN-01: the validation certificate for `host`, while its order waits on it.
    pub fn alpn_cert(
        &self,
        host: &str,
    ) -> Option<std::sync::Arc<pingora::tls::sign::CertifiedKey>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.alpn
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host)
            .cloned()
    }

    /// Offer the TLS-ALPN-01 validation certificate of `host` for `key_authorization`'s
    /// SHA-256 `digest` (RFC 8737 §3: self-signed, the host as its only name, the digest in a
    /// critical acmeIdentifier extension).
    fn offer_alpn(&self, host: &str, digest: &[u8]) -> Result<(), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(|e| e.to_string())?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        pingora::tls::install_default_crypto_provider();
        let provider = pingora::tls::CryptoProvider::get_default()
            .ok_or("no TLS crypto provider installed")?;
        let der_key = pingora::tls::PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| e.to_string())?;
        // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which
        // refuses the critical acmeIdentifier extension (the CA's validator does not).
        let signing = provider
            .key_provider
            .load_private_key(der_key)
            .map_err(|e| e.to_string())?;
        let certified = pingora::tls::sign::CertifiedKey::new(vec![cert.der().clone()], signing);
        self.alpn
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), std::sync::Arc::new(certified));
        Ok(())
    }
}

/// The certificate and key files of `spec` (named after its first host).
pub fn cert_paths(spec: &AcmeSpec) -> (PathBuf, PathBuf) {
    let stem = spec.hosts.first().map_or("acme", String::as_str);
    (
        spec.storage.join(format!("{stem}.pem")),
        spec.storage.join(format!("{stem}.key")),
    )
}

/// The stored certificate of `spec`, if there is one that loads.
pub fn stored(spec: &AcmeSpec) -> Option<LoadedCert> {
    let (cert, key) = cert_paths(spec);
    if !cert.is_file() {
        return None;
    }
    crate::tlsfiles::load_pair(&cert, &key).ok()
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When `cert` is due for renewal (Unix seconds): two thirds into its lifetime.
pub fn renew_at(cert: &LoadedCert) -> i64 {
    cert.not_before + (cert.not_after - cert.not_before) * 2 / 3
}

/// Whether the stored certificate covers every host of `spec` (a host added to the config
/// needs a new certificate).
pub fn covers(cert: &LoadedCert, spec: &AcmeSpec) -> bool {
    spec.hosts.iter().all(|h| cert.names.iter().any(|n| n == h))
}

/// Order a certificate for `spec` now: account (created once, kept in `storage`), order, HTTP-01
/// answers offered through `challenges`, key and certificate written to `storage`. Bounded by
/// `deadline`.
pub async fn order(
    spec: &AcmeSpec,
    challenges: &Challenges,
    deadline: Duration,
) -> Result<(), String> {
    let mut offered = Vec::new();
    let result = tokio::time::timeout(deadline, order_inner(spec, challenges, &mut offered)).await;
    challenges.withdraw(&offered);
    match result {
        Ok(r) => r,
        Err(_) => Err(format!("no certificate within {} s", deadline.as_secs())),
    }
}

async fn order_inner(
    spec: &AcmeSpec,
    challenges: &Challenges,
    offered: &mut Vec<String>,
) -> Result<(), String> {
    std::fs::create_dir_all(&spec.storage)
        .map_err(|e| format!("cannot create {}: {e}", spec.storage.display()))?;
    let account = account(spec).await?;
    let ids: Vec<Identifier> = spec.hosts.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization is {other:?}")),
        }
        let host = match &authz.identifier().identifier {
            Identifier::Dns(h) => h.clone(),
            other => return Err(format!("unexpected identifier {other:?}")),
        };
        let mut challenge = match spec.challenge {
            AcmeChallenge::Http01 => {
                let challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or("the CA offers no http-01 challenge")?;
                let token = challenge.token.clone();
                challenges
                    .offer(&token, challenge.key_authorization().as_str())
                    .await;
                offered.push(token);
                challenge
            }
            AcmeChallenge::TlsAlpn01 => {
                let challenge = authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or("the CA offers no tls-alpn-01 challenge")?;
                challenges.offer_alpn(&host, challenge.key_authorization().digest().as_ref())?;
                offered.push(host);
                challenge
            }
        };
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    let retry = RetryPolicy::default().timeout(Duration::from_secs(60));
    let status = order
        .poll_ready(&retry)
        .await
        .map_err(|e| format!("order: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!("order is {status:?} (challenge failed?)"));
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    let (cert_path, key_path) = cert_paths(spec);
    // The key first: a certificate next to an old key would not load (and is not served).
    write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, chain_pem.as_bytes(), 0o644)?;
    crate::tlsfiles::load_pair(&cert_path, &key_path).map(|_| ())
}

/// The account for `spec`'s directory: its stored credentials, or a new account (stored).
async fn account(spec: &AcmeSpec) -> Result<Account, String> {
    let builder = || match &spec.directory_ca {
        Some(ca) => Account::builder_with_root(ca).map_err(|e| format!("directory_ca: {e}")),
        None => Account::builder().map_err(|e| format!("HTTP client: {e}")),
    };
    let file = account_path(spec);
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(creds) = serde_json::from_str::<AccountCredentials>(&text) {
            return builder()?
                .from_credentials(creds)
                .await
                .map_err(|e| format!("account: {e}"));
        }
    }
    let contact: Vec<String> = spec.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            spec.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new account: {e}"))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_atomic(&file, &json, 0o600)?;
    Ok(account)
}

/// The account credentials file of `spec`'s directory.
fn account_path(spec: &AcmeSpec) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&spec.directory, &mut h);
    spec.storage.join(format!(
        "account-{:016x}.json",
        std::hash::Hasher::finish(&h)
    ))
}

/// Write `bytes` to `path` through a temporary file and a rename, with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Certificates shared by the instances of one deployment through Redis (`[redis]`): one key per
/// certificate (`sluice:acme:cert:HOST`, chain and key together, so they are read and written
/// at once) and a lock (`sluice:acme:lock:HOST`) so that one instance orders while the others
/// wait and take its certificate.
pub struct Shared {
    conn: crate::store::conn::LazyConn,
}

/// How long the order lock is held at most (longer than an order may take).
const LOCK_TTL: Duration = Duration::from_secs(180);

#[derive(serde::Serialize, serde::Deserialize)]
struct SharedPair {
    cert: String,
    key: String,
}

impl Shared {
    /// A connection to `redis` (opened on first use).
    pub fn new(redis: &crate::config::RedisSpec) -> Self {
        Shared {
            conn: crate::store::conn::LazyConn::new(
                redis.target.clone(),
                redis.command_timeout.max(Duration::from_secs(2)),
            ),
        }
    }

    fn key(spec: &AcmeSpec, what: &str) -> String {
        format!(
            "sluice:acme:{what}:{}",
            spec.hosts.first().map_or("", String::as_str)
        )
    }

    /// The certificate another instance stored, as (chain PEM, key PEM).
    pub async fn fetch(&self, spec: &AcmeSpec) -> Result<Option<(String, String)>, String> {
        let conn = self.conn.get().await.map_err(|e| e.to_string())?;
        let v: Option<String> = conn
            .query(redis::cmd("GET").arg(Self::key(spec, "cert")))
            .await
            .map_err(|e| e.to_string())?;
        Ok(v.and_then(|v| serde_json::from_str::<SharedPair>(&v).ok())
            .map(|p| (p.cert, p.key)))
    }

    /// Store the certificate at `spec`'s files for the other instances.
    pub async fn publish(&self, spec: &AcmeSpec) -> Result<(), String> {
        let (cert, key) = cert_paths(spec);
        let pair = SharedPair {
            cert: std::fs::read_to_string(cert).map_err(|e| e.to_string())?,
            key: std::fs::read_to_string(key).map_err(|e| e.to_string())?,
        };
        let json = serde_json::to_string(&pair).map_err(|e| e.to_string())?;
        let conn = self.conn.get().await.map_err(|e| e.to_string())?;
        conn.query::<()>(redis::cmd("SET").arg(Self::key(spec, "cert")).arg(json))
            .await
            .map_err(|e| e.to_string())
    }

    /// Offer an HTTP-01 answer to the other instances (for ten minutes).
    async fn offer_challenge(&self, token: &str, key_authorization: &str) -> Result<(), String> {
        let conn = self.conn.get().await.map_err(|e| e.to_string())?;
        conn.query::<()>(
            redis::cmd("SET")
                .arg(format!("sluice:acme:challenge:{token}"))
                .arg(key_authorization)
                .arg("PX")
                .arg(600_000),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Another instance's HTTP-01 answer for `token`.
    async fn challenge(&self, token: &str) -> Option<String> {
        // Tokens are base64url: anything else is not looked up.
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let conn = self.conn.get().await.ok()?;
        conn.query::<Option<String>>(
            redis::cmd("GET").arg(format!("sluice:acme:challenge:{token}")),
        )
        .await
        .ok()
        .flatten()
    }

    /// Take the order lock for `spec` as `token`; `false` when another instance holds it.
    pub async fn lock(&self, spec: &AcmeSpec, token: &str) -> Result<bool, String> {
        let conn = self.conn.get().await.map_err(|e| e.to_string())?;
        let r: Option<String> = conn
            .query(
                redis::cmd("SET")
                    .arg(Self::key(spec, "lock"))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(LOCK_TTL.as_millis() as u64),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(r.is_some())
    }

    /// Release the lock if `token` still holds it.
    pub async fn unlock(&self, spec: &AcmeSpec, token: &str) {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        if let Ok(conn) = self.conn.get().await {
            let mut inv = script.prepare_invoke();
            inv.key(Self::key(spec, "lock")).arg(token);
            let _ = conn.invoke::<i64>(&inv).await;
        }
    }
}

/// Put the certificate `cert_pem`/`key_pem` (from another instance) in `spec`'s files when it
/// loads, covers the hosts and lasts longer than the stored one; `Ok(true)` when it did.
pub fn install(spec: &AcmeSpec, cert_pem: &str, key_pem: &str) -> Result<bool, String> {
    std::fs::create_dir_all(&spec.storage)
        .map_err(|e| format!("cannot create {}: {e}", spec.storage.display()))?;
    let (cert_path, key_path) = cert_paths(spec);
    let (tmp_cert, tmp_key) = (
        cert_path.with_extension("shared.pem"),
        key_path.with_extension("shared.key"),
    );
    write_atomic(&tmp_key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&tmp_cert, cert_pem.as_bytes(), 0o644)?;
    let fetched = crate::tlsfiles::load_pair(&tmp_cert, &tmp_key);
    let newer = match (&fetched, stored(spec)) {
        (Ok(f), _) if !covers(f, spec) => false,
        (Ok(_), None) => true,
        (Ok(f), Some(local)) => f.not_after > local.not_after || !covers(&local, spec),
        (Err(_), _) => false,
    };
    if newer {
        std::fs::rename(&tmp_key, &key_path).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp_cert, &cert_path).map_err(|e| e.to_string())?;
    } else {
        let _ = std::fs::remove_file(&tmp_key);
        let _ = std::fs::remove_file(&tmp_cert);
    }
    fetched.map(|_| newer)
}

/// The outcome label of `sluice_acme_orders_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderResult {
    /// A certificate was obtained and is served.
    Issued,
    /// The order failed; the certificate served before (if any) stays.
    Failed,
}

impl OrderResult {
    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            OrderResult::Issued => "issued",
            OrderResult::Failed => "failed",
        }
    }
}

/// Orders by certificate (its first host) and outcome.
pub fn orders_metric() -> Result<prometheus::IntCounterVec, prometheus::Error> {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "sluice_acme_orders_total",
            "ACME certificate orders by certificate (its first host) and outcome (issued, failed).",
        ),
        &["name", "result"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_two_thirds_into_the_lifetime() {
        let c = LoadedCert {
            key: std::sync::Arc::new(pingora::tls::sign::CertifiedKey::new(
                vec![],
                std::sync::Arc::new(NoKey),
            )),
            names: vec!["a.test".into(), "b.test".into()],
            not_before: 1_000,
            not_after: 91_000,
        };
        assert_eq!(renew_at(&c), 61_000);
        let spec = AcmeSpec {
            directory: "https://ca.test/dir".into(),
            email: None,
            hosts: vec!["a.test".into()],
            storage: "/tmp".into(),
            directory_ca: None,
            challenge: AcmeChallenge::Http01,
        };
        assert!(covers(&c, &spec));
        let more = AcmeSpec {
            hosts: vec!["a.test".into(), "c.test".into()],
            ..spec.clone()
        };
        assert!(!covers(&c, &more));
        assert_eq!(cert_paths(&spec).0, Path::new("/tmp/a.test.pem"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ch = Challenges::default();
        rt.block_on(ch.offer("tok", "tok.thumb"));
        assert_eq!(rt.block_on(ch.answer("tok")).as_deref(), Some("tok.thumb"));
        ch.withdraw(&["tok".into()]);
        assert_eq!(rt.block_on(ch.answer("tok")), None);
    }

    #[derive(Debug)]
    struct NoKey;

    impl pingora::tls::sign::SigningKey for NoKey {
        fn choose_scheme(
            &self,
            _: &[pingora::tls::SignatureScheme],
        ) -> Option<Box<dyn pingora::tls::sign::Signer>> {
            None
        }

        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }
}
