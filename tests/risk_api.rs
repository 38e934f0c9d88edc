//! The risk client, token manager, cache and breaker against the API simulator on loopback,
//! through riskgate's real gRPC server.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::config::{Config, FailMode};
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use std::time::{Duration, Instant};

fn u1() -> Option<(&'static str, serde_json::Value)> {
    Some(("u1", json!({})))
}

fn balance(token: &str) -> CheckRequest {
    check(
        "GET",
        "/accounts/a1/balance",
        u1(),
        &[("x-action-token", token)],
    )
}

fn withdraw(token: &str) -> CheckRequest {
    check(
        "POST",
        "/accounts/a1/withdraw",
        u1(),
        &[("x-action-token", token)],
    )
}

fn read_ok() -> ScriptedAction {
    scripted(10.0, "ALLOW", "login", Some("u1"))
}

fn risk_mut(c: &mut Config) -> &mut riskgate::config::RiskConfig {
    match c.risk.as_mut() {
        Some(r) => r,
        None => panic!("example config has a risk section"),
    }
}

#[tokio::test]
async fn token_is_refreshed_before_expiry_so_no_check_sees_a_401() {
    // A 5 s token lifetime (refreshed at 80 %, 4 s): Checks run past the first expiry.
    let lifetime = ms("RISKGATE_TEST_TOKEN_LIFETIME_MS", 5_000);
    let rg = start(
        SimConfig {
            token_lifetime_ms: lifetime.as_millis() as u64,
            ..SimConfig::default()
        },
        |c| risk_mut(c).token_refresh.min_interval = Duration::from_millis(200),
    )
    .await;
    let until = Instant::now() + lifetime + lifetime / 2;
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let token = format!("t{n}");
        rg.sim.script(&token, read_ok());
        assert_eq!(rg.status(balance(&token)).await, 200, "check {n}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stats = rg.sim.stats();
    assert_eq!(
        stats.unauthorized, 0,
        "a Check met an expired token: {stats:?}"
    );
    assert!(
        stats.token_requests >= 2,
        "expected a background refresh: {stats:?}"
    );
    rg.stop().await;
}

#[tokio::test]
async fn a_401_forces_one_refresh_and_one_retry() {
    let rg = start(SimConfig::default(), |_| {}).await;
    rg.sim.script("a", read_ok());
    rg.sim.script("b", read_ok());
    assert_eq!(rg.status(balance("a")).await, 200);
    rg.sim.revoke_tokens();
    assert_eq!(rg.status(balance("b")).await, 200);
    let stats = rg.sim.stats();
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
    assert_eq!(stats.token_requests, 2, "{stats:?}");
    rg.stop().await;
}

#[tokio::test]
async fn secret_file_is_reread_at_refresh() {
    let secret =
        std::env::temp_dir().join(format!("riskgate-rotating-secret-{}", std::process::id()));
    let _ = std::fs::write(&secret, "old-wrong-secret");
    let path = secret.clone();
    let rg = start(SimConfig::default(), move |c| {
        risk_mut(c).client_secret_file = Some(path)
    })
    .await;
    rg.sim.script("a", read_ok());
    rg.sim
        .script("w", scripted(10.0, "ALLOW", "withdraw", Some("u1")));
    // Wrong secret: no bearer token, an outage (fail mode closed on withdraw).
    assert_eq!(rg.status(withdraw("w")).await, 503);
    let _ = std::fs::write(&secret, "sim-secret\n");
    assert_eq!(rg.status(withdraw("w")).await, 200);
    rg.stop().await;
}

#[tokio::test]
async fn one_hundred_concurrent_checks_make_one_api_call() {
    let rg = start(SimConfig::default(), |_| {}).await;
    let mut slow = read_ok();
    slow.delay_ms = 100;
    rg.sim.script("shared", slow);
    let client = rg.client().await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.check(balance("shared")).await.map(|r| r.into_inner()) })
        })
        .collect();
    for t in tasks {
        let answer = match t.await {
            Ok(Ok(a)) => a,
            other => panic!("check failed: {other:?}"),
        };
        assert!(matches!(
            answer.http_response,
            Some(HttpResponse::OkResponse(_))
        ));
    }
    assert_eq!(rg.sim.stats().per_token.get("shared"), Some(&1));
    rg.stop().await;
}

