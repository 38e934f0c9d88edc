//! The negative cache (issue 13, item 3), through riskgate's real gRPC server against the
//! API simulator: the API's 400/404/422 for a token is remembered for
//! `risk.negative_cache.ttl`, so repeating a bogus token costs one API call, while a 403,
//! a 429 and an outage are never remembered.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::config::{Config, RiskConfig};
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use std::time::Duration;

fn balance(token: &str) -> CheckRequest {
    check(
        "GET",
        "/accounts/a1/balance",
        Some(("u1", json!({}))),
        &[("x-action-token", token)],
    )
}

fn risk_mut(c: &mut Config) -> &mut RiskConfig {
    match c.risk.as_mut() {
        Some(r) => r,
        None => panic!("example config has a risk section"),
    }
}

fn failing(status: u16) -> ScriptedAction {
    ScriptedAction {
        status: Some(status),
        ..scripted(10.0, "ALLOW", "login", Some("u1"))
    }
}

/// API calls the simulator saw for `token`.
fn calls(rg: &Running, token: &str) -> u64 {
    rg.sim.stats().per_token.get(token).copied().unwrap_or(0)
}

/// The breaker never opens in these tests: outages are counted per call.
fn no_breaker(c: &mut Config) {
    risk_mut(c).breaker.failure_threshold = 1_000;
}

#[tokio::test]
async fn a_bogus_token_sent_1000_times_costs_one_api_call() {
    // A TTL far longer than the run, so a slow (loaded) machine cannot expire the entry
    // mid-test and turn one call into two.
    let rg = start(SimConfig::default(), |c| {
        no_breaker(c);
        risk_mut(c).negative_cache.ttl = ms("RISKGATE_TEST_NEGATIVE_LONG_TTL_MS", 600_000);
    })
    .await;
    for i in 0..1_000 {
        assert_eq!(rg.status(balance("bogus")).await, 403, "check {i}");
    }
    assert_eq!(
        calls(&rg, "bogus"),
        1,
        "the simulator answers 400 to an unknown token"
    );
    rg.sim.script("not-found", failing(404));
    rg.sim.script("unprocessable", failing(422));
    for token in ["not-found", "unprocessable"] {
        for _ in 0..20 {
            assert_eq!(rg.status(balance(token)).await, 403, "{token}");
        }
        assert_eq!(calls(&rg, token), 1, "{token}");
    }
    let (_, text) = http_get(rg.admin, "/metrics").await;
    let hits = metric(&text, "riskgate_risk_negative_cache_hits_total");
    assert_eq!(hits, 999.0 + 19.0 + 19.0, "{text}");
    rg.stop().await;
}

#[tokio::test]
async fn forbidden_throttled_and_outages_are_not_cached() {
    let rg = start(SimConfig::default(), no_breaker).await;
    rg.sim.script("forbidden", failing(403));
    rg.sim.script("throttled", failing(429));
    for token in ["forbidden", "throttled"] {
        for _ in 0..3 {
            rg.status(balance(token)).await;
        }
        assert_eq!(calls(&rg, token), 3, "{token}");
    }
    // during an outage every Check asks again, and once it ends the token's answer counts
    rg.sim.set_outage(Some(503));
    for _ in 0..3 {
        rg.status(balance("later-good")).await;
    }
    assert_eq!(calls(&rg, "later-good"), 3);
    rg.sim.set_outage(None);
    rg.sim
        .script("later-good", scripted(10.0, "ALLOW", "login", Some("u1")));
    assert_eq!(rg.status(balance("later-good")).await, 200);
    rg.stop().await;
}

#[tokio::test]
async fn a_rejection_is_forgotten_after_the_ttl_and_ttl_zero_turns_it_off() {
    let ttl = ms("RISKGATE_TEST_NEGATIVE_TTL_MS", 200);
    let rg = start(SimConfig::default(), |c| {
        no_breaker(c);
        risk_mut(c).negative_cache.ttl = ttl;
    })
    .await;
    assert_eq!(rg.status(balance("bogus")).await, 403);
    assert_eq!(rg.status(balance("bogus")).await, 403);
    assert_eq!(calls(&rg, "bogus"), 1);
    tokio::time::sleep(ttl + ttl / 2).await;
    // the API may have learnt the token meanwhile
    rg.sim
        .script("bogus", scripted(10.0, "ALLOW", "login", Some("u1")));
    assert_eq!(rg.status(balance("bogus")).await, 200);
    assert_eq!(calls(&rg, "bogus"), 2);
    rg.stop().await;

    // `ttl: 0s` is the behaviour before the negative cache: every repeat calls the API
    let rg = start(SimConfig::default(), |c| {
        no_breaker(c);
        risk_mut(c).negative_cache.ttl = Duration::ZERO;
    })
    .await;
    for _ in 0..5 {
        assert_eq!(rg.status(balance("bogus")).await, 403);
    }
    assert_eq!(calls(&rg, "bogus"), 5);
    rg.stop().await;
}
