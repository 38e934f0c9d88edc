//! An outside attacker's pass through a real Envoy 1.40 running each shipped proxy config
//! (`deploy/envoy/envoy.yaml`, and an Istio sidecar as istiod renders `deploy/istio/`,
//! `tests/data/envoy/istio-sidecar.yaml`) in front of riskgate configured with typed context
//! facts (`context.headers`, `context.query`, `context.workload`) and policies that `forbid`
//! on them. Each probe spells a forbidden fact another way — header case and underscores, a
//! repeated header, `+`, `;`, case-only name differences, percent-encoding, a fragment,
//! non-UTF-8 — and the test asserts that no spelling is allowed while the upstream, under any
//! common reading of the request (first header copy, CGI/WSGI underscore folding, form
//! decoding, legacy `;` splitting, case-insensitive names), sees the forbidden value. It also
//! forges a workload identity (`x-forwarded-client-cert`) and another request's
//! `x-request-id`.
//!
//! Needs Envoy from `scripts/python-env.sh`; without it each test prints a skip line (and
//! fails instead under `RISKGATE_REQUIRE_ENVOY=1`).
#![allow(
    clippy::expect_used,
    reason = "tests: a failed step panics with its message"
)]

mod support;

use risk_sim::{SimConfig, SimHandle};
use support::envoy::{self, Envoy, Ports};
use support::jwt;
use support::procs::TestDir;
use support::riskgate::{kubernetes_identity, Riskgate};
use support::upstream::{Recorded, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which shipped proxy config Envoy runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Proxy {
    /// `deploy/envoy/envoy.yaml` (rejects underscore header names).
    Standalone,
    /// `tests/data/envoy/istio-sidecar.yaml` (passes them, like Istio).
    IstioSidecar,
}

const ISTIO_SIDECAR: &str = "tests/data/envoy/istio-sidecar.yaml";

/// The forbidden header value and the forbidden query values (one needs a space).
const BLOCKED: &str = "blocked";
const BLOCKED_SPACED: &str = "no go";

/// Forbids on `x-tenant` (as `tenant`) and on the query parameter `region`.
const FORBID: &str = r#"
@id("attack-forbid-tenant")
forbid (principal, action, resource)
when { context.request has headers && context.request.headers has tenant &&
       context.request.headers.tenant == "blocked" };

@id("attack-forbid-region")
forbid (principal, action, resource)
when { context.request has query && context.request.query has region &&
       (context.request.query.region == "blocked" || context.request.query.region == "no go") };
"#;

/// The shipped policies, the schema with the `headers`/`query` records, and [`FORBID`].
fn policy_dir(dir: &TestDir) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let out = dir.join("policies");
    std::fs::create_dir_all(&out).expect("create the policy dir");
    for entry in std::fs::read_dir(&root).expect("read policies/").flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let mut text = std::fs::read_to_string(&path).expect("read a policy file");
        if entry.file_name() == "schema.cedarschema" {
            text = text.replace(
                "\"ip\"?: __cedar::ipaddr,",
                "\"ip\"?: __cedar::ipaddr,\n  \"headers\"?: { \"tenant\"?: String },\n  \
                 \"query\"?: { \"region\"?: String },",
            );
            assert!(
                text.contains("\"tenant\"?: String"),
                "schema has the ip line"
            );
        }
        std::fs::write(out.join(entry.file_name()), text).expect("write a policy file");
    }
    std::fs::write(out.join("zz-attack.cedar"), FORBID).expect("write the forbid policies");
    out
}

/// Drop order: Envoy, riskgate, upstream, simulator, dir.
struct Stack {
    envoy: Envoy,
    riskgate: Riskgate,
    upstream: Upstream,
    _sim: SimHandle,
    _dir: TestDir,
}

