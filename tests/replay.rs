//! Change-impact replay (issue 17, item 4) on an audit log recorded from the demo: the
//! demo's requests (`examples/demo.rs`, risk answers from `examples/demo/risk-script.yaml`)
//! decided in-process against the shipped config and policies, each decision written as
//! the audit line `serve` writes, then replayed against candidate policy sets.

mod common;

use common::*;
use riskgate::audit::AuditLine;
use riskgate::config::Config;
use riskgate::decision::Decision;
use riskgate::offline::replay::{self, Change, Replay, ReplayReport};
use riskgate::risk::{FetchError, RecommendationType};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One demo request: who, method, path, action token, extra claims, expected status, name.
type Step = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Value,
    u16,
    &'static str,
);

/// The demo's scripted requests (examples/demo.rs), with the path Envoy forwards for the
/// `..` case, plus one read during a risk API outage (fail mode `read_only`).
fn demo_steps() -> Vec<Step> {
    let none = || json!({});
    vec![
        (
            "u1",
            "GET",
            "/accounts/a1/balance",
            Some("u1-read-low"),
            none(),
            200,
            "low risk: full access",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/withdraw",
            Some("u1-withdraw-low"),
            none(),
            200,
            "low risk write",
        ),
        (
            "u2",
            "GET",
            "/accounts/a2/balance",
            Some("u2-read-medium"),
            none(),
            200,
            "medium risk: reads only",
        ),
        (
            "u2",
            "POST",
            "/accounts/a2/withdraw",
            Some("u2-withdraw-med"),
            none(),
            403,
            "medium risk: no writes",
        ),
        (
            "u3",
            "POST",
            "/accounts/a3/withdraw",
            Some("u3-withdraw-high"),
            none(),
            403,
            "high risk: denied",
        ),
        (
            "u3",
            "POST",
            "/accounts/a3/transfer",
            Some("u3-transfer-deny"),
            none(),
            403,
            "API says DENY",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/transfer",
            Some("u1-transfer-chal"),
            none(),
            401,
            "CHALLENGE: step up",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/transfer",
            Some("u1-transfer-chal"),
            json!({"amr": ["pwd", "mfa"], "auth_time": now_ms() / 1000}),
            200,
            "after MFA",
        ),
        (
            "u1",
            "POST",
            "/accounts/a2/withdraw",
            Some("u1-withdraw-2"),
            none(),
            403,
            "u2's account",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/withdraw",
            None,
            none(),
            401,
            "no action token",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/withdraw",
            Some("u1-login-token"),
            none(),
            403,
            "login token on withdraw",
        ),
        (
            "u1",
            "POST",
            "/accounts/a1/withdraw",
            Some("u1-withdraw-low"),
            none(),
            403,
            "token replayed",
        ),
        (
            "anonymous",
            "POST",
            "/login",
            Some("anon-login"),
            none(),
            200,
            "anonymous login",
        ),
        (
            "anonymous",
            "POST",
            "/accounts/a1/withdraw",
            Some("anon-withdraw"),
            none(),
            403,
            "anonymous write",
        ),
        (
            "u1",
            "GET",
            "/accounts/a2/balance",
            None,
            none(),
            403,
            "Envoy normalises, a2 denied",
        ),
        (
            "u1",
            "GET",
            "/accounts/a1/balance",
            Some("u1-read-outage"),
            none(),
            200,
            "risk API down: read_only",
        ),
    ]
}

/// The risk answers of examples/demo/risk-script.yaml, and a timeout for the outage step.
fn demo_risk() -> Arc<ScriptedRisk> {
    let text = std::fs::read_to_string(repo("examples/demo/risk-script.yaml"))
        .unwrap_or_else(|e| panic!("demo risk script: {e}"));
    let script: serde_json::Map<String, Value> =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("demo risk script: {e}"));
    let risk = Arc::new(ScriptedRisk::default());
    for (token, a) in &script {
        let kind = a["recommendation"]
            .as_str()
            .and_then(RecommendationType::parse)
            .unwrap_or(RecommendationType::Allow);
        let mut r = rec(
            a["risk_score"].as_f64().unwrap_or(0.0),
            kind,
            a["action_type"].as_str().unwrap_or(""),
            a["user_id"].as_str(),
        );
        r.challenge_type = a["challenge_type"].as_str().map(String::from);
        if let Some(reasons) = a["reasons"].as_array() {
            r.reasons = reasons
                .iter()
                .filter_map(Value::as_str)
                .map(Arc::<str>::from)
                .collect();
        }
        risk.set(token, Ok(r));
    }
    risk.set("u1-read-outage", Err(FetchError::Timeout));
    risk
}

