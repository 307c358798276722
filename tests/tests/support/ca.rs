//! A test certificate authority (rcgen): CA and leaf certificates written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA whose leaves the tests hand to servers and clients.
pub struct Ca {
    /// The CA certificate.
    pub cert: rcgen::Certificate,
    /// Its key.
    pub key: KeyPair,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Sluice test CA");
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// The CA certificate written to `dir/stem.pem`; returns the path.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.pem"));
        std::fs::write(&p, self.cert.pem()).unwrap();
        p
    }

    /// A leaf for `names` (DNS names or IP addresses) written to `dir/stem.pem` and
    /// `dir/stem.key`; returns its DER.
    pub fn leaf(&self, names: &[&str], dir: &Path, stem: &str) -> Vec<u8> {
        self.leaf_with(KeyPair::generate().unwrap(), names, dir, stem)
    }

    /// The same with a given key (an RSA one: rcgen on ring signs with RSA but cannot make keys).
    pub fn leaf_with(&self, key: KeyPair, names: &[&str], dir: &Path, stem: &str) -> Vec<u8> {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        self.sign(params, key, dir, stem)
    }

    /// A client certificate whose subject is `CN=<cn>, O=<org>` written to `dir/stem.pem` and
    /// `dir/stem.key`; returns its DER.
    pub fn client(&self, cn: &str, org: &str, dir: &Path, stem: &str) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        self.sign(params, KeyPair::generate().unwrap(), dir, stem)
    }

    /// A leaf for `names` that expires `days` days from today (at midnight UTC).
    pub fn leaf_expiring_in(&self, days: i64, names: &[&str], dir: &Path, stem: &str) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            / 86_400;
        let (y, m, d) = civil(today + days);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn sign(&self, mut params: CertificateParams, key: KeyPair, dir: &Path, stem: &str) -> Vec<u8> {
        // 2030-01-01T00:00:00Z (1893456000): the expiry gauge is checked against it.
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }
}

/// The civil date (year, month, day) of `days` since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}
