//! What the memory store's recent history costs (issue #16, item 5): PRINCIPALS distinct
//! principals, each withdrawing once (one slice, one currency: the common case), through
//! [`MemoryHistory`] capped at CAP principals. Prints one line of `key=value` pairs per
//! step (every tenth of PRINCIPALS): principals kept, live heap bytes (counted by a global
//! allocator, so the same on every run and profile) and RSS (`VmRSS`), then the live heap
//! bytes per principal at the cap. Beyond the cap the least recently seen principals are
//! forgotten, so heap and RSS stay flat however many distinct principals come.
//!
//! ```text
//! history_memory [PRINCIPALS [CAP]]        defaults 1000000 100000
//! ```
//! Run it in the dev profile (`cargo run --example history_memory`): the byte counts do not
//! depend on the profile, only the run time does.

#![allow(clippy::print_stdout, reason = "an example reports on stdout")]

use riskgate::state::{HistoryUpdate, HistoryWindow, MemoryHistory};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let principals = arg(1, 1_000_000);
    let cap = arg(2, 100_000);
    let window = HistoryWindow {
        window_ms: 600_000,
        buckets: 10,
    };
    let rss_before = rss_kib();
    let region = Region::new(GLOBAL);
    let history = MemoryHistory::new(cap, Duration::from_secs(600));
    let step = (principals / 10).max(1);
    let mut at_cap = None;
    for i in 0..principals {
        let update = HistoryUpdate {
            at_ms: 1_000_000,
            currency: Some("USD"),
            amount: 12_000,
            denies: 0,
            challenges: 0,
        };
        history
            .apply(&format!("user-{i:08}@example.com"), window, &update)
            .await;
        let done = i + 1;
        if done % step == 0 || done == cap {
            let kept = history.principal_count().await;
            let heap = live(&region);
            if done == cap {
                at_cap = Some((heap, kept));
            }
            println!(
                "principals_seen={done} principals_kept={kept} live_heap_bytes={heap} rss_kib={} rss_growth_kib={}",
                rss_kib(),
                rss_kib().saturating_sub(rss_before)
            );
        }
    }
    if let Some((heap, kept)) = at_cap {
        let per = heap / i64::try_from(kept.max(1)).unwrap_or(1);
        println!("cap={cap} bytes_per_principal={per}");
    }
}
