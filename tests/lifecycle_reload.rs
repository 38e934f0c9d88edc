//! Hot reload (issue 6): policies, schema, entities and routes reload from their files —
//! mounted like a Kubernetes ConfigMap and swapped through `..data` exactly as the kubelet
//! does — and a broken set is rejected while the last good one keeps serving.
//!
//! Timings (ms, environment): `RISKGATE_TEST_RELOAD_POLL_MS` (watcher interval, 20),
//! `RISKGATE_TEST_RELOAD_WAIT_MS` (how long a reload may take to show, 3000).

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::audit::AuditSink;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use riskgate::serve::reload::ReloadOutcome;
use riskgate::serve::server::App;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RELOADS_OK: &str = r#"riskgate_policy_reloads_total{result="success"}"#;
const RELOADS_FAILED: &str = r#"riskgate_policy_reloads_total{result="failure"}"#;

fn poll_ms() -> u64 {
    ms("RISKGATE_TEST_RELOAD_POLL_MS", 20).as_millis() as u64
}

fn wait() -> Duration {
    ms("RISKGATE_TEST_RELOAD_WAIT_MS", 3_000)
}

async fn sim() -> risk_sim::SimHandle {
    match risk_sim::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0))).await {
        Ok(s) => s,
        Err(e) => panic!("simulator: {e}"),
    }
}

/// Workspace + running riskgate built from its config file.
async fn start_ws(extra: &str) -> (Workspace, Running, Arc<riskgate::serve::reload::Reloader>) {
    let sim = sim().await;
    let ws = Workspace::new(&sim.base_url(), extra);
    let app = match App::from_file(&ws.config, AuditSink::disabled()).await {
        Ok(a) => a,
        Err(e) => panic!("riskgate from {}: {e}", ws.config.display()),
    };
    let reloader = app.reloader.clone();
    let rg = serve_app(app, sim).await;
    (ws, rg, reloader)
}

fn balance(account: &str) -> CheckRequest {
    check(
        "GET",
        &format!("/accounts/{account}/balance"),
        Some(("u1", json!({}))),
        &[],
    )
}

/// The HTTP status riskgate answers, or `None` for a failed Check (gRPC error, no answer).
async fn status(rg: &Running, req: CheckRequest) -> Option<u16> {
    let mut client = rg.client().await;
    let resp = client.check(req).await.ok()?.into_inner();
    match resp.http_response? {
        HttpResponse::OkResponse(_) => Some(200),
        HttpResponse::DeniedResponse(d) => d.status.map(|s| s.code as u16),
        HttpResponse::ErrorResponse(_) => None,
    }
}

