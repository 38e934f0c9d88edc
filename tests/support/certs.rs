//! Certificates made at test time with rcgen (ECDSA P-256, aws-lc-rs): a CA, and server and
//! client certificates it signs. Nothing is committed; every test makes its own.
//!
//! Standalone (no other support module), so in-process tests include it with
//! `#[path = "support/certs.rs"] mod certs;`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its self-signed certificate (PEM).
    pub cert_pem: String,
}

/// A leaf certificate and its key.
pub struct Leaf {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The certificate (DER), to compare with what a peer presented.
    pub der: Vec<u8>,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

fn key() -> KeyPair {
    KeyPair::generate().expect("generate a P-256 key")
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = key();
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = key();
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(
            names.first().copied().unwrap_or("server"),
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name and DNS SAN `name`.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose only SAN is the URI `uri` (a SPIFFE id, as Istio issues).
    #[allow(
        dead_code,
        reason = "tests/tls.rs includes this file by path and has no use for it"
    )]
    pub fn client_uri(&self, cn: &str, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = vec![SanType::URI(
            uri.to_owned().try_into().expect("an ASCII URI"),
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = key();
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.cert_pem).expect("write the CA certificate");
        path.to_owned()
    }
}

impl Leaf {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write the certificate");
        std::fs::write(&key, &self.key_pem).expect("write the key");
        (cert, key)
    }
}
