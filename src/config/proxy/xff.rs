//! Whether the proxy picks the client address the way riskgate is told to
//! (`client_address.xff_trusted_hops`): each HTTP connection manager with an ext_authz filter
//! must have `use_remote_address: true` and `xff_num_trusted_hops` equal to riskgate's N
//! (when N > 0), and must not have `xff_num_trusted_hops` set when riskgate uses the TCP peer.
//! Otherwise riskgate and the proxy (its access log, its own rate limits) disagree on who
//! the client is, and riskgate may count an address the client wrote itself.

use super::ambient::{IstioSet, WAYPOINT_CLASS};
use super::{get, ProxyConfigError};
use crate::source::SourceLocation;
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

/// Where a gateway's `numTrustedProxies` comes from: the mesh-wide default
/// (`meshConfig.defaultConfig.gatewayTopology`) or the gateway pod's `proxy.istio.io/config`
/// annotation, which overrides it.
const MESH_DEFAULT: &str = "mesh config defaultConfig.gatewayTopology";
const POD_ANNOTATION: &str = "gateway pod annotation proxy.istio.io/config";

/// One problem per ext_authz HCM in a standalone Envoy config whose client-address settings
/// do not match `hops`.
pub fn envoy_problems(path: &Path, docs: &[Value], text: &str, hops: u32) -> Vec<ProxyConfigError> {
    let mut hcms = Vec::new();
    for doc in docs {
        find_authz_hcms(doc, &mut hcms);
    }
    let lines = super::anchor_lines(text, super::EXT_AUTHZ_TYPE);
    let mut problems = Vec::new();
    for (i, hcm) in hcms.into_iter().enumerate() {
        let remote = get(hcm, "use_remote_address")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let proxy_hops = get(hcm, "xff_num_trusted_hops")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let skip_append = get(hcm, "skip_xff_append")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let fits = if hops == 0 {
            proxy_hops == 0
        } else {
            remote && !skip_append && proxy_hops == u64::from(hops)
        };
        if !fits {
            problems.push(ProxyConfigError::ClientAddress {
                at: SourceLocation::line(path, lines.get(i).map(|(l, _)| *l)),
                riskgate_hops: hops,
                use_remote_address: remote,
                proxy_hops,
                skip_append,
            });
        }
    }
    problems
}

/// Istio: when riskgate is asked at a gateway (a CUSTOM `AuthorizationPolicy` selecting
/// gateway pods, or attached by `targetRefs` to a given non-waypoint `Gateway`), the gateway's
/// Envoy sets `xff_num_trusted_hops` from `gatewayTopology.numTrustedProxies` (with
/// `use_remote_address: true`), so it must equal `hops`, as for a standalone Envoy. The value
/// is read from `proxy.istio.io/config` pod annotations when the files set one (they override
/// the mesh default), else from the mesh config's `defaultConfig`, else Istio's default 0 when
/// a mesh config is given. Sidecars and waypoints are not checked: behind a gateway the right
/// N there is one more than the gateway's, but a caller inside the mesh sends no hops at all.
pub fn istio_problems(files: &[(&Path, &str, &[Value])], hops: u32) -> Vec<ProxyConfigError> {
    let set = IstioSet::collect(files);
    let Some(policy) = set.policies.iter().find(|p| {
        get(&p.body, "action").and_then(Value::as_str) == Some("CUSTOM")
            && (selects_gateway(p.selector.as_ref())
                || p.target_refs.iter().any(|(kind, name)| {
                    kind == "Gateway"
                        && set
                            .gateway(&p.namespace, name)
                            .is_some_and(|g| g.class != WAYPOINT_CLASS)
                }))
    }) else {
        return Vec::new();
    };
    let policy = format!("{}/{}", policy.namespace, policy.name);
    let mut found = Vec::new();
    let mut mesh_given = None;
    for (path, text, docs) in files {
        let mut here = Vec::new();
        for doc in *docs {
            find_trusted_proxies(doc, MESH_DEFAULT, &mut here);
        }
        let lines = super::anchor_lines(text, "numTrustedProxies");
        for (i, (n, kind)) in here.into_iter().enumerate() {
            let line = lines.get(i).map(|(l, _)| *l);
            found.push((SourceLocation::line(*path, line), n, kind));
        }
        let has_mesh = text
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && super::mentions(l, "extensionProviders"));
        if has_mesh && mesh_given.is_none() {
            mesh_given = Some(SourceLocation::file(*path));
        }
    }
    let annotated = found.iter().any(|(_, _, k)| *k == POD_ANNOTATION);
    let mut in_force: Vec<(SourceLocation, u64, &'static str, bool)> = found
        .into_iter()
        .filter(|(_, _, k)| !annotated || *k == POD_ANNOTATION)
        .map(|(at, n, k)| (at, n, k, false))
        .collect();
    if in_force.is_empty() {
        if let Some(at) = mesh_given {
            in_force.push((at, 0, MESH_DEFAULT, true));
        }
    }
    in_force
        .into_iter()
        .filter(|(_, n, _, _)| *n != u64::from(hops))
        .map(
            |(at, n, kind, defaulted)| ProxyConfigError::GatewayClientAddress {
                at,
                riskgate_hops: hops,
                proxy_hops: n,
                defaulted,
                source_kind: kind,
                policy: policy.clone(),
            },
        )
        .collect()
}

