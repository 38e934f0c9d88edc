//! What one cached recommendation costs (issue #14): N distinct action tokens assessed through
//! the real [`Assessor`] path (fetch task, TTL, moka), each answered with a recommendation
//! shaped like the API reference's example (64-hex ids, four reasons, two threats, a
//! `preview_rule`), parsed by [`Recommendation::from_json`]. Prints one line of `key=value`
//! pairs: live heap bytes per entry (counted by a global allocator, so the same on every run
//! and profile) and RSS before and after (`VmRSS`); optionally the same once every entry has
//! expired with no Check touching the cache. Then the cost of a hit: every token looked up
//! once through [`Assessor::cached`] (hash, moka, decoding), and decoding alone, in ns
//! (wall clock: meaningful in a release build only).
//!
//! ```text
//! cache_memory [ENTRIES]        default 100000
//! ```
//! Env: `CACHE_EXPIRE_MS` (0: no expiry phase): every entry expires that long after the start
//! (its action becomes too old: `action_performed_at` is set so), however long the filling
//! took; the example then waits, touching nothing, until six seconds past that moment (the
//! assessor's housekeeping runs every five) and prints what is left.

use riskgate::risk::compact::CompactRecommendation;
use riskgate::risk::source::BoxFuture;
use riskgate::risk::{Assessor, AssessorSettings, Breaker, FetchError, Recommendation, RiskSource};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Answers every token with a fresh documented-shape recommendation whose ids derive from
/// the token, so every entry holds its own strings (as real traffic does).
struct Documented {
    /// `action_performed_at` of every recommendation (epoch ms).
    performed_at: i64,
}

fn body(token: &str, performed_at: i64) -> String {
    let hex = |salt: &str| {
        let mut s = format!("{salt}{token}");
        while s.len() < 64 {
            s.push_str("0123456789abcdef");
        }
        s.truncate(64);
        s
    };
    let now = riskgate::clock::now_ms();
    serde_json::json!({
        "id": hex("385cd06b"),
        "issued_at": now,
        "recommendation": { "type": "ALLOW", "result": "success" },
        "risk_score": 12.5,
        "context": {
            "action_id": hex("885cd06b"),
            "action_type": "login",
            "action_performed_at": performed_at,
            "application_id": "ece93f4",
            "device_id": "eyJhbGciOi",
            "device_fingerprint": hex("a3c8f5ea"),
            "user_id": format!("u{token}"),
            "ip": "192.168.0.1"
        },
        "reasons": ["BEHAVIOR_BOT", "IP_RISKY_REPUTATION", "DEVICE_SUSPICIOUS_ATTRIBUTE", "PROFILE_DEVICE_NEW"],
        "threats": ["ACCOUNT_TAKEOVER", "NEW_FRAUD_ACCOUNT"],
        "preview_rule": { "rule_name": "string", "recommendation": "string" }
    })
    .to_string()
}

impl RiskSource for Documented {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move {
            Recommendation::from_json(body(token, self.performed_at).as_bytes())
                .map_err(|e| panic!("fixture must parse: {e}"))
        })
    }
}

/// Heap bytes of one cached recommendation alone (parsed, then encoded as the cache holds
/// it), over a thousand of them: the rest of an entry's cost is the cache's own.
fn value_bytes(performed_at: i64) -> i64 {
    const K: usize = 1_000;
    let interner = riskgate::risk::intern::Interner::default();
    let bodies: Vec<String> = (0..K)
        .map(|i| body(&format!("f{i:07x}"), performed_at))
        .collect();
    let mut held = Vec::with_capacity(K);
    let region = Region::new(GLOBAL);
    for b in &bodies {
        match Recommendation::from_json(b.as_bytes()) {
            Ok(r) => held.push(CompactRecommendation::encode(&r, &interner)),
            Err(e) => panic!("fixture must parse: {e}"),
        }
    }
    let bytes = live(&region) / K as i64;
    drop(held);
    bytes
}

