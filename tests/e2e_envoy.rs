//! End-to-end through a real Envoy 1.40 running the shipped `deploy/envoy/envoy.yaml`, with
//! riskgate as a real process (the shipped `deploy/riskgate.yaml` and `policies/`), the risk
//! API simulator, a recording upstream, and JWTs minted at test time with the committed test
//! key and verified by Envoy's `jwt_authn`.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it each test prints a skip line (and
//! fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
//!
//! Status checks go through `Stack::expect`, which names the case when the status is wrong.
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod common;
mod support;

use reqwest::Method;
use risk_sim::{ScriptedAction, SimConfig, SimHandle};
use serde_json::{json, Value};
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::riskgate::Riskgate;
use support::upstream::Upstream;

/// Everything one test needs. Drop order: Envoy, riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    upstream: Upstream,
    sim: SimHandle,
    _dir: TestDir,
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Stack {
    async fn start(test: &str, tweak: impl FnOnce(&mut serde_yaml_ng::Value)) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let riskgate = Riskgate::start(&dir, &sim.base_url(), tweak).await;
        let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate.grpc_port, upstream.port())).await;
        Some(Stack {
            envoy,
            riskgate,
            upstream,
            sim,
            _dir: dir,
        })
    }

    fn script(&self, token: &str, score: f64, kind: &str, action_type: &str, user: Option<&str>) {
        self.sim
            .script(token, common::scripted(score, kind, action_type, user));
    }

    /// Sends a request through Envoy and asserts the status of the answer, naming `case`
    /// (and showing the body) on failure; returns the answer for the case's further checks.
    async fn expect(
        &self,
        case: &str,
        status: u16,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let a = self.send(method, path, jwt, headers).await;
        assert_eq!(a.status, status, "{case}: body {}", a.body);
        a
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = client().request(method.clone(), self.envoy.url(path));
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if method != Method::GET {
            req = req.header("content-type", "application/json").body("{}");
        }
        let resp = req.send().await.expect("request through Envoy");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn token(t: &str) -> (&'static str, &str) {
    ("x-action-token", t)
}

#[tokio::test]
async fn answer_table_rows_through_envoy() {
    let Some(s) = Stack::start("answer_table_rows_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    s.script("login-tok", 10.0, "ALLOW", "login", Some("u1"));
    s.script("low", 12.5, "ALLOW", "withdraw", Some("u1"));

    // method override → 403 (riskgate), and nothing reaches the upstream
    s.expect(
        "method override",
        403,
        Method::GET,
        "/accounts/a1/balance",
        Some(&u1),
        &[("x-http-method-override", "DELETE")],
    )
    .await;
    // no route → 403
    s.expect("no route", 403, Method::GET, "/admin", Some(&u1), &[])
        .await;
    // risk required, no token → 401 with the SDK challenge
    let a = s
        .expect(
            "risk required, no token",
            401,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&u1),
            &[],
        )
        .await;
    assert_eq!(a.header("x-risk-challenge"), Some("action_token"));
    // API 4xx (a token it does not know) → 403; the request also carries a session cookie
    s.expect(
        "API 4xx (unknown token), with a session cookie",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("unknown"), ("cookie", "session=cookie-secret-value")],
    )
    .await;
    // a login token on withdraw → 403
    s.expect(
        "a login token on withdraw",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("login-tok")],
    )
    .await;
    assert_eq!(
        s.upstream.count(),
        0,
        "no denied request may reach the upstream"
    );

    // every deny body is generic JSON with the decision id that the audit line carries
    let a = s
        .expect(
            "u1 on a2: policy deny",
            403,
            Method::POST,
            "/accounts/a2/withdraw",
            Some(&u1),
            &[token("low")],
        )
        .await;
    let body: Value = serde_json::from_str(&a.body).expect("deny body is JSON");
    let id = body["decision_id"]
        .as_str()
        .expect("decision id")
        .to_owned();
    assert_eq!(body["error"], "forbidden");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    let line = s.riskgate.wait_audit_line(&id).await;
    assert_eq!(line["decision"], "policy_deny");
    assert_eq!(line["principal"], "User::\"u1\"");
    assert_eq!(line["resource"], "Account::\"a2\"");
    assert!(line["trace_id"].is_string() || line["trace_id"].is_null());
    // audit lines never carry tokens or JWTs
    let audit = s
        .riskgate
        .audit()
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    for secret in [
        "login-tok",
        "unknown",
        &u1[..20],
        "sim-secret",
        "cookie-secret-value",
        "Bearer",
    ] {
        assert!(!audit.contains(secret), "audit log leaks {secret}");
    }
}