/// A selector that picks gateway pods: the istio/gateway chart's `istio: ingressgateway`
/// (or any `istio: *gateway`), or the label Istio puts on Gateway API gateway pods.
fn selects_gateway(selector: Option<&Mapping>) -> bool {
    selector.is_some_and(|labels| {
        labels.iter().any(|(k, v)| match k.as_str() {
            Some("istio") => v.as_str().is_some_and(|v| v.contains("gateway")),
            Some("istio.io/gateway-name" | "gateway.networking.k8s.io/gateway-name") => true,
            _ => false,
        })
    })
}

/// Every `gatewayTopology.numTrustedProxies` in `value`, in document order, with whether it
/// is a mesh default or a pod annotation (a YAML or JSON string, like the `mesh` key of the
/// `istio` ConfigMap).
fn find_trusted_proxies(value: &Value, kind: &'static str, out: &mut Vec<(u64, &'static str)>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    (Some("gatewayTopology"), Value::Mapping(topology)) => {
                        if let Some(n) = get(topology, "numTrustedProxies").and_then(Value::as_u64)
                        {
                            out.push((n, kind));
                        }
                    }
                    (Some("proxy.istio.io/config"), Value::String(inner)) => {
                        if let Ok(inner) = serde_yaml_ng::from_str::<Value>(inner) {
                            find_trusted_proxies(&inner, POD_ANNOTATION, out);
                        }
                    }
                    (Some("mesh"), Value::String(inner)) => {
                        if let Ok(inner) = serde_yaml_ng::from_str::<Value>(inner) {
                            find_trusted_proxies(&inner, kind, out);
                        }
                    }
                    _ => find_trusted_proxies(v, kind, out),
                }
            }
        }
        Value::Sequence(items) => items
            .iter()
            .for_each(|v| find_trusted_proxies(v, kind, out)),
        Value::Tagged(t) => find_trusted_proxies(&t.value, kind, out),
        _ => {}
    }
}

/// Every mapping with an `http_filters` list holding the ext_authz filter.
fn find_authz_hcms<'a>(value: &'a Value, out: &mut Vec<&'a Mapping>) {
    match value {
        Value::Mapping(map) => {
            let has_authz = get(map, "http_filters")
                .and_then(Value::as_sequence)
                .is_some_and(|filters| filters.iter().any(is_ext_authz));
            if has_authz {
                out.push(map);
            }
            map.values().for_each(|v| find_authz_hcms(v, out));
        }
        Value::Sequence(items) => items.iter().for_each(|v| find_authz_hcms(v, out)),
        Value::Tagged(t) => find_authz_hcms(&t.value, out),
        _ => {}
    }
}

