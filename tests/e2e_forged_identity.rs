//! A client forging the identity header riskgate trusts (`x-jwt-payload`, as
//! `deploy/kubernetes/base/riskgate.yaml` does), through a real Envoy 1.40 running each shipped
//! proxy config — the standalone `deploy/envoy/envoy.yaml` and an Istio sidecar as istiod
//! renders it for `deploy/istio/` (`tests/data/envoy/istio-sidecar.yaml`, see its header); the
//! mTLS config is covered in `tests/e2e_envoy_mtls.rs`. With and without a real JWT, in the
//! dash and the underscore spelling: never the forged principal, asserted on riskgate's audit
//! line and on what the upstream receives.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it each test prints a skip line (and fails
//! instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod support;

use base64::Engine as _;
use risk_sim::{SimConfig, SimHandle};
use serde_json::json;
use support::envoy::{self, Envoy, Ports};
use support::http::client;
use support::jwt;
use support::procs::TestDir;
use support::riskgate::{kubernetes_identity, Riskgate};
use support::upstream::Upstream;

/// Which shipped proxy config Envoy runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Proxy {
    /// `deploy/envoy/envoy.yaml` (rejects underscore header names).
    Standalone,
    /// `tests/data/envoy/istio-sidecar.yaml` (passes them, like Istio).
    IstioSidecar,
}

/// Drop order: Envoy, riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    upstream: Upstream,
    _sim: SimHandle,
    _dir: TestDir,
}

struct Answer {
    status: u16,
    decision_id: Option<String>,
}

impl Stack {
    async fn start(test: &str, proxy: Proxy) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let riskgate = Riskgate::start(&dir, &sim.base_url(), |v| {
            v["identity"] = kubernetes_identity();
        })
        .await;
        let ports = Ports::new(riskgate.grpc_port, upstream.port());
        let envoy = match proxy {
            Proxy::Standalone => Envoy::start(&dir, &bin, ports).await,
            Proxy::IstioSidecar => {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(ISTIO_SIDECAR);
                let template = std::fs::read_to_string(path).expect("read the Istio-like config");
                Envoy::start_with(&dir, &bin, ports, "istio-sidecar.yaml", |p| {
                    envoy::render(&template, p)
                })
                .await
            }
        };
        Some(Stack {
            envoy,
            riskgate,
            upstream,
            _sim: sim,
            _dir: dir,
        })
    }

    async fn get(&self, path: &str, jwt: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        let mut req = client().get(self.envoy.url(path));
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request through Envoy");
        Answer {
            status: resp.status().as_u16(),
            decision_id: resp
                .headers()
                .get("x-riskgate-decision-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// The principal riskgate decided for, from its audit line.
    async fn principal(&self, answer: &Answer) -> String {
        let id = answer.decision_id.as_deref().expect("riskgate decided");
        let line = self.riskgate.wait_audit_line(id).await;
        line["principal"].as_str().unwrap_or_default().to_owned()
    }
}

const ISTIO_SIDECAR: &str = "tests/data/envoy/istio-sidecar.yaml";

/// `{"sub":"u2","amr":["mfa"]}`, base64url: u2, who has done MFA.
fn forged() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"sub": "u2", "amr": ["mfa"]}).to_string())
}

async fn never_the_forged_principal(s: &Stack, proxy: Proxy) {
    let forged = forged();
    let u1 = jwt::valid("u1");
    // 1. No JWT, dash spelling: Envoy's jwt_authn removes the header; riskgate sees anonymous.
    let a = s
        .get("/accounts/a2/balance", None, &[("x-jwt-payload", &forged)])
        .await;
    assert_eq!(a.status, 403, "{proxy:?}: u2's balance for a forged header");
    assert_eq!(s.principal(&a).await, "Anonymous", "{proxy:?}");
    assert_eq!(
        s.upstream.count(),
        0,
        "{proxy:?}: nothing reaches the upstream"
    );

    // 2. No JWT, underscore spelling: rejected by the standalone HCM; under Istio it reaches
    //    riskgate, which never reads it as identity.
    let a = s
        .get("/accounts/a2/balance", None, &[("x_jwt_payload", &forged)])
        .await;
    match proxy {
        Proxy::Standalone => assert_eq!(a.status, 400, "headers_with_underscores_action"),
        Proxy::IstioSidecar => {
            assert_eq!(a.status, 403);
            assert_eq!(s.principal(&a).await, "Anonymous");
        }
    }
    assert_eq!(s.upstream.count(), 0, "{proxy:?}");

    // 3. A real JWT for u1 plus the forged header: u1, never u2 (a2 is u2's account).
    let a = s
        .get(
            "/accounts/a2/balance",
            Some(&u1),
            &[("x-jwt-payload", &forged)],
        )
        .await;
    assert_eq!(a.status, 403, "{proxy:?}");
    assert_eq!(s.principal(&a).await, r#"User::"u1""#, "{proxy:?}");
    assert_eq!(s.upstream.count(), 0, "{proxy:?}");

    // 4. u1's own balance with forged copies: allowed as u1, and the upstream gets neither
    //    spelling of the identity header (riskgate strips both).
    let mut headers = vec![("x-jwt-payload", forged.as_str())];
    if proxy == Proxy::IstioSidecar {
        headers.push(("x_jwt_payload", forged.as_str()));
    }
    let a = s.get("/accounts/a1/balance", Some(&u1), &headers).await;
    assert_eq!(a.status, 200, "{proxy:?}");
    assert_eq!(s.principal(&a).await, r#"User::"u1""#);
    let got = s.upstream.last().expect("reached the upstream");
    assert_eq!(got.header("x-riskgate-principal"), Some(r#"User::"u1""#));
    for name in ["x-jwt-payload", "x_jwt_payload"] {
        assert_eq!(
            got.header(name),
            None,
            "{proxy:?}: {name} reached the upstream"
        );
    }
}

#[tokio::test]
async fn standalone_envoy_never_serves_a_forged_identity_header() {
    let Some(s) = Stack::start("forged_identity_standalone", Proxy::Standalone).await else {
        return;
    };
    never_the_forged_principal(&s, Proxy::Standalone).await;
}

#[tokio::test]
async fn istio_sidecar_never_serves_a_forged_identity_header() {
    let Some(s) = Stack::start("forged_identity_istio", Proxy::IstioSidecar).await else {
        return;
    };
    never_the_forged_principal(&s, Proxy::IstioSidecar).await;
}
