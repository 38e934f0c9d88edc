//! One test per rule of the trusted-header check, on small broken configs, plus the shipped
//! proxy configs.

use super::*;
use std::path::PathBuf;

fn docs(text: &str) -> Vec<Value> {
    super::super::documents(text, Path::new("t.yaml")).unwrap_or_default()
}

fn envoy(text: &str) -> Vec<String> {
    envoy_problems(Path::new("envoy.yaml"), &docs(text), text, "X-JWT-Payload")
        .iter()
        .map(ToString::to_string)
        .collect()
}

const JWT: &str = r#"
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                users:
                  issuer: https://idp
                  payload_in_metadata: jwt_payload
                  FORWARD
"#;
const AUTHZ: &str = r#"
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: { envoy_grpc: { cluster_name: riskgate }, timeout: 1s }
"#;
const MUTATION: &str = r#"
          - name: envoy.filters.http.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation
              mutations:
                request_mutations:
                - remove: x-jwt-payload
"#;

/// An HCM with `filters` (in order) and `extra` HCM fields.
fn hcm(filters: &[&str], extra: &str) -> String {
    format!(
        r#"static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
{extra}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              request_headers_to_remove: [x-jwt-payload]
              routes: [{{ match: {{ prefix: "/" }}, route: {{ cluster: upstream }} }}]
          http_filters:{}"#,
        filters.concat()
    )
}

fn jwt(forward: &str) -> String {
    JWT.replace("FORWARD", forward)
}

#[test]
fn jwt_authn_forwarding_the_header_before_ext_authz_guards_it() {
    let ok = hcm(&[&jwt("forward_payload_header: x-jwt-payload"), AUTHZ], "");
    assert_eq!(envoy(&ok), Vec::<String>::new());
}

#[test]
fn jwt_authn_without_forward_payload_header_does_not() {
    // the shape of deploy/envoy/mtls/envoy-mtls.yaml before the fix; the route's
    // request_headers_to_remove (applied by the router, after ext_authz) does not count
    let broken = hcm(&[&jwt("forward: false"), AUTHZ], "");
    let problems = envoy(&broken);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("riskgate trusts header `x-jwt-payload`"),
        "{}",
        problems[0]
    );
    assert!(problems[0].starts_with("envoy.yaml:"), "{}", problems[0]);
}

#[test]
fn another_header_name_does_not() {
    let broken = hcm(&[&jwt("forward_payload_header: x-jwt-claims"), AUTHZ], "");
    assert_eq!(envoy(&broken).len(), 1);
}

#[test]
fn jwt_authn_after_ext_authz_is_too_late() {
    let broken = hcm(&[AUTHZ, &jwt("forward_payload_header: x-jwt-payload")], "");
    assert_eq!(envoy(&broken).len(), 1);
}

#[test]
fn a_header_mutation_before_ext_authz_guards_it() {
    assert!(envoy(&hcm(&[MUTATION, AUTHZ], "")).is_empty());
    assert_eq!(envoy(&hcm(&[AUTHZ, MUTATION], "")).len(), 1);
}

#[test]
fn an_early_header_mutation_guards_it() {
    let early = r#"          early_header_mutation_extensions:
          - name: envoy.http.early_header_mutation.header_mutation
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation
              mutations:
              - remove: x-jwt-payload"#;
    assert!(envoy(&hcm(&[AUTHZ], early)).is_empty());
}

#[test]
fn jwt_authn_switched_off_on_a_route_does_not() {
    let mut text = hcm(&[&jwt("forward_payload_header: x-jwt-payload"), AUTHZ], "");
    text.push_str(
        r#"
  per_route:
    typed_per_filter_config:
      envoy.filters.http.jwt_authn:
        "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
        disabled: true
"#,
    );
    let problems = envoy(&text);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("disabled: true"), "{}", problems[0]);
}

const RA: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: { name: jwt, namespace: NS }
spec:
  SELECTOR
  jwtRules:
  - issuer: https://idp
    OUTPUT
"#;
const AP: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: riskgate, namespace: bank }
spec:
  selector: { matchLabels: { app: bank-api, tier: api } }
  action: CUSTOM
  provider: { name: riskgate }
  rules: [{}]
"#;

fn istio(ra: Option<(&str, &str, &str)>) -> Vec<String> {
    let mut text = AP.to_owned();
    if let Some((ns, selector, output)) = ra {
        text.push_str("---\n");
        text.push_str(
            &RA.replace("NS", ns)
                .replace("SELECTOR", selector)
                .replace("OUTPUT", output),
        );
    }
    let d = docs(&text);
    istio_problems(
        &[(Path::new("istio.yaml"), text.as_str(), d.as_slice())],
        "x-jwt-payload",
    )
    .iter()
    .map(ToString::to_string)
    .collect()
}

