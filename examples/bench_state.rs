//! What the shared state store costs a Check: one riskgate (in process, real gRPC port on
//! loopback, the shipped config, the risk API simulator behind it) with `state: memory` or
//! `state: redis`, driven by a tonic client. Prints one line of `key=value` pairs:
//! write-Check latency percentiles (each write a fresh single-use token, so every write
//! consumes a use; the risk API fetch is in both modes alike) and read Checks/s (a cached read
//! token, `BENCH_CONCURRENCY` clients). `scripts/bench-state.sh` runs it for both modes.
//!
//! ```text
//! bench_state memory
//! bench_state redis redis://127.0.0.1:6379
//! ```
//! Env: `BENCH_WRITES` (2000), `BENCH_READ_MS` (3000), `BENCH_CONCURRENCY` (16).

#[path = "../tests/common/mod.rs"]
mod common;

use risk_sim::SimConfig;
use riskgate::config::{RedisConfig, StoreKind};
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use std::time::{Duration, Instant};

fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn req(method: &str, path: &str, token: &str) -> CheckRequest {
    common::check(
        method,
        path,
        Some(("u1", json!({}))),
        &[("x-action-token", token)],
    )
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run());
}

async fn run() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
    let url = std::env::args().nth(2);
    let writes = env_num("BENCH_WRITES", 2000);
    let read_for = Duration::from_millis(env_num("BENCH_READ_MS", 3000));
    let concurrency = env_num("BENCH_CONCURRENCY", 16);

    let rg = common::start(SimConfig::default(), |c| {
        // every write is a fresh token from one user: no per-source call budget here
        if let Some(r) = c.risk.as_mut() {
            r.call_budget.calls = 0;
        }
        // ... and no per-user share of the use ledger (the default 1000 would refuse write 1000)
        c.state.max_uses_per_principal = u32::MAX;
        if mode == "redis" {
            c.state.store = StoreKind::Redis;
            c.state.redis = Some(RedisConfig {
                url: Some(
                    url.clone()
                        .unwrap_or_else(|| panic!("redis mode needs a URL")),
                ),
                ..RedisConfig::default()
            });
        }
    })
    .await;
    let run_id = std::process::id();
    for i in 0..writes {
        rg.sim.script(
            &format!("w-{run_id}-{i}"),
            common::scripted(12.5, "ALLOW", "withdraw", Some("u1")),
        );
    }
    rg.sim.script(
        "reader",
        common::scripted(12.5, "ALLOW", "login", Some("u1")),
    );

    // writes, one at a time
    let mut client = rg.client().await;
    let mut lat = Vec::with_capacity(writes as usize);
    for i in 0..writes {
        let r = req("POST", "/accounts/a1/withdraw", &format!("w-{run_id}-{i}"));
        let t = Instant::now();
        let answer = client
            .check(r)
            .await
            .unwrap_or_else(|e| panic!("Check: {e}"));
        lat.push(t.elapsed());
        if !matches!(
            answer.into_inner().http_response,
            Some(HttpResponse::OkResponse(_))
        ) {
            panic!("write {i} was not allowed");
        }
    }
    lat.sort();

    // reads, concurrently, for a fixed time
    let end = Instant::now() + read_for;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = rg.client().await;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let r = req("GET", "/accounts/a1/balance", "reader");
                if c.check(r).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut reads = 0;
    for t in tasks {
        reads += t.await.unwrap_or(0);
    }
    println!(
        "mode={mode} writes={writes} write_p50_us={:.0} write_p99_us={:.0} reads_per_s={:.0}",
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        reads as f64 / read_for.as_secs_f64()
    );
    rg.stop().await;
}
