//! Whether a proxy config guarantees the identity header riskgate trusts
//! (`identity.trusted_header`): a client must never be able to send it itself.
//!
//! What Envoy 1.40 does, verified against the real binary (tests/e2e_forged_identity.rs):
//! `jwt_authn` removes the `forward_payload_header` of **every** provider in the filter from
//! every request that passes through it — with or without a JWT, whether a rule matches or
//! not — and writes it back only from a verified JWT. So a header is guaranteed before
//! ext_authz when, in the same HTTP filter chain and before the ext_authz filter, there is
//!
//! * a `jwt_authn` filter with a provider whose `forward_payload_header` is that header, or
//! * a `header_mutation` filter, or an HCM `early_header_mutation_extensions` entry, that
//!   removes it.
//!
//! A route's `request_headers_to_remove` does not count: the router applies it after
//! ext_authz. A `jwt_authn` filter switched off for some route (`PerRouteConfig` with
//! `disabled: true`) does not count either.
//!
//! Under Istio, istiod renders `jwt_authn` (before the CUSTOM ext_authz filter) from the
//! `RequestAuthentication`s that select a workload, with `outputPayloadToHeader` as the
//! provider's `forward_payload_header`. So every `AuthorizationPolicy` with `action: CUSTOM`
//! must be covered by a `RequestAuthentication` (same namespace or the root namespace, a
//! selector no narrower than the policy's) that outputs the trusted header.

use super::{get, ProxyConfigError};
use crate::source::SourceLocation;
use serde_yaml_ng::{Mapping, Value};
use std::path::Path;

const JWT_AUTHN_TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const JWT_PER_ROUTE_TYPE: &str = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
const HEADER_MUTATION_TYPE: &str =
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
const EARLY_MUTATION_TYPE: &str =
    "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation";
/// Istio's root namespace: its policies apply to every namespace.
const ISTIO_ROOT_NAMESPACE: &str = "istio-system";

/// Problems with `header` in a standalone Envoy config: one per ext_authz filter that a
/// client-sent `header` can reach.
pub fn envoy_problems(
    path: &Path,
    docs: &[Value],
    text: &str,
    header: &str,
) -> Vec<ProxyConfigError> {
    let header = header.to_ascii_lowercase();
    let mut chains = Vec::new();
    for doc in docs {
        find_chains(doc, &mut chains);
    }
    let disabled = docs.iter().any(jwt_authn_disabled_somewhere);
    let lines = super::anchor_lines(text, super::EXT_AUTHZ_TYPE);
    let mut problems = Vec::new();
    let mut authz_index = 0;
    for (hcm, filters) in chains {
        let Some(authz_at) = filters
            .iter()
            .position(|f| is_type(f, super::EXT_AUTHZ_TYPE))
        else {
            continue;
        };
        let line = lines.get(authz_index).map(|(l, _)| *l);
        authz_index += filters
            .iter()
            .filter(|f| is_type(f, super::EXT_AUTHZ_TYPE))
            .count();
        let before = &filters[..authz_at];
        let by_jwt = before.iter().any(|f| jwt_forwards(f, &header));
        let by_mutation = before.iter().any(|f| {
            is_type(f, HEADER_MUTATION_TYPE)
                && typed(f)
                    .and_then(|t| get(t, "mutations"))
                    .and_then(Value::as_mapping)
                    .and_then(|m| get(m, "request_mutations"))
                    .is_some_and(|m| removes(m, &header))
        }) || early_mutation_removes(hcm, &header);
        let why = if by_mutation || (by_jwt && !disabled) {
            continue;
        } else if by_jwt {
            "jwt_authn forwards it, but a route switches jwt_authn off (`PerRouteConfig` `disabled: true`), so there a client-sent copy passes"
        } else {
            "no jwt_authn provider before ext_authz has `forward_payload_header` with this name, and no header_mutation before ext_authz removes it, so a client can send it (a route's `request_headers_to_remove` runs after ext_authz)"
        };
        problems.push(ProxyConfigError::UnguardedHeader {
            at: SourceLocation::line(path, line),
            header: header.clone(),
            why: why.into(),
        });
    }
    problems
}

/// One Istio resource of interest.
pub(super) struct Resource {
    pub(super) file: std::path::PathBuf,
    pub(super) line: Option<usize>,
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) selector: Option<Mapping>,
    /// `targetRefs` (or the older single `targetRef`) as `(kind, name)`: the policy attaches
    /// to a gateway, a waypoint or a Service instead of selecting workloads' sidecars.
    pub(super) target_refs: Vec<(String, String)>,
    pub(super) body: Mapping,
}

