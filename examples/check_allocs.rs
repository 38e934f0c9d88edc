//! Allocations per Check and the size of the answer (issue #15): the same Check as
//! `observability_cost full` (risk-off route, one policy, metrics, audit line written by its
//! task, tracing subscriber installed, exporter off) handled N times by the full
//! `AuthzService::check` after a warm-up, counted by a global allocator (deterministic, the
//! same in every profile). Prints one line of `key=value` pairs.
//!
//! ```text
//! check_allocs [ITERATIONS] [minimal]     default 2000; `minimal`: no `answer` extras asked
//! ```

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

use prost::Message as _;
use riskgate::audit::AuditSink;
use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run());
}

async fn run() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let dir = std::env::temp_dir().join(format!("riskgate-check-allocs-{}", std::process::id()));
    // No risk API is reached: the measured route has `risk: off`.
    let mut config = fixtures::config("http://127.0.0.1:9", 0, &dir);
    if std::env::args().nth(2).as_deref() == Some("minimal") {
        config.answer = riskgate::config::AnswerConfig::default();
    }
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
    let mut answer_bytes = 0;
    for _ in 0..100 {
        let answer = service.check(tonic::Request::new(request.clone())).await;
        answer_bytes = answer.map_or(0, |a| a.get_ref().encoded_len());
        tokio::task::yield_now().await;
    }
    // The state a Check's future carries, allocated and moved with it (tonic boxes it).
    let decide_future_bytes = std::mem::size_of_val(&service.decide(&request, None));
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        let request = tonic::Request::new(request.clone());
        std::hint::black_box(service.check(request).await.is_ok());
        // let the audit writer task take its line, as it would between Checks
        tokio::task::yield_now().await;
    }
    let c = region.change();
    // the CheckRequest clone handed to each Check (tonic decodes one per Check in production)
    let baseline = Region::new(GLOBAL);
    for _ in 0..n {
        std::hint::black_box(tonic::Request::new(request.clone()));
    }
    let b = baseline.change();
    let per = |x: usize| x as f64 / n as f64;
    println!(
        "checks={n} allocations_per_check={:.1} allocated_bytes_per_check={:.0} request_clone_allocations={:.1} answer_bytes={answer_bytes} decide_future_bytes={decide_future_bytes}",
        per(c.allocations + c.reallocations) - per(b.allocations + b.reallocations),
        per(c.bytes_allocated) - per(b.bytes_allocated),
        per(b.allocations + b.reallocations),
    );
    audit.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
