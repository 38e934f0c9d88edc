//! Admin HTTP: `/healthz` (alive), `/readyz` (config and policies loaded, not draining),
//! `/metrics` (OpenMetrics or Prometheus text, negotiated). Readiness never depends on the external risk API: an outage of
//! the SaaS follows the fail mode instead of taking every replica out of rotation. It does
//! depend on riskgate's own client secret having been read once (when risk is configured):
//! a replica that never could cannot obtain a token.

use crate::risk::credentials::CredentialStatus;
use crate::telemetry::exposition::Format;
use crate::telemetry::Metrics;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared admin state.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Metrics to render.
    pub metrics: Arc<Metrics>,
    /// Ready flag (set after the first successful load, cleared when draining).
    pub ready: Arc<AtomicBool>,
    /// The risk API client secret's state, when risk is configured: not ready until it
    /// has been read once ([`crate::risk::credentials`]).
    pub credentials: Option<Arc<CredentialStatus>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let secret_read = state.credentials.as_ref().is_none_or(|c| c.ever_read());
    if state.ready.load(Ordering::Acquire) && secret_read {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// OpenMetrics to a scraper that accepts it, Prometheus text 0.0.4 to anything else
/// ([`crate::telemetry::exposition`]); the body always matches its content type.
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.render_as(format),
    )
}
