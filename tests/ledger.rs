//! The use ledger under pressure (issue 14 item 3): a full ledger is an outage of riskgate
//! (503 + `retry-after`), not a verdict on the user, and one authenticated principal cannot
//! fill it for everyone (`state.max_uses_per_principal`).

mod common;

use common::*;
use riskgate::config::Config;
use riskgate::decide::Decider;
use riskgate::decision::Verdict;
use riskgate::risk::RecommendationType as R;
use serde_json::json;
use std::sync::Arc;

/// A withdrawal by `user` with its own action token (and so its own action id).
async fn withdraw(decider: &Decider, risk: &Arc<ScriptedRisk>, user: &str, n: usize) -> Verdict {
    let token = format!("tok-{user}-{n}");
    let mut r = rec(5.0, R::Allow, "withdraw", Some(user));
    r.action_id = format!("act-{user}-{n}").into();
    risk.set(&token, Ok(r));
    let account = if user == "u1" { "a1" } else { "a2" };
    let req = with_user(
        request(
            "POST",
            &format!("/accounts/{account}/withdraw"),
            Some(&token),
        ),
        user,
        json!({}),
    );
    decider.decide(&req).await.verdict
}

fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = example_config("http://127.0.0.1:9");
    tweak(&mut c);
    if let Err(e) = c.validate() {
        panic!("config: {e}");
    }
    c
}

/// Asserts a refusal is riskgate's outage: 503, with a retry-after in the answer.
fn assert_outage(v: &Verdict, case: &str) {
    assert_eq!(v.http_status(), 503, "{case}: {v:?}");
    let d = riskgate::decision::Decision {
        verdict: v.clone(),
        enforced: true,
        ..riskgate::decision::Decision::new(Some("req".into()))
    };
    let answer = riskgate::authz::respond::to_check_response(&d, &Default::default());
    let text = format!("{answer:?}");
    assert!(text.contains("retry-after"), "{case}: {text}");
}

#[tokio::test]
async fn a_full_ledger_is_an_outage_not_a_verdict() {
    let config = config(|c| c.state.max_entries = 8);
    let risk = Arc::new(ScriptedRisk::default());
    let decider = decider_with(&config, risk.clone());
    let mut refused = None;
    for n in 0..64 {
        let v = withdraw(&decider, &risk, "u1", n).await;
        if v != Verdict::Allow {
            refused = Some(v);
            break;
        }
    }
    let Some(v) = refused else {
        panic!("a ledger of 8 entries took 64 live uses");
    };
    assert_outage(&v, "full ledger");
    assert_eq!(v.label(), "use_ledger_full");
}

#[tokio::test]
async fn one_principal_cannot_fill_the_ledger() {
    let config = config(|c| c.state.max_uses_per_principal = 3);
    let risk = Arc::new(ScriptedRisk::default());
    let decider = decider_with(&config, risk.clone());
    for n in 0..3 {
        assert_eq!(
            withdraw(&decider, &risk, "u1", n).await,
            Verdict::Allow,
            "use {n}"
        );
    }
    let over = withdraw(&decider, &risk, "u1", 3).await;
    assert_outage(&over, "u1 over its cap");
    assert_eq!(over.label(), "principal_uses_full");
    assert_eq!(
        withdraw(&decider, &risk, "u2", 0).await,
        Verdict::Allow,
        "another principal still writes"
    );
}