/// Problems with `header` across a set of Istio files (mesh config and resources): one per
/// CUSTOM `AuthorizationPolicy` not covered by a `RequestAuthentication` that outputs it,
/// or one overall when no CUSTOM policy is given at all (nothing shows who writes it).
pub fn istio_problems(files: &[(&Path, &str, &[Value])], header: &str) -> Vec<ProxyConfigError> {
    let header = header.to_ascii_lowercase();
    let mut policies = Vec::new();
    let mut authns = Vec::new();
    for (path, text, docs) in files {
        for doc in *docs {
            let Some(map) = doc.as_mapping() else {
                continue;
            };
            let kind = get(map, "kind").and_then(Value::as_str);
            let list = match kind {
                Some("AuthorizationPolicy") => &mut policies,
                Some("RequestAuthentication") => &mut authns,
                _ => continue,
            };
            list.push(resource(path, text, map));
        }
    }
    let custom: Vec<&Resource> = policies
        .iter()
        .filter(|p| get(&p.body, "action").and_then(Value::as_str) == Some("CUSTOM"))
        .collect();
    if custom.is_empty() {
        return vec![ProxyConfigError::UnguardedHeader {
            at: SourceLocation::file(
                files
                    .first()
                    .map_or_else(Default::default, |(p, _, _)| p.to_path_buf()),
            ),
            header,
            why: "no AuthorizationPolicy with `action: CUSTOM` among the Istio files, so nothing shows a RequestAuthentication writes it; pass the RequestAuthentication and AuthorizationPolicy files too".into(),
        }];
    }
    custom
        .into_iter()
        .filter(|p| !authns.iter().any(|ra| covers(ra, p) && outputs(ra, &header)))
        .map(|p| ProxyConfigError::UnguardedHeader {
            at: SourceLocation::line(p.file.clone(), p.line),
            header: header.clone(),
            why: if p.target_refs.is_empty() {
                format!(
                    "AuthorizationPolicy `{}/{}` (CUSTOM) selects workloads that no RequestAuthentication with `outputPayloadToHeader: {header}` selects; there Envoy has no jwt_authn to remove a client-sent copy",
                    p.namespace, p.name
                )
            } else {
                format!(
                    "AuthorizationPolicy `{}/{}` (CUSTOM) is attached by `targetRefs` to targets that no RequestAuthentication with `outputPayloadToHeader: {header}` in namespace `{}` targets; there Envoy has no jwt_authn to remove a client-sent copy",
                    p.namespace, p.name, p.namespace
                )
            },
        })
        .collect()
}