impl Stack {
    async fn start(test: &str, proxy: Proxy) -> Option<Stack> {
        let bin = envoy::binary()?;
        let dir = TestDir::new(test);
        let sim = risk_sim::start(SimConfig::default(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start the risk API simulator");
        let upstream = Upstream::start().await;
        let policies = policy_dir(&dir);
        let riskgate = Riskgate::start(&dir, &sim.base_url(), |v| {
            // jwt_authn metadata and the x-jwt-payload header, as behind Istio
            v["identity"] = kubernetes_identity();
            v["policies"]["dir"] = policies.display().to_string().into();
            v["policies"]["schema"] = policies
                .join("schema.cedarschema")
                .display()
                .to_string()
                .into();
            v["policies"]["entities"] = policies.join("entities.json").display().to_string().into();
            v["context"] = serde_yaml_ng::from_str(
                "{ headers: [{ name: x-tenant, as: tenant }], query: [{ name: region, as: region }], \
                 workload: { trust_domains: [cluster.local] } }",
            )
            .expect("context yaml");
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

    /// Sends `target` with `headers` (raw bytes, as written) on one HTTP/1.1 connection and
    /// returns the status code, and the request the upstream received for it, if any.
    async fn raw(&self, method: &str, target: &[u8], headers: &[(&str, &[u8])]) -> Probe {
        let before = self.upstream.count();
        let mut req = Vec::new();
        req.extend_from_slice(method.as_bytes());
        req.push(b' ');
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nhost: bank.example\r\nconnection: close\r\n");
        req.extend_from_slice(format!("authorization: Bearer {}\r\n", jwt::valid("u1")).as_bytes());
        for (k, v) in headers {
            req.extend_from_slice(k.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(v);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"content-length: 0\r\n\r\n");
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.envoy.ports().listener))
            .await
            .expect("connect to Envoy");
        conn.write_all(&req).await.expect("send the request");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            support::http::request_timeout(),
            conn.read_to_end(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "Envoy answered within the request timeout");
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let decision_id = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-riskgate-decision-id")
                .then(|| v.trim().to_owned())
        });
        let upstream = (self.upstream.count() > before)
            .then(|| self.upstream.last())
            .flatten();
        Probe {
            status,
            decision_id,
            upstream,
        }
    }
}

/// One request's outcome.
struct Probe {
    status: u16,
    decision_id: Option<String>,
    /// What the upstream received, when the request got through.
    upstream: Option<Recorded>,
}

/// Every value an upstream could read as `tenant`: each copy of `x-tenant`, and each copy of
/// a name that CGI/WSGI/nginx fold into it (`x_tenant`).
fn upstream_tenants(r: &Recorded) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.replace('_', "-").eq_ignore_ascii_case("x-tenant"))
        .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
        .collect()
}

