//! Every row of DESIGN §1.7's answer table through the real gRPC server on a loopback port,
//! with a tonic client as Envoy's stand-in and the risk API simulator behind riskgate.
//!
//! Status checks go through [`expect`], which names the case when the status is wrong.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::config::FailMode;
use riskgate::pb::envoy::config::core::v3::HeaderValueOption;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use serde_json::json;
use std::collections::HashMap;

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

async fn ask(rg: &Running, req: CheckRequest) -> Answer {
    let mut client = rg.client().await;
    match client.check(req).await {
        Ok(r) => answer(r.into_inner()),
        Err(e) => panic!("Check returned a gRPC error instead of an answer: {e}"),
    }
}

/// Sends `req` and asserts the HTTP status of the answer, naming `case` on failure;
/// returns the answer for the case's further checks.
async fn expect(rg: &Running, case: &str, req: CheckRequest, status: u16) -> Answer {
    let a = ask(rg, req).await;
    assert_eq!(a.status, status, "{case}: body {}", a.body);
    a
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

/// A row of the answer table: (case, Check, HTTP status, headers the answer must carry).
type Row = (
    &'static str,
    CheckRequest,
    u16,
    &'static [(&'static str, &'static str)],
);

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
    let withdraw = |account: &str, token: &'static str| {
        let path = format!("/accounts/{account}/withdraw");
        check("POST", &path, u1(), &[("x-action-token", token)])
    };
    let mfa = Some((
        "u1",
        json!({ "amr": ["pwd", "mfa"], "auth_time": now_ms() / 1000 }),
    ));
    // in the answer table's order, each sent once
    let rows: Vec<Row> = vec![
        ("malformed CheckRequest", CheckRequest::default(), 403, &[]),
        (
            "non-canonical path",
            check("GET", "/accounts/a1/../a2/balance", u1(), &[]),
            403,
            &[],
        ),
        (
            "method override",
            check(
                "GET",
                "/accounts/a1/balance",
                u1(),
                &[("x-http-method-override", "DELETE")],
            ),
            403,
            &[],
        ),
        (
            "no route, default deny",
            check("GET", "/nowhere", u1(), &[]),
            403,
            &[],
        ),
        (
            "risk required, no token: asks for the SDK",
            check("POST", "/accounts/a1/withdraw", u1(), &[]),
            401,
            &[("x-risk-challenge", "action_token")],
        ),
        (
            "token bound to another action",
            withdraw("a1", "login-token"),
            403,
            &[],
        ),
        (
            "API 4xx (unknown token)",
            withdraw("a1", "never-scripted"),
            403,
            &[],
        ),
        ("DENY", withdraw("a1", "deny"), 403, &[]),
        ("high band", withdraw("a1", "high"), 403, &[]),
        ("Cedar deny (u1 on a2)", withdraw("a2", "low"), 403, &[]),
        (
            "Cedar allow + CHALLENGE, no step-up",
            withdraw("a1", "challenge"),
            401,
            &[("x-risk-challenge", "email_otp")],
        ),
        (
            "Cedar allow + CHALLENGE satisfied by the amr claim",
            check(
                "POST",
                "/accounts/a1/withdraw",
                mfa,
                &[("x-action-token", "challenge2")],
            ),
            200,
            &[],
        ),
        (
            "risk API outage, fail mode closed",
            withdraw("a1", "down"),
            503,
            &[("retry-after", "5")],
        ),
        (
            "allow, forged headers sent",
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
            200,
            &[],
        ),
    ];
    let mut answers = HashMap::new();
    for (case, req, status, headers) in rows {
        let a = expect(&rg, case, req, status).await;
        for (name, value) in headers {
            assert_eq!(header(&a.headers, name), Some(*value), "{case}: {name}");
        }
        answers.insert(case, a);
    }

    // malformed: gRPC INVALID_ARGUMENT with the 403
    assert_eq!(answers["malformed CheckRequest"].grpc_code, 7);
    let a = &answers["high band"];
    assert!(
        !a.body.contains("high") && !a.body.contains("score") && !a.body.contains("risk"),
        "deny body leaks: {}",
        a.body
    );
    let a = &answers["Cedar allow + CHALLENGE, no step-up"];
    assert!(header(&a.headers, "www-authenticate").is_some());
    // allow → x-risk-* and principal headers for the upstream, forged ones removed
    let a = &answers["allow, forged headers sent"];
    assert_eq!(a.grpc_code, 0);
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
        let w = check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "any")],
        );
        expect(&rg, &format!("{mode:?} withdraw"), w, withdraw_status).await;
        let r = check(
            "GET",
            "/accounts/a1/balance",
            u1(),
            &[("x-action-token", "any2")],
        );
        expect(&rg, &format!("{mode:?} balance"), r, 200).await;
        rg.stop().await;
    }
}

