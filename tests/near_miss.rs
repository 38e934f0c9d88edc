//! Near-miss paths (issue 13, item 6): a path that matches no route as sent but would if
//! case or a trailing slash were ignored is denied `near_miss_path` (403), on a host with
//! `default: allow` as on one with `default: deny`, unless the host says `near_miss: allow`.
//! Many upstreams route `/Accounts/a1/withdraw/` to the withdraw handler: such a path must
//! never ride a default allow past the route's policy.

mod common;

use common::*;
use riskgate::config::{Config, HostConfig, Mode};
use riskgate::decision::Verdict;
use serde_json::json;
use std::sync::Arc;

const NEAR: [(&str, &str); 5] = [
    ("POST", "/accounts/a1/withdraw/"),
    ("POST", "/Accounts/a1/withdraw"),
    ("POST", "/accounts/a1/Withdraw"),
    ("GET", "/ACCOUNTS/a1/BALANCE/"),
    ("POST", "/LOGIN"),
];

/// The shipped config with `bank.example` given `hosts_yaml`'s settings.
fn config_with_host(hosts_yaml: &str) -> Config {
    let mut config = example_config("http://127.0.0.1:9");
    config.hosts = match serde_yaml_ng::from_str::<Vec<HostConfig>>(hosts_yaml) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    config
}

async fn verdict(config: &Config, method: &str, path: &str) -> riskgate::decision::Decision {
    let risk = Arc::new(ScriptedRisk::default());
    let req = with_user(request(method, path, None), "u1", json!({}));
    let d = decider_with(config, risk.clone()).decide(&req).await;
    assert_eq!(
        risk.calls(),
        0,
        "{method} {path}: a near miss costs no API call"
    );
    d
}

#[tokio::test]
async fn near_misses_on_a_default_allow_host_are_denied() {
    let config = config_with_host("[{ host: bank.example, default: allow }]");
    for (method, path) in NEAR {
        let d = verdict(&config, method, path).await;
        assert_eq!(d.verdict.label(), "near_miss_path", "{method} {path}");
        assert_eq!(d.answered().http_status(), 403, "{method} {path}");
    }
    // an unrelated path still takes the host's default allow
    let d = verdict(&config, "GET", "/static/app.js").await;
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.route.as_deref(), Some("default-allow"));
}

#[tokio::test]
async fn near_misses_on_a_default_deny_host_carry_their_own_reason() {
    let config = config_with_host("[{ host: bank.example }]");
    let d = verdict(&config, "POST", "/accounts/a1/withdraw/").await;
    assert_eq!(d.verdict.label(), "near_miss_path");
    assert_eq!(
        d.route.as_deref(),
        Some("POST /accounts/{account_id}/withdraw"),
        "the audit line names the route nearly matched"
    );
    assert_eq!(
        verdict(&config, "GET", "/admin").await.verdict.label(),
        "no_route"
    );
}

#[tokio::test]
async fn a_host_can_let_near_misses_take_its_default() {
    let config = config_with_host("[{ host: bank.example, default: allow, near_miss: allow }]");
    let d = verdict(&config, "POST", "/Accounts/a1/withdraw/").await;
    assert_eq!(d.verdict, Verdict::Allow);
    let config = config_with_host("[{ host: bank.example, near_miss: allow }]");
    let d = verdict(&config, "POST", "/Accounts/a1/withdraw/").await;
    assert_eq!(d.verdict.label(), "no_route");
}

#[tokio::test]
async fn near_misses_honour_dry_run() {
    let mut config = config_with_host("[{ host: bank.example, default: allow }]");
    config.mode = Mode::DryRun;
    let d = verdict(&config, "POST", "/accounts/a1/Withdraw").await;
    assert_eq!(d.verdict.label(), "near_miss_path");
    assert!(!d.enforced);
    assert_eq!(d.answered(), Verdict::Allow);
    // a dry-run route's near misses are not enforced either
    let mut config = config_with_host("[{ host: bank.example, default: allow }]");
    for r in &mut config.routes {
        r.dry_run = r.action == "withdraw";
    }
    let d = verdict(&config, "POST", "/accounts/a1/Withdraw").await;
    assert_eq!(d.verdict.label(), "near_miss_path");
    assert!(!d.enforced);
    let d = verdict(&config, "GET", "/accounts/a1/Balance").await;
    assert!(d.enforced);
}
