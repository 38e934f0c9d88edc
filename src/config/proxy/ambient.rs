//! Istio ambient mode: riskgate is asked by a **waypoint** (a Gateway API `Gateway` with
//! `gatewayClassName: istio-waypoint`), through an `AuthorizationPolicy` with `action: CUSTOM`
//! attached by `targetRefs` to that waypoint (or to a Service it serves).
//!
//! The waypoint is only on the path of traffic addressed to the Service: a client that sends
//! straight to a pod IP reaches the pod's ztunnel without passing the waypoint, so riskgate is
//! never asked. Istio's docs say so ("Use Layer 4 security policy", istio.io/latest/docs/ambient/
//! usage/l4-policy): the receiving ztunnel enforces only selector-based L4 policies. Hence the
//! rule checked here: for every namespace with a waypoint-attached CUSTOM policy there must be
//! an L4 `AuthorizationPolicy` (workload `selector` or namespace-wide, `action: ALLOW`, no
//! `targetRefs`) whose every rule admits only the waypoint's identity
//! (`<trust domain>/ns/<ns>/sa/<waypoint name>`: Istio runs a waypoint under a service
//! account named after the `Gateway`, or the one its `gateway.istio.io/service-account`
//! annotation names), and no other ztunnel-enforced ALLOW policy there that
//! admits anyone else (ALLOW policies add up).

use super::trust::{resource, Resource};
use super::{get, ProxyConfigError};
use crate::source::SourceLocation;
use serde_yaml_ng::Value;
use std::path::Path;

/// The Gateway class Istio uses for waypoints.
pub(super) const WAYPOINT_CLASS: &str = "istio-waypoint";

/// Istio's annotation that sets a gateway's service account (its identity).
const SERVICE_ACCOUNT_ANNOTATION: &str = "gateway.istio.io/service-account";

/// A Gateway API `Gateway` given among the Istio files.
pub(super) struct Gateway {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) class: String,
    /// The service account its pods run as: the Gateway's name for a waypoint, unless the
    /// `gateway.istio.io/service-account` annotation names another.
    pub(super) service_account: String,
}

/// The AuthorizationPolicies and Gateways of a set of Istio files.
pub(super) struct IstioSet {
    pub(super) policies: Vec<Resource>,
    pub(super) gateways: Vec<Gateway>,
}

impl IstioSet {
    /// Reads the resources of interest from already parsed files.
    pub(super) fn collect(files: &[(&Path, &str, &[Value])]) -> Self {
        let mut set = IstioSet {
            policies: Vec::new(),
            gateways: Vec::new(),
        };
        for (path, text, docs) in files {
            for map in docs.iter().filter_map(Value::as_mapping) {
                let api = get(map, "apiVersion").and_then(Value::as_str).unwrap_or("");
                match get(map, "kind").and_then(Value::as_str) {
                    Some("AuthorizationPolicy") if api.contains("istio.io/") => {
                        set.policies.push(resource(path, text, map));
                    }
                    Some("Gateway") if api.starts_with("gateway.networking.k8s.io/") => {
                        let r = resource(path, text, map);
                        let class = get(&r.body, "gatewayClassName")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let service_account = get(map, "metadata")
                            .and_then(Value::as_mapping)
                            .and_then(|m| get(m, "annotations"))
                            .and_then(Value::as_mapping)
                            .and_then(|a| get(a, SERVICE_ACCOUNT_ANNOTATION))
                            .and_then(Value::as_str)
                            .map_or_else(|| r.name.clone(), str::to_owned);
                        set.gateways.push(Gateway {
                            namespace: r.namespace,
                            name: r.name,
                            class,
                            service_account,
                        });
                    }
                    _ => {}
                }
            }
        }
        set
    }

    /// The Gateway named `name` in `namespace`, when given.
    pub(super) fn gateway(&self, namespace: &str, name: &str) -> Option<&Gateway> {
        self.gateways
            .iter()
            .find(|g| g.namespace == namespace && g.name == name)
    }

