//! Transactional authorization (issue #16, items 1 and 2), through riskgate's real gRPC
//! server against the API simulator, with the shipped config and policies: the JSON body
//! of `POST /accounts/{id}/withdraw` and `.../transfer` becomes `context.transaction`, and
//! the recommendation must have been made for that transaction (`transaction_data`).
//!
//! The defect: a risk assessment made for a 120 USD withdrawal authorized a 12,000 USD one.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::{json, Value};

/// A recommendation for u1's `action_type` reporting `transaction_data` (if any), low band.
fn assessed(action_type: &str, transaction_data: Option<Value>) -> ScriptedAction {
    ScriptedAction {
        transaction_data,
        ..scripted(10.0, "ALLOW", action_type, Some("u1"))
    }
}

/// u1's `POST /accounts/a1/<what>` with `token`, `body` and `headers` (besides the token).
fn post(what: &str, token: &str, body: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut all = vec![("x-action-token", token)];
    all.extend_from_slice(headers);
    let mut c = check(
        "POST",
        &format!("/accounts/a1/{what}"),
        Some(("u1", json!({}))),
        &all,
    );
    if let Some(http) = c
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.body = body.to_owned();
    }
    c
}

/// The shipped routes' body mappings, which the common fixture leaves out.
fn with_shipped_bodies(c: &mut riskgate::config::Config) {
    c.routes = shipped_config("http://127.0.0.1:9").routes;
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// One malformed-body case: what, the body, the headers besides the token.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

fn withdraw(token: &str, body: &str) -> CheckRequest {
    post("withdraw", token, body, &[JSON])
}

/// The issue's case: assessed for 120 USD, asked for 12,000 USD → 403; the assessed
/// amount → 200.
#[tokio::test]
async fn an_assessment_of_120_usd_does_not_authorize_12000() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    let data = json!({ "amount": 120, "currency": "USD" });
    rg.sim
        .script("tok-a", assessed("withdraw", Some(data.clone())));
    rg.sim.script("tok-b", assessed("withdraw", Some(data)));
    assert_eq!(
        rg.status(withdraw("tok-a", r#"{"amount": 12000, "currency": "USD"}"#))
            .await,
        403,
        "a 12,000 USD withdrawal on a 120 USD assessment"
    );
    assert_eq!(
        rg.status(withdraw(
            "tok-b",
            r#"{"amount": 120.00, "currency": "USD"}"#
        ))
        .await,
        200,
        "the assessed withdrawal"
    );
    rg.stop().await;
}

/// Binding is required by default: no `transaction_data`, another currency, or a body
/// amount off by one minor unit → 403, counted by kind (zero-initialised).
#[tokio::test]
async fn missing_or_other_transaction_data_is_refused_and_counted() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    let text = http_get(rg.admin, "/metrics").await.1;
    for kind in ["transaction_missing", "transaction_mismatch"] {
        let sample = format!(r#"riskgate_binding_violations_total{{kind="{kind}"}}"#);
        assert!(text.contains(&sample), "{kind} is zero-initialised: {text}");
    }
    rg.sim.script("tok-none", assessed("withdraw", None));
    rg.sim.script(
        "tok-eur",
        assessed(
            "withdraw",
            Some(json!({ "amount": 120, "currency": "EUR" })),
        ),
    );
    rg.sim.script(
        "tok-cent",
        assessed(
            "withdraw",
            Some(json!({ "amount": 120.01, "currency": "USD" })),
        ),
    );
    rg.sim.script(
        "tok-bad",
        assessed(
            "withdraw",
            Some(json!({ "amount": "120", "currency": "USD" })),
        ),
    );
    let body = r#"{"amount": 120, "currency": "USD"}"#;
    for token in ["tok-none", "tok-eur", "tok-cent", "tok-bad"] {
        assert_eq!(rg.status(withdraw(token, body)).await, 403, "{token}");
    }
    let text = http_get(rg.admin, "/metrics").await.1;
    assert_eq!(
        metric(
            &text,
            r#"riskgate_binding_violations_total{kind="transaction_missing"}"#
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"riskgate_binding_violations_total{kind="transaction_mismatch"}"#
        ),
        2.0,
        "{text}"
    );
    rg.stop().await;
}

/// Every malformed body is refused before the risk stage: the token is not spent, and
/// the well-formed body that follows is allowed with it.
#[tokio::test]
async fn malformed_bodies_are_denied_without_spending_the_token() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    rg.sim.script(
        "tok",
        assessed(
            "withdraw",
            Some(json!({ "amount": 120, "currency": "USD" })),
        ),
    );
    let good = r#"{"amount": 120, "currency": "USD"}"#;
    let oversized = format!("{good}{}", " ".repeat(8 * 1024));
    let cases: Vec<Case> = vec![
        ("no content type", good.into(), vec![]),
        ("form", good.into(), vec![("content-type", "text/plain")]),
        (
            "gzip",
            good.into(),
            vec![JSON, ("content-encoding", "gzip")],
        ),
        (
            "partial",
            good.into(),
            vec![JSON, ("x-envoy-auth-partial-body", "true")],
        ),
        ("empty", String::new(), vec![JSON]),
        ("oversized", oversized, vec![JSON]),
        ("not json", "amount=120&currency=USD".into(), vec![JSON]),
        (
            "duplicate key",
            r#"{"amount": 120, "currency": "USD", "amount": 12000}"#.into(),
            vec![JSON],
        ),
        ("no amount", r#"{"currency": "USD"}"#.into(), vec![JSON]),
        (
            "string amount",
            r#"{"amount": "120", "currency": "USD"}"#.into(),
            vec![JSON],
        ),
        (
            "negative",
            r#"{"amount": -120, "currency": "USD"}"#.into(),
            vec![JSON],
        ),
        (
            "overflow",
            r#"{"amount": 1e300, "currency": "USD"}"#.into(),
            vec![JSON],
        ),
        (
            "too precise",
            r#"{"amount": 120.001, "currency": "USD"}"#.into(),
            vec![JSON],
        ),
        (
            "unknown currency",
            r#"{"amount": 120, "currency": "XXX"}"#.into(),
            vec![JSON],
        ),
    ];
    for (what, body, headers) in &cases {
        assert_eq!(
            rg.status(post("withdraw", "tok", body, headers)).await,
            403,
            "{what}"
        );
    }
    assert_eq!(
        rg.sim.stats().recommendation_requests,
        0,
        "no API call for a bad body"
    );
    assert_eq!(
        rg.status(post(
            "withdraw",
            "tok",
            good,
            &[("content-type", "application/json; charset=utf-8")]
        ))
        .await,
        200
    );
    rg.stop().await;
}

/// Amounts compare in each currency's minor units: JPY has none, KWD three.
#[tokio::test]
async fn currency_exponents_decide_what_matches() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    let jpy = json!({ "amount": 5000, "currency": "JPY" });
    let kwd = json!({ "amount": 1.234, "currency": "KWD" });
    for (token, data) in [
        ("jpy-1", &jpy),
        ("jpy-2", &jpy),
        ("kwd-1", &kwd),
        ("kwd-2", &kwd),
    ] {
        rg.sim
            .script(token, assessed("withdraw", Some(data.clone())));
    }
    let cases = [
        ("jpy-1", r#"{"amount": 5000.5, "currency": "JPY"}"#, 403),
        ("jpy-1", r#"{"amount": 5000, "currency": "JPY"}"#, 200),
        ("jpy-2", r#"{"amount": 5001, "currency": "JPY"}"#, 403),
        ("kwd-1", r#"{"amount": 1.2345, "currency": "KWD"}"#, 403),
        ("kwd-1", r#"{"amount": 1.234, "currency": "KWD"}"#, 200),
        ("kwd-2", r#"{"amount": 1.23, "currency": "KWD"}"#, 403),
    ];
    for (token, body, status) in cases {
        assert_eq!(
            rg.status(withdraw(token, body)).await,
            status,
            "{token} {body}"
        );
    }
    rg.stop().await;
}

/// A transfer binds the payee too, through `transaction_payee` into `transaction_data`.
#[tokio::test]
async fn a_transfer_binds_the_payee() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    let data =
        json!({ "amount": 50, "currency": "EUR", "payee": { "name": "Bob", "account": "DE89" } });
    rg.sim
        .script("t-1", assessed("transaction", Some(data.clone())));
    rg.sim.script("t-2", assessed("transaction", Some(data)));
    let to = |payee: &str| {
        format!(r#"{{"amount": 50, "currency": "EUR", "payee": {{"account": "{payee}"}}}}"#)
    };
    assert_eq!(
        rg.status(post("transfer", "t-1", &to("GB29"), &[JSON]))
            .await,
        403
    );
    assert_eq!(
        rg.status(post("transfer", "t-1", &to("DE89"), &[JSON]))
            .await,
        200
    );
    assert_eq!(
        rg.status(post(
            "transfer",
            "t-2",
            r#"{"amount": 50, "currency": "EUR"}"#,
            &[JSON]
        ))
        .await,
        403,
        "a transfer without a payee is malformed"
    );
    rg.stop().await;
}

/// Envoy with `pack_as_bytes: true` sends the body in `raw_body`.
#[tokio::test]
async fn a_body_packed_as_bytes_is_read() {
    let rg = start(SimConfig::default(), with_shipped_bodies).await;
    let data = json!({ "amount": 120, "currency": "USD" });
    rg.sim
        .script("raw-1", assessed("withdraw", Some(data.clone())));
    rg.sim.script("raw-2", assessed("withdraw", Some(data)));
    let packed = |token: &str, body: &str| {
        let mut c = withdraw(token, "");
        if let Some(http) = c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.raw_body = body.as_bytes().to_vec();
        }
        c
    };
    assert_eq!(
        rg.status(packed("raw-1", r#"{"amount": 12000, "currency": "USD"}"#))
            .await,
        403
    );
    assert_eq!(
        rg.status(packed("raw-2", r#"{"amount": 120, "currency": "USD"}"#))
            .await,
        200
    );
    rg.stop().await;
}

/// A body-mapped route whose action's schema context has no `transaction` fails at start
/// (naming the action), not on every Check; without the mapping the same schema loads.
#[test]
fn a_schema_without_transaction_fails_at_start_for_body_mapped_routes() {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let schema = std::fs::read_to_string(repo("policies/schema.cedarschema")).unwrap_or_default();
    let without = schema.replace("  \"transaction\"?: Transaction,\n", "");
    assert_ne!(
        schema, without,
        "the shipped schema declares context.transaction"
    );
    let mut files = example_policies();
    files.remove("transactions.cedar"); // it reads context.transaction itself
    files.insert("schema.cedarschema".into(), without.into_bytes());
    for (name, content) in &files {
        if let Err(e) = std::fs::write(dir.path().join(name), content) {
            panic!("write {name}: {e}");
        }
    }
    let mut config = shipped_config("http://127.0.0.1:9");
    config.policies.dir = dir.path().to_owned();
    config.policies.schema = dir.path().join("schema.cedarschema");
    config.policies.entities = Some(dir.path().join("entities.json"));
    let err = match riskgate::policy::load_snapshot(&config) {
        Ok(_) => panic!("a body-mapped route needs context.transaction in the schema"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`withdraw`") && err.contains("context.transaction"),
        "{err}"
    );
    for route in &mut config.routes {
        route.body = None;
    }
    if let Err(e) = riskgate::policy::load_snapshot(&config) {
        panic!("without body mappings the schema fits: {e}");
    }
}
