//! End to end (issue #16, item 4): the calling workload's identity through a real Envoy 1.40.
//!
//! The shipped `deploy/envoy/envoy.yaml` with its listener turned into a mutual-TLS one (client
//! certificates required, from a CA made at test time). Clients present certificates whose only
//! SAN is a SPIFFE URI, as Istio issues them; Envoy sends it to riskgate as the Check's
//! `attributes.source.principal`, riskgate (the shipped config: trust domain `cluster.local`)
//! puts it into `context.source`, and `policies/internal.cedar` lets only `bank/payments`
//! settle.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it each test prints a skip line (and fails
//! instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod support;

use risk_sim::{SimConfig, SimHandle};
use serde_yaml_ng::Value;
use support::certs::{Ca, Leaf};
use support::envoy::{self, Envoy, Ports};
use support::http::request_timeout;
use support::procs::TestDir;
use support::riskgate::Riskgate;
use support::upstream::Upstream;

/// Drop order: Envoy, riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    upstream: Upstream,
    ca: Ca,
    _sim: SimHandle,
    dir: TestDir,
}

/// The shipped Envoy config for `ports`, its listener requiring client certificates of the
/// CA in `dir` and serving `envoy.crt`.
fn render(template: &str, ports: &Ports, dir: &TestDir) -> String {
    let text = envoy::render(template, ports);
    let mut config: Value = serde_yaml_ng::from_str(&text).expect("the rendered config is YAML");
    let path = |name: &str| dir.join(name).display().to_string();
    let tls: Value = serde_yaml_ng::from_str(&format!(
        r#"
name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
  require_client_certificate: true
  common_tls_context:
    tls_certificates:
    - certificate_chain: {{ filename: "{}" }}
      private_key: {{ filename: "{}" }}
    validation_context:
      trusted_ca: {{ filename: "{}" }}
"#,
        path("envoy.crt"),
        path("envoy.key"),
        path("ca.crt"),
    ))
    .expect("TLS context YAML");
    let chain = &mut config["static_resources"]["listeners"][0]["filter_chains"][0];
    chain
        .as_mapping_mut()
        .expect("the listener's filter chain")
        .insert("transport_socket".into(), tls);
    serde_yaml_ng::to_string(&config).expect("render YAML")
}

impl Stack {
    async fn start(test: &str) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let ca = Ca::new("mesh test CA");
        ca.write(&dir.join("ca.crt"));
        ca.server(&["127.0.0.1"]).write(dir.path(), "envoy");
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        // the shipped config: `context.workload.trust_domains: [cluster.local]`
        let riskgate = Riskgate::start(&dir, &sim.base_url(), |_| {}).await;
        let ports = Ports::new(riskgate.grpc_port, upstream.port());
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(envoy::CONFIG),
        )
        .expect("read the shipped Envoy config");
        let envoy = Envoy::start_with(&dir, &bin, ports, "envoy-mtls-listener.yaml", |p| {
            render(&template, p, &dir)
        })
        .await;
        Some(Stack {
            envoy,
            riskgate,
            upstream,
            ca,
            _sim: sim,
            dir,
        })
    }

    /// `POST /internal/settle` over mTLS with `cert` (`None`: no client certificate):
    /// the status and riskgate's decision id (on a deny, or as the upstream saw it), or the
    /// connection error.
    async fn settle(&self, cert: Option<&Leaf>) -> Result<(u16, Option<String>), String> {
        let ca = std::fs::read(self.dir.join("ca.crt")).expect("read the CA");
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(request_timeout())
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA PEM")]);
        if let Some(cert) = cert {
            let pem = format!("{}{}", cert.cert_pem, cert.key_pem);
            builder =
                builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
        }
        let client = builder.build().expect("TLS client");
        let url = format!(
            "https://127.0.0.1:{}/internal/settle",
            self.envoy.ports().listener
        );
        client
            .post(url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .map(|r| {
                let id = r
                    .headers()
                    .get("x-riskgate-decision-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (r.status().as_u16(), id)
            })
            .map_err(|e| format!("{e:?}"))
    }

    fn workload(&self, uri: &str) -> Leaf {
        self.ca.client_uri("workload", uri)
    }
}

#[tokio::test]
async fn only_the_payments_workload_settles_through_envoy_over_mtls() {
    let Some(s) = Stack::start("workload_identity_mtls").await else {
        return;
    };
    let payments = s.workload("spiffe://cluster.local/ns/bank/sa/payments");
    let (status, _) = s
        .settle(Some(&payments))
        .await
        .expect("request through Envoy");
    assert_eq!(status, 200);
    assert_eq!(s.upstream.count(), 1, "the settle reached the upstream");
    let got = s.upstream.last().expect("reached the upstream");
    let id = got
        .header("x-riskgate-decision-id")
        .expect("riskgate's decision id");
    let line = s.riskgate.wait_audit_line(id).await;
    assert_eq!(line["action"], "settle", "{line}");
    assert_eq!(line["decision"], "allow", "{line}");

    for other in [
        "spiffe://cluster.local/ns/bank/sa/frontend",
        "spiffe://cluster.local/ns/shop/sa/payments",
        "spiffe://other.domain/ns/bank/sa/payments",
    ] {
        let cert = s.workload(other);
        let (status, id) = s.settle(Some(&cert)).await.expect("request through Envoy");
        assert_eq!(status, 403, "{other}");
        // riskgate's policy denied it (not the transport)
        let line = s
            .riskgate
            .wait_audit_line(id.as_deref().expect("riskgate decided"))
            .await;
        assert_eq!(line["decision"], "policy_deny", "{other}: {line}");
    }
    assert_eq!(
        s.upstream.count(),
        1,
        "no other workload reached the upstream"
    );
    // no client certificate: the listener refuses the handshake, nothing reaches riskgate
    assert!(s.settle(None).await.is_err());
    assert_eq!(s.upstream.count(), 1);
}