/// Whether a file holds Istio security resources or Gateway API gateways (an ambient
/// waypoint), so it may lack `extensionProviders`.
pub fn has_istio_resources(docs: &[Value]) -> bool {
    docs.iter().filter_map(Value::as_mapping).any(|m| {
        get(m, "apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.contains("istio.io/") || v.starts_with("gateway.networking.k8s.io/"))
    })
}

pub(super) fn resource(path: &Path, text: &str, map: &Mapping) -> Resource {
    let meta = get(map, "metadata").and_then(Value::as_mapping);
    let field = |k: &str| {
        meta.and_then(|m| get(m, k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = field("name");
    let body = get(map, "spec")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let selector = get(&body, "selector")
        .and_then(Value::as_mapping)
        .and_then(|s| get(s, "matchLabels"))
        .and_then(Value::as_mapping)
        .cloned();
    let target_refs = get(&body, "targetRefs")
        .and_then(Value::as_sequence)
        .map(|refs| refs.iter().collect::<Vec<_>>())
        .or_else(|| get(&body, "targetRef").map(|r| vec![r]))
        .unwrap_or_default()
        .into_iter()
        .filter_map(Value::as_mapping)
        .map(|r| {
            let f = |k: &str| {
                get(r, k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (f("kind"), f("name"))
        })
        .collect();
    let kind = get(map, "kind").and_then(Value::as_str).unwrap_or_default();
    let line = name_line(text, kind, &name);
    Resource {
        file: path.to_owned(),
        line,
        name,
        namespace: field("namespace"),
        selector,
        target_refs,
        body,
    }
}

/// The line of `name: NAME` in the first resource of `kind` that has it.
fn name_line(text: &str, kind: &str, name: &str) -> Option<usize> {
    let key = format!("name: {name}");
    let mut in_kind = false;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("kind:") {
            in_kind = line.trim_start_matches("kind:").trim() == kind;
        }
        let named = line.match_indices(&key).any(|(at, _)| {
            !line[at + key.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        });
        if in_kind && named {
            return Some(i + 1);
        }
    }
    None
}

/// `ra` applies to every workload `policy` selects. A policy attached by `targetRefs` (a
/// gateway or an ambient waypoint) is covered only by a `RequestAuthentication` in its
/// namespace attached to the same targets: waypoints ignore selector and namespace-wide
/// policies, and sidecars ignore `targetRefs` ones.
fn covers(ra: &Resource, policy: &Resource) -> bool {
    if !policy.target_refs.is_empty() || !ra.target_refs.is_empty() {
        return ra.namespace == policy.namespace
            && !policy.target_refs.is_empty()
            && policy
                .target_refs
                .iter()
                .all(|r| ra.target_refs.contains(r));
    }
    let namespace_ok = ra.namespace == policy.namespace || ra.namespace == ISTIO_ROOT_NAMESPACE;
    let selector_ok = match (&ra.selector, &policy.selector) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(ra_labels), Some(p_labels)) => {
            ra_labels.iter().all(|(k, v)| p_labels.get(k) == Some(v))
        }
    };
    namespace_ok && selector_ok
}

fn outputs(ra: &Resource, header: &str) -> bool {
    get(&ra.body, "jwtRules")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_mapping)
        .any(|rule| {
            get(rule, "outputPayloadToHeader")
                .and_then(Value::as_str)
                .is_some_and(|h| h.eq_ignore_ascii_case(header))
        })
}

/// Every HCM-like mapping with an `http_filters` list, with that list.
fn find_chains<'a>(value: &'a Value, out: &mut Vec<(&'a Mapping, &'a [Value])>) {
    match value {
        Value::Mapping(map) => {
            if let Some(filters) = get(map, "http_filters").and_then(Value::as_sequence) {
                out.push((map, filters));
            }
            map.values().for_each(|v| find_chains(v, out));
        }
        Value::Sequence(items) => items.iter().for_each(|v| find_chains(v, out)),
        Value::Tagged(t) => find_chains(&t.value, out),
        _ => {}
    }
}

fn typed(filter: &Value) -> Option<&Mapping> {
    filter
        .as_mapping()
        .and_then(|f| get(f, "typed_config"))
        .and_then(Value::as_mapping)
}

fn is_type(filter: &Value, ty: &str) -> bool {
    let switched_off = filter
        .as_mapping()
        .and_then(|f| get(f, "disabled"))
        .and_then(Value::as_bool)
        == Some(true);
    !switched_off
        && typed(filter)
            .and_then(|t| get(t, "@type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with(ty))
}

fn jwt_forwards(filter: &Value, header: &str) -> bool {
    is_type(filter, JWT_AUTHN_TYPE)
        && typed(filter)
            .and_then(|t| get(t, "providers"))
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|p| p.values())
            .filter_map(Value::as_mapping)
            .any(|p| {
                get(p, "forward_payload_header")
                    .and_then(Value::as_str)
                    .is_some_and(|h| h.eq_ignore_ascii_case(header))
            })
}

/// A `mutations` list (header_mutation filter or early mutation) with `remove: header`.
fn removes(mutations: &Value, header: &str) -> bool {
    mutations
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_mapping)
        .any(|m| {
            get(m, "remove")
                .and_then(Value::as_str)
                .is_some_and(|h| h.eq_ignore_ascii_case(header))
        })
}

fn early_mutation_removes(hcm: &Mapping, header: &str) -> bool {
    get(hcm, "early_header_mutation_extensions")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_mapping)
        .filter_map(|e| get(e, "typed_config").and_then(Value::as_mapping))
        .filter(|t| {
            get(t, "@type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty.ends_with(EARLY_MUTATION_TYPE))
        })
        .any(|t| get(t, "mutations").is_some_and(|m| removes(m, header)))
}

fn jwt_authn_disabled_somewhere(value: &Value) -> bool {
    match value {
        Value::Mapping(map) => {
            let off = get(map, "@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(JWT_PER_ROUTE_TYPE))
                && get(map, "disabled").and_then(Value::as_bool) == Some(true);
            off || map.values().any(jwt_authn_disabled_somewhere)
        }
        Value::Sequence(items) => items.iter().any(jwt_authn_disabled_somewhere),
        Value::Tagged(t) => jwt_authn_disabled_somewhere(&t.value),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
