//! Certificate choice by server name (SNI) for one TLS listener: a rustls
//! [`ResolvesServerCert`] over a set of loaded certificates that a reload swaps whole
//! (`ArcSwap`), so new handshakes use new certificates at once while connections in flight keep
//! theirs. Names come from each certificate's subjectAltName: an exact name first, then a
//! `*.` wildcard for the first label; a client that sends no name gets the first certificate; an
//! unknown name gets the first certificate too, or a handshake failure when the listener says so.
//!
//! The same resolver is the listener's client-certificate verifier (`client_auth`): whether a
//! certificate is asked for, required, and which CAs may sign it are part of the swapped set,
//! so a reload changes them for the next handshake too.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    CertificateDer, ClientCertVerified, ClientCertVerifier, ClientHello, DigitallySignedStruct,
    HandshakeSignatureValid, ResolvesServerCert, RusTlsError, SignatureScheme, UnixTime,
};
use rustls::DistinguishedName;

use crate::config::{ClientAuthMode, TlsListener};
use crate::metrics::{Error as MetricsError, Kind, Live, LiveFamily};
use crate::tlsfiles::LoadedCert;

/// The certificates of one listener, by name.
#[derive(Debug)]
pub struct CertSet {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `example.com` for a `*.example.com` certificate.
    wildcard: HashMap<String, usize>,
    reject_unknown: bool,
    /// Each certificate's first name (`-` when it has none) and end of validity (Unix seconds).
    expiry: Vec<(String, i64)>,
    /// Client certificates: `None` when not asked for.
    client: Option<ClientAuth>,
}

/// How a listener checks client certificates.
struct ClientAuth {
    /// rustls's verifier for the listener's CA bundle (it also answers `client_auth_mandatory`).
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth")
    }
}

impl CertSet {
    /// The set of `certs` (the first is the default); `reject_unknown`: a name no certificate
    /// covers fails the handshake instead of getting the default.
    pub fn new(certs: &[LoadedCert], reject_unknown: bool) -> CertSet {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, c) in certs.iter().enumerate() {
            for n in &c.names {
                match n.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_owned()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        CertSet {
            keys: certs.iter().map(|c| Arc::clone(&c.key)).collect(),
            exact,
            wildcard,
            reject_unknown,
            client: None,
            expiry: certs
                .iter()
                .map(|c| {
                    let name = c.names.first().map_or("-", String::as_str).to_owned();
                    (name, c.not_after)
                })
                .collect(),
        }
    }

    /// Read `listener`'s certificate files now. The error names the listener and the file.
    pub fn load(listener: &TlsListener) -> Result<CertSet, String> {
        let mut certs = listener
            .certs
            .iter()
            .map(|p| crate::tlsfiles::load_pair(&p.cert, &p.key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("TLS listener {}: {e}", listener.listen))?;
        // The ACME certificate, once there is one, after the configured ones (the default only
        // when there is no other).
        if let Some(c) = listener.acme.as_ref().and_then(crate::acme::stored) {
            certs.push(c);
        }
        let mut set = CertSet::new(&certs, listener.reject_unknown_sni);
        if let Some(ca) = &listener.client_ca {
            let der = crate::tlsfiles::load_ca(ca)
                .map_err(|e| format!("TLS listener {}: client_ca {e}", listener.listen))?;
            if listener.client_auth != ClientAuthMode::Off {
                let optional = listener.client_auth == ClientAuthMode::Optional;
                let verifier = crate::tlsfiles::client_verifier(&der, optional)
                    .map_err(|e| format!("TLS listener {}: client_ca: {e}", listener.listen))?;
                set.client = Some(ClientAuth { verifier });
            }
        }
        Ok(set)
    }

    /// The certificate for `name` (`None`: no name sent).
    pub fn choose(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = name else {
            return self.keys.first().cloned();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        match found {
            Some(i) => self.keys.get(*i).cloned(),
            None if self.reject_unknown => None,
            None => self.keys.first().cloned(),
        }
    }
}

/// The resolver a TLS listener is built with; [`SniResolver::replace`] swaps its certificates.
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
    /// ACME TLS-ALPN-01 validation certificates, for a listener that answers that challenge.
    acme: Option<Arc<crate::acme::Challenges>>,
}

impl SniResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> SniResolver {
        SniResolver {
            set: ArcSwap::from_pointee(set),
            acme: None,
        }
    }

    /// A resolver serving `set` that also answers ACME TLS-ALPN-01 validations (handshakes
    /// offering only `acme-tls/1`) with the certificates of `challenges`.
    pub fn with_acme(set: CertSet, challenges: Arc<crate::acme::Challenges>) -> SniResolver {
        SniResolver {
            set: ArcSwap::from_pointee(set),
            acme: Some(challenges),
        }
    }

    /// Serve `set` from the next handshake on.
    pub fn replace(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }
}

static TLS_FAMILIES: [LiveFamily; 1] = [LiveFamily {
    name: "sluice_tls_certificate_expiry_seconds",
    help: "Seconds until the certificate served on the listener stops being valid (negative once expired), by its first subjectAltName.",
    kind: Kind::Gauge,
    labels: &["listen", "name"],
}];

/// The certificate-expiry gauge, read at scrape time from `resolvers` (by listen address).
pub fn expiry_metric(resolvers: Vec<(String, Arc<SniResolver>)>) -> Result<Live, MetricsError> {
    Live::new(&TLS_FAMILIES, &[], move |s| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (listen, r) in &resolvers {
            for (name, not_after) in &r.set.load().expiry {
                s.add(
                    0,
                    &[listen.as_str(), name.as_str()],
                    (not_after - now) as f64,
                );
            }
        }
    })
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = &self.acme {
            if hello
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == crate::acme::ALPN_ACME_TLS))
            {
                // The CA validating a TLS-ALPN-01 challenge: its certificate, or none.
                return hello.server_name().and_then(|n| acme.alpn_cert(n));
            }
        }
        self.set.load().choose(hello.server_name())
    }
}

/// Client certificates, per the current set: not asked for when the listener has
/// `client_auth = "off"`, else verified against its CA bundle. No CA names are sent as hints
/// (they would have to outlive a reload): clients send the certificate they are given.
impl ClientCertVerifier for SniResolver {
    fn offer_client_auth(&self) -> bool {
        self.set.load().client.is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.set
            .load()
            .client
            .as_ref()
            .is_some_and(|c| c.verifier.client_auth_mandatory())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RusTlsError> {
        match &self.set.load().client {
            Some(c) => c
                .verifier
                .verify_client_cert(end_entity, intermediates, now),
            // The set changed to `off` during this handshake.
            None => Err(RusTlsError::General(
                "client certificates are not accepted".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RusTlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The signature algorithms of the process's crypto provider (ring), built once.
fn algorithms() -> &'static rustls::crypto::WebPkiSupportedAlgorithms {
    static ALGORITHMS: std::sync::LazyLock<rustls::crypto::WebPkiSupportedAlgorithms> =
        std::sync::LazyLock::new(|| {
            rustls::crypto::ring::default_provider().signature_verification_algorithms
        });
    &ALGORITHMS
}
