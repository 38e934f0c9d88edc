//! Logging, tracing and the Prometheus metrics registry.
//!
//! Metrics live in an explicit [`Metrics`] value handed to whoever records them (no global
//! recorder), rendered by the admin server's `/metrics`. Traces go to an OTLP collector when
//! the standard `OTEL_EXPORTER_OTLP_*` variables say so.

pub mod conn_metrics;
pub mod exposition;
pub mod grpc_metrics;
pub mod metrics;
pub mod process_metrics;
pub mod risk_metrics;
pub mod state_metrics;
pub mod tls_metrics;
pub mod trace;

pub use conn_metrics::ConnMetrics;
pub use metrics::Metrics;
pub use risk_metrics::{MetricSources, RiskApiMetrics};
pub use state_metrics::StateMetrics;
pub use tls_metrics::TlsMetrics;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter, Layer as _};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable.
    Text,
}

/// Installs the global `tracing` subscriber: logs to stderr (stdout is the audit log) at the
/// level from `RISKGATE_LOG` (or `RUST_LOG`, default `info`), plus OTLP trace export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. Must run
/// inside the tokio runtime (the exporter's gRPC channel needs it).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RISKGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let otel = if trace::otlp_configured() {
        match trace::otlp_layer() {
            Ok(layer) => Some(layer),
            Err(e) => {
                eprintln!("riskgate: OTLP trace export disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    // Err means a subscriber is already installed (tests, embedding): keep it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel)
        .try_init();
}
