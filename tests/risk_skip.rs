//! Skipping the risk-API call when risk cannot matter (issue 13, item 4). Reproduced: every
//! unknown token costs one API call before Cedar runs, with no login — an anonymous write
//! with a fresh token included, though the shipped guardrails forbid it whatever its risk.
//! Now such a Check is denied (403) without a call, the audit line says `risk: skipped`
//! and `riskgate_risk_skipped_total` counts it; a request some risk could allow still asks.

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::audit::AuditLine;
use riskgate::decision::{DenyReason, Verdict};
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use riskgate::risk::RecommendationType;
use serde_json::{json, Value};
use std::sync::Arc;

/// API calls the simulator saw for `token`.
fn calls(rg: &Running, token: &str) -> u64 {
    rg.sim.stats().per_token.get(token).copied().unwrap_or(0)
}

fn anonymous(method: &str, path: &str, token: &str) -> CheckRequest {
    check(method, path, None, &[("x-action-token", token)])
}

fn as_u1(method: &str, path: &str, token: &str) -> CheckRequest {
    check(
        method,
        path,
        Some(("u1", json!({}))),
        &[("x-action-token", token)],
    )
}

#[tokio::test]
async fn anonymous_writes_cost_zero_api_calls() {
    let rg = start(SimConfig::default(), |_| {}).await;
    let writes = [
        ("POST", "/accounts/a1/withdraw", "fresh-withdraw"),
        ("POST", "/accounts/a1/transfer", "fresh-transfer"),
        ("PUT", "/users/u1/profile", "fresh-profile"),
    ];
    for (method, path, token) in writes {
        // scripted as a perfect recommendation: it would not help, and is never asked for
        rg.sim
            .script(token, scripted(1.0, "TRUST", "withdraw", Some("u1")));
        assert_eq!(
            rg.status(anonymous(method, path, token)).await,
            403,
            "{path}"
        );
        assert_eq!(calls(&rg, token), 0, "{path}: the API was called");
    }
    let (_, text) = http_get(rg.admin, "/metrics").await;
    let skipped: f64 = [
        "POST /accounts/{account_id}/withdraw",
        "POST /accounts/{account_id}/transfer",
        "PUT /users/{user_id}/profile",
    ]
    .iter()
    .map(|route| {
        metric(
            &text,
            &format!("riskgate_risk_skipped_total{{route=\"{route}\"}}"),
        )
    })
    .sum();
    assert_eq!(skipped, 3.0, "{text}");
    rg.stop().await;
}

#[tokio::test]
async fn a_request_some_risk_allows_still_asks_the_api() {
    let rg = start(SimConfig::default(), |_| {}).await;
    // u1's own account: allowed at low risk, so the API decides
    rg.sim
        .script("own", scripted(10.0, "ALLOW", "withdraw", Some("u1")));
    assert_eq!(
        rg.status(as_u1("POST", "/accounts/a1/withdraw", "own"))
            .await,
        200
    );
    assert_eq!(calls(&rg, "own"), 1);
    // and at high risk it is denied after the call
    rg.sim
        .script("own-risky", scripted(90.0, "ALLOW", "withdraw", Some("u1")));
    assert_eq!(
        rg.status(as_u1("POST", "/accounts/a1/withdraw", "own-risky"))
            .await,
        403
    );
    assert_eq!(calls(&rg, "own-risky"), 1);
    // u2's account: no risk makes u1 its owner
    rg.sim
        .script("other", scripted(10.0, "ALLOW", "withdraw", Some("u1")));
    assert_eq!(
        rg.status(as_u1("POST", "/accounts/a2/withdraw", "other"))
            .await,
        403
    );
    assert_eq!(calls(&rg, "other"), 0);
    rg.stop().await;
}