async fn scrape(rg: &Running) -> String {
    let (code, body) = http_get(rg.admin, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn with(mut files: Files, name: &str, fixture: &str) -> Files {
    files.insert(name.into(), lifecycle_data(fixture));
    files
}

#[tokio::test]
async fn a_valid_policy_change_takes_effect() {
    let (mut ws, rg, _) = start_ws(&format!("reload: {{ poll_ms: {} }}", poll_ms())).await;
    assert_eq!(status(&rg, balance("a1")).await, Some(200));

    let swapped = ws.policies.swap(&with(
        example_policies(),
        "forbid-balance.cedar",
        "forbid-balance.cedar",
    ));
    assert!(swapped.is_ok(), "{swapped:?}");
    assert!(
        eventually(wait(), || async {
            status(&rg, balance("a1")).await == Some(403)
        })
        .await,
        "the forbid policy never took effect"
    );
    let text = scrape(&rg).await;
    assert_eq!(metric(&text, RELOADS_OK), 1.0, "{text}");
    assert_eq!(metric(&text, RELOADS_FAILED), 0.0, "{text}");
    rg.stop().await;
}

#[tokio::test]
async fn a_broken_policy_is_rejected_and_the_last_good_set_keeps_serving() {
    let (mut ws, rg, reloader) = start_ws(&format!("reload: {{ poll_ms: {} }}", poll_ms())).await;
    assert_eq!(status(&rg, balance("a1")).await, Some(200));

    // One swap adds a forbid (valid on its own) *and* a broken file: the set is rejected
    // as a whole, so the forbid must not take effect either.
    let broken = with(
        with(
            example_policies(),
            "forbid-balance.cedar",
            "forbid-balance.cedar",
        ),
        "broken.cedar",
        "broken.cedar",
    );
    assert!(ws.policies.swap(&broken).is_ok());
    assert!(
        eventually(wait(), || async {
            metric(&scrape(&rg).await, RELOADS_FAILED) == 1.0
        })
        .await,
        "the failed reload was never counted"
    );
    assert_eq!(status(&rg, balance("a1")).await, Some(200), "old decision");
    let text = scrape(&rg).await;
    assert_eq!(metric(&text, RELOADS_OK), 0.0, "{text}");
    assert_eq!(metric(&text, "riskgate_ready "), 1.0, "still ready: {text}");

    // The rejection names the file and line (what the log line carries).
    match reloader.reload_now(true).await {
        ReloadOutcome::Rejected(e) => {
            let msg = e.to_string();
            assert!(msg.contains("broken.cedar:3:"), "{msg}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Unchanged inputs are not retried (and not counted again) by the watcher.
    tokio::time::sleep(Duration::from_millis(poll_ms() * 5)).await;
    assert_eq!(metric(&scrape(&rg).await, RELOADS_FAILED), 2.0);

    // Fixing the file brings the new set in.
    let fixed = with(
        example_policies(),
        "forbid-balance.cedar",
        "forbid-balance.cedar",
    );
    assert!(ws.policies.swap(&fixed).is_ok());
    assert!(
        eventually(wait(), || async {
            status(&rg, balance("a1")).await == Some(403)
        })
        .await,
        "the fixed set never took effect"
    );
    assert_eq!(metric(&scrape(&rg).await, RELOADS_OK), 1.0);
    rg.stop().await;
}

#[tokio::test]
async fn routes_reload_but_a_change_needing_a_restart_holds_the_whole_reload() {
    let lifecycle = format!("reload: {{ poll_ms: {} }}", poll_ms());
    let (ws, rg, _) = start_ws(&lifecycle).await;
    let nowhere = || check("GET", "/nowhere", Some(("u1", json!({}))), &[]);
    assert_eq!(status(&rg, nowhere()).await, Some(403), "no route → deny");
    let template = String::from_utf8_lossy(&lifecycle_data("riskgate.yaml")).into_owned();
    assert!(template.contains("default: deny\n") && template.contains("mode: enforce\n"));
    // One write per edit, so a poll never sees half of it.
    let edit = |pairs: &[(&str, &str)]| {
        let changed = std::fs::read_to_string(&ws.config)
            .map(|t| pairs.iter().fold(t, |t, (from, to)| t.replace(from, to)))
            .and_then(|t| std::fs::write(&ws.config, t));
        assert!(changed.is_ok(), "{changed:?}");
    };

    // `default: allow` together with `mode: dry_run` (restart-only, and it changes what is
    // decided): the whole reload is held back and counted as a failure.
    edit(&[
        ("default: deny\n", "default: allow\n"),
        ("mode: enforce\n", "mode: dry_run\n"),
    ]);
    assert!(
        eventually(wait(), || async {
            metric(&scrape(&rg).await, RELOADS_FAILED) >= 1.0
        })
        .await,
        "the mixed change was not rejected"
    );
    assert_eq!(
        status(&rg, nowhere()).await,
        Some(403),
        "nothing of it applied"
    );
    assert_eq!(
        status(&rg, balance("a2")).await,
        Some(403),
        "still enforcing"
    );

    // Without the restart-only change, the new default hot-reloads.
    edit(&[("mode: dry_run\n", "mode: enforce\n")]);
    assert!(
        eventually(wait(), || async {
            status(&rg, nowhere()).await == Some(200)
        })
        .await,
        "the new default never took effect"
    );
    assert_eq!(
        status(&rg, balance("a2")).await,
        Some(403),
        "not u1's account"
    );
    rg.stop().await;
}

#[tokio::test]
async fn twenty_configmap_swaps_under_continuous_checks_fail_no_check() {
    let (mut ws, rg, _) = start_ws(&format!("reload: {{ poll_ms: {} }}", poll_ms())).await;
    let rg = Arc::new(rg);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (rg, stop, done, failed) = (rg.clone(), stop.clone(), done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut client = rg.client().await;
            while !stop.load(Ordering::Relaxed) {
                let answer = client.check(balance("a1")).await;
                let ok = match answer.map(|r| r.into_inner().http_response) {
                    Ok(Some(HttpResponse::OkResponse(_))) => true,
                    Ok(Some(HttpResponse::DeniedResponse(d))) => {
                        d.status.is_some_and(|s| s.code == 403)
                    }
                    _ => false,
                };
                done.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let base = example_policies();
    let forbidding = with(base.clone(), "forbid-balance.cedar", "forbid-balance.cedar");
    for i in 1..=20 {
        let (files, expect) = if i % 2 == 1 {
            (&forbidding, 403)
        } else {
            (&base, 200)
        };
        let swapped = ws.policies.swap(files);
        assert!(swapped.is_ok(), "swap {i}: {swapped:?}");
        assert!(
            eventually(wait(), || async {
                status(&rg, balance("a1")).await == Some(expect)
            })
            .await,
            "swap {i} never took effect"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let text = scrape(&rg).await;
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed Checks");
    assert!(done.load(Ordering::Relaxed) > 20, "Checks kept flowing");
    assert_eq!(metric(&text, RELOADS_OK), 20.0, "{text}");
    assert_eq!(metric(&text, RELOADS_FAILED), 0.0, "{text}");
    if let Ok(rg) = Arc::try_unwrap(rg) {
        rg.stop().await;
    }
}

#[tokio::test]
async fn a_trigger_reloads_when_polling_is_off() {
    // poll_ms 0: only SIGHUP (Reloader::trigger) reloads.
    let (mut ws, rg, reloader) = start_ws("reload: { poll_ms: 0 }").await;
    let forbidding = with(
        example_policies(),
        "forbid-balance.cedar",
        "forbid-balance.cedar",
    );
    assert!(ws.policies.swap(&forbidding).is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&rg, balance("a1")).await, Some(200), "no polling");
    reloader.trigger();
    assert!(
        eventually(wait(), || async {
            status(&rg, balance("a1")).await == Some(403)
        })
        .await,
        "the triggered reload never took effect"
    );
    rg.stop().await;
}

#[tokio::test]
async fn unchanged_inputs_are_not_reloaded() {
    let (_ws, rg, reloader) = start_ws("reload: { poll_ms: 0 }").await;
    assert!(matches!(
        reloader.reload_now(false).await,
        ReloadOutcome::Unchanged
    ));
    assert!(matches!(
        reloader.reload_now(true).await,
        ReloadOutcome::Applied { policies: 1.., .. }
    ));
    rg.stop().await;
}

#[tokio::test]
async fn a_start_with_an_invalid_set_fails_with_file_and_line() {
    let sim = sim().await;
    let mut ws = Workspace::new(&sim.base_url(), "");
    let broken = with(example_policies(), "broken.cedar", "broken.cedar");
    assert!(ws.policies.swap(&broken).is_ok());
    match App::from_file(&ws.config, AuditSink::disabled()).await {
        Ok(_) => panic!("an invalid set must not start"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("broken.cedar:3:"), "{msg}");
        }
    }
    sim.shutdown().await;
}
