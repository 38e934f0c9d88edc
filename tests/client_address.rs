//! The client address (issue 13, item 1): `client_address.xff_trusted_hops` through the real
//! gRPC server, and `riskgate validate --envoy-config` comparing it with the proxy's
//! `use_remote_address` / `xff_num_trusted_hops`.

mod common;

use common::*;
use risk_sim::SimConfig;
use riskgate::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use riskgate::pb::envoy::service::auth::v3::attribute_context::Peer;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;
use std::process::{Command, Output};

/// `GET /accounts/a1/balance` for u1 from the TCP peer 10.0.0.9 (the gateway).
fn balance_via_gateway(xff: Option<&str>) -> CheckRequest {
    let headers: Vec<(&str, &str)> = xff.map(|x| ("x-forwarded-for", x)).into_iter().collect();
    let mut c = check(
        "GET",
        "/accounts/a1/balance",
        Some(("u1", json!({}))),
        &headers,
    );
    if let Some(attrs) = c.attributes.as_mut() {
        attrs.source = Some(Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "10.0.0.9".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
    }
    c
}

#[tokio::test]
async fn a_check_without_the_trusted_hops_is_refused() {
    let rg = start(SimConfig::default(), |c| {
        c.client_address.xff_trusted_hops = 1;
    })
    .await;
    // through the load balancer and the gateway: the client is known
    let through = balance_via_gateway(Some("6.6.6.6, 203.0.113.7, 10.0.0.9"));
    assert_eq!(rg.status(through).await, 200);
    // straight to the gateway (no hop before it): no trustworthy client, so no answer
    // that would attribute the request to the gateway itself
    assert_eq!(rg.status(balance_via_gateway(Some("10.0.0.9"))).await, 403);
    assert_eq!(rg.status(balance_via_gateway(None)).await, 403);
    assert_eq!(
        rg.status(balance_via_gateway(Some("evil, 10.0.0.9"))).await,
        403
    );
    let (_, text) = http_get(rg.admin, "/metrics").await;
    assert!(
        text.contains(r#"reason="malformed_request""#),
        "the refusals are counted: {text}"
    );
    rg.stop().await;

    // with the default (0) the same Checks are decided on the TCP peer
    let rg = start(SimConfig::default(), |_| {}).await;
    assert_eq!(rg.status(balance_via_gateway(None)).await, 200);
    rg.stop().await;
}

fn validate(extra: &str, envoy: &str) -> Output {
    let ws = Workspace::new("http://127.0.0.1:9", extra);
    match Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args(["validate", "-c"])
        .arg(&ws.config)
        .arg("--envoy-config")
        .arg(repo(envoy))
        .env_remove("RISKGATE_CONFIG")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run riskgate: {e}"),
    }
}

#[test]
fn validate_compares_the_hops_with_the_envoy_config() {
    let fixture = "tests/data/client_address/envoy-xff-1-hop.yaml";
    let out = validate("", fixture);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("client_address.xff_trusted_hops is 0")
            && stderr.contains("xff_num_trusted_hops is 1"),
        "{stderr}"
    );
    let out = validate("client_address: { xff_trusted_hops: 1 }", fixture);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("xff_trusted_hops"),
        "matching settings pass the client-address check: {stderr}"
    );
    // the shipped edge Envoy trusts no hop: riskgate told to trust one is refused
    let out = validate(
        "client_address: { xff_trusted_hops: 1 }",
        "deploy/envoy/envoy.yaml",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("use_remote_address is true, xff_num_trusted_hops is 0"),
        "{stderr}"
    );
}