/// The demo, decided in-process; returns each step's name with its decision, and the
/// audit log file.
async fn record_demo(config: &Config, dir: &Path) -> (Vec<(&'static str, Decision)>, PathBuf) {
    let decider = decider_with(config, demo_risk());
    let mut decided = Vec::new();
    let mut log = String::new();
    for (who, method, path, token, claims, want, name) in demo_steps() {
        let mut req = request(method, path, token);
        if who != "anonymous" {
            req = with_user(req, who, claims);
        }
        let d = decider.decide(&req).await;
        assert_eq!(d.answered().http_status(), want, "{name}: {:?}", d.verdict);
        let line = AuditLine::from_decision(&d, "2026-12-01T00:00:00.000Z");
        log.push_str(&serde_json::to_string(&line).unwrap_or_else(|e| panic!("{e}")));
        log.push('\n');
        decided.push((name, d));
    }
    let path = dir.join("audit.jsonl");
    std::fs::write(&path, log).unwrap_or_else(|e| panic!("{e}"));
    (decided, path)
}

/// The shipped `*.cedar` files copied to `dir/name`, with `edit` applied to each text.
fn candidate(dir: &Path, name: &str, edit: impl Fn(&str, String) -> String) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    let shipped = std::fs::read_dir(repo("policies")).unwrap_or_else(|e| panic!("{e}"));
    for entry in shipped.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.ends_with(".cedar") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(out.join(&file), edit(&file, text)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    out
}

fn replay_with(config: &Config, policies: &Path, audit: &Path) -> ReplayReport {
    replay::replay_file(config, policies, audit, 10).unwrap_or_else(|e| panic!("{e}"))
}

fn ids(decided: &[(&str, Decision)], names: &[&str]) -> BTreeSet<String> {
    let found: BTreeSet<String> = decided
        .iter()
        .filter(|(n, _)| names.contains(n))
        .map(|(_, d)| d.id.clone())
        .collect();
    assert_eq!(found.len(), names.len(), "steps {names:?}");
    found
}

#[tokio::test]
async fn the_same_policies_change_nothing_and_the_unknown_is_counted() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = example_config("http://127.0.0.1:9");
    let (decided, audit) = record_demo(&config, tmp.path()).await;
    let same = candidate(tmp.path(), "same", |_, t| t);
    let r = replay_with(&config, &same, &audit);
    assert_eq!(r.total, decided.len() as u64);
    assert_eq!(
        (r.allow_to_deny, r.deny_to_allow),
        (0, 0),
        "{}",
        r.to_text()
    );
    assert!(r.changes.is_empty());
    // Cedar was asked for the three reads, the writes it allowed or denied, the step-up,
    // the replayed token (used up after Cedar) and the anonymous login.
    assert_eq!(r.redecided, 9, "{}", r.to_text());
    assert_eq!(r.unchanged, r.redecided);
    // High band, DENY, no token, wrong token type: decided before Cedar.
    assert_eq!(r.not_affected, 4, "{}", r.to_text());
    // The anonymous write and u1's withdraw from a2 were denied without asking the risk
    // API; the outage read was decided by a fail mode: counted, not guessed.
    let skipped: Vec<&str> = decided
        .iter()
        .filter(|(_, d)| d.risk_skipped)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(skipped, ["u2's account", "anonymous write"]);
    assert_eq!(
        r.cannot_redecide.get("risk_skipped"),
        Some(&2),
        "{}",
        r.to_text()
    );
    assert_eq!(
        r.cannot_redecide.get("fail_mode"),
        Some(&1),
        "{}",
        r.to_text()
    );
    assert_eq!(r.cannot_total(), 3);
}

#[tokio::test]
async fn a_removed_permit_shows_as_allow_to_deny_by_route_and_policy() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = example_config("http://127.0.0.1:9");
    let (decided, audit) = record_demo(&config, tmp.path()).await;
    let permit = "@id(\"account-owner-write-low-risk\")";
    let stricter = candidate(tmp.path(), "stricter", |_, t| {
        match t.split_once(permit) {
            // Drop the permit: from its @id to the end of its statement.
            Some((head, tail)) => {
                let rest = tail.split_once("};").map_or("", |(_, r)| r);
                format!("{head}{rest}")
            }
            None => t,
        }
    });
    let r = replay_with(&config, &stricter, &audit);
    let text = r.to_text();
    assert_eq!((r.allow_to_deny, r.deny_to_allow), (4, 0), "{text}");
    let withdraw: Vec<_> = r
        .changes
        .iter()
        .filter(|g| g.route == "POST /accounts/{account_id}/withdraw")
        .collect();
    let transfer: Vec<_> = r
        .changes
        .iter()
        .filter(|g| g.route == "POST /accounts/{account_id}/transfer")
        .collect();
    assert_eq!((withdraw.len(), transfer.len()), (1, 1), "{text}");
    for g in &r.changes {
        assert_eq!(g.change, Change::AllowToDeny);
        assert_eq!(
            g.before,
            vec!["account-owner-write-low-risk".to_owned()],
            "{text}"
        );
        assert!(g.after.is_empty(), "no permit applies any more: {text}");
    }
    // The first withdraw and its replay (used up after Cedar allowed it); the step-up and
    // the transfer after MFA.
    let sampled: BTreeSet<String> = withdraw[0].sample_ids.iter().cloned().collect();
    assert_eq!(
        sampled,
        ids(&decided, &["low risk write", "token replayed"])
    );
    let sampled: BTreeSet<String> = transfer[0].sample_ids.iter().cloned().collect();
    assert_eq!(sampled, ids(&decided, &["CHALLENGE: step up", "after MFA"]));
    assert!(text.contains("allow→deny"), "{text}");
}