/// Prints the ns of one cache hit (every token once) and of decoding one entry alone.
async fn hit_cost(assessor: &Assessor, tokens: &[String], performed_at: i64) {
    let started = std::time::Instant::now();
    let mut hits = 0usize;
    for t in tokens {
        hits += usize::from(assessor.cached(t).await.is_some());
    }
    let hit_ns = started.elapsed().as_nanos() / tokens.len().max(1) as u128;
    let interner = riskgate::risk::intern::Interner::default();
    let compact = match Recommendation::from_json(body("0decade0", performed_at).as_bytes()) {
        Ok(r) => CompactRecommendation::encode(&r, &interner),
        Err(e) => panic!("fixture must parse: {e}"),
    };
    const DECODES: u32 = 200_000;
    let started = std::time::Instant::now();
    for _ in 0..DECODES {
        std::hint::black_box(compact.decode(std::hint::black_box(&interner)));
    }
    let decode_ns = started.elapsed().as_nanos() / u128::from(DECODES);
    println!(
        "hits={hits} hit_ns={hit_ns} decode_ns={decode_ns} encoded_bytes={}",
        compact.len()
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn live(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run());
}

async fn run() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let expire_ms: u64 = std::env::var("CACHE_EXPIRE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let max_age = Duration::from_secs(7_200);
    let started = std::time::Instant::now();
    // With no expiry asked for, entries outlive the run (an hour).
    let lifetime_ms = if expire_ms == 0 { 3_600_000 } else { expire_ms };
    let performed_at = riskgate::clock::now_ms() + lifetime_ms as i64 - max_age.as_millis() as i64;
    let assessor = Assessor::new(
        Arc::new(Documented { performed_at }),
        Arc::new(Breaker::new(3, Duration::from_secs(60))),
        AssessorSettings {
            budget: Duration::from_secs(5),
            deadline_reserve: Duration::ZERO,
            ttl: max_age,
            max_age,
            max_entries: n,
            negative_ttl: Duration::from_secs(30),
            negative_max_entries: 1_000,
        },
        None,
    );
    let tokens: Vec<String> = (0..n).map(|i| format!("{i:08x}")).collect();
    let value_bytes = value_bytes(performed_at);
    let rss_before = rss_kib();
    let region = Region::new(GLOBAL);
    for chunk in tokens.chunks(64) {
        let assessed =
            futures_util::future::join_all(chunk.iter().map(|t| assessor.assess(t, None))).await;
        if let Some(Err(e)) = assessed.into_iter().find(Result::is_err) {
            panic!("assess failed: {e}");
        }
    }
    assessor.run_pending_tasks().await;
    let heap = live(&region);
    let rss_full = rss_kib();
    let filled_in = started.elapsed();
    println!(
        "filled_in_s={:.1} entries={} heap_bytes_per_entry={} of_which_recommendation={value_bytes} rss_before_mib={:.1} rss_full_mib={:.1} rss_bytes_per_entry={}",
        filled_in.as_secs_f64(),
        assessor.cached_entries(),
        heap / n.max(1) as i64,
        rss_before as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        (rss_full.saturating_sub(rss_before) * 1024) / n.max(1),
    );
    hit_cost(&assessor, &tokens, performed_at).await;
    if expire_ms == 0 {
        return;
    }
    if filled_in.as_millis() >= u128::from(expire_ms) {
        println!("expiry_phase=skipped (filling took longer than CACHE_EXPIRE_MS)");
        return;
    }
    // No Check touches the cache from now on: only the assessor's housekeeping can free it.
    tokio::time::sleep(Duration::from_millis(expire_ms + 6_000).saturating_sub(filled_in)).await;
    println!(
        "entries_after_expiry={} heap_after_expiry_bytes={} rss_after_expiry_mib={:.1}",
        assessor.cached_entries(),
        live(&region),
        rss_kib() as f64 / 1024.0,
    );
}