#[tokio::test]
async fn bands_through_envoy() {
    let Some(s) = Stack::start("bands_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    s.script("w-low", 12.5, "ALLOW", "withdraw", Some("u1"));
    s.script("w-med", 55.0, "ALLOW", "withdraw", Some("u1"));
    s.script("r-med", 55.0, "ALLOW", "login", Some("u1"));
    s.script("w-high", 85.0, "ALLOW", "withdraw", Some("u1"));
    s.script("w-deny", 5.0, "DENY", "withdraw", Some("u1"));

    // low-risk write → 200 at the upstream with the x-risk-* headers
    let a = s
        .expect(
            "low-risk write",
            200,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&u1),
            &[token("w-low")],
        )
        .await;
    let got = s
        .upstream
        .last()
        .expect("the allowed request reached the upstream");
    assert_eq!(got.path, "/accounts/a1/withdraw");
    assert_eq!(got.header("x-risk-score"), Some("12.5"));
    assert_eq!(got.header("x-risk-band"), Some("low"));
    assert_eq!(got.header("x-risk-recommendation"), Some("ALLOW"));
    assert_eq!(got.header("x-riskgate-principal"), Some("User::\"u1\""));
    assert_eq!(
        got.header("x-action-token"),
        None,
        "the action token is stripped"
    );
    assert!(
        a.header("x-riskgate-decision-id").is_some(),
        "clients get the decision id on allow too"
    );
    // the audit line joins with the upstream's (and Envoy's access log's) x-request-id
    let upstream_id = got
        .header("x-request-id")
        .expect("Envoy sends x-request-id upstream")
        .to_owned();
    let line = s
        .riskgate
        .wait_audit_line(a.header("x-riskgate-decision-id").unwrap_or_default())
        .await;
    assert_eq!(line["request_id"], upstream_id.as_str(), "{line}");

    // medium: read 200, write 403
    s.expect(
        "medium read",
        200,
        Method::GET,
        "/accounts/a1/balance",
        Some(&u1),
        &[token("r-med")],
    )
    .await;
    assert_eq!(
        s.upstream
            .last()
            .and_then(|r| r.header("x-risk-band").map(String::from))
            .as_deref(),
        Some("medium")
    );
    s.expect(
        "medium write",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("w-med")],
    )
    .await;
    // high → 403; DENY → 403
    let a = s
        .expect(
            "high",
            403,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&u1),
            &[token("w-high")],
        )
        .await;
    assert!(!a.body.contains("85") || a.body.contains("decision_id"));
    assert!(
        !a.body.contains("score") && !a.body.contains("high"),
        "{}",
        a.body
    );
    s.expect(
        "DENY",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("w-deny")],
    )
    .await;
    // Envoy's access log carries riskgate's dynamic metadata
    let lines = s.envoy.access_log_lines(5).await;
    assert!(
        lines
            .iter()
            .any(|l| l["riskgate"].to_string().contains("risk_deny")),
        "access log lacks riskgate metadata: {lines:?}"
    );
}