#[tokio::test]
async fn an_added_permit_shows_as_deny_to_allow() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = example_config("http://127.0.0.1:9");
    let (decided, audit) = record_demo(&config, tmp.path()).await;
    let looser = candidate(tmp.path(), "looser", |file, t| {
        if file == "accounts.cedar" {
            t + "\n@id(\"owner-write-medium\")\npermit (principal is User, action in Action::\"write\", resource is Account)\nwhen { resource.owner == principal && context.risk.band == \"medium\" };\n"
        } else {
            t
        }
    });
    let r = replay_with(&config, &looser, &audit);
    assert_eq!(
        (r.allow_to_deny, r.deny_to_allow),
        (0, 1),
        "{}",
        r.to_text()
    );
    let g = &r.changes[0];
    assert_eq!(g.after, vec!["owner-write-medium".to_owned()]);
    let sampled: BTreeSet<String> = g.sample_ids.iter().cloned().collect();
    assert_eq!(sampled, ids(&decided, &["medium risk: no writes"]));
}

#[test]
fn a_line_without_input_is_not_guessed() {
    let config = example_config("http://127.0.0.1:9");
    let live = replay::load_candidate(&config, &repo("policies")).unwrap_or_else(|e| panic!("{e}"));
    let mut replay = Replay::new(&live, 3);
    // An allow recorded by an older riskgate (no `input`), a no-route deny, a bad line.
    replay.line(r#"{"decision_id":"a","route":"r","action":"view_balance","decision":"allow","policies":["p"],"fail_mode":null,"risk":null}"#);
    replay.line(r#"{"decision_id":"b","route":null,"action":null,"decision":"no_route","policies":[],"fail_mode":null,"risk":null}"#);
    replay.line("not json");
    let r = replay.finish();
    assert_eq!(r.total, 3);
    assert_eq!(r.redecided, 0);
    assert_eq!(r.not_affected, 1);
    assert_eq!(r.cannot_redecide.get("input_not_recorded"), Some(&1));
    assert_eq!(r.cannot_redecide.get("unparsable_line"), Some(&1));
}

#[tokio::test]
async fn the_audit_log_holds_no_token_and_no_authorization_header() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = example_config("http://127.0.0.1:9");
    let decider = decider_with(&config, demo_risk());
    let mut req = with_user(
        request("POST", "/accounts/a1/withdraw", Some("u1-withdraw-low")),
        "u1",
        json!({"amr": ["pwd"], "email": "u1@bank.example"}),
    );
    req.headers.insert(
        "authorization".into(),
        "Bearer eyJhbGciOiJIUzI1NiJ9.secret-jwt".into(),
    );
    req.headers
        .insert("cookie".into(), "session=cookie-secret".into());
    let d = decider.decide(&req).await;
    assert!(d.input.is_some(), "Cedar was asked: {:?}", d.verdict);
    let line = serde_json::to_string(&AuditLine::from_decision(&d, "t")).unwrap_or_default();
    for secret in [
        "u1-withdraw-low",
        "secret-jwt",
        "Bearer",
        "cookie-secret",
        "u1@bank.example",
    ] {
        assert!(!line.contains(secret), "`{secret}` in {line}");
    }
    // The configured claim is there (Cedar reads it), and the line re-decides.
    assert!(line.contains(r#""amr":["pwd"]"#), "{line}");
    let audit = tmp.path().join("one.jsonl");
    std::fs::write(&audit, &line).unwrap_or_else(|e| panic!("{e}"));
    let r = replay_with(&config, &repo("policies"), &audit);
    assert_eq!((r.redecided, r.unchanged), (1, 1), "{}", r.to_text());
}

#[tokio::test]
async fn the_command_prints_the_changes() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = example_config("http://127.0.0.1:9");
    let (_, audit) = record_demo(&config, tmp.path()).await;
    let none = candidate(tmp.path(), "no-login", |file, t| {
        if file == "login.cedar" {
            t.replace(
                "permit (principal, action == Action::\"login\"",
                "forbid (principal, action == Action::\"login\"",
            )
        } else {
            t
        }
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .arg("replay")
        .arg("--config")
        .arg(repo("deploy/riskgate.yaml"))
        .arg("--audit")
        .arg(&audit)
        .arg("--policies")
        .arg(&none)
        .arg("--json")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(v["allow_to_deny"], 1, "{stdout}");
    assert_eq!(
        v["changes"][0]["before"],
        json!(["login-below-high-risk"]),
        "{stdout}"
    );
    assert_eq!(
        v["changes"][0]["after"],
        json!(["login-below-high-risk"]),
        "{stdout}"
    );
}
