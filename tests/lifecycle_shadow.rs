//! Shadow policies (issue 6): a second policy directory evaluated beside the live set on every
//! Check, never changing the answer; disagreements are logged and counted.

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::audit::AuditSink;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::risk::RecommendationType;
use riskgate::serve::server::App;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// The example policies plus a forbid on balances: the shadow set that disagrees.
fn stricter_set() -> Files {
    let mut files = example_policies();
    files.retain(|name, _| name.ends_with(".cedar"));
    files.insert(
        "forbid-balance.cedar".into(),
        lifecycle_data("forbid-balance.cedar"),
    );
    files
}

#[tokio::test]
async fn a_shadow_disagreement_is_counted_and_the_answer_is_the_live_one() {
    let sim =
        match risk_sim::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0))).await {
            Ok(s) => s,
            Err(e) => panic!("simulator: {e}"),
        };
    let ws = Workspace::new(&sim.base_url(), "");
    let shadow = ws.plain_dir("shadow", &stricter_set());
    ws.write_config_with(
        &format!(
            "{{ dir: policies, schema: policies/schema.cedarschema, entities: policies/entities.json, shadow_dir: {} }}",
            shadow.display()
        ),
        "",
    );
    let app = match App::from_file(&ws.config, AuditSink::disabled()).await {
        Ok(a) => a,
        Err(e) => panic!("riskgate: {e}"),
    };
    let rg = serve_app(app, sim).await;
    let mut client = rg.client().await;

    // Live allows the owner's balance; the shadow set would forbid it.
    for _ in 0..3 {
        let req = check("GET", "/accounts/a1/balance", Some(("u1", json!({}))), &[]);
        let answer = client
            .check(req)
            .await
            .map(|r| r.into_inner().http_response);
        assert!(
            matches!(answer, Ok(Some(HttpResponse::OkResponse(_)))),
            "the shadow set must not change the answer: {answer:?}"
        );
    }
    // Both deny another user's balance: no disagreement.
    let req = check("GET", "/accounts/a2/balance", Some(("u1", json!({}))), &[]);
    assert!(client.check(req).await.is_ok());

    let (_, text) = http_get(rg.admin, "/metrics").await;
    let sample = r#"riskgate_shadow_disagreements_total{route="GET /accounts/{account_id}/balance",live="allow",shadow="deny"}"#;
    assert_eq!(metric(&text, sample), 3.0, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("riskgate_shadow_disagreements_total{"))
            .filter(|l| !l.ends_with(" 0")) // every route's series exists from start-up at 0
            .count(),
        1,
        "{text}"
    );
    rg.stop().await;
}

#[tokio::test]
async fn the_shadow_set_reuses_the_live_risk_answer() {
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => panic!("tempdir: {e}"),
    };
    // A shadow set that forbids withdrawals above score 10.
    let mut files = stricter_set();
    files.insert(
        "withdraw-score.cedar".into(),
        br#"@id("shadow-withdraw-needs-score-under-10")
forbid (principal, action == Action::"withdraw", resource)
when { context.risk.score >= 10 };
"#
        .to_vec(),
    );
    for (name, content) in &files {
        assert!(std::fs::write(tmp.path().join(name), content).is_ok());
    }
    let mut config = example_config("http://127.0.0.1:9");
    config.policies.shadow_dir = Some(tmp.path().to_owned());
    let risk = Arc::new(ScriptedRisk::default());
    risk.set(
        "tok",
        Ok(rec(12.5, RecommendationType::Allow, "withdraw", Some("u1"))),
    );
    let decider = decider_with(&config, risk.clone());

    let req = with_user(
        request("POST", "/accounts/a1/withdraw", Some("tok")),
        "u1",
        json!({}),
    );
    let d = decider.decide(&req).await;
    assert_eq!(d.verdict.label(), "allow", "{d:?}");
    assert_eq!(risk.calls(), 1, "one risk API call for both sets");
    let shadow = d.shadow.as_ref().map(|s| {
        (
            s.live_allowed,
            s.shadow_allowed,
            s.disagrees(),
            s.policies.clone(),
        )
    });
    assert_eq!(
        shadow,
        Some((
            true,
            false,
            true,
            vec!["shadow-withdraw-needs-score-under-10".to_string()]
        )),
        "{d:?}"
    );
    assert_eq!(d.policies, vec!["account-owner-write-low-risk".to_string()]);
}

#[tokio::test]
async fn without_a_shadow_dir_nothing_is_evaluated() {
    let config = example_config("http://127.0.0.1:9");
    let decider = decider_with(&config, Arc::new(ScriptedRisk::default()));
    let req = with_user(
        request("GET", "/accounts/a1/balance", None),
        "u1",
        json!({}),
    );
    let d = decider.decide(&req).await;
    assert_eq!(d.verdict.label(), "allow");
    assert!(d.shadow.is_none());
}
