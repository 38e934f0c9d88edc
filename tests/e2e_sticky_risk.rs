//! End-to-end through a real Envoy (the shipped `deploy/envoy/envoy.yaml`) and riskgate as
//! a process with the shipped config: a user whose action token came back DENY cannot drop
//! the token on a `risk: optional` read to get `unassessed` (issue 13, item 5, sticky
//! risk). The answer is a generic 403 that never reaches the upstream; the audit line names
//! `risk_sticky`.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it the test prints a skip line (and
//! fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod common;
mod support;

use risk_sim::{SimConfig, SimHandle};
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::riskgate::Riskgate;
use support::upstream::Upstream;
use support::wait;

/// Drop order: Envoy, riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    upstream: Upstream,
    sim: SimHandle,
    _dir: TestDir,
}

impl Stack {
    async fn start(test: &str) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let riskgate = Riskgate::start(&dir, &sim.base_url(), |_| {}).await;
        let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate.grpc_port, upstream.port())).await;
        Some(Stack {
            envoy,
            riskgate,
            upstream,
            sim,
            _dir: dir,
        })
    }

    /// `GET path` with `jwt` and, if given, an action token: (status, body).
    async fn get(&self, path: &str, jwt: &str, token: Option<&str>) -> (u16, String) {
        let mut req = client().get(self.envoy.url(path)).bearer_auth(jwt);
        if let Some(t) = token {
            req = req.header("x-action-token", t);
        }
        let resp = req.send().await.expect("request through Envoy");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

#[tokio::test]
async fn a_deny_then_dropping_the_token_is_still_denied() {
    let Some(s) = Stack::start("sticky_risk_deny").await else {
        return;
    };
    s.sim.script(
        "u1-deny",
        common::scripted(5.0, "DENY", "login", Some("u1")),
    );
    let (u1, u2) = (jwt::valid("u1"), jwt::valid("u2"));

    let (status, body) = s.get("/accounts/a1/balance", &u1, None).await;
    assert_eq!(
        status, 200,
        "before any risk: unassessed read allowed: {body}"
    );
    let (status, body) = s.get("/accounts/a1/balance", &u1, Some("u1-deny")).await;
    assert_eq!(status, 403, "the DENY itself: {body}");
    let (status, body) = s.get("/accounts/a1/balance", &u1, None).await;
    assert_eq!(status, 403, "token dropped after a DENY: {body}");
    assert!(
        !body.contains("sticky") && !body.contains("risk_"),
        "the deny body stays generic: {body}"
    );
    let (status, body) = s.get("/accounts/a2/balance", &u2, None).await;
    assert_eq!(status, 200, "another user is not affected: {body}");
    assert_eq!(
        s.upstream.count(),
        2,
        "only the two allowed requests reach the upstream: {:#?}",
        s.upstream.requests()
    );

    let riskgate = &s.riskgate;
    let audited = wait::until(
        "a risk_sticky audit line",
        wait::ready_timeout(),
        || async move {
            let sticky: Vec<_> = riskgate
                .audit()
                .into_iter()
                .filter(|l| l["decision"] == "risk_sticky")
                .collect();
            match sticky.as_slice() {
                [line] => wait::Probe::Ready(line.clone()),
                _ => wait::Probe::NotYet(format!("{} so far: {}", sticky.len(), riskgate.output())),
            }
        },
    )
    .await;
    let line = audited.expect("one risk_sticky audit line");
    assert_eq!(line["band"], "high", "{line}");
    assert_eq!(line["status"], 403, "{line}");
}
