//! Reading the certificate, key and client CA files, and building a [`ServerConfig`] from
//! exactly the bytes that were hashed (so a reload never builds from a file that changed
//! after it was fingerprinted).

use super::TlsError;
use crate::config::TlsConfig;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// SHA-256 over the files' contents (or their read errors).
pub(super) type Fingerprint = [u8; 32];

/// One file as read.
struct File<'a> {
    field: &'static str,
    path: &'a Path,
    bytes: io::Result<Vec<u8>>,
}

impl<'a> File<'a> {
    fn read(field: &'static str, path: &'a Path) -> File<'a> {
        File {
            field,
            path,
            bytes: std::fs::read(path),
        }
    }

    /// The content, or the read error (rebuilt: `io::Error` is not `Clone`).
    fn bytes(&self) -> Result<&[u8], TlsError> {
        self.bytes.as_deref().map_err(|e| TlsError::Read {
            field: self.field,
            path: self.path.to_owned(),
            source: io::Error::new(e.kind(), e.to_string()),
        })
    }

    fn pem_error(
        &self,
        what: &'static str,
        source: Option<rustls::pki_types::pem::Error>,
    ) -> TlsError {
        TlsError::Pem {
            field: self.field,
            path: self.path.to_owned(),
            what,
            source,
        }
    }

    fn refused(&self, source: impl std::error::Error + Send + Sync + 'static) -> TlsError {
        TlsError::Refused {
            field: self.field,
            path: self.path.to_owned(),
            source: Box::new(source),
        }
    }

    /// Every certificate in the file (at least one).
    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(self.bytes()?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.pem_error("certificate", Some(e)))?;
        if certs.is_empty() {
            return Err(self.pem_error("certificate", None));
        }
        Ok(certs)
    }

    /// The private key in the file.
    fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.bytes()?)
            .map_err(|e| self.pem_error("private key", Some(e)))
    }
}

/// The TLS files of one attempt, as read.
pub(super) struct Files<'a> {
    cert: File<'a>,
    key: File<'a>,
    client_ca: Option<File<'a>>,
}

impl<'a> Files<'a> {
    /// Reads every file `settings` names (errors are kept, to be hashed and reported).
    pub(super) fn read(settings: &'a TlsConfig) -> Files<'a> {
        Files {
            cert: File::read("cert_file", &settings.cert_file),
            key: File::read("key_file", &settings.key_file),
            client_ca: settings
                .client_ca_file
                .as_deref()
                .map(|p| File::read("client_ca_file", p)),
        }
    }

    /// Hash of what was read: changes exactly when a file's content (or readability) does.
    pub(super) fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        for f in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
        {
            h.update(f.field.as_bytes());
            match &f.bytes {
                Ok(b) => {
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                Err(e) => {
                    h.update(b"\xffunreadable:");
                    h.update(e.kind().to_string().as_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// Parses the files and builds the server config: the certificate chain and its key
    /// (which must match), the client verifier when client certificates are required,
    /// ALPN `h2`.
    pub(super) fn build(&self, settings: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
        let provider: Arc<CryptoProvider> = Arc::new(aws_lc_rs::default_provider());
        let chain = self.cert.certificates()?;
        let key = self.key.private_key()?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.cert.refused(e))?;
        let builder = match &self.client_ca {
            Some(ca) if settings.requires_client_cert() => {
                let mut roots = RootCertStore::empty();
                for cert in ca.certificates()? {
                    roots.add(cert).map_err(|e| ca.refused(e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| ca.refused(e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        // Fails when the key does not match the leaf certificate, or cannot sign.
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| self.key.refused(e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Reads and checks the files `settings` names, as riskgate does at start-up (for
/// `riskgate validate`).
pub fn load(settings: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    Files::read(settings).build(settings)
}