fn is_ext_authz(filter: &Value) -> bool {
    filter
        .as_mapping()
        .and_then(|f| get(f, "typed_config"))
        .and_then(Value::as_mapping)
        .and_then(|t| get(t, "@type"))
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with(super::EXT_AUTHZ_TYPE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(hcm_extra: &str, hops: u32) -> Vec<String> {
        let text = format!(
            r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
{hcm_extra}
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
          - name: envoy.filters.http.router
"#
        );
        let docs: Vec<Value> = match serde_yaml_ng::from_str(&text) {
            Ok(v) => vec![v],
            Err(e) => panic!("{e}"),
        };
        envoy_problems(Path::new("envoy.yaml"), &docs, &text, hops)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn matching_settings_pass() {
        assert!(problems("          use_remote_address: true", 0).is_empty());
        assert!(problems("", 0).is_empty());
        let both = "          use_remote_address: true\n          xff_num_trusted_hops: 2";
        assert!(problems(both, 2).is_empty());
    }

    #[test]
    fn a_mismatch_names_both_sides() {
        let got = problems("          use_remote_address: true", 1);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("client_address.xff_trusted_hops is 1"),
            "{got:?}"
        );
        assert!(got[0].contains("xff_num_trusted_hops is 0"), "{got:?}");
        let got = problems("          xff_num_trusted_hops: 1", 1);
        assert!(got[0].contains("use_remote_address is false"), "{got:?}");
        let got = problems(
            "          use_remote_address: true\n          xff_num_trusted_hops: 1",
            0,
        );
        assert!(
            got[0].contains("client_address.xff_trusted_hops is 0"),
            "{got:?}"
        );
        let skip = "          use_remote_address: true\n          xff_num_trusted_hops: 1\n          skip_xff_append: true";
        assert_eq!(problems(skip, 1).len(), 1);
    }

    const GATEWAY_POLICY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: edge, namespace: istio-ingress }
spec:
  selector: { matchLabels: { istio: ingressgateway } }
  action: CUSTOM
  provider: { name: riskgate }
  rules: [{}]
"#;
    const MESH: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    extensionProviders: [{ name: riskgate, envoyExtAuthzGrpc: { service: rg, port: 9001 } }]
    TOPOLOGY
"#;

    fn istio(files: &[&str], hops: u32) -> Vec<String> {
        let parsed: Vec<(String, Vec<Value>)> = files
            .iter()
            .map(|t| {
                let docs = serde_yaml_ng::Deserializer::from_str(t)
                    .filter_map(|d| serde::Deserialize::deserialize(d).ok())
                    .collect();
                ((*t).to_owned(), docs)
            })
            .collect();
        let args: Vec<(&Path, &str, &[Value])> = parsed
            .iter()
            .map(|(t, d)| (Path::new("istio.yaml"), t.as_str(), d.as_slice()))
            .collect();
        istio_problems(&args, hops)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn mesh(topology: &str) -> String {
        MESH.replace("TOPOLOGY", topology)
    }

    #[test]
    fn gateway_num_trusted_proxies_must_equal_riskgate_hops() {
        let two = "defaultConfig: { gatewayTopology: { numTrustedProxies: 2 } }";
        assert!(istio(&[GATEWAY_POLICY, &mesh(two)], 2).is_empty());
        let got = istio(&[GATEWAY_POLICY, &mesh(two)], 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("istio.yaml:6: "), "{}", got[0]);
        assert!(got[0].contains("xff_trusted_hops is 1"), "{}", got[0]);
        assert!(got[0].contains("numTrustedProxies is 2 ("), "{}", got[0]);
        assert!(got[0].contains("`istio-ingress/edge`"), "{}", got[0]);
    }

    #[test]
    fn unset_num_trusted_proxies_is_istios_default_zero() {
        assert!(istio(&[GATEWAY_POLICY, &mesh("")], 0).is_empty());
        let got = istio(&[GATEWAY_POLICY, &mesh("")], 1);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("is 0 (unset: the default)"), "{}", got[0]);
        // nothing known without a mesh config
        assert!(istio(&[GATEWAY_POLICY], 1).is_empty());
    }

    #[test]
    fn a_gateway_pod_annotation_overrides_the_mesh_default() {
        let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata: { name: istio-ingressgateway, namespace: istio-ingress }
spec:
  template:
    metadata:
      annotations:
        proxy.istio.io/config: '{"gatewayTopology": {"numTrustedProxies": 1}}'
"#;
        let zero = "defaultConfig: { gatewayTopology: { numTrustedProxies: 0 } }";
        assert!(istio(&[GATEWAY_POLICY, &mesh(zero), deployment], 1).is_empty());
        let got = istio(&[GATEWAY_POLICY, &mesh(zero), deployment], 0);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("pod annotation"), "{}", got[0]);
        assert!(got[0].starts_with("istio.yaml:8: "), "{}", got[0]);
    }

    #[test]
    fn sidecar_and_waypoint_enforcement_is_not_compared() {
        let sidecar = GATEWAY_POLICY.replace("istio: ingressgateway", "app: bank-api");
        assert!(istio(&[&sidecar, &mesh("")], 3).is_empty());
    }
}