#[tokio::test]
async fn a_skipped_check_says_so_in_its_audit_line() -> Result<(), serde_json::Error> {
    let config = example_config("http://127.0.0.1:9");
    let risk = Arc::new(ScriptedRisk::default());
    let decider = decider_with(&config, risk.clone());
    let d = decider
        .decide(&request("POST", "/accounts/a1/withdraw", Some("fresh")))
        .await;
    assert_eq!(d.verdict, Verdict::Deny(DenyReason::PolicyDeny));
    assert_eq!(d.verdict.http_status(), 403);
    assert_eq!(risk.calls(), 0);
    let line: Value =
        serde_json::from_str(&serde_json::to_string(&AuditLine::from_decision(&d, "t"))?)?;
    assert_eq!(line["risk"], "skipped");
    assert_eq!(line["decision"], "policy_deny");
    assert_eq!(line["policies"], json!(["forbid-anonymous-writes"]));
    assert_eq!(line["score"], Value::Null);

    // a Check that asks the API has no `risk: skipped`
    risk.set(
        "asked",
        Ok(rec(10.0, RecommendationType::Allow, "withdraw", Some("u1"))),
    );
    let d = decider
        .decide(&with_user(
            request("POST", "/accounts/a1/withdraw", Some("asked")),
            "u1",
            json!({}),
        ))
        .await;
    assert_eq!(d.verdict, Verdict::Allow);
    let line: Value =
        serde_json::from_str(&serde_json::to_string(&AuditLine::from_decision(&d, "t"))?)?;
    assert_eq!(line["risk"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn a_cached_recommendation_is_used_not_skipped() {
    let config = example_config("http://127.0.0.1:9");
    let risk = Arc::new(ScriptedRisk::default());
    let decider = decider_with(&config, risk.clone());
    risk.set(
        "shared",
        Ok(rec(10.0, RecommendationType::Allow, "withdraw", Some("u1"))),
    );
    let u1 = with_user(
        request("POST", "/accounts/a1/withdraw", Some("shared")),
        "u1",
        json!({}),
    );
    assert_eq!(decider.decide(&u1).await.verdict, Verdict::Allow);
    assert_eq!(risk.calls(), 1);
    // the same token, now cached, on a request Cedar denies whatever the risk: the cached
    // recommendation costs nothing and is used as before
    let d = decider
        .decide(&request("POST", "/accounts/a1/withdraw", Some("shared")))
        .await;
    assert!(!d.risk_skipped);
    assert!(d.risk.as_ref().is_some_and(|r| r.cache_hit), "{d:?}");
    assert!(matches!(d.verdict, Verdict::Deny(_)), "{d:?}");
    assert_eq!(risk.calls(), 1);
}

#[tokio::test]
async fn nothing_is_skipped_while_a_shadow_set_is_compared() {
    let mut config = example_config("http://127.0.0.1:9");
    config.policies.shadow_dir = Some(repo("policies"));
    let risk = Arc::new(ScriptedRisk::default());
    let decider = decider_with(&config, risk.clone());
    let d = decider
        .decide(&request("POST", "/accounts/a1/withdraw", Some("fresh")))
        .await;
    assert!(matches!(d.verdict, Verdict::Deny(_)), "{d:?}");
    assert!(!d.risk_skipped);
    assert_eq!(risk.calls(), 1, "the shadow comparison needs the real risk");
}

#[tokio::test]
async fn a_remembered_rejection_is_used_not_skipped() {
    let config = example_config("http://127.0.0.1:9");
    let risk = Arc::new(ScriptedRisk::default()); // answers 400 to every token
    let decider = decider_with(&config, risk.clone());
    let read = with_user(
        request("GET", "/accounts/a1/balance", Some("bogus")),
        "u1",
        json!({}),
    );
    let d = decider.decide(&read).await;
    assert_eq!(d.verdict, Verdict::Deny(DenyReason::TokenRejected));
    assert_eq!(risk.calls(), 1);
    // the rejection is remembered: the anonymous write answers from it, as before
    let d = decider
        .decide(&request("POST", "/accounts/a1/withdraw", Some("bogus")))
        .await;
    assert_eq!(d.verdict, Verdict::Deny(DenyReason::TokenRejected));
    assert!(!d.risk_skipped);
    assert_eq!(risk.calls(), 1);
}
