//! TLS metrics on the gRPC port: certificate reloads by result, refused handshakes.
//!
//! Handed to the TLS listener (`serve::tls`) as plain shared counters (clones count into
//! the same series), so TLS records without knowing the rest of [`super::Metrics`] and
//! telemetry does not depend on the runtime.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// TLS metrics: certificate reloads by result, and refused handshakes.
#[derive(Debug, Clone, Default)]
pub struct TlsMetrics {
    reloads: Family<ResultLabel, Counter>,
    handshake_failures: Counter,
}

impl TlsMetrics {
    /// Registers `tls_reloads` and `tls_handshake_failures` (both start at zero).
    pub fn register(registry: &mut Registry) -> TlsMetrics {
        let m = TlsMetrics::default();
        registry.register(
            "tls_reloads",
            "TLS certificate reloads by result (success, failure)",
            m.reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the gRPC port that failed or timed out (e.g. no or untrusted client certificate)",
            m.handshake_failures.clone(),
        );
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        m
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }
}