#[tokio::test]
async fn expired_cache_entry_is_fetched_again() {
    let rg = start(SimConfig::default(), |c| {
        risk_mut(c).cache.ttl = Duration::from_millis(150)
    })
    .await;
    rg.sim.script("t", read_ok());
    assert_eq!(rg.status(balance("t")).await, 200);
    assert_eq!(rg.status(balance("t")).await, 200);
    assert_eq!(rg.sim.stats().per_token.get("t"), Some(&1));
    tokio::time::sleep(ms("RISKGATE_TEST_TTL_WAIT_MS", 300)).await;
    assert_eq!(rg.status(balance("t")).await, 200);
    assert_eq!(rg.sim.stats().per_token.get("t"), Some(&2));
    rg.stop().await;
}

#[tokio::test]
async fn binding_violations_are_403() {
    let rg = start(SimConfig::default(), |_| {}).await;
    rg.sim
        .script("login", scripted(5.0, "ALLOW", "login", Some("u1")));
    rg.sim
        .script("u2", scripted(5.0, "ALLOW", "withdraw", Some("u2")));
    rg.sim
        .script("nouser", scripted(5.0, "ALLOW", "withdraw", None));
    rg.sim.script(
        "old",
        ScriptedAction {
            age_ms: 301_000,
            ..scripted(5.0, "ALLOW", "withdraw", Some("u1"))
        },
    );
    rg.sim
        .script("once", scripted(5.0, "ALLOW", "withdraw", Some("u1")));
    for token in ["login", "u2", "nouser", "old"] {
        assert_eq!(rg.status(withdraw(token)).await, 403, "{token}");
    }
    assert_eq!(rg.status(withdraw("once")).await, 200);
    assert_eq!(
        rg.status(withdraw("once")).await,
        403,
        "max_uses 1 on a write route"
    );
    rg.stop().await;
}

#[tokio::test]
async fn client_token_problems_deny_even_when_failing_open() {
    let rg = start(SimConfig::default(), |c| {
        risk_mut(c).fail_mode = FailMode::Open
    })
    .await;
    // missing token
    assert_eq!(
        rg.status(check("POST", "/accounts/a1/withdraw", u1(), &[]))
            .await,
        401
    );
    // garbage token: the API answers 400 for it
    assert_eq!(rg.status(withdraw("not-a-real-token")).await, 403);
    // an explicit 400 from the API
    rg.sim.script(
        "bad",
        ScriptedAction {
            status: Some(400),
            ..read_ok()
        },
    );
    assert_eq!(rg.status(withdraw("bad")).await, 403);
    // 404 likewise
    rg.sim.script(
        "gone",
        ScriptedAction {
            status: Some(404),
            ..read_ok()
        },
    );
    assert_eq!(rg.status(withdraw("gone")).await, 403);
    rg.stop().await;
}

