//! API budgets (issue 13, item 2), through riskgate's real gRPC server against the API
//! simulator: each source (principal when authenticated, else client address) may cause at
//! most `risk.call_budget.calls` risk-API calls per window, then gets 429 + `retry-after`
//! without a call; cached answers cost nothing; `risk.max_concurrent_calls` caps the calls
//! in flight, and its overflow and the API's own 429 are 503 + `retry-after` — never a fail
//! mode, never counted by the breaker.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::config::FailMode;
use riskgate::config::{Config, RiskConfig};
use riskgate::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use riskgate::pb::envoy::service::auth::v3::attribute_context::Peer;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use std::time::Duration;

/// The per-source budget in these tests (the shipped default is 60 a minute).
const CALLS: u32 = 5;

fn risk_mut(c: &mut Config) -> &mut RiskConfig {
    match c.risk.as_mut() {
        Some(r) => r,
        None => panic!("example config has a risk section"),
    }
}

/// `CALLS` per hour, so no window ends during a test; outages never open the breaker.
fn small_budget(c: &mut Config) {
    let r = risk_mut(c);
    r.call_budget.calls = CALLS;
    r.call_budget.window = Duration::from_secs(3_600);
    r.breaker.failure_threshold = 1_000;
}

/// `GET /accounts/a1/balance` (u1's account, risk optional) with `token`, from the TCP
/// peer `ip`, as `user` when given. Only u1 may read it at some risk: for anyone else
/// Cedar denies whatever the risk, so the API is not asked (the risk skip) and nothing is
/// charged — use [`login`] for them.
fn balance(ip: &str, user: Option<&str>, token: &str) -> CheckRequest {
    request("GET", "/accounts/a1/balance", ip, user, token)
}

/// `POST /login` with `token` from `ip`, as `user` when given: a request the shipped
/// policies allow for anyone at some risk, so a fresh token needs an API call.
fn login(ip: &str, user: Option<&str>, token: &str) -> CheckRequest {
    request("POST", "/login", ip, user, token)
}

fn request(method: &str, path: &str, ip: &str, user: Option<&str>, token: &str) -> CheckRequest {
    let mut c = check(
        method,
        path,
        user.map(|u| (u, json!({}))),
        &[("x-action-token", token)],
    );
    if let Some(attrs) = c.attributes.as_mut() {
        attrs.source = Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
    }
    c
}

/// The HTTP status riskgate answers, and its `retry-after` header if any.
async fn answer(rg: &Running, req: CheckRequest) -> (u16, Option<u32>) {
    let mut client = rg.client().await;
    match client
        .check(req)
        .await
        .map(|r| r.into_inner().http_response)
    {
        Ok(Some(HttpResponse::OkResponse(_))) => (200, None),
        Ok(Some(HttpResponse::DeniedResponse(d))) => {
            let status = d.status.map_or(0, |s| u16::try_from(s.code).unwrap_or(0));
            let retry_after = d
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| h.value.parse().ok());
            (status, retry_after)
        }
        other => panic!("unexpected answer: {other:?}"),
    }
}

fn api_calls(rg: &Running) -> u64 {
    rg.sim.stats().recommendation_requests
}

fn random_token() -> String {
    format!("rnd-{:032x}", rand::random::<u128>())
}

async fn metrics(rg: &Running) -> String {
    http_get(rg.admin, "/metrics").await.1
}

