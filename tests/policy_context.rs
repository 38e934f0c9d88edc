//! Request facts in Cedar's context (issue #16, items 3 and 4), each end to end through the
//! real gRPC server: the client address as an `ipaddr` (CIDR allow/deny under strict
//! validation), configured headers and query parameters as typed attributes, and the
//! calling workload's SPIFFE identity as `context.source`.

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::config::{Config, ContextField, FieldType};
use riskgate::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use riskgate::pb::envoy::service::auth::v3::attribute_context::Peer;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;

/// The shipped policies and entities, the shipped schema with `headers` and `query`
/// records declared, and `extra` as one more policy file, in a temporary directory.
fn policies_with(extra: &str) -> tempfile::TempDir {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    for (name, content) in example_policies() {
        let content = if name == "schema.cedarschema" {
            let text = String::from_utf8_lossy(&content).replace(
                "\"ip\"?: __cedar::ipaddr,",
                "\"ip\"?: __cedar::ipaddr,\n  \
                 \"headers\"?: { \"tenant\"?: String, \"priority\"?: Long, \"canary\"?: Bool },\n  \
                 \"query\"?: { \"page\"?: Long, \"region\"?: String },",
            );
            assert!(text.contains("\"canary\"?: Bool"), "schema has the ip line");
            text.into_bytes()
        } else {
            content
        };
        if let Err(e) = std::fs::write(dir.path().join(&name), content) {
            panic!("write {name}: {e}");
        }
    }
    if let Err(e) = std::fs::write(dir.path().join("zz-test.cedar"), extra) {
        panic!("write policy: {e}");
    }
    dir
}

fn use_policies(c: &mut Config, dir: &tempfile::TempDir) {
    c.policies.dir = dir.path().to_owned();
    c.policies.schema = dir.path().join("schema.cedarschema");
    c.policies.entities = Some(dir.path().join("entities.json"));
}

fn field(name: &str, attr: &str, kind: FieldType, max_len: usize) -> ContextField {
    ContextField {
        name: name.into(),
        attr: attr.into(),
        kind,
        max_len,
    }
}

/// Sets the Check's `attributes.source`: the TCP peer address and the peer principal.
fn from_peer(mut c: CheckRequest, ip: Option<&str>, principal: &str) -> CheckRequest {
    if let Some(attrs) = c.attributes.as_mut() {
        attrs.source = Some(Peer {
            address: ip.map(|ip| Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.into(),
                    ..Default::default()
                })),
            }),
            principal: principal.into(),
            ..Default::default()
        });
    }
    c
}

/// u1 reads its own balance (allowed by the shipped policies), from `ip`.
fn balance(path_suffix: &str, headers: &[(&str, &str)], ip: Option<&str>) -> CheckRequest {
    let c = check(
        "GET",
        &format!("/accounts/a1/balance{path_suffix}"),
        Some(("u1", json!({}))),
        headers,
    );
    from_peer(c, ip, "")
}

