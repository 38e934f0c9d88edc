//! Every row of DESIGN §1.7's answer table through the real gRPC server on a loopback port,
//! with a tonic client as Envoy's stand-in and the risk API simulator behind riskgate.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::config::FailMode;
use riskgate::pb::envoy::config::core::v3::HeaderValueOption;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::CheckResponse;
use serde_json::json;

fn header<'a>(headers: &'a [HeaderValueOption], key: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == key)
        .map(|h| h.value.as_str())
}

/// (HTTP status, answer headers, body, headers for the upstream, headers removed).
struct Answer {
    grpc_code: i32,
    status: u16,
    headers: Vec<HeaderValueOption>,
    body: String,
    upstream: Vec<HeaderValueOption>,
    removed: Vec<String>,
}

fn answer(r: CheckResponse) -> Answer {
    let grpc_code = r.status.map_or(-1, |s| s.code);
    match r.http_response {
        Some(HttpResponse::OkResponse(ok)) => Answer {
            grpc_code,
            status: 200,
            headers: vec![],
            body: String::new(),
            upstream: ok.headers,
            removed: ok.headers_to_remove,
        },
        Some(HttpResponse::DeniedResponse(d)) => Answer {
            grpc_code,
            status: d.status.map_or(0, |s| s.code as u16),
            headers: d.headers,
            body: d.body,
            upstream: vec![],
            removed: vec![],
        },
        _ => panic!("no http response"),
    }
}

async fn ask(rg: &Running, req: riskgate::pb::envoy::service::auth::v3::CheckRequest) -> Answer {
    let mut client = rg.client().await;
    match client.check(req).await {
        Ok(r) => answer(r.into_inner()),
        Err(e) => panic!("Check returned a gRPC error instead of an answer: {e}"),
    }
}

fn sim_with(script: &[(&str, ScriptedAction)]) -> SimConfig {
    SimConfig {
        script: script
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..SimConfig::default()
    }
}

fn u1() -> Option<(&'static str, serde_json::Value)> {
    Some(("u1", json!({})))
}

#[tokio::test]
async fn every_row_of_the_answer_table() {
    let mut challenge = scripted(20.0, "CHALLENGE", "withdraw", Some("u1"));
    challenge.challenge_type = Some("email_otp".into());
    let rg = start(
        sim_with(&[
            ("low", scripted(12.5, "ALLOW", "withdraw", Some("u1"))),
            ("low2", scripted(12.5, "ALLOW", "withdraw", Some("u1"))),
            ("login-token", scripted(12.5, "ALLOW", "login", Some("u1"))),
            ("deny", scripted(10.0, "DENY", "withdraw", Some("u1"))),
            ("high", scripted(91.0, "ALLOW", "withdraw", Some("u1"))),
            ("challenge", challenge.clone()),
            ("challenge2", challenge),
            (
                "down",
                ScriptedAction {
                    status: Some(503),
                    ..scripted(1.0, "ALLOW", "withdraw", Some("u1"))
                },
            ),
        ]),
        |_| {},
    )
    .await;

    // malformed CheckRequest → 403
    let a = ask(
        &rg,
        riskgate::pb::envoy::service::auth::v3::CheckRequest::default(),
    )
    .await;
    assert_eq!((a.grpc_code, a.status), (7, 403));
    // non-canonical path → 403; method override → 403
    assert_eq!(
        ask(&rg, check("GET", "/accounts/a1/../a2/balance", u1(), &[]))
            .await
            .status,
        403
    );
    assert_eq!(
        ask(
            &rg,
            check(
                "GET",
                "/accounts/a1/balance",
                u1(),
                &[("x-http-method-override", "DELETE")]
            )
        )
        .await
        .status,
        403
    );
    // no route, default deny → 403
    assert_eq!(
        ask(&rg, check("GET", "/nowhere", u1(), &[])).await.status,
        403
    );
    // risk required, no token → 401 asking for the SDK
    let a = ask(&rg, check("POST", "/accounts/a1/withdraw", u1(), &[])).await;
    assert_eq!(a.status, 401);
    assert_eq!(header(&a.headers, "x-risk-challenge"), Some("action_token"));
    // token bound to another action → 403; API 4xx (unknown token) → 403
    assert_eq!(
        ask(
            &rg,
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "login-token")]
            )
        )
        .await
        .status,
        403
    );
    assert_eq!(
        ask(
            &rg,
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "never-scripted")]
            )
        )
        .await
        .status,
        403
    );
    // DENY → 403; high band → 403
    assert_eq!(
        ask(
            &rg,
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "deny")]
            )
        )
        .await
        .status,
        403
    );
    let a = ask(
        &rg,
        check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "high")],
        ),
    )
    .await;
    assert_eq!(a.status, 403);
    assert!(
        !a.body.contains("high") && !a.body.contains("score") && !a.body.contains("risk"),
        "deny body leaks: {}",
        a.body
    );
    // Cedar deny (u1 on a2) → 403
    assert_eq!(
        ask(
            &rg,
            check(
                "POST",
                "/accounts/a2/withdraw",
                u1(),
                &[("x-action-token", "low")]
            )
        )
        .await
        .status,
        403
    );
    // Cedar allow + CHALLENGE, no step-up → 401 with challenge headers
    let a = ask(
        &rg,
        check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "challenge")],
        ),
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(header(&a.headers, "x-risk-challenge"), Some("email_otp"));
    assert!(header(&a.headers, "www-authenticate").is_some());
    // Cedar allow + CHALLENGE satisfied by the amr claim → 200
    let mfa = Some(("u1", json!({ "amr": ["pwd", "mfa"] })));
    assert_eq!(
        ask(
            &rg,
            check(
                "POST",
                "/accounts/a1/withdraw",
                mfa,
                &[("x-action-token", "challenge2")]
            )
        )
        .await
        .status,
        200
    );
    // risk API outage, fail mode closed → 503 + retry-after
    let a = ask(
        &rg,
        check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "down")],
        ),
    )
    .await;
    assert_eq!(a.status, 503);
    assert_eq!(header(&a.headers, "retry-after"), Some("5"));
    // allow → 200 with x-risk-* and principal headers for the upstream, forged ones removed
    let a = ask(
        &rg,
        check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[
                ("x-action-token", "low2"),
                ("x-user-id", "u2"),
                ("x-risk-band", "low"),
                ("x-jwt-payload", "e30"),
            ],
        ),
    )
    .await;
    assert_eq!((a.grpc_code, a.status), (0, 200));
    assert_eq!(header(&a.upstream, "x-risk-score"), Some("12.5"));
    assert_eq!(header(&a.upstream, "x-risk-band"), Some("low"));
    assert_eq!(header(&a.upstream, "x-risk-recommendation"), Some("ALLOW"));
    assert_eq!(
        header(&a.upstream, "x-riskgate-principal"),
        Some("User::\"u1\"")
    );
    for h in ["x-user-id", "x-jwt-payload", "x-action-token"] {
        assert!(
            a.removed.iter().any(|r| r == h),
            "{h} not removed: {:?}",
            a.removed
        );
    }
    rg.stop().await;
}

