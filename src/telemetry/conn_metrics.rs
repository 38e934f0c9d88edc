//! Connection metrics on the gRPC port: open connections, connections refused over
//! `listen.max_connections`, failed accepts (e.g. out of file descriptors), and connections
//! closed for idleness or a slow first request.
//!
//! Handed to the accept loop (`serve::connections`) as plain shared counters (clones count
//! into the same series), so the runtime records without knowing the rest of
//! [`super::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why riskgate closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No Check in flight for `listen.idle_timeout`.
    Idle,
    /// No first request within `listen.header_read_timeout`.
    HeaderTimeout,
}

impl CloseReason {
    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_read_timeout",
        }
    }
}

/// gRPC connection metrics.
#[derive(Debug, Clone, Default)]
pub struct ConnMetrics {
    /// Connections open now.
    pub open: Gauge,
    refused: Counter,
    accept_errors: Counter,
    closed: Family<ReasonLabel, Counter>,
}

impl ConnMetrics {
    /// Registers the series (all start at zero).
    pub fn register(registry: &mut Registry) -> ConnMetrics {
        let m = ConnMetrics::default();
        registry.register(
            "grpc_connections_open",
            "Open connections on the gRPC port",
            m.open.clone(),
        );
        registry.register(
            "grpc_connections_refused",
            "Connections closed at once because listen.max_connections were open",
            m.refused.clone(),
        );
        registry.register(
            "grpc_accept_errors",
            "Failed accepts on the gRPC port (e.g. out of file descriptors), each followed by a back-off",
            m.accept_errors.clone(),
        );
        registry.register(
            "grpc_connections_closed",
            "Connections riskgate closed itself, by reason (idle, header_read_timeout)",
            m.closed.clone(),
        );
        for reason in [CloseReason::Idle, CloseReason::HeaderTimeout] {
            let _ = m.closed.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        m
    }

    /// Counts a connection refused over the cap.
    pub fn refused(&self) {
        self.refused.inc();
    }

    /// Counts a failed accept.
    pub fn accept_error(&self) {
        self.accept_errors.inc();
    }

    /// Counts a connection riskgate closed.
    pub fn closed(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}