/// The issue's flood: random tokens from one address, no login. Today every one costs an
/// API call; with the budget, `CALLS` do and the rest are 429 + `retry-after`.
#[tokio::test]
async fn random_tokens_from_one_address_cost_at_most_the_budget() {
    let rg = start(SimConfig::default(), small_budget).await;
    for i in 0..CALLS {
        let (status, _) = answer(&rg, login("192.0.2.1", None, &random_token())).await;
        assert_eq!(
            status, 403,
            "token {i}: the simulator rejects unknown tokens"
        );
    }
    for i in 0..20 {
        let (status, retry_after) = answer(&rg, login("192.0.2.1", None, &random_token())).await;
        assert_eq!(status, 429, "token {} over the budget", CALLS + i);
        let retry_after = retry_after.unwrap_or(0);
        assert!(
            (1..=3_600).contains(&retry_after),
            "retry-after is the rest of the window: {retry_after}"
        );
    }
    assert_eq!(api_calls(&rg), u64::from(CALLS), "no call past the budget");
    // another address has a budget of its own
    let (status, _) = answer(&rg, login("198.51.100.7", None, &random_token())).await;
    assert_eq!(status, 403);
    assert_eq!(api_calls(&rg), u64::from(CALLS) + 1);
    let text = metrics(&rg).await;
    assert_eq!(
        metric(
            &text,
            r#"riskgate_risk_calls_refused_total{cause="budget"}"#
        ),
        20.0,
        "{text}"
    );
    assert!(
        text.contains(r#"reason="risk_budget_exceeded""#),
        "counted by reason: {text}"
    );
    rg.stop().await;
}

/// An authenticated caller is budgeted by principal: changing address does not buy more
/// calls, and it does not spend the budget of the address it comes from.
#[tokio::test]
async fn an_authenticated_caller_is_budgeted_by_principal_not_address() {
    let rg = start(SimConfig::default(), small_budget).await;
    for i in 0..CALLS {
        let ip = format!("192.0.2.{}", i + 1);
        let (status, _) = answer(&rg, balance(&ip, Some("u1"), &random_token())).await;
        assert_eq!(status, 403, "call {i} from {ip}");
    }
    let (status, retry_after) =
        answer(&rg, balance("203.0.113.9", Some("u1"), &random_token())).await;
    assert_eq!(status, 429, "u1's budget is spent whatever the address");
    assert!(retry_after.is_some());
    // u2 and an anonymous caller at u1's first address still have theirs
    let (status, _) = answer(&rg, login("192.0.2.1", Some("u2"), &random_token())).await;
    assert_eq!(status, 403);
    let (status, _) = answer(&rg, login("192.0.2.1", None, &random_token())).await;
    assert_eq!(status, 403);
    assert_eq!(api_calls(&rg), u64::from(CALLS) + 2);
    rg.stop().await;
}

/// A cached recommendation and a cached rejection cost nothing: only Checks that reach the
/// API are charged.
#[tokio::test]
async fn cached_answers_are_not_charged() {
    let rg = start(SimConfig::default(), small_budget).await;
    rg.sim
        .script("good", scripted(10.0, "ALLOW", "login", Some("u1")));
    for i in 0..(CALLS * 4) {
        let (status, _) = answer(&rg, balance("192.0.2.1", Some("u1"), "good")).await;
        assert_eq!(status, 200, "cached recommendation, check {i}");
        let (status, _) = answer(&rg, balance("192.0.2.1", Some("u1"), "bogus")).await;
        assert_eq!(status, 403, "cached rejection, check {i}");
    }
    assert_eq!(api_calls(&rg), 2, "one call per token");
    // two of u1's calls are spent: three more, then 429
    for i in 2..CALLS {
        let (status, _) = answer(&rg, balance("192.0.2.1", Some("u1"), &random_token())).await;
        assert_eq!(status, 403, "call {i}");
    }
    let (status, _) = answer(&rg, balance("192.0.2.1", Some("u1"), &random_token())).await;
    assert_eq!(status, 429);
    // and an over-budget caller is still answered from the cache
    let (status, _) = answer(&rg, balance("192.0.2.1", Some("u1"), "good")).await;
    assert_eq!(status, 200);
    assert_eq!(api_calls(&rg), u64::from(CALLS));
    rg.stop().await;
}

/// The API's 429 is back-pressure, not an outage: 503 + the API's `retry-after` (the
/// simulator sends 1; riskgate's own `retry_after` is 5), whatever the fail mode — `open`
/// would answer 200 — and the breaker never opens.
#[tokio::test]
async fn the_apis_429_is_503_with_retry_after_never_a_fail_mode() {
    let rg = start(SimConfig::default(), |c| {
        let r = risk_mut(c);
        r.fail_mode = FailMode::Open;
        r.retry_after = Duration::from_secs(5);
        r.breaker.failure_threshold = 2;
        for route in &mut c.routes {
            route.fail_mode = None;
        }
    })
    .await;
    rg.sim.script(
        "throttled",
        ScriptedAction {
            status: Some(429),
            ..scripted(10.0, "ALLOW", "login", Some("u1"))
        },
    );
    for i in 0..5 {
        let got = answer(&rg, balance("192.0.2.1", Some("u1"), "throttled")).await;
        assert_eq!(got, (503, Some(1)), "check {i}");
    }
    assert_eq!(api_calls(&rg), 5, "a 429 is never cached");
    let text = metrics(&rg).await;
    assert_eq!(
        metric(&text, "riskgate_risk_breaker_state"),
        0.0,
        "closed: {text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"riskgate_risk_calls_refused_total{cause="api_throttled"}"#
        ),
        5.0,
        "{text}"
    );
    // the API is still asked for everyone else
    rg.sim
        .script("good", scripted(10.0, "ALLOW", "login", Some("u1")));
    assert_eq!(
        answer(&rg, balance("192.0.2.1", Some("u1"), "good")).await,
        (200, None)
    );
    rg.stop().await;
}

