//! Logging set-up and the Prometheus metrics registry.
//!
//! Metrics live in an explicit [`Metrics`] value handed to whoever records them (no global
//! recorder), rendered by the admin server's `/metrics`.

pub mod metrics;

pub use metrics::Metrics;

use tracing_subscriber::{fmt, EnvFilter};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable.
    Text,
}

/// Installs the global `tracing` subscriber. Level from `RISKGATE_LOG` (or `RUST_LOG`),
/// default `info`. Logs go to stderr; stdout is reserved for the audit log.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("RISKGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if result.is_err() {
        // Already installed (tests, embedding): keep the existing subscriber.
    }
}
