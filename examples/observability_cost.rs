//! Deterministic cost of observability: the same Checks handled bare (extract, decide,
//! respond) or by the full handler (metrics, audit line written by its task, tracing with a
//! subscriber installed, exporter off), run N times. `scripts/observability-cost.sh` runs it
//! under callgrind, which counts instructions (all threads, the audit writer included)
//! independently of machine load, and prints the per-Check ratio.
//!
//! ```text
//! observability_cost bare|full ITERATIONS
//! ```

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use riskgate::audit::AuditSink;
use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
use std::sync::Arc;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run());
}

async fn run() {
    let full = std::env::args().nth(1).as_deref() == Some("full");
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = std::env::temp_dir().join(format!("riskgate-obs-cost-{}", std::process::id()));
    // No risk API is reached: the measured route has `risk: off`.
    let config = fixtures::config("http://127.0.0.1:9", 0, &dir);
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let decider = fixtures::build_decider(&config).await;
    let audit = AuditSink::spawn(tokio::io::sink(), 100_000);
    let metrics = Arc::new(riskgate::telemetry::Metrics::with_sources(
        riskgate::telemetry::MetricSources {
            assessor: decider.assessor().cloned(),
            audit_dropped: Some(audit.dropped_counter()),
            ..Default::default()
        },
    ));
    let service = riskgate::authz::AuthzService::new(decider.clone(), metrics, audit.clone());
    let request = fixtures::check_request("GET", "/core/a1/balance", "unused");
    let answers = riskgate::authz::respond::AnswerSettings::default();
    for _ in 0..n {
        if full {
            let _ = std::hint::black_box(service.check(tonic::Request::new(request.clone())).await);
        } else {
            let owned = request.clone();
            let access = riskgate::authz::extract::access_request(&owned, None)
                .unwrap_or_else(|e| panic!("{e}"));
            let d = decider.decide(&access).await;
            std::hint::black_box(riskgate::authz::respond::to_check_response(&d, &answers));
        }
    }
    audit.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
