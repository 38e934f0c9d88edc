//! Replays every committed fuzz input — the seed corpora (`fuzz/corpus/<target>/`) and
//! every crashing input kept in `fuzz/artifacts/<target>/` — through the same entry
//! functions the cargo-fuzz targets call (`fuzz/entries.rs`), so CI checks them without
//! the instrumented build (issue 14, item 6). `write_check_request_seeds` (ignored)
//! regenerates the CheckRequest seeds.

#[path = "../fuzz/entries.rs"]
mod entries;

mod common;

use common::*;
use serde_json::json;
use std::path::PathBuf;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every file under `fuzz/corpus/<target>` and `fuzz/artifacts/<target>`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["fuzz/corpus", "fuzz/artifacts"] {
        let Ok(entries) = std::fs::read_dir(repo(dir).join(target)) else {
            continue;
        };
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && !p.ends_with(".gitkeep")),
        );
    }
    files.sort();
    files
}

fn replay(target: &str, entry: fn(&str, &[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no committed corpus for `{target}`");
    for file in files {
        let data = match std::fs::read(&file) {
            Ok(d) => d,
            Err(e) => panic!("read {}: {e}", file.display()),
        };
        let outcome = std::panic::catch_unwind(|| entry(ROOT, &data));
        if outcome.is_err() {
            panic!("fuzz input {} fails `{target}`", file.display());
        }
    }
}

#[test]
fn check_request_corpus_replays() {
    replay("check_request", |root, data| {
        let _ = entries::check_request(root, data);
    });
}

/// The seeds reach both answers, so the entry's OK-side checks (protected headers, no
/// allow on a refused token) are exercised, not only its deny side.
#[test]
fn check_request_seeds_reach_allow_and_deny() {
    let answers: Vec<Option<bool>> = inputs("check_request")
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|data| entries::check_request(ROOT, &data))
        .collect();
    assert!(
        answers.contains(&Some(true)),
        "no seed is allowed: {answers:?}"
    );
    assert!(
        answers.contains(&Some(false)),
        "no seed is denied: {answers:?}"
    );
}

#[test]
fn path_route_corpus_replays() {
    replay("path_route", entries::path_route);
}

#[test]
fn recommendation_corpus_replays() {
    replay("recommendation", entries::recommendation);
}

/// Regenerates `fuzz/corpus/check_request/seed-*` (run with `--ignored` after a proto
/// change). Tokens are chosen so each scripted answer of `fuzz/entries.rs` is seeded.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_check_request_seeds() {
    use prost::Message as _;
    let dir = repo("fuzz/corpus/check_request");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{e}");
    }
    let u1 = || Some(("u1", json!({ "amr": ["pwd", "mfa"] })));
    let seeds = [
        (
            "login",
            check("POST", "/login", u1(), &[("x-action-token", "c")]),
        ),
        (
            "balance",
            check("GET", "/accounts/a1/balance", u1(), &[("x-user-id", "u2")]),
        ),
        (
            "withdraw",
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "d"), ("x-risk-band", "low")],
            ),
        ),
        (
            "transfer",
            check(
                "POST",
                "/accounts/a1/transfer?to=a2",
                u1(),
                &[("x-action-token", "e"), ("x-jwt-payload", "e30")],
            ),
        ),
        (
            "profile",
            check("PUT", "/users/u1/profile", u1(), &[("x-action-token", "f")]),
        ),
        (
            "noncanonical",
            check("GET", "/accounts/a1/../a2/balance", u1(), &[]),
        ),
        (
            "override",
            check(
                "GET",
                "/accounts/a1/balance",
                u1(),
                &[("x-http-method-override", "POST")],
            ),
        ),
        (
            "anonymous",
            check("POST", "/login", None, &[("x-action-token", "a")]),
        ),
        (
            "high",
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "g")],
            ),
        ),
        ("empty", Default::default()),
    ];
    for (name, req) in seeds {
        if let Err(e) = std::fs::write(dir.join(format!("seed-{name}")), req.encode_to_vec()) {
            panic!("{e}");
        }
    }
}