async fn malformed_count(rg: &Running) -> f64 {
    let (_, text) = http_get(rg.admin, "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("riskgate_decisions_total") && l.contains("malformed_request"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_cidr_range_allows_inside_and_denies_outside() {
    // Fails on a schema where `ip` is a String: strict validation rejects isInRange.
    let dir = policies_with(
        r#"@id("test-internal-network-only")
forbid (principal, action, resource)
unless { context.request has ip && context.request.ip.isInRange(ip("10.0.0.0/8")) };
"#,
    );
    let rg = start(SimConfig::default(), |c| use_policies(c, &dir)).await;
    assert_eq!(rg.status(balance("", &[], Some("10.1.2.3"))).await, 200);
    assert_eq!(rg.status(balance("", &[], Some("203.0.113.7"))).await, 403);
    assert_eq!(rg.status(balance("", &[], Some("2001:db8::1"))).await, 403);
    // no client address: `ip` is absent, and this policy denies
    assert_eq!(rg.status(balance("", &[], None)).await, 403);
    rg.stop().await;
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_its_ipv4_address() {
    // A dual-stack listener (`::` with `ipv4_compat`) reports an IPv4 client as
    // `::ffff:a.b.c.d`; Cedar's ipaddr would take it as IPv6 and miss every IPv4 range.
    let dir = policies_with(
        r#"@id("test-blocked-range")
forbid (principal, action, resource)
when { context.request has ip && context.request.ip.isInRange(ip("203.0.113.0/24")) };
"#,
    );
    let rg = start(SimConfig::default(), |c| use_policies(c, &dir)).await;
    assert_eq!(rg.status(balance("", &[], Some("198.51.100.1"))).await, 200);
    assert_eq!(rg.status(balance("", &[], Some("203.0.113.7"))).await, 403);
    assert_eq!(
        rg.status(balance("", &[], Some("::ffff:203.0.113.7")))
            .await,
        403
    );
    rg.stop().await;
}

#[tokio::test]
async fn configured_headers_are_typed_context() {
    let dir = policies_with(
        r#"@id("test-tenant-acme-only")
forbid (principal, action, resource)
unless {
  context.request has headers && context.request.headers has tenant &&
  context.request.headers.tenant == "acme"
};
@id("test-priority-at-most-5")
forbid (principal, action, resource)
when {
  context.request has headers && context.request.headers has priority &&
  context.request.headers.priority > 5
};
@id("test-no-canary")
forbid (principal, action, resource)
when {
  context.request has headers && context.request.headers has canary &&
  context.request.headers.canary
};
"#,
    );
    let rg = start(SimConfig::default(), |c| {
        use_policies(c, &dir);
        c.context.headers = vec![
            field("X-Tenant", "tenant", FieldType::String, 8),
            field("x-priority", "priority", FieldType::Long, 8),
            field("x-canary", "canary", FieldType::Bool, 8),
        ];
    })
    .await;
    let ip = Some("10.0.0.1");
    for (case, headers, status) in [
        ("tenant acme", &[("x-tenant", "acme")][..], 200),
        ("other tenant", &[("x-tenant", "evil")], 403),
        ("no tenant", &[], 403),
        (
            "priority 3",
            &[("x-tenant", "acme"), ("x-priority", "3")],
            200,
        ),
        (
            "priority 9",
            &[("x-tenant", "acme"), ("x-priority", "9")],
            403,
        ),
        (
            "canary false",
            &[("x-tenant", "acme"), ("x-canary", "false")],
            200,
        ),
        (
            "canary true",
            &[("x-tenant", "acme"), ("x-canary", "true")],
            403,
        ),
    ] {
        assert_eq!(rg.status(balance("", headers, ip)).await, status, "{case}");
    }
    // a value that is not of its type, or too long, is a malformed request
    let before = malformed_count(&rg).await;
    for (case, headers) in [
        (
            "priority not a number",
            &[("x-tenant", "acme"), ("x-priority", "3x")][..],
        ),
        (
            "canary not a bool",
            &[("x-tenant", "acme"), ("x-canary", "yes")],
        ),
        ("tenant too long", &[("x-tenant", "acme-corporation")]),
    ] {
        assert_eq!(rg.status(balance("", headers, ip)).await, 403, "{case}");
    }
    assert_eq!(malformed_count(&rg).await - before, 3.0);
    rg.stop().await;
}

#[tokio::test]
async fn configured_query_parameters_are_typed_context() {
    let dir = policies_with(
        r#"@id("test-region-eu-only")
forbid (principal, action, resource)
unless {
  context.request has query && context.request.query has region &&
  context.request.query.region == "eu"
};
@id("test-page-at-most-100")
forbid (principal, action, resource)
when {
  context.request has query && context.request.query has page &&
  context.request.query.page > 100
};
"#,
    );
    let rg = start(SimConfig::default(), |c| {
        use_policies(c, &dir);
        c.context.query = vec![
            field("region", "region", FieldType::String, 8),
            field("page", "page", FieldType::Long, 8),
        ];
    })
    .await;
    let ip = Some("10.0.0.1");
    for (case, query, status) in [
        ("region eu", "?region=eu", 200),
        ("percent-decoded", "?r%65gion=e%75&other=1", 200),
        ("region us", "?region=us", 403),
        ("no query", "", 403),
        ("page 2", "?page=2&region=eu", 200),
        ("page 101", "?page=101&region=eu", 403),
        ("repeated", "?region=us&region=eu", 403),
        ("page not a number", "?page=two&region=eu", 403),
        ("bad escape", "?region=e%zz", 403),
    ] {
        assert_eq!(rg.status(balance(query, &[], ip)).await, status, "{case}");
    }
    rg.stop().await;
}

/// `POST /internal/settle` from a workload with peer principal `principal`.
fn settle(principal: &str) -> CheckRequest {
    from_peer(
        check("POST", "/internal/settle", None, &[]),
        Some("10.0.0.1"),
        principal,
    )
}

#[tokio::test]
async fn only_the_payments_workload_may_settle() {
    // the shipped config (trust domain cluster.local) and policies/internal.cedar
    let rg = start(SimConfig::default(), |_| {}).await;
    assert_eq!(
        rg.status(settle("spiffe://cluster.local/ns/bank/sa/payments"))
            .await,
        200
    );
    for other in [
        "spiffe://cluster.local/ns/bank/sa/frontend",
        "spiffe://cluster.local/ns/shop/sa/payments",
        "spiffe://attacker.example/ns/bank/sa/payments",
        "spiffe://cluster.local/ns/bank/sa/payments/extra",
        "CN=payments",
        "",
    ] {
        assert_eq!(rg.status(settle(other)).await, 403, "{other:?}");
    }
    rg.stop().await;

    // with no trust domain configured, no principal is believed
    let rg = start(SimConfig::default(), |c| {
        c.context.workload.trust_domains.clear();
    })
    .await;
    assert_eq!(
        rg.status(settle("spiffe://cluster.local/ns/bank/sa/payments"))
            .await,
        403
    );
    rg.stop().await;
}

#[tokio::test]
async fn a_schema_that_does_not_declare_a_configured_fact_fails_at_load() {
    let sim = "http://127.0.0.1:9";
    let mut config = example_config(sim);
    config.context.headers = vec![field("x-tenant", "tenant", FieldType::String, 8)];
    let err = match riskgate::policy::load_snapshot(&config) {
        Ok(_) => panic!("the shipped schema declares no headers record"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("context"), "{err}");
    // an old schema with `ip: String` is refused at load, not at every Check
    let dir = policies_with("");
    let schema = dir.path().join("schema.cedarschema");
    let text = std::fs::read_to_string(&schema).unwrap_or_default();
    let old = text.replace("\"ip\"?: __cedar::ipaddr,", "\"ip\": String,");
    assert_ne!(text, old);
    if let Err(e) = std::fs::write(&schema, old) {
        panic!("{e}");
    }
    let mut config = example_config(sim);
    use_policies(&mut config, &dir);
    let err = match riskgate::policy::load_snapshot(&config) {
        Ok(_) => panic!("`ip: String` must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("ipaddr"), "{err}");
}
