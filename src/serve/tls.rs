//! TLS on the gRPC listener, with client certificates (mTLS) and hot certificate reload.
//!
//! ```text
//!  Acceptor ─► TlsIncoming ─ handshake task per connection (ALPN h2, timeout) ─► tonic
//!                     │            └─ reads the current ServerConfig ◄──┐
//!                     └─ failed handshake: counted, logged at debug     │ ArcSwap
//!  poll tick ─► hash cert, key, client CA ─ changed ─► build ServerConfig ┤
//!                                                        └─ invalid ─► rejected, logged, counted;
//!                                                                      the old one keeps serving
//! ```
//!
//! The certificate, key and client CA (`listen.tls`, [`TlsConfig`]) are read, parsed and
//! checked at start-up — a bad file stops riskgate before it binds, naming the field — and
//! then polled: when their content changes a whole new [`ServerConfig`] (certificate,
//! key, client verifier) is built and swapped in, so new connections use it while open
//! ones keep theirs. Connections are accepted by [`TlsIncoming`], a stream tonic serves
//! from; the admin port stays plain HTTP. The crypto provider is aws-lc-rs, the one
//! reqwest already uses.

mod files;
mod incoming;

pub use files::load;
pub use incoming::{TlsConn, TlsIncoming};

use crate::config::TlsConfig;
use crate::serve::connections::Acceptor;
use crate::telemetry::TlsMetrics;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::Instrument as _;

/// Why TLS material was refused; every variant names the `listen.tls` field at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("invalid config field `listen.tls.{field}`: cannot read `{}`", path.display())]
    Read {
        /// The field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM item of the expected kind, or malformed PEM.
    #[error("invalid config field `listen.tls.{field}`: `{}` holds no {what} in PEM", path.display())]
    Pem {
        /// The field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for (`certificate`, `private key`).
        what: &'static str,
        /// The PEM parser's error, when it had one.
        #[source]
        source: Option<rustls::pki_types::pem::Error>,
    },
    /// rustls refused the material: a key that does not match the certificate, a key
    /// type it cannot sign with, a CA certificate it cannot use.
    #[error("invalid config field `listen.tls.{field}`: `{}` cannot be used", path.display())]
    Refused {
        /// The field naming the file.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The gRPC listener's TLS state: the settings, and the server config new connections use.
pub struct TlsServer {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// Content hash of the files the last reload attempt read (good or rejected).
    fingerprint: Mutex<files::Fingerprint>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What one reload attempt did.
#[derive(Debug)]
pub enum TlsReload {
    /// The files did not change since the last attempt.
    Unchanged,
    /// New connections use the new material.
    Applied,
    /// The new material is invalid; the previous one keeps serving.
    Rejected(TlsError),
}

impl TlsServer {
    /// Reads and checks the files `settings` names; fails naming the field at fault.
    pub fn load(settings: &TlsConfig, metrics: TlsMetrics) -> Result<Arc<TlsServer>, TlsError> {
        let read = files::Files::read(settings);
        let fingerprint = read.fingerprint();
        let config = read.build(settings)?;
        Ok(Arc::new(TlsServer {
            settings: settings.clone(),
            current: ArcSwap::new(config),
            fingerprint: Mutex::new(fingerprint),
            metrics,
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &TlsConfig {
        &self.settings
    }

    /// The server config new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the files; when their content changed, builds and swaps in a new server
    /// config, or rejects it (logged and counted) and keeps the old one.
    pub fn reload(&self) -> TlsReload {
        let mut last = self
            .fingerprint
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let read = files::Files::read(&self.settings);
        let fingerprint = read.fingerprint();
        if fingerprint == *last {
            return TlsReload::Unchanged;
        }
        *last = fingerprint;
        match read.build(&self.settings) {
            Ok(config) => {
                self.current.store(config);
                self.metrics.reload(true);
                tracing::info!("TLS certificates reloaded; new connections use them");
                TlsReload::Applied
            }
            Err(e) => {
                self.metrics.reload(false);
                tracing::warn!(
                    error = %error_chain(&e),
                    "new TLS certificates rejected; the previous ones keep serving"
                );
                TlsReload::Rejected(e)
            }
        }
    }

    /// Polls the files every `reload_poll` (forever; abort the task to stop). Returns at
    /// once when polling is off.
    pub async fn watch(self: Arc<Self>) {
        let Some(every) = self.settings.reload_poll() else {
            return;
        };
        let span = tracing::info_span!("tls_reload", poll_ms = every.as_millis() as u64);
        async move {
            loop {
                tokio::time::sleep(every).await;
                self.reload();
            }
        }
        .instrument(span)
        .await;
    }

    /// TLS connections accepted from `tcp`, for tonic's `serve_with_incoming_shutdown`.
    pub fn incoming(self: Arc<Self>, tcp: Acceptor) -> TlsIncoming {
        TlsIncoming::new(tcp, self)
    }
}

/// `error: cause: cause…`, for a log field or a one-line report.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
