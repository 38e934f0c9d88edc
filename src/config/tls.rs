//! `listen.tls`: TLS on the gRPC listener, and client certificates (mTLS).
//!
//! Absent, the gRPC port speaks plaintext HTTP/2 (an Envoy sidecar on loopback, or Istio's
//! mTLS in front). Present, it speaks TLS with ALPN `h2`; with a `client_ca_file`, every
//! client must present a certificate that CA signed. The files are loaded and checked at
//! start (see [`crate::serve::tls`]) and reloaded when their content changes.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// TLS for the gRPC listener. The admin port always stays plain HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. When set, clients
    /// without such a certificate are refused during the handshake.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Require client certificates. Defaults to `true` when `client_ca_file` is set; `false`
    /// with a `client_ca_file` (optional client authentication) is refused, and `true`
    /// without one is refused too, so the intent and the files always agree.
    #[serde(default)]
    pub require_client_cert: Option<bool>,
    /// How often the files are checked for changes (content hashes); `0` = never. Legacy
    /// `reload_poll_ms`.
    #[serde(
        default = "TlsConfig::default_reload_poll",
        alias = "reload_poll_ms",
        deserialize_with = "duration::millis"
    )]
    pub reload_poll: Duration,
}

impl TlsConfig {
    /// Default of `reload_poll`. `TlsConfig` has no `Default` (the certificate and key
    /// files have none), so this is where that one default lives.
    pub const DEFAULT_RELOAD_POLL: Duration = Duration::from_secs(1);

    fn default_reload_poll() -> Duration {
        Self::DEFAULT_RELOAD_POLL
    }

    /// Whether clients must present a certificate signed by `client_ca_file`.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
            .unwrap_or(self.client_ca_file.is_some())
    }

    /// The poll interval, `None` when polling is off.
    pub fn reload_poll(&self) -> Option<Duration> {
        (!self.reload_poll.is_zero()).then_some(self.reload_poll)
    }

    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.cert_file, &mut self.key_file]
            .into_iter()
            .chain(self.client_ca_file.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Field checks that need no file (the files are checked when they are loaded).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let empty = |p: &Path| p.as_os_str().is_empty();
        if empty(&self.cert_file) {
            return Err(ConfigError::field(
                "listen.tls.cert_file",
                "must not be empty",
            ));
        }
        if empty(&self.key_file) {
            return Err(ConfigError::field(
                "listen.tls.key_file",
                "must not be empty",
            ));
        }
        match (self.client_ca_file.as_deref(), self.require_client_cert) {
            (Some(ca), _) if empty(ca) => Err(ConfigError::field(
                "listen.tls.client_ca_file",
                "must not be empty",
            )),
            (Some(_), Some(false)) => Err(ConfigError::field(
                "listen.tls.require_client_cert",
                "optional client certificates are not supported: with `client_ca_file` every \
                 client must present one (remove `client_ca_file` for TLS without client \
                 certificates)",
            )),
            (None, Some(true)) => Err(ConfigError::field(
                "listen.tls.client_ca_file",
                "required when `require_client_cert` is true (the CA client certificates must \
                 chain to)",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "policies: { dir: p, schema: p/s.cedarschema }\n";

    fn tls(yaml: &str) -> Result<Config, ConfigError> {
        let config = Config::from_yaml(&format!("{MINIMAL}listen: {{ tls: {yaml} }}\n"))?;
        config.validate()?;
        Ok(config)
    }

    fn error(yaml: &str) -> String {
        tls(yaml).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn absent_tls_means_plaintext() -> Result<(), ConfigError> {
        assert_eq!(Config::from_yaml(MINIMAL)?.listen.tls, None);
        Ok(())
    }

    #[test]
    fn client_ca_implies_required_client_certs() -> Result<(), ConfigError> {
        let c = tls("{ cert_file: s.crt, key_file: s.key, client_ca_file: ca.crt }")?;
        let t = c.listen.tls.as_ref().map(TlsConfig::requires_client_cert);
        assert_eq!(t, Some(true));
        let c = tls("{ cert_file: s.crt, key_file: s.key }")?;
        let t = c.listen.tls.as_ref().map(TlsConfig::requires_client_cert);
        assert_eq!(t, Some(false));
        Ok(())
    }

    #[test]
    fn optional_client_certs_are_refused() {
        let msg = error(
            "{ cert_file: s.crt, key_file: s.key, client_ca_file: ca.crt, require_client_cert: false }",
        );
        assert!(msg.contains("listen.tls.require_client_cert"), "{msg}");
    }

    #[test]
    fn required_client_certs_need_a_ca() {
        let msg = error("{ cert_file: s.crt, key_file: s.key, require_client_cert: true }");
        assert!(msg.contains("listen.tls.client_ca_file"), "{msg}");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let msg = error("{ cert_file: s.crt, key_file: s.key, client_ca: ca.crt }");
        assert!(msg.contains("client_ca"), "{msg}");
        let msg = error("{ cert_file: s.crt }");
        assert!(msg.contains("key_file"), "{msg}");
    }

    #[test]
    fn paths_resolve_against_the_config_dir() -> Result<(), ConfigError> {
        let mut c = tls("{ cert_file: s.crt, key_file: /abs/s.key, client_ca_file: ca.crt }")?;
        c.resolve_paths(Path::new("/etc/riskgate"));
        let t = c.listen.tls.as_ref();
        assert_eq!(
            t.map(|t| t.cert_file.as_path()),
            Some(Path::new("/etc/riskgate/s.crt"))
        );
        assert_eq!(
            t.map(|t| t.key_file.as_path()),
            Some(Path::new("/abs/s.key"))
        );
        assert_eq!(
            t.and_then(|t| t.client_ca_file.as_deref()),
            Some(Path::new("/etc/riskgate/ca.crt"))
        );
        assert_eq!(
            t.and_then(TlsConfig::reload_poll),
            Some(Duration::from_secs(1))
        );
        Ok(())
    }
}