/// Each outage kind, under each fail mode: the withdraw (write) and balance (read) answers.
#[tokio::test]
async fn each_outage_kind_under_each_fail_mode() {
    let kinds: Vec<(&str, ScriptedAction)> = vec![
        (
            "status_500",
            ScriptedAction {
                status: Some(500),
                ..read_ok()
            },
        ),
        (
            "status_503",
            ScriptedAction {
                status: Some(503),
                ..read_ok()
            },
        ),
        // a 429 is back-pressure, not an outage: 503 under every mode (tests/api_budget.rs)
        (
            "garbage",
            ScriptedAction {
                garbage: true,
                ..read_ok()
            },
        ),
        (
            "missing_field",
            ScriptedAction {
                omit: vec!["context.action_id".into()],
                ..read_ok()
            },
        ),
        (
            "score_out_of_range",
            ScriptedAction {
                risk_score: json!(140),
                ..read_ok()
            },
        ),
        (
            "score_not_a_number",
            ScriptedAction {
                risk_score: json!("low"),
                ..read_ok()
            },
        ),
        (
            "slow",
            ScriptedAction {
                delay_ms: 1_000,
                ..read_ok()
            },
        ),
    ];
    for (mode, write, read) in [
        (FailMode::Closed, 503, 503),
        (FailMode::ReadOnly, 403, 200),
        (FailMode::Open, 200, 200),
    ] {
        let rg = start(SimConfig::default(), move |c| {
            let r = risk_mut(c);
            r.fail_mode = mode;
            r.budget = Duration::from_millis(150);
            r.breaker.failure_threshold = 1_000;
            for route in &mut c.routes {
                route.fail_mode = None;
            }
        })
        .await;
        for (name, action) in &kinds {
            let (w, r) = (format!("{name}-w"), format!("{name}-r"));
            rg.sim.script(
                &w,
                ScriptedAction {
                    action_type: "withdraw".into(),
                    ..action.clone()
                },
            );
            rg.sim.script(&r, action.clone());
            assert_eq!(
                rg.status(withdraw(&w)).await,
                write,
                "{name} under {mode:?}, write"
            );
            assert_eq!(
                rg.status(balance(&r)).await,
                read,
                "{name} under {mode:?}, read"
            );
        }
        rg.stop().await;
    }
    // Connection refused: nothing listens at the API address.
    let rg = start(SimConfig::default(), |c| {
        risk_mut(c).base_url = Some("http://127.0.0.1:9".into())
    })
    .await;
    assert_eq!(rg.status(withdraw("x")).await, 503);
    rg.stop().await;
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_recovers() {
    let open_ms = ms("RISKGATE_TEST_BREAKER_OPEN_MS", 300);
    let rg = start(SimConfig::default(), move |c| {
        let r = risk_mut(c);
        r.breaker.failure_threshold = 3;
        r.breaker.open = open_ms;
    })
    .await;
    rg.sim.set_outage(Some(503));
    for i in 0..3 {
        assert_eq!(rg.status(withdraw(&format!("o{i}"))).await, 503);
    }
    let calls = rg.sim.stats().recommendation_requests;
    assert_eq!(rg.status(withdraw("o3")).await, 503);
    assert_eq!(
        rg.sim.stats().recommendation_requests,
        calls,
        "open breaker must not call the API"
    );
    rg.sim.set_outage(None);
    tokio::time::sleep(open_ms + Duration::from_millis(50)).await;
    rg.sim
        .script("ok", scripted(5.0, "ALLOW", "withdraw", Some("u1")));
    assert_eq!(
        rg.status(withdraw("ok")).await,
        200,
        "half-open probe succeeds and closes"
    );
    rg.sim
        .script("ok2", scripted(5.0, "ALLOW", "withdraw", Some("u1")));
    assert_eq!(rg.status(withdraw("ok2")).await, 200);
    rg.stop().await;
}

#[tokio::test]
async fn slow_api_beyond_the_budget_is_answered_within_the_deadline() {
    // Budget 1 s, but Envoy's grpc-timeout is shorter: riskgate must answer before the
    // deadline, keeping `deadline_reserve` for itself (wide here, for loaded CI machines).
    let deadline = ms("RISKGATE_TEST_DEADLINE_MS", 400);
    let rg = start(SimConfig::default(), |c| {
        let r = risk_mut(c);
        r.budget = Duration::from_millis(1_000);
        r.deadline_reserve = Duration::from_millis(150);
    })
    .await;
    rg.sim.script(
        "slow",
        ScriptedAction {
            delay_ms: 3_000,
            ..scripted(5.0, "ALLOW", "withdraw", Some("u1"))
        },
    );
    let mut client = rg.client().await;
    let mut req = tonic::Request::new(withdraw("slow"));
    req.set_timeout(deadline);
    let started = Instant::now();
    let answer = client.check(req).await;
    let elapsed = started.elapsed();
    let code = match answer.map(|r| r.into_inner().http_response) {
        Ok(Some(HttpResponse::DeniedResponse(d))) => d.status.map_or(0, |s| s.code),
        other => panic!("expected riskgate's own fail-mode answer, got {other:?}"),
    };
    assert_eq!(code, 503);
    assert!(elapsed < deadline, "answered after {elapsed:?}");
    // …and it did wait for the API until the budget the deadline allowed.
    assert!(
        elapsed >= deadline - Duration::from_millis(150) - Duration::from_millis(20),
        "gave up early: {elapsed:?}"
    );
    rg.stop().await;
}

/// The metrics are handed their observers when the app is built: real API calls (not cache
/// hits), the breaker and cache gauges, and the audit drop count all show on `/metrics`.
#[tokio::test]
async fn metrics_see_api_calls_breaker_cache_and_audit_drops() {
    let rg = start(SimConfig::default(), |_| {}).await;
    rg.sim.script("m", read_ok());
    assert_eq!(rg.status(balance("m")).await, 200);
    assert_eq!(rg.status(balance("m")).await, 200, "cache hit");
    let (code, text) = http_get(rg.admin, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        metric(&text, r#"riskgate_risk_api_requests_total{result="ok"} "#),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "riskgate_risk_api_duration_seconds_count "),
        1.0,
        "{text}"
    );
    assert!(text.contains("\nriskgate_risk_breaker_state 0\n"), "{text}");
    assert!(text.contains("\nriskgate_risk_cache_entries "), "{text}");
    assert!(
        text.contains("\nriskgate_audit_dropped_lines_total 0\n"),
        "{text}"
    );
    rg.stop().await;
}