#[tokio::test]
async fn challenge_then_step_up_through_envoy() {
    let Some(s) = Stack::start("challenge_then_step_up_through_envoy", |_| {}).await else {
        return;
    };
    s.sim.script(
        "c",
        ScriptedAction {
            risk_score: json!(20),
            recommendation: "CHALLENGE".into(),
            challenge_type: Some("email_otp".into()),
            action_type: "withdraw".into(),
            user_id: Some("u1".into()),
            ..ScriptedAction::default()
        },
    );
    let a = s
        .expect(
            "CHALLENGE, password only",
            401,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&jwt::valid_with("u1", json!({"amr": ["pwd"]}))),
            &[token("c")],
        )
        .await;
    assert_eq!(a.header("x-risk-challenge"), Some("email_otp"));
    assert!(a
        .header("www-authenticate")
        .is_some_and(|w| w.contains("insufficient_user_authentication")));
    let stepped_up = jwt::valid_with("u1", json!({"amr": ["pwd", "mfa"]}));
    s.expect(
        "CHALLENGE, stepped up",
        200,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&stepped_up),
        &[token("c")],
    )
    .await;
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn forged_identity_and_risk_headers_never_reach_the_upstream() {
    let Some(s) = Stack::start("forged_headers_through_envoy", |_| {}).await else {
        return;
    };
    s.script("r", 10.0, "ALLOW", "login", Some("u1"));
    let forged = [
        ("x-user-id", "u2"),
        ("x-risk-score", "0"),
        ("x-risk-band", "low"),
        ("x-jwt-payload", "eyJzdWIiOiJ1MiJ9"),
        ("x-riskgate-principal", "User::\"u2\""),
    ];
    // with a JWT (u1 reading u1's balance) and without (anonymous reading nothing it may)
    let mut with_jwt: Vec<(&str, &str)> = forged.to_vec();
    with_jwt.push(token("r"));
    s.expect(
        "forged headers with a JWT",
        200,
        Method::GET,
        "/accounts/a1/balance",
        Some(&jwt::valid("u1")),
        &with_jwt,
    )
    .await;
    let got = s.upstream.last().expect("reached upstream");
    assert_eq!(got.header("x-user-id"), None);
    assert_eq!(got.header("x-jwt-payload"), None);
    assert_eq!(got.header("x-risk-score"), Some("10"));
    assert_eq!(got.header("x-risk-band"), Some("low"));
    assert_eq!(got.header("x-riskgate-principal"), Some("User::\"u1\""));
    // anonymous with forged headers: still anonymous, and an account read is denied
    s.expect(
        "forged headers, anonymous",
        403,
        Method::GET,
        "/accounts/a2/balance",
        None,
        &forged,
    )
    .await;
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn ownership_binding_and_anonymous_writes_through_envoy() {
    let Some(s) = Stack::start("ownership_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    s.script("w1", 5.0, "ALLOW", "withdraw", Some("u1"));
    s.script("w2", 5.0, "ALLOW", "withdraw", Some("u2"));
    s.script("anon", 5.0, "ALLOW", "withdraw", None);
    // u1 on u2's account
    s.expect(
        "u1 on u2's account",
        403,
        Method::POST,
        "/accounts/a2/withdraw",
        Some(&u1),
        &[token("w1")],
    )
    .await;
    // u2's token used by u1
    s.expect(
        "u2's token used by u1",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("w2")],
    )
    .await;
    // anonymous write
    s.expect(
        "anonymous write",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        None,
        &[token("anon")],
    )
    .await;
    // expired JWT / wrong issuer never reach riskgate: Envoy says 401
    s.expect(
        "expired JWT",
        401,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&jwt::expired("u1")),
        &[token("w1")],
    )
    .await;
    s.expect(
        "wrong issuer",
        401,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&jwt::wrong_issuer("u1")),
        &[token("w1")],
    )
    .await;
    // the token is still unused: one write goes through, a replay does not
    s.expect(
        "the unused token",
        200,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("w1")],
    )
    .await;
    s.expect(
        "a replay",
        403,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("w1")],
    )
    .await;
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn non_canonical_paths_through_envoy() {
    let Some(s) = Stack::start("non_canonical_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    // Envoy normalises dot segments and merges slashes; riskgate decides on the path the
    // upstream will serve: u1 climbing into a2 is denied, and the raw form never arrives.
    s.expect(
        "dot segments into a2",
        403,
        Method::GET,
        "/accounts/a1/../a2/balance",
        Some(&u1),
        &[],
    )
    .await;
    s.expect(
        "merged slashes",
        200,
        Method::GET,
        "/accounts//a1/balance",
        Some(&u1),
        &[],
    )
    .await;
    let got = s
        .upstream
        .last()
        .expect("normalised request reached upstream");
    assert_eq!(got.path, "/accounts/a1/balance");
    // Encoded slashes are rejected by Envoy before anyone decides.
    s.expect(
        "an encoded slash",
        400,
        Method::GET,
        "/accounts/a1%2Fbalance",
        Some(&u1),
        &[],
    )
    .await;
    // An encoded dot segment that Envoy passes on is refused by riskgate.
    let a = s
        .send(Method::GET, "/accounts/%2e%2e/a1/balance", Some(&u1), &[])
        .await;
    assert!(a.status == 403 || a.status == 400, "status {}", a.status);
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn slow_risk_api_gets_riskgates_fail_mode_answer_not_envoys_timeout() {
    let Some(s) = Stack::start("slow_risk_api_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    for (t, action) in [("slow-w", "withdraw"), ("slow-r", "login")] {
        s.sim.script(
            t,
            ScriptedAction {
                delay_ms: 3_000,
                action_type: action.into(),
                user_id: Some("u1".into()),
                ..ScriptedAction::default()
            },
        );
    }
    let started = std::time::Instant::now();
    let a = s
        .expect(
            "slow risk API, write",
            503,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&u1),
            &[token("slow-w")],
        )
        .await;
    assert_eq!(
        a.header("retry-after"),
        Some("5"),
        "riskgate's own answer carries retry-after"
    );
    assert!(
        a.body.contains("decision_id"),
        "riskgate's JSON body, not Envoy's: {}",
        a.body
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(1_000));
    // the balance route fails read-only: a read still works
    s.expect(
        "slow risk API, read (read-only fail mode)",
        200,
        Method::GET,
        "/accounts/a1/balance",
        Some(&u1),
        &[token("slow-r")],
    )
    .await;
    assert_eq!(
        s.envoy.stat("http.ingress_http.ext_authz.error").await,
        0,
        "Envoy never timed out"
    );
}

#[tokio::test]
async fn risk_api_down_follows_the_fail_mode() {
    let Some(s) = Stack::start("risk_api_down_through_envoy", |_| {}).await else {
        return;
    };
    let u1 = jwt::valid("u1");
    s.sim.set_outage(Some(503));
    let a = s
        .expect(
            "risk API down, write",
            503,
            Method::POST,
            "/accounts/a1/withdraw",
            Some(&u1),
            &[token("x")],
        )
        .await;
    assert_eq!(a.header("retry-after"), Some("5"));
    s.expect(
        "risk API down, read",
        200,
        Method::GET,
        "/accounts/a1/balance",
        Some(&u1),
        &[token("y")],
    )
    .await;
    assert_eq!(
        s.upstream
            .last()
            .and_then(|r| r.header("x-risk-band").map(String::from))
            .as_deref(),
        Some("medium")
    );
    // under fail-open configuration the same outage lets a write through (loudly)
    drop(s);
    let Some(open) = Stack::start("risk_api_down_fail_open", |v| {
        v["risk"]["fail_mode"] = serde_yaml_ng::Value::from("open");
    })
    .await
    else {
        return;
    };
    open.sim.set_outage(Some(503));
    open.expect(
        "risk API down, fail open, write",
        200,
        Method::POST,
        "/accounts/a1/withdraw",
        Some(&u1),
        &[token("z")],
    )
    .await;
    assert!(open.riskgate.output().contains("FAILING OPEN"));
}

/// The Istio identity path: riskgate trusts the proxy-written `x-jwt-payload` header
/// (`identity.trusted_header`). A client that sends that header itself, without a JWT, must
/// not become that user: Envoy's jwt_authn (which writes the header) must not pass it on.
#[tokio::test]
async fn trusted_payload_header_cannot_be_forged_by_the_client() {
    let Some(s) = Stack::start("trusted_header_forgery", |v| {
        v["identity"]["jwt_metadata"] = serde_yaml_ng::Value::Null;
        v["identity"]["trusted_header"] =
            serde_yaml_ng::from_str("{ name: x-jwt-payload, format: jwt_payload }").expect("yaml");
    })
    .await
    else {
        return;
    };
    // eyJzdWIiOiJ1MSJ9 = {"sub":"u1"}
    let forged = s
        .send(
            Method::GET,
            "/accounts/a1/balance",
            None,
            &[("x-jwt-payload", "eyJzdWIiOiJ1MSJ9")],
        )
        .await;
    let id = forged
        .header("x-riskgate-decision-id")
        .expect("decision id")
        .to_owned();
    let line = s.riskgate.wait_audit_line(&id).await;
    assert_eq!(
        line["principal"], "Anonymous",
        "a client-sent x-jwt-payload was trusted: {line}"
    );
    assert_eq!(forged.status, 403);
    // With a real JWT, the proxy-written header identifies the user.
    s.expect(
        "a real JWT through the trusted header",
        200,
        Method::GET,
        "/accounts/a1/balance",
        Some(&jwt::valid("u1")),
        &[],
    )
    .await;
}