    /// The service accounts of the waypoints that enforce `policy` (a CUSTOM policy with
    /// `targetRefs`): the targeted waypoint Gateways, or for a targeted Service the waypoints
    /// given in its namespace.
    /// `Err` names a Service target whose waypoint is not among the files.
    fn waypoints_of(&self, policy: &Resource) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for (kind, name) in &policy.target_refs {
            match kind.as_str() {
                "Gateway" => {
                    if let Some(g) = self
                        .gateway(&policy.namespace, name)
                        .filter(|g| g.class == WAYPOINT_CLASS)
                    {
                        out.push(g.service_account.clone());
                    }
                }
                "Service" | "ServiceEntry" => {
                    let here: Vec<String> = self
                        .gateways
                        .iter()
                        .filter(|g| g.namespace == policy.namespace && g.class == WAYPOINT_CLASS)
                        .map(|g| g.service_account.clone())
                        .collect();
                    if here.is_empty() {
                        return Err(format!(
                            "AuthorizationPolicy `{}/{}` (CUSTOM) targets {kind} `{name}`, which only a waypoint enforces, but no Gateway with `gatewayClassName: {WAYPOINT_CLASS}` in namespace `{}` is among the Istio files; pass the waypoint's file",
                            policy.namespace, policy.name, policy.namespace
                        ));
                    }
                    out.extend(here);
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// One problem per waypoint-enforced CUSTOM policy whose workloads accept traffic that skips
/// the waypoint, and per ztunnel ALLOW policy that admits other sources next to it.
pub fn waypoint_problems(files: &[(&Path, &str, &[Value])]) -> Vec<ProxyConfigError> {
    let set = IstioSet::collect(files);
    let mut problems = Vec::new();
    let mut flagged_wide: Vec<(String, String)> = Vec::new();
    for policy in set.policies.iter().filter(|p| is_custom(p)) {
        let waypoints = match set.waypoints_of(policy) {
            Ok(w) if w.is_empty() => continue,
            Ok(w) => w,
            Err(why) => {
                problems.push(ProxyConfigError::WaypointBypass {
                    at: at(policy),
                    why,
                });
                continue;
            }
        };
        let ns = policy.namespace.as_str();
        let l4: Vec<&Resource> = set
            .policies
            .iter()
            .filter(|p| p.namespace == ns && p.target_refs.is_empty() && is_allow(p))
            .collect();
        let principals: Vec<String> = waypoints
            .iter()
            .map(|w| format!("cluster.local/ns/{ns}/sa/{w}"))
            .collect();
        if !l4.iter().any(|p| admits_only(p, ns, &waypoints)) {
            problems.push(ProxyConfigError::WaypointBypass {
                at: at(policy),
                why: format!(
                    "AuthorizationPolicy `{ns}/{}` (CUSTOM) is enforced by the waypoint running as {}, but no L4 AuthorizationPolicy in namespace `{ns}` (`selector` on the workloads, `action: ALLOW`, every rule `from.source.principals` only {}) admits the waypoint alone; in ambient mode a request sent straight to a pod IP skips the waypoint, so riskgate is never asked about it",
                    policy.name,
                    quoted(&waypoints),
                    quoted(&principals),
                ),
            });
        }
        for wide in l4.iter().filter(|p| !admits_only(p, ns, &waypoints)) {
            let key = (wide.namespace.clone(), wide.name.clone());
            if flagged_wide.contains(&key) {
                continue;
            }
            flagged_wide.push(key);
            problems.push(ProxyConfigError::WaypointBypass {
                at: at(wide),
                why: format!(
                    "AuthorizationPolicy `{ns}/{}` (ALLOW, enforced by ztunnel) admits sources other than the waypoint running as {} for CUSTOM policy `{ns}/{}`; those requests reach the workloads without riskgate (ALLOW policies add up)",
                    wide.name,
                    quoted(&waypoints),
                    policy.name
                ),
            });
        }
    }
    problems
}

fn at(r: &Resource) -> SourceLocation {
    SourceLocation::line(r.file.clone(), r.line)
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn action(p: &Resource) -> &str {
    get(&p.body, "action")
        .and_then(Value::as_str)
        .unwrap_or("ALLOW")
}

fn is_custom(p: &Resource) -> bool {
    action(p) == "CUSTOM" && !p.target_refs.is_empty()
}

fn is_allow(p: &Resource) -> bool {
    action(p) == "ALLOW"
}

/// Every rule of `p` admits only principals of the given waypoints of namespace `ns` (any
/// trust domain), and `p` has at least one rule (an ALLOW policy without rules admits nobody,
/// which would not let the waypoint through either).
fn admits_only(p: &Resource, ns: &str, waypoints: &[String]) -> bool {
    let rules: Vec<&Value> = get(&p.body, "rules")
        .and_then(Value::as_sequence)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let is_waypoint = |principal: &str| {
        waypoints
            .iter()
            .any(|w| principal.ends_with(&format!("/ns/{ns}/sa/{w}")) && !principal.contains('*'))
    };
    !rules.is_empty()
        && rules.iter().all(|rule| {
            let sources: Vec<&Value> = rule
                .as_mapping()
                .and_then(|r| get(r, "from"))
                .and_then(Value::as_sequence)
                .map(|f| f.iter().collect())
                .unwrap_or_default();
            !sources.is_empty()
                && sources.iter().all(|from| {
                    let Some(src) = from
                        .as_mapping()
                        .and_then(|f| get(f, "source"))
                        .and_then(Value::as_mapping)
                    else {
                        return false;
                    };
                    let principals: Vec<&str> = get(src, "principals")
                        .and_then(Value::as_sequence)
                        .map(|p| p.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    // any other source field (namespaces, ipBlocks, ...) widens the rule
                    src.len() == 1
                        && !principals.is_empty()
                        && principals.iter().all(|p| is_waypoint(p))
                })
        })
}

#[cfg(test)]
mod tests;