#[tokio::test]
async fn dry_run_answers_200_for_a_would_be_deny() {
    let rg = start(SimConfig::default(), |c| {
        c.mode = riskgate::config::Mode::DryRun
    })
    .await;
    let a = expect(&rg, "no route", check("GET", "/nowhere", None, &[]), 200).await;
    assert_eq!(a.grpc_code, 0);
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

// --- issue 11: riskgate's own limits, a repeated action token, the 401's challenge ---

use riskgate::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};

fn http_mut(
    c: &mut CheckRequest,
) -> &mut riskgate::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
    match c
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        Some(http) => http,
        None => panic!("a check with http attributes"),
    }
}

/// u1 reads their own balance (allowed), with extra headers.
fn balance(headers: &[(&str, &str)]) -> CheckRequest {
    check("GET", "/accounts/a1/balance", u1(), headers)
}

async fn metrics(rg: &Running) -> String {
    http_get(rg.admin, "/metrics").await.1
}

fn decisions(text: &str, outcome: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!(
            r#"riskgate_decisions_total{{outcome="{outcome}",reason="{reason}",route="none",enforced="{}"}}"#,
            outcome != "dry_run"
        ),
    )
}

#[tokio::test]
async fn a_check_over_a_limit_is_refused_with_403_and_counted_by_cause() {
    let rg = start(SimConfig::default(), |_| {}).await;
    // check() adds :authority, :method and :path: 3 headers, 57 bytes for this path
    const PSEUDO: usize = 3;
    const PSEUDO_BYTES: usize = ":authoritybank.example:methodGET:path/accounts/a1/balance".len();

    // header count (limits.max_headers: 256)
    let names: Vec<String> = (0..10_000).map(|i| format!("x-h-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    expect(&rg, "10,000 headers", balance(&many), 403).await;
    expect(&rg, "256 headers", balance(&many[..256 - PSEUDO]), 200).await;

    // header bytes (limits.max_header_bytes: 128 KiB)
    let mib = "a".repeat(1 << 20);
    let a = expect(&rg, "a 1 MiB header", balance(&[("x-big", &mib)]), 403).await;
    assert_eq!(
        a.body.len(),
        r#"{"error":"forbidden","decision_id":""}"#.len() + 32
    );
    let fits = "a".repeat(128 * 1024 - PSEUDO_BYTES - "x-big".len());
    expect(&rg, "headers of 128 KiB", balance(&[("x-big", &fits)]), 200).await;
    let over = format!("{fits}a");
    let over = balance(&[("x-big", &over)]);
    expect(&rg, "headers of 128 KiB + 1", over, 403).await;

    // path (limits.max_path_bytes: 16 KiB), as a direct caller sends it: no :path header
    let long_path = |len: usize| {
        let prefix = "/accounts/a1/balance?q=";
        let mut c = balance(&[]);
        let http = http_mut(&mut c);
        http.path = format!("{prefix}{}", "a".repeat(len - prefix.len()));
        http.headers.remove(":path");
        c
    };
    let big = 3_900 * 1024;
    expect(&rg, "a 3.9 MiB path", long_path(big), 403).await;
    expect(&rg, "a 16 KiB path", long_path(16 * 1024), 200).await;
    expect(&rg, "a 16 KiB + 1 path", long_path(16 * 1024 + 1), 403).await;

    // body (limits.max_body_bytes: 64 KiB)
    let with_body = |len: usize| {
        let mut c = balance(&[]);
        http_mut(&mut c).body = "b".repeat(len);
        c
    };
    expect(&rg, "a 64 KiB body", with_body(64 * 1024), 200).await;
    expect(&rg, "a 64 KiB + 1 body", with_body(64 * 1024 + 1), 403).await;

    // message size (limits.max_message_bytes: 4 MiB): the server refuses to decode it
    let huge = "a".repeat(5 << 20);
    let mut client = rg.client().await;
    let err = client.check(balance(&[("x-big", &huge)])).await.err();
    // tonic answers OUT_OF_RANGE ("decoded message length too large")
    assert_eq!(err.map(|e| e.code()), Some(tonic::Code::OutOfRange));

    let text = metrics(&rg).await;
    assert_eq!(decisions(&text, "deny", "too_many_headers"), 1.0, "{text}");
    assert_eq!(decisions(&text, "deny", "headers_too_large"), 2.0);
    assert_eq!(decisions(&text, "deny", "path_too_long"), 2.0);
    assert_eq!(decisions(&text, "deny", "body_too_large"), 1.0);
    rg.stop().await;
}

#[tokio::test]
async fn limits_are_configurable_and_dry_run_passes_with_forgeable_headers_stripped() {
    let rg = start(SimConfig::default(), |c| {
        c.limits.max_headers = 8;
        c.mode = riskgate::config::Mode::DryRun;
    })
    .await;
    let names: Vec<String> = (0..8).map(|i| format!("x-h-{i}")).collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    headers.push(("x-user-id", "u2"));
    headers.push(("x_user_id", "u2"));
    let a = expect(&rg, "dry run answers 200", balance(&headers), 200).await;
    for name in ["x-user-id", "x_user_id"] {
        assert!(
            a.removed.iter().any(|h| h == name),
            "{name}: {:?}",
            a.removed
        );
    }
    let text = metrics(&rg).await;
    assert_eq!(
        decisions(&text, "dry_run", "too_many_headers"),
        1.0,
        "{text}"
    );
    rg.stop().await;
}

#[tokio::test]
async fn two_copies_of_the_action_token_are_refused() {
    let rg = start(
        sim_with(&[
            ("low", scripted(12.5, "ALLOW", "withdraw", Some("u1"))),
            ("low2", scripted(12.5, "ALLOW", "withdraw", Some("u1"))),
        ]),
        |_| {},
    )
    .await;
    // different case, as a direct gRPC caller can send them in the headers map
    let twice = check(
        "POST",
        "/accounts/a1/withdraw",
        u1(),
        &[("X-Action-Token", "low"), ("x-action-token", "low2")],
    );
    let a = expect(&rg, "two headers of different case", twice, 403).await;
    assert_eq!(a.grpc_code, 7);
    // twice in header_map (Envoy's encode_raw_headers)
    let mut c = check("POST", "/accounts/a1/withdraw", u1(), &[]);
    http_mut(&mut c).header_map = Some(HeaderMap {
        headers: ["low", "low2"]
            .iter()
            .map(|t| HeaderValue {
                key: "x-action-token".into(),
                value: (*t).into(),
                ..Default::default()
            })
            .collect(),
    });
    expect(&rg, "twice in header_map", c, 403).await;
    // one copy is fine
    let one = check(
        "POST",
        "/accounts/a1/withdraw",
        u1(),
        &[("x-action-token", "low")],
    );
    expect(&rg, "one copy", one, 200).await;
    let text = metrics(&rg).await;
    assert_eq!(
        decisions(&text, "deny", "duplicate_action_token"),
        2.0,
        "{text}"
    );
    rg.stop().await;
}

#[tokio::test]
async fn the_401_for_a_missing_action_token_carries_www_authenticate() {
    let rg = start(SimConfig::default(), |_| {}).await;
    let no_token = check("POST", "/accounts/a1/withdraw", u1(), &[]);
    let a = expect(&rg, "a write without a token", no_token, 401).await;
    assert_eq!(header(&a.headers, "x-risk-challenge"), Some("action_token"));
    assert_eq!(
        header(&a.headers, "www-authenticate"),
        Some(r#"ActionToken realm="riskgate", header="x-action-token""#)
    );
    rg.stop().await;
}

// --- issue 11 item 4: gRPC reflection only when configured ---

/// The service names reflection lists, or the gRPC code the port answers instead.
async fn reflected_services(rg: &Running) -> Result<Vec<String>, tonic::Code> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let channel = match tonic::transport::Channel::from_shared(format!("http://{}", rg.grpc)) {
        Ok(c) => c.connect().await,
        Err(e) => panic!("{e}"),
    };
    let mut client = match channel {
        Ok(c) => ServerReflectionClient::new(c),
        Err(e) => panic!("cannot connect to riskgate: {e}"),
    };
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures_util::stream::iter([list]))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    match answers.message().await.map_err(|s| s.code())? {
        Some(answer) => match answer.message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                Ok(l.service.into_iter().map(|s| s.name).collect())
            }
            other => panic!("not a list of services: {other:?}"),
        },
        None => panic!("reflection answered nothing"),
    }
}