/// Calls over `risk.max_concurrent_calls` are not made: 503 + `retry-after`, never the
/// fail mode, not counted by the breaker.
#[tokio::test]
async fn calls_over_the_concurrency_cap_are_503_and_not_counted_by_the_breaker() {
    let delay = ms("RISKGATE_TEST_SLOW_API_MS", 300);
    let rg = start(SimConfig::default(), |c| {
        let r = risk_mut(c);
        r.max_concurrent_calls = 2;
        r.budget = delay * 10;
        r.fail_mode = FailMode::Open;
        r.retry_after = Duration::from_secs(4);
        r.breaker.failure_threshold = 1;
        for route in &mut c.routes {
            route.fail_mode = None;
        }
    })
    .await;
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    for t in ["slow-1", "slow-2", "slow-3"] {
        rg.sim.script(
            t,
            ScriptedAction {
                delay_ms,
                ..scripted(10.0, "ALLOW", "login", Some("u1"))
            },
        );
    }
    let (a, b) = (
        answer(&rg, balance("192.0.2.1", Some("u1"), "slow-1")),
        answer(&rg, balance("192.0.2.1", Some("u1"), "slow-2")),
    );
    let third = async {
        // the first two calls are out (the simulator counts them on arrival)
        while api_calls(&rg) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        answer(&rg, balance("192.0.2.1", Some("u1"), "slow-3")).await
    };
    let (a, b, c) = tokio::join!(a, b, third);
    assert_eq!((a.0, b.0), (200, 200), "the first two are within the cap");
    assert_eq!(
        c,
        (503, Some(4)),
        "the third is over it, and not failed open"
    );
    assert_eq!(api_calls(&rg), 2, "the third call was not made");
    let text = metrics(&rg).await;
    assert_eq!(metric(&text, "riskgate_risk_breaker_state"), 0.0, "{text}");
    assert_eq!(
        metric(
            &text,
            r#"riskgate_risk_calls_refused_total{cause="concurrency"}"#
        ),
        1.0,
        "{text}"
    );
    // once the calls are back, the cap lets the next one through
    assert_eq!(
        answer(&rg, balance("192.0.2.1", Some("u1"), "slow-3"))
            .await
            .0,
        200
    );
    rg.stop().await;
}

/// `calls: 0` turns the budget off (the behaviour before it).
#[tokio::test]
async fn a_zero_budget_is_no_budget() {
    let rg = start(SimConfig::default(), |c| {
        small_budget(c);
        risk_mut(c).call_budget.calls = 0;
    })
    .await;
    for i in 0..(CALLS * 2) {
        let (status, _) = answer(&rg, login("192.0.2.1", None, &random_token())).await;
        assert_eq!(status, 403, "token {i}");
    }
    assert_eq!(api_calls(&rg), u64::from(CALLS * 2));
    rg.stop().await;
}