const OUT: &str = "outputPayloadToHeader: x-jwt-payload";
const SAME: &str = "selector: { matchLabels: { app: bank-api } }";

#[test]
fn istio_custom_policy_covered_by_a_request_authentication_outputting_the_header() {
    assert!(istio(Some(("bank", SAME, OUT))).is_empty());
    assert!(istio(Some(("bank", "", OUT))).is_empty(), "namespace-wide");
    assert!(
        istio(Some(("istio-system", "", OUT))).is_empty(),
        "mesh-wide"
    );
}

#[test]
fn istio_custom_policy_without_request_authentication_is_flagged() {
    let problems = istio(None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`bank/riskgate`"), "{}", problems[0]);
    assert!(problems[0].starts_with("istio.yaml:3:"), "{}", problems[0]);
}

#[test]
fn istio_request_authentication_that_misses_the_header_or_workloads_is_flagged() {
    assert_eq!(
        istio(Some(("bank", SAME, "forwardOriginalToken: false"))).len(),
        1
    );
    assert_eq!(
        istio(Some(("other", SAME, OUT))).len(),
        1,
        "other namespace"
    );
    let narrower = "selector: { matchLabels: { app: bank-api, version: v2 } }";
    assert_eq!(
        istio(Some(("bank", narrower, OUT))).len(),
        1,
        "narrower selector"
    );
}

#[test]
fn istio_files_without_any_custom_policy_are_flagged() {
    let text = "extensionProviders: []\n";
    let d = docs(text);
    let problems = istio_problems(
        &[(Path::new("mesh.yaml"), text, d.as_slice())],
        "x-jwt-payload",
    );
    assert_eq!(problems.len(), 1);
    assert!(problems[0]
        .to_string()
        .contains("no AuthorizationPolicy with `action: CUSTOM`"));
}

#[test]
fn istio_targetrefs_policy_needs_a_request_authentication_with_the_same_targets() {
    let refs = "targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: waypoint }]";
    let ap = AP.replace(
        "selector: { matchLabels: { app: bank-api, tier: api } }",
        refs,
    );
    let run = |ra_ns: &str, ra_scope: &str| {
        let text = format!(
            "{ap}---\n{}",
            RA.replace("NS", ra_ns)
                .replace("SELECTOR", ra_scope)
                .replace("OUTPUT", OUT)
        );
        let d = docs(&text);
        istio_problems(
            &[(Path::new("istio.yaml"), text.as_str(), d.as_slice())],
            "x-jwt-payload",
        )
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
    };
    assert!(run("bank", refs).is_empty());
    // a waypoint ignores selector and namespace-wide RequestAuthentications
    for (ns, scope) in [
        ("bank", SAME),
        ("bank", ""),
        ("istio-system", ""),
        ("other", refs),
    ] {
        let got = run(ns, scope);
        assert_eq!(got.len(), 1, "{ns} {scope}: {got:?}");
        assert!(got[0].contains("attached by `targetRefs`"), "{}", got[0]);
    }
    // and a sidecar policy is not covered by a RequestAuthentication attached to a waypoint
    assert_eq!(istio(Some(("bank", refs, OUT))).len(), 1);
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn shipped_envoy_configs_guard_x_jwt_payload() {
    for file in [
        "deploy/envoy/envoy.yaml",
        "deploy/envoy/mtls/envoy-mtls.yaml",
    ] {
        let path = repo(file);
        let (text, d) = super::super::read_documents(&path).unwrap_or_default();
        assert!(!d.is_empty(), "{file}");
        let problems = envoy_problems(&path, &d, &text, "x-jwt-payload");
        assert!(problems.is_empty(), "{file}: {problems:?}");
    }
}

#[test]
fn shipped_istio_files_guard_x_jwt_payload() {
    let read: Vec<(PathBuf, String, Vec<Value>)> = ["deploy/istio", "deploy/istio/ambient"]
        .into_iter()
        .flat_map(|dir| {
            std::fs::read_dir(repo(dir))
                .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
                .unwrap_or_else(|_| Vec::new())
        })
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter_map(|p| {
            let (t, d) = super::super::read_documents(&p).ok()?;
            Some((p, t, d))
        })
        .collect();
    assert!(read.len() >= 8);
    let files: Vec<(&Path, &str, &[Value])> = read
        .iter()
        .map(|(p, t, d)| (p.as_path(), t.as_str(), d.as_slice()))
        .collect();
    let problems = istio_problems(&files, "x-jwt-payload");
    assert!(problems.is_empty(), "{problems:?}");
}
