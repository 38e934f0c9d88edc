//! Every query in the shipped Grafana dashboard names a metric that riskgate really
//! exports: start riskgate, make Checks that touch every outcome, scrape the live
//! `/metrics`, and look each referenced series up.

mod common;

use common::*;
use risk_sim::{ScriptedAction, SimConfig};
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn metric_names_in(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("riskgate_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(expr[start..end].to_owned());
        i = end;
    }
    names
}

fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let text =
        std::fs::read_to_string(repo("deploy/grafana/riskgate-dashboard.json")).unwrap_or_default();
    let dashboard: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("dashboard is not JSON: {e}"),
    };
    let mut referenced = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            let names = metric_names_in(expr);
            assert!(
                !names.is_empty(),
                "panel {} has a query without a riskgate metric",
                panel["title"]
            );
            referenced.extend(names);
        }
    }
    assert!(referenced.len() >= 10, "{referenced:?}");

    let rg = start(SimConfig::default(), |c| {
        c.policies.shadow_dir = Some(repo("tests/data/shadow-permissive"));
    })
    .await;
    let u1 = || Some(("u1", json!({})));
    let mut challenge = scripted(30.0, "CHALLENGE", "withdraw", Some("u1"));
    challenge.reasons = Some(vec![
        "DEVICE_EMULATOR".into(),
        "SOMETHING_UNDOCUMENTED".into(),
    ]);
    rg.sim
        .script("ok", scripted(10.0, "ALLOW", "login", Some("u1")));
    rg.sim
        .script("deny", scripted(95.0, "DENY", "withdraw", Some("u1")));
    rg.sim.script("challenge", challenge);
    rg.sim
        .script("wrong", scripted(10.0, "ALLOW", "login", Some("u1")));
    rg.sim.script(
        "down",
        ScriptedAction {
            status: Some(503),
            ..ScriptedAction::default()
        },
    );
    let mut client = rg.client().await;
    for (method, path, token) in [
        ("GET", "/accounts/a1/balance", "ok"),
        ("GET", "/accounts/a1/balance", "ok"),
        ("GET", "/accounts/a2/balance", "ok"), // Cedar denies, the permissive shadow set allows
        ("POST", "/accounts/a1/withdraw", "deny"),
        ("POST", "/accounts/a1/withdraw", "challenge"),
        ("POST", "/accounts/a1/withdraw", "wrong"),
        ("POST", "/accounts/a1/withdraw", "down"),
    ] {
        assert!(client
            .check(check(method, path, u1(), &[("x-action-token", token)]))
            .await
            .is_ok());
    }
    let scrape = match reqwest::get(format!("http://{}/metrics", rg.admin)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => panic!("scrape: {e}"),
    };
    let have = exported(&scrape);
    let missing: Vec<&String> = referenced.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics that are not exported: {missing:?}\n\n{scrape}"
    );
    // Undocumented reason codes are folded into OTHER.
    assert!(scrape.contains(r#"reason="OTHER""#), "{scrape}");
    assert!(!scrape.contains("SOMETHING_UNDOCUMENTED"));
    rg.stop().await;
}