#[tokio::test]
async fn reflection_is_served_only_when_configured() {
    let rg = start(SimConfig::default(), |_| {}).await;
    assert_eq!(
        reflected_services(&rg).await,
        Err(tonic::Code::Unimplemented),
        "reflection is off by default"
    );
    rg.stop().await;

    let rg = start(SimConfig::default(), |c| c.listen.reflection = true).await;
    let services = match reflected_services(&rg).await {
        Ok(s) => s,
        Err(code) => panic!("listen.reflection: true, yet reflection answers {code:?}"),
    };
    assert!(
        services
            .iter()
            .any(|s| s == "envoy.service.auth.v3.Authorization"),
        "{services:?}"
    );
    rg.stop().await;
}

/// Issue #15: an answer carries only what the config's `answer` section asks for. Without it,
/// an allow is the verdict and the removal of forgeable headers: no dynamic metadata, no
/// `x-risk-*`/`x-riskgate-*` headers either way; asked for, they are all there.
#[tokio::test]
async fn an_allow_carries_only_the_extras_the_config_asks_for() {
    for asked in [false, true] {
        let rg = start(
            sim_with(&[("low", scripted(12.5, "ALLOW", "withdraw", Some("u1")))]),
            |c| {
                c.answer = riskgate::config::AnswerConfig {
                    dynamic_metadata: asked,
                    upstream_headers: asked,
                    response_decision_id: asked,
                }
            },
        )
        .await;
        let req = check(
            "POST",
            "/accounts/a1/withdraw",
            u1(),
            &[("x-action-token", "low"), ("x-risk-band", "low")],
        );
        let mut client = rg.client().await;
        let r = match client.check(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("Check returned a gRPC error: {e}"),
        };
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(0), "asked {asked}");
        assert_eq!(r.dynamic_metadata.is_some(), asked);
        let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
            panic!("expected an allow, asked {asked}");
        };
        assert_eq!(!ok.headers.is_empty(), asked, "{:?}", ok.headers);
        assert_eq!(!ok.response_headers_to_add.is_empty(), asked);
        assert_eq!(header(&ok.headers, "x-risk-band").is_some(), asked);
        // the forged x-risk-band is removed when riskgate does not overwrite it
        assert_eq!(
            ok.headers_to_remove.iter().any(|h| h == "x-risk-band"),
            !asked
        );
        assert!(ok.headers_to_remove.iter().any(|h| h == "x-user-id"));
        rg.stop().await;
    }
}
