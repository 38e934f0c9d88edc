//! The ambient rule on small sets, plus the shipped `deploy/istio/ambient/` set.

use super::*;
use std::path::PathBuf;

fn problems_of(text: &str) -> Vec<String> {
    let docs = super::super::documents(text, Path::new("ambient.yaml")).unwrap_or_default();
    waypoint_problems(&[(Path::new("ambient.yaml"), text, docs.as_slice())])
        .iter()
        .map(ToString::to_string)
        .collect()
}

const WAYPOINT: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: { name: waypoint, namespace: pay }
spec:
  gatewayClassName: istio-waypoint
  listeners: [{ name: mesh, port: 15008, protocol: HBONE }]
"#;
const CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ask-riskgate, namespace: pay }
spec:
  targetRefs: [{ group: gateway.networking.k8s.io, kind: KIND, name: TARGET }]
  action: CUSTOM
  provider: { name: riskgate }
  rules: [{}]
"#;
const L4: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: waypoint-only, namespace: pay }
spec:
  selector: { matchLabels: { app: pay-api } }
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [PRINCIPALS]
"#;

fn set(target: (&str, &str), l4: Option<&str>) -> String {
    let mut text = format!(
        "{WAYPOINT}---\n{}",
        CUSTOM.replace("KIND", target.0).replace("TARGET", target.1)
    );
    if let Some(principals) = l4 {
        text.push_str("---\n");
        text.push_str(&L4.replace("PRINCIPALS", principals));
    }
    text
}

const ONLY_WAYPOINT: &str = "cluster.local/ns/pay/sa/waypoint";

#[test]
fn waypoint_policy_with_an_l4_policy_admitting_only_the_waypoint_passes() {
    assert!(problems_of(&set(("Gateway", "waypoint"), Some(ONLY_WAYPOINT))).is_empty());
    assert!(
        problems_of(&set(("Service", "pay-api"), Some(ONLY_WAYPOINT))).is_empty(),
        "a Service target is enforced by the namespace's waypoint"
    );
    assert!(
        problems_of(&set(
            ("Gateway", "waypoint"),
            Some("example.org/ns/pay/sa/waypoint")
        ))
        .is_empty(),
        "another trust domain"
    );
}

#[test]
fn waypoint_policy_without_the_l4_policy_is_flagged_at_the_custom_policy() {
    let got = problems_of(&set(("Gateway", "waypoint"), None));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("ambient.yaml:10: "), "{}", got[0]);
    assert!(got[0].contains("`pay/ask-riskgate`"), "{}", got[0]);
    assert!(got[0].contains("skips the waypoint"), "{}", got[0]);
    assert!(
        got[0].contains("cluster.local/ns/pay/sa/waypoint"),
        "{}",
        got[0]
    );
}

#[test]
fn an_l4_policy_admitting_anyone_else_is_flagged() {
    for other in [
        "cluster.local/ns/pay/sa/waypoint, cluster.local/ns/pay/sa/batch",
        "cluster.local/ns/other/sa/waypoint",
        "\"*\"",
    ] {
        let got = problems_of(&set(("Gateway", "waypoint"), Some(other)));
        assert_eq!(got.len(), 2, "{other}: {got:?}");
        assert!(got[0].contains("admits the waypoint alone"), "{}", got[0]);
        assert!(got[1].contains("`pay/waypoint-only` (ALLOW"), "{}", got[1]);
    }
    // an extra ALLOW rule for another source next to a correct one
    let mut text = set(("Gateway", "waypoint"), Some(ONLY_WAYPOINT));
    text.push_str(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: scrape, namespace: pay }\nspec:\n  action: ALLOW\n  rules: [{ to: [{ operation: { ports: [\"9090\"] } }] }]\n",
    );
    let got = problems_of(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("`pay/scrape` (ALLOW"), "{}", got[0]);
}

#[test]
fn a_service_account_annotation_is_the_waypoint_identity() {
    let text = set(
        ("Gateway", "waypoint"),
        Some("cluster.local/ns/pay/sa/shared-waypoint"),
    )
    .replace(
        "metadata: { name: waypoint, namespace: pay }",
        "metadata:\n  name: waypoint\n  namespace: pay\n  annotations: { gateway.istio.io/service-account: shared-waypoint }",
    );
    assert!(problems_of(&text).is_empty(), "{:?}", problems_of(&text));
    let plain = set(
        ("Gateway", "waypoint"),
        Some("cluster.local/ns/pay/sa/shared-waypoint"),
    );
    assert_eq!(
        problems_of(&plain).len(),
        2,
        "without the annotation the SA is `waypoint`"
    );
}

#[test]
fn a_service_target_without_its_waypoint_file_is_flagged() {
    let text = CUSTOM
        .replace("KIND", "Service")
        .replace("TARGET", "pay-api");
    let got = problems_of(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("no Gateway with `gatewayClassName: istio-waypoint`"));
}

#[test]
fn sidecar_and_ingress_gateway_policies_are_not_ambient() {
    let sidecar = CUSTOM.replace(
        "  targetRefs: [{ group: gateway.networking.k8s.io, kind: KIND, name: TARGET }]",
        "  selector: { matchLabels: { app: pay-api } }",
    );
    assert!(problems_of(&sidecar).is_empty());
    let ingress = format!(
        "{}---\n{}",
        WAYPOINT.replace("istio-waypoint", "istio"),
        CUSTOM
            .replace("KIND", "Gateway")
            .replace("TARGET", "waypoint")
    );
    assert!(problems_of(&ingress).is_empty());
}

fn shipped(dir: &str, skip: &str) -> Vec<(PathBuf, String, Vec<Value>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !p.ends_with(skip) || skip.is_empty())
        .filter_map(|p| {
            let (t, d) = super::super::read_documents(&p).ok()?;
            Some((p, t, d))
        })
        .collect()
}

fn shipped_problems(skip: &str) -> Vec<String> {
    let mut read = shipped("deploy/istio", "");
    read.extend(shipped("deploy/istio/ambient", skip));
    let files: Vec<(&Path, &str, &[Value])> = read
        .iter()
        .map(|(p, t, d)| (p.as_path(), t.as_str(), d.as_slice()))
        .collect();
    waypoint_problems(&files)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn shipped_ambient_set_passes_and_fails_without_its_l4_policy() {
    assert!(shipped("deploy/istio/ambient", "").len() >= 3);
    let all = shipped_problems("");
    assert!(all.is_empty(), "{all:?}");
    let without = shipped_problems("workloads-waypoint-only.yaml");
    assert_eq!(without.len(), 1, "{without:?}");
    assert!(
        without[0].contains("enforce-waypoint.yaml:") && without[0].contains("skips the waypoint"),
        "{}",
        without[0]
    );
}