/// Every value an upstream could read as `region`: pairs split on `&` and on `;`, names
/// compared case-insensitively, names and values form-decoded (`+` is a space) and, apart,
/// percent-decoded only.
fn upstream_regions(r: &Recorded) -> Vec<String> {
    let query = r.path.split_once('?').map_or("", |(_, q)| q);
    let mut out = Vec::new();
    for pair in query.split(['&', ';']).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        for plus_is_space in [true, false] {
            let decode = |s: &str| {
                let s = if plus_is_space {
                    s.replace('+', " ")
                } else {
                    s.to_owned()
                };
                percent_encoding::percent_decode_str(&s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if decode(name).eq_ignore_ascii_case("region") {
                out.push(decode(value));
            }
        }
    }
    out
}

/// Whether the upstream may have acted on a forbidden fact.
fn walked_around(p: &Probe) -> bool {
    p.upstream.as_ref().is_some_and(|r| {
        upstream_tenants(r).iter().any(|t| t == BLOCKED)
            || upstream_regions(r)
                .iter()
                .any(|v| v == BLOCKED || v == BLOCKED_SPACED)
    })
}

/// Raw request headers, as written.
type Headers<'a> = Vec<(&'a str, &'a [u8])>;

const BALANCE: &str = "/accounts/a1/balance";

async fn attack(s: &Stack, proxy: Proxy) {
    // Baselines: u1 reads its own balance; the plain forbidden facts are denied.
    let ok = s.raw("GET", BALANCE.as_bytes(), &[]).await;
    assert_eq!(ok.status, 200, "{proxy:?}: baseline allowed");
    let header = |v: &'static str| vec![("x-tenant", v.as_bytes())];
    let q = |query: &str| format!("{BALANCE}?{query}").into_bytes();
    let plain = s.raw("GET", BALANCE.as_bytes(), &header(BLOCKED)).await;
    assert_eq!(
        plain.status, 403,
        "{proxy:?}: x-tenant: blocked is forbidden"
    );
    let plain = s.raw("GET", &q("region=blocked"), &[]).await;
    assert_eq!(plain.status, 403, "{proxy:?}: region=blocked is forbidden");

    let probes: Vec<(&str, Vec<u8>, Headers)> = vec![
        (
            "header upper case",
            BALANCE.into(),
            vec![("X-TENANT", b"blocked")],
        ),
        (
            "header underscore",
            BALANCE.into(),
            vec![("x_tenant", b"blocked")],
        ),
        (
            "header twice",
            BALANCE.into(),
            vec![("x-tenant", b"blocked"), ("x-tenant", b"blocked")],
        ),
        (
            "header twice, other first",
            BALANCE.into(),
            vec![("x-tenant", b"blocked"), ("x-tenant", b"acme")],
        ),
        (
            "header dash and underscore",
            BALANCE.into(),
            vec![("x-tenant", b"acme"), ("x_tenant", b"blocked")],
        ),
        (
            "header non-UTF-8",
            BALANCE.into(),
            vec![("x-tenant", b"blocked\xff")],
        ),
        ("query +", q("region=no+go"), vec![]),
        ("query %20", q("region=no%20go"), vec![]),
        ("query name case", q("Region=blocked"), vec![]),
        ("query name +", q("region+=blocked"), vec![]),
        ("query ; separated", q("region=ok;region=blocked"), vec![]),
        ("query ; hides name", q("x=1;region=blocked"), vec![]),
        ("query encoded name", q("r%65gion=blocked"), vec![]),
        ("query double-encoded", q("region=%2562locked"), vec![]),
        ("query repeated", q("region=ok&region=blocked"), vec![]),
        ("query fragment", q("region=blocked#x"), vec![]),
        (
            "query after fragment",
            format!("{BALANCE}#?region=blocked").into_bytes(),
            vec![],
        ),
        ("query non-UTF-8", q("region=blocked%ff"), vec![]),
        (
            "query raw non-UTF-8",
            [q("region=blocked").as_slice(), b"\xff"].concat(),
            vec![],
        ),
        (
            "query in escaped path",
            format!("{BALANCE}%3Fregion=blocked").into_bytes(),
            vec![],
        ),
        (
            "query after dot segment",
            b"/accounts/a1/x/../balance?region=blocked".to_vec(),
            vec![],
        ),
        (
            "query overlong",
            q(&format!("region={}", "b".repeat(300))),
            vec![],
        ),
    ];
    let mut defects = Vec::new();
    for (name, target, headers) in &probes {
        let p = s.raw("GET", target, headers).await;
        let bad = walked_around(&p);
        eprintln!(
            "{proxy:?}: {name}: status {} decision {:?} upstream {:?}{}",
            p.status,
            p.decision_id,
            p.upstream.as_ref().map(|r| (&r.path, upstream_tenants(r))),
            if bad { "  <-- WALKED AROUND" } else { "" }
        );
        if bad {
            defects.push(*name);
        }
    }
    // A workload identity forged in the client-certificate header, and another request's id.
    let xfcc: &[u8] = b"By=spiffe://cluster.local/ns/riskgate/sa/riskgate;URI=spiffe://cluster.local/ns/bank/sa/payments";
    let p = s
        .raw(
            "POST",
            b"/internal/settle",
            &[("x-forwarded-client-cert", xfcc)],
        )
        .await;
    eprintln!("{proxy:?}: forged XFCC settle: status {}", p.status);
    assert_eq!(
        p.status, 403,
        "{proxy:?}: a forged XFCC is no workload identity"
    );
    let p = s
        .raw(
            "GET",
            BALANCE.as_bytes(),
            &[("x-request-id", b"victim-request-id-1")],
        )
        .await;
    let id = p.decision_id.clone().unwrap_or_default();
    let line = s.riskgate.wait_audit_line(&id).await;
    eprintln!(
        "{proxy:?}: client x-request-id: status {} audit request_id {} upstream {:?}",
        p.status,
        line["request_id"],
        p.upstream
            .as_ref()
            .and_then(|r| r.header("x-request-id").map(str::to_owned))
    );
    match proxy {
        // an edge proxy replaces a client's id
        Proxy::Standalone => assert_ne!(line["request_id"], "victim-request-id-1"),
        // a sidecar keeps its peer's: a correlation hint only (README "Security model")
        Proxy::IstioSidecar => assert_eq!(line["request_id"], "victim-request-id-1"),
    }
    // An id that could break or forge an audit line is not used as one.
    for forged in [&b"a\"b"[..], b"a\\b", b"caf\xc3\xa9", b"x\x7f"] {
        let p = s
            .raw("GET", BALANCE.as_bytes(), &[("x-request-id", forged)])
            .await;
        if let Some(id) = &p.decision_id {
            let line = s.riskgate.wait_audit_line(id).await;
            let got = line["request_id"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec();
            assert_ne!(got, forged, "{proxy:?}: {forged:?} kept as the request id");
        }
    }
    assert!(
        defects.is_empty(),
        "{proxy:?}: a forbidden fact reached the upstream via {defects:?}"
    );
}

#[tokio::test]
async fn standalone_envoy_context_facts_cannot_be_walked_around() {
    let Some(s) = Stack::start("attack_standalone", Proxy::Standalone).await else {
        return;
    };
    attack(&s, Proxy::Standalone).await;
}

#[tokio::test]
async fn istio_sidecar_context_facts_cannot_be_walked_around() {
    let Some(s) = Stack::start("attack_istio", Proxy::IstioSidecar).await else {
        return;
    };
    attack(&s, Proxy::IstioSidecar).await;
}
