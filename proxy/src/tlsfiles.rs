//! Certificate and key files: loaded and checked exactly as the TLS listener will load them, so
//! that `--check`, start-up and reload find a bad file before a listener does (Pingora's rustls
//! listener panics on one, leaving a process without its listener).

use std::path::Path;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{load_certs_and_key_files, CryptoProvider};

/// A certificate and its key, loaded and ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The DNS names of its subjectAltName, lower case (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// Its end of validity, in seconds since the Unix epoch.
    pub not_after: i64,
    /// Its start of validity, in seconds since the Unix epoch.
    pub not_before: i64,
}

/// Why a certificate and key pair cannot serve.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    load_pair(cert, key).map(|_| ())
}

/// Load a certificate chain and its key as the TLS listener serves them.
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedCert, String> {
    load_pair_and_key(cert, key).map(|(loaded, _)| loaded)
}

/// [`load_pair`], also giving the key's DER (read once: the upstream connector needs the bytes).
fn load_pair_and_key(cert: &Path, key: &Path) -> Result<(LoadedCert, Vec<u8>), String> {
    let (cert_s, key_s) = (cert.to_string_lossy(), key.to_string_lossy());
    let (certs, key_der) = match load_certs_and_key_files(&cert_s, &key_s) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return Err(format!(
                "`{cert_s}` holds no PEM certificate or `{key_s}` no PEM private key (PKCS#1, PKCS#8 or SEC1)"
            ))
        }
        Err(e) => return Err(format!("cannot read `{cert_s}` or `{key_s}`: {e}")),
    };
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider installed".to_owned())?;
    // What rustls's `with_single_cert` does: the key parses, and it belongs to the first
    // certificate. The listener serves this very `CertifiedKey` (through `sni::SniResolver`).
    let key_bytes = key_der.secret_der().to_vec();
    let key = CertifiedKey::from_der(certs, key_der, provider)
        .map_err(|e| format!("`{cert_s}` and `{key_s}` do not make a usable pair: {e}"))?;
    let (names, not_after, not_before) = {
        let first = key
            .end_entity_cert()
            .map_err(|e| format!("`{cert_s}`: {e}"))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(first).map_err(|e| format!("`{cert_s}`: {e}"))?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = x509.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    names.push(d.to_ascii_lowercase());
                }
            }
        }
        (
            names,
            x509.validity().not_after.timestamp(),
            x509.validity().not_before.timestamp(),
        )
    };
    Ok((
        LoadedCert {
            key: Arc::new(key),
            names,
            not_after,
            not_before,
        },
        key_bytes,
    ))
}

/// A CA bundle: every certificate of a PEM file, as DER, each checked as a trust anchor.
pub fn load_ca(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    let p = path.to_string_lossy();
    let mut out = Vec::new();
    let iter = pingora::tls::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{p}`: {e}"))?;
    for (i, c) in iter.enumerate() {
        let c = c.map_err(|e| format!("`{p}`: certificate {}: {e}", i + 1))?;
        // Pingora parses each CA with x509-parser (and panics on one it cannot read), rustls
        // makes each a trust anchor: both must accept it here.
        x509_parser::parse_x509_certificate(&c)
            .map_err(|e| format!("`{p}`: certificate {}: {e}", i + 1))?;
        let mut store = pingora::tls::RootCertStore::empty();
        store
            .add(c.clone())
            .map_err(|e| format!("`{p}`: certificate {} is no CA: {e}", i + 1))?;
        out.push(c.to_vec());
    }
    if out.is_empty() {
        return Err(format!("`{p}` holds no PEM certificate"));
    }
    Ok(out)
}

/// rustls's verifier of client certificates signed by the CAs `ca` (DER); `optional`: a client
/// may send none.
pub fn client_verifier(
    ca: &[Vec<u8>],
    optional: bool,
) -> Result<Arc<dyn pingora::tls::ClientCertVerifier>, String> {
    let mut roots = pingora::tls::RootCertStore::empty();
    for c in ca {
        roots
            .add(pingora::tls::CertificateDer::from(c.clone()))
            .map_err(|e| e.to_string())?;
    }
    pingora::tls::install_default_crypto_provider();
    let mut b = pingora::tls::WebPkiClientVerifier::builder(Arc::new(roots));
    if optional {
        b = b.allow_unauthenticated();
    }
    b.build().map_err(|e| e.to_string())
}

/// A client certificate chain and its key (what a TLS upstream that asks for one is shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPair {
    /// The chain as DER, leaf first.
    pub certs: Vec<Vec<u8>>,
    /// The private key as DER (PKCS#1, PKCS#8 or SEC1).
    pub key: Vec<u8>,
    /// The certificate's end of validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Load a client certificate and key as the upstream connector will use them: the key parses,
/// belongs to the certificate, and every certificate parses (Pingora panics on one that does
/// not, so this is checked before a connection is ever made).
pub fn load_client_pair(cert: &Path, key_path: &Path) -> Result<ClientPair, String> {
    let (loaded, key) = load_pair_and_key(cert, key_path)?;
    let (cert_s, key_s) = (cert.to_string_lossy(), key_path.to_string_lossy());
    let certs: Vec<Vec<u8>> = loaded.key.cert.iter().map(|c| c.to_vec()).collect();
    for c in &certs {
        x509_parser::parse_x509_certificate(c).map_err(|e| format!("`{cert_s}`: {e}"))?;
    }
    // The connector turns the bytes back into a key by their shape (and unwraps the result).
    pingora::tls::PrivateKeyDer::try_from(key.clone()).map_err(|e| format!("`{key_s}`: {e}"))?;
    Ok(ClientPair {
        certs,
        key,
        not_after: loaded.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/tls");
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    #[test]
    fn the_demo_pair_passes() {
        let (c, k) = demo();
        check_pair(&c, &k).unwrap();
        let l = load_pair(&c, &k).unwrap();
        assert!(l.names.iter().any(|n| n == "localhost"), "{:?}", l.names);
        assert!(l.not_after > 1_700_000_000);
    }

    #[test]
    fn garbage_missing_and_swapped_files_are_refused() {
        let (c, k) = demo();
        let dir = tempfile_dir();
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = check_pair(&garbage, &k).unwrap_err();
        assert!(err.contains("garbage.pem"), "{err}");
        assert!(check_pair(&dir.join("missing.pem"), &k).is_err());
        // A key file given as the certificate and the other way round.
        assert!(check_pair(&k, &c).is_err());
        // A certificate whose key is another (valid) key.
        let other_key = dir.join("other.key");
        std::fs::write(&other_key, OTHER_KEY).unwrap();
        let err = check_pair(&c, &other_key).unwrap_err();
        assert!(err.contains("usable pair"), "{err}");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-tlsfiles-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A valid EC P-256 private key that belongs to no certificate here.
    const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbOG/lP45EPy2vUzo
03S65goErG3wx9QnNAiyO+vSMEWhRANCAARuC8m73eUsf9uhb3s8tTHS7Y9zTczu
Xu1sm9aXuDp+1fAnPWjrQ5cZC2qcp1aZ+2Ugz1/78p8HwThbej9qizKq
-----END PRIVATE KEY-----
";
}
