//! End-to-end through a real Envoy (the shipped `deploy/envoy/envoy.yaml`, which sends the
//! body of the withdraw and transfer routes with the Check) and riskgate as a process with
//! the shipped config and its body mappings (issue #16): a risk assessment made for a
//! 120 USD withdrawal does not authorize a 12,000 USD one (before: 200), the assessed one
//! passes, and a body over 8 KiB arrives cut and is denied.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it the test prints a skip line (and
//! fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod common;
mod support;

use risk_sim::{ScriptedAction, SimConfig};
use serde_json::json;
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::riskgate::{shipped_routes, Riskgate};
use support::upstream::Upstream;
use support::wait;

#[tokio::test]
async fn a_120_usd_assessment_does_not_authorize_a_12000_usd_withdrawal() {
    let Some(bin) = envoy::binary() else {
        return;
    };
    let dir = TestDir::new("transaction_binding");
    let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("start the risk API simulator");
    let upstream = Upstream::start().await;
    let riskgate = Riskgate::start(&dir, &sim.base_url(), |v| {
        if let Some(map) = v.as_mapping_mut() {
            map.insert("routes".into(), shipped_routes());
        }
    })
    .await;
    let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate.grpc_port, upstream.port())).await;
    for token in ["t-big", "t-small", "t-partial"] {
        sim.script(
            token,
            ScriptedAction {
                transaction_data: Some(json!({ "amount": 120, "currency": "USD" })),
                ..common::scripted(10.0, "ALLOW", "withdraw", Some("u1"))
            },
        );
    }
    let u1 = jwt::valid("u1");
    let withdraw = |token: &'static str, body: String| {
        client()
            .post(envoy.url("/accounts/a1/withdraw"))
            .bearer_auth(&u1)
            .header("x-action-token", token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    };

    let big = withdraw("t-big", r#"{"amount": 12000, "currency": "USD"}"#.into())
        .await
        .expect("request through Envoy");
    let (status, body) = answer(big).await;
    assert_eq!(status, 403, "12,000 USD on a 120 USD assessment: {body}");
    assert!(
        !body.contains("transaction") && !body.contains("binding"),
        "the deny body stays generic: {body}"
    );

    let small = withdraw("t-small", r#"{"amount": 120, "currency": "USD"}"#.into())
        .await
        .expect("request through Envoy");
    let (status, body) = answer(small).await;
    assert_eq!(status, 200, "the assessed withdrawal: {body}");
    let reached = upstream.requests();
    assert_eq!(
        reached.len(),
        1,
        "only the allowed one reaches the upstream: {reached:#?}"
    );

    let padded = format!(
        r#"{{"amount": 120, "currency": "USD"}}{}"#,
        " ".repeat(9 * 1024)
    );
    let partial = withdraw("t-partial", padded)
        .await
        .expect("request through Envoy");
    let (status, body) = answer(partial).await;
    assert_eq!(status, 403, "a body over Envoy's 8 KiB arrives cut: {body}");

    let riskgate = &riskgate;
    let audited = wait::until(
        "three withdraw audit lines",
        wait::ready_timeout(),
        || async move {
            let lines: Vec<_> = riskgate
                .audit()
                .into_iter()
                .filter(|l| l["route"].as_str().is_some_and(|r| r.contains("withdraw")))
                .collect();
            if lines.len() >= 3 {
                wait::Probe::Ready(lines)
            } else {
                wait::Probe::NotYet(format!("{} so far: {}", lines.len(), riskgate.output()))
            }
        },
    )
    .await
    .expect("the audit lines");
    let decisions: Vec<_> = audited.iter().map(|l| l["decision"].clone()).collect();
    assert_eq!(
        decisions,
        vec![
            json!("binding_transaction_mismatch"),
            json!("allow"),
            json!("body_too_large"),
        ],
        "{audited:#?}"
    );
}
