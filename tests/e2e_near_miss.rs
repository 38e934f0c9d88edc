//! End-to-end through a real Envoy (the shipped `deploy/envoy/envoy.yaml`) and riskgate as
//! a process: on a host with `default: allow`, paths that nearly match a protected route
//! (case, trailing slash) are denied 403 by riskgate and never reach the upstream, while
//! unrelated paths still pass (issue 13, item 6).
//!
//! Needs Envoy from `scripts/python-env.sh`; without it each test prints a skip line (and
//! fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod support;

use reqwest::Method;
use risk_sim::{SimConfig, SimHandle};
use serde_yaml_ng::Value;
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
    _sim: SimHandle,
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
        // Envoy sends the test's `Host: 127.0.0.1:<port>`: that host passes unknown paths.
        let riskgate = Riskgate::start(&dir, &sim.base_url(), |v| {
            let hosts: Value = serde_yaml_ng::from_str("[{ host: 127.0.0.1, default: allow }]")
                .expect("hosts yaml");
            v.as_mapping_mut()
                .expect("config mapping")
                .insert(Value::from("hosts"), hosts);
        })
        .await;
        let envoy = Envoy::start(&dir, &bin, Ports::new(riskgate.grpc_port, upstream.port())).await;
        Some(Stack {
            envoy,
            riskgate,
            upstream,
            _sim: sim,
            _dir: dir,
        })
    }

    async fn send(&self, method: Method, path: &str, jwt: &str) -> (u16, String) {
        let mut req = client()
            .request(method.clone(), self.envoy.url(path))
            .bearer_auth(jwt);
        if method != Method::GET {
            req = req.header("content-type", "application/json").body("{}");
        }
        let resp = req.send().await.expect("request through Envoy");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

#[tokio::test]
async fn near_miss_paths_are_denied_on_a_default_allow_host() {
    let Some(s) = Stack::start("near_miss_paths").await else {
        return;
    };
    let u1 = jwt::valid("u1");
    for path in [
        "/accounts/a1/withdraw/",
        "/Accounts/a1/withdraw",
        "/accounts/a1/Withdraw",
    ] {
        let (status, body) = s.send(Method::POST, path, &u1).await;
        assert_eq!(status, 403, "POST {path}: {body}");
    }
    assert_eq!(
        s.upstream.count(),
        0,
        "no near miss may reach the upstream: {:#?}",
        s.upstream.requests()
    );
    // audit lines are written off the Check path: wait for the three
    let riskgate = &s.riskgate;
    let audited = wait::until(
        "three near_miss_path audit lines",
        wait::ready_timeout(),
        || async move {
            let near = riskgate
                .audit()
                .iter()
                .filter(|l| l["decision"] == "near_miss_path")
                .count();
            if near == 3 {
                wait::Probe::Ready(())
            } else {
                wait::Probe::NotYet(format!("{near} so far: {}", riskgate.output()))
            }
        },
    )
    .await;
    assert!(audited.is_ok(), "{audited:?}");

    // an unrelated path on the same host still takes its default allow
    let (status, _) = s.send(Method::GET, "/static/app.js", &u1).await;
    assert_eq!(status, 200);
    assert_eq!(s.upstream.count(), 1);
}
