//! The short fault-injected load run (issue 14, item 7): steady Checks from concurrent
//! clients with a mix of action tokens, through the real gRPC server on loopback, while
//! the risk simulator turns slow, answers 503, is killed and restarted, the policies are
//! reloaded and clients cancel. Asserted: 0 wrong allows, no Check answered with a gRPC
//! error, one audit line per decision counted in /metrics, no breaker trip (and no fail
//! mode) while clients only cancel, the cache gauge within its bound. RSS is reported.
//!
//! Bounded in time and count; every timing is an env var in ms:
//! `RISKGATE_FAULT_PHASE_MS` (per phase, default 400), `RISKGATE_FAULT_BUDGET_MS` (risk
//! budget, default 150), `RISKGATE_FAULT_CANCEL_MS` (a cancelling client's wait, default 5);
//! `RISKGATE_FAULT_CLIENTS` clients (default 8).

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig, SimHandle};
use riskgate::audit::AuditSink;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::serve::server::App;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The phases, in order. Each uses its own token pool, so the cache cannot hide a fault.
const PHASES: [&str; 6] = ["normal", "cancel", "slow", "errors", "killed", "restarted"];
const TOKENS_PER_KIND: usize = 48;

/// What a token stands for; only `Good` may ever be allowed (and only for u1 on a1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Good,
    Deny,
    High,
    Unknown,
}

const KINDS: [Kind; 4] = [Kind::Good, Kind::Deny, Kind::High, Kind::Unknown];

fn token(phase: usize, kind: Kind, i: usize) -> String {
    format!("{kind:?}-{}-{i}", PHASES[phase]).to_ascii_lowercase()
}