#[tokio::test]
async fn every_deny_body_is_generic_json_with_the_decision_id() {
    let rg = start(
        sim_with(&[("high", scripted(99.0, "DENY", "withdraw", Some("u1")))]),
        |_| {},
    )
    .await;
    for req in [
        check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "high")],
        ),
        check("POST", "/accounts/a2/withdraw", u1(), &[]),
        check("GET", "/nowhere", None, &[]),
    ] {
        let a = ask(&rg, req).await;
        let body: serde_json::Value = match serde_json::from_str(&a.body) {
            Ok(v) => v,
            Err(e) => panic!("deny body is not JSON: {e}: {}", a.body),
        };
        let mut keys: Vec<&String> = body
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        keys.sort();
        assert_eq!(keys, vec!["decision_id", "error"], "{body}");
        assert_eq!(
            header(&a.headers, "x-riskgate-decision-id"),
            body["decision_id"].as_str()
        );
    }
    rg.stop().await;
}

#[tokio::test]
async fn fail_modes_read_only_and_open_through_grpc() {
    for (mode, withdraw_status) in [(FailMode::ReadOnly, 403), (FailMode::Open, 200)] {
        let rg = start(SimConfig::default(), |c| {
            if let Some(r) = c.risk.as_mut() {
                r.fail_mode = mode;
            }
        })
        .await;
        rg.sim.set_outage(Some(502));
        let w = ask(
            &rg,
            check(
                "POST",
                "/accounts/a1/withdraw",
                u1(),
                &[("x-action-token", "any")],
            ),
        )
        .await;
        assert_eq!(w.status, withdraw_status, "{mode:?}");
        let r = ask(
            &rg,
            check(
                "GET",
                "/accounts/a1/balance",
                u1(),
                &[("x-action-token", "any2")],
            ),
        )
        .await;
        assert_eq!(r.status, 200, "{mode:?}");
        rg.stop().await;
    }
}

#[tokio::test]
async fn dry_run_answers_200_for_a_would_be_deny() {
    let rg = start(SimConfig::default(), |c| {
        c.mode = riskgate::config::Mode::DryRun
    })
    .await;
    let a = ask(&rg, check("GET", "/nowhere", None, &[])).await;
    assert_eq!((a.grpc_code, a.status), (0, 200));
    let metrics = reqwest::get(format!("http://{}/metrics", rg.admin)).await;
    let text = match metrics {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => panic!("metrics: {e}"),
    };
    assert!(
        text.contains(r#"outcome="dry_run",reason="no_route""#),
        "{text}"
    );
    rg.stop().await;
}

#[tokio::test]
async fn health_and_readiness_are_served() {
    let rg = start(SimConfig::default(), |_| {}).await;
    for path in ["/healthz", "/readyz"] {
        let status = reqwest::get(format!("http://{}{}", rg.admin, path))
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "{path}");
    }
    let channel = match tonic::transport::Channel::from_shared(format!("http://{}", rg.grpc)) {
        Ok(c) => c.connect().await,
        Err(e) => panic!("{e}"),
    };
    let mut health = match channel {
        Ok(c) => tonic_health::pb::health_client::HealthClient::new(c),
        Err(e) => panic!("{e}"),
    };
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .map(|r| r.into_inner().status);
    assert_eq!(
        status.ok(),
        Some(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
    rg.stop().await;
}