/// Every token of every phase; `slow` phase answers after `slow_ms`, the `cancel` phase
/// answers well within the budget (a tenth of it) but after the cancelling clients gave up.
fn script(slow_ms: u64, cancel_delay_ms: u64) -> HashMap<String, ScriptedAction> {
    let mut script = HashMap::new();
    for (p, phase) in PHASES.iter().enumerate() {
        let delay_ms = match *phase {
            "slow" => slow_ms,
            "cancel" => cancel_delay_ms,
            _ => 0,
        };
        for i in 0..TOKENS_PER_KIND {
            for (kind, action) in [
                (Kind::Good, scripted(10.0, "ALLOW", "withdraw", Some("u1"))),
                (Kind::Deny, scripted(10.0, "DENY", "withdraw", Some("u1"))),
                (Kind::High, scripted(95.0, "ALLOW", "withdraw", Some("u1"))),
            ] {
                script.insert(token(p, kind, i), ScriptedAction { delay_ms, ..action });
            }
        }
    }
    script
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    cancelled: AtomicU64,
    grpc_errors: AtomicU64,
    wrong_allows: AtomicU64,
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn start_sim(config: &SimConfig, addr: SocketAddr) -> SimHandle {
    // The port was just freed: retry briefly while the kernel lets it go.
    for _ in 0..50 {
        if let Ok(sim) = risk_sim::start(config.clone(), addr).await {
            return sim;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot restart the simulator on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_never_allow_wrongly_and_audit_every_decision() {
    let phase = ms("RISKGATE_FAULT_PHASE_MS", 400);
    let budget = ms("RISKGATE_FAULT_BUDGET_MS", 300);
    let cancel_after = ms("RISKGATE_FAULT_CANCEL_MS", 5);
    let clients: usize = std::env::var("RISKGATE_FAULT_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let budget_ms = budget.as_millis() as u64;

    let sim_config = SimConfig {
        script: script(budget_ms * 2, budget_ms / 10),
        ..SimConfig::default()
    };
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut sim = Some(match risk_sim::start(sim_config.clone(), loopback).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    });
    let sim_addr = sim.as_ref().map(SimHandle::addr).unwrap_or(loopback);
    let sim_url = sim.as_ref().map(SimHandle::base_url).unwrap_or_default();

    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let mut policies = match ConfigMapDir::create(&dir.path().join("policies"), &example_policies())
    {
        Ok(p) => p,
        Err(e) => panic!("configmap dir: {e}"),
    };
    let mut config = example_config(&sim_url);
    config.policies.dir = policies.path.clone();
    config.policies.schema = policies.path.join("schema.cedarschema");
    config.policies.entities = Some(policies.path.join("entities.json"));
    config.reload.poll = Duration::from_millis(20);
    config.shutdown.drain = Duration::ZERO;
    if let Some(risk) = config.risk.as_mut() {
        risk.budget = Duration::from_millis(budget_ms);
        risk.breaker.failure_threshold = 5;
        risk.breaker.open = Duration::from_millis(budget_ms * 2);
        // one user sends every token: the per-source call budget (tests/api_budget.rs)
        // would stop the faults below from reaching the API at all
        risk.call_budget.calls = 0;
    }
    let max_entries = config.risk.as_ref().map_or(0, |r| r.cache.max_entries);
    let audit_path = dir.path().join("audit.jsonl");
    let audit_file = match tokio::fs::File::create(&audit_path).await {
        Ok(f) => f,
        Err(e) => panic!("audit file: {e}"),
    };
    let audit = AuditSink::spawn(audit_file, 1 << 20);
    let app = match App::build(&config, audit.clone()).await {
        Ok(a) => a,
        Err(e) => panic!("riskgate build: {e}"),
    };
    // `Running` owns a simulator it never touches; the real one is killed and restarted here.
    let idle_sim = match risk_sim::start(SimConfig::default(), loopback).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    };
    let rg = serve_app(app, idle_sim).await;

    let tally = Arc::new(Tally::default());
    let current = Arc::new(AtomicUsize::new(0));
    let cancelling = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = rg.client().await;
        let (tally, current, cancelling, stop) = (
            tally.clone(),
            current.clone(),
            cancelling.clone(),
            stop.clone(),
        );
        let pause = budget / 3;
        tasks.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::SeqCst) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let p = current.load(Ordering::SeqCst);
                let kind = KINDS[(n >> 33) % KINDS.len()];
                let i = (n >> 40) % TOKENS_PER_KIND;
                // One Check in 8 is u2 using u1's token on u1's account: never allowed.
                let user = if (n >> 20) % 8 == 0 { "u2" } else { "u1" };
                let tok = token(p, kind, i);
                let req = check(
                    "POST",
                    "/accounts/a1/withdraw",
                    Some((user, json!({}))),
                    &[("x-action-token", tok.as_str())],
                );
                tally.sent.fetch_add(1, Ordering::Relaxed);
                let answer = if cancelling.load(Ordering::SeqCst) {
                    match tokio::time::timeout(cancel_after, client.check(req)).await {
                        Ok(a) => a,
                        Err(_) => {
                            tally.cancelled.fetch_add(1, Ordering::Relaxed);
                            // riskgate still decides a cancelled Check (the server does
                            // not drop the handler): pausing keeps the load of abandoned
                            // decisions as steady as the rest, so only cancellation is
                            // being tested, not overload.
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                    }
                } else {
                    client.check(req).await
                };
                match answer.map(|r| r.into_inner().http_response) {
                    Ok(Some(HttpResponse::OkResponse(_))) => {
                        tally.allowed.fetch_add(1, Ordering::Relaxed);
                        if kind != Kind::Good || user != "u1" {
                            tally.wrong_allows.fetch_add(1, Ordering::Relaxed);
                            eprintln!("WRONG ALLOW: {tok} for {user} in {}", PHASES[p]);
                        }
                    }
                    Ok(_) => {
                        tally.denied.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        tally.grpc_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("gRPC error in {}: {status}", PHASES[p]);
                    }
                }
            }
        }));
    }

    // Policy reloads all along: the same policies, republished (a new ConfigMap version).
    let reloading = {
        let stop = stop.clone();
        let every = phase / 3;
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(every).await;
                n += 1;
                let mut files = example_policies();
                if let Some(login) = files.get_mut("login.cedar") {
                    login.extend_from_slice(format!("\n// reload {n}\n").as_bytes());
                }
                if let Err(e) = policies.swap(&files) {
                    panic!("policy swap: {e}");
                }
            }
            n
        })
    };

    let mut cancel_phase_breaker_max = 0.0f64;
    let mut fail_modes_before_cancel = 0.0;
    let mut fail_modes_after_cancel = 0.0;
    for (p, name) in PHASES.iter().enumerate() {
        current.store(p, Ordering::SeqCst);
        match *name {
            "cancel" => {
                let (_, m) = http_get(rg.admin, "/metrics").await;
                fail_modes_before_cancel = metric_sum(&m, "riskgate_fail_mode_activations");
                cancelling.store(true, Ordering::SeqCst);
            }
            "slow" => cancelling.store(false, Ordering::SeqCst),
            "errors" => {
                if let Some(s) = &sim {
                    s.set_outage(Some(503));
                }
            }
            "killed" => {
                if let Some(s) = sim.take() {
                    s.shutdown().await;
                }
            }
            "restarted" => sim = Some(start_sim(&sim_config, sim_addr).await),
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + phase;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(phase / 8).await;
            if *name == "cancel" {
                let (_, m) = http_get(rg.admin, "/metrics").await;
                cancel_phase_breaker_max =
                    cancel_phase_breaker_max.max(metric(&m, "riskgate_risk_breaker_state "));
                fail_modes_after_cancel = metric_sum(&m, "riskgate_fail_mode_activations");
                if std::env::var("RISKGATE_FAULT_DEBUG").is_ok() {
                    for l in m.lines().filter(|l| {
                        l.starts_with("riskgate_risk_api_requests")
                            || l.starts_with("riskgate_fail_mode")
                            || l.starts_with("riskgate_risk_breaker")
                    }) {
                        eprintln!("cancel phase: {l}");
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let reloads = reloading.await.unwrap_or(0);
    // Let in-flight decisions (cancelled ones included) finish and reach the audit queue.
    tokio::time::sleep(budget * 3).await;
    let (_, metrics) = http_get(rg.admin, "/metrics").await;
    let decisions = metric_sum(&metrics, "riskgate_decisions_total");
    let cache_entries = metric(&metrics, "riskgate_risk_cache_entries ");
    let reloads_ok = metric_sum(
        &metrics,
        "riskgate_policy_reloads_total{result=\"success\"}",
    );
    let reloads_failed = metric_sum(
        &metrics,
        "riskgate_policy_reloads_total{result=\"failure\"}",
    );
    rg.stop().await;
    audit.shutdown().await;
    if let Some(s) = sim {
        s.shutdown().await;
    }
    let audit_lines = std::fs::read_to_string(&audit_path)
        .map(|t| t.lines().count())
        .unwrap_or(0);

    let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
    eprintln!(
        "fault load: sent {} allowed {} denied {} cancelled {} grpc errors {} wrong allows {}; \
         decisions {decisions} audit lines {audit_lines}; reloads published {reloads}, applied {reloads_ok}, failed {reloads_failed}; \
         cache entries {cache_entries}; RSS {} KiB",
        get(&tally.sent),
        get(&tally.allowed),
        get(&tally.denied),
        get(&tally.cancelled),
        get(&tally.grpc_errors),
        get(&tally.wrong_allows),
        rss_kib().unwrap_or(0),
    );
    assert_eq!(get(&tally.wrong_allows), 0, "wrong allows");
    assert_eq!(
        get(&tally.grpc_errors),
        0,
        "Checks answered with a gRPC error"
    );
    assert!(
        get(&tally.allowed) > 0,
        "nothing was allowed: the run proves little"
    );
    assert!(
        get(&tally.denied) > 0,
        "nothing was denied: the run proves little"
    );
    assert!(get(&tally.cancelled) > 0, "no client cancelled");
    assert!(decisions > 0.0, "no decision counted in /metrics");
    assert_eq!(
        audit_lines as f64, decisions,
        "audit lines differ from the decisions counted"
    );
    assert!(
        audit_lines as u64 >= get(&tally.allowed) + get(&tally.denied),
        "fewer audit lines than answered Checks"
    );
    assert_eq!(
        cancel_phase_breaker_max, 0.0,
        "the breaker left closed while clients only cancelled"
    );
    assert_eq!(
        fail_modes_after_cancel, fail_modes_before_cancel,
        "a fail mode was applied while clients only cancelled"
    );
    assert!(
        cache_entries <= max_entries as f64,
        "cache gauge {cache_entries} over its bound {max_entries}"
    );
    // Publications coalesce while a (debug-build) reload is running: at least one applies.
    assert!(reloads_ok >= 1.0, "no policy reload applied under load");
    assert_eq!(reloads_failed, 0.0, "a policy reload failed under load");
}
