//! Whether the proxy sends the request body that body-mapped routes read (`routes[].body`,
//! issue #16): a property of two configs at once. riskgate denies a mapped request without a
//! whole body, so a proxy config that sends none denies every withdrawal, and one that sends
//! less than the route's `max_bytes` cuts (and so denies) bodies riskgate would accept.
//!
//! Envoy: every `with_request_body` (the ext_authz filter's, or a route's
//! `ExtAuthzPerRoute.check_settings`) must send at least the largest `max_bytes`, and a config
//! with an ext_authz filter must have one. Istio: some `envoyExtAuthzGrpc` extension provider
//! must have `includeRequestBodyInCheck`, each with `maxRequestBytes` at least that (a second
//! provider without a body, for the routes that read none, is how README scopes it). Which
//! Envoy route or Istio provider serves which riskgate route is not matched (Envoy's regexes
//! and AuthorizationPolicy paths are not evaluated here): a body setting on the wrong route
//! is not caught.

use super::{get, EXT_AUTHZ_TYPE};
use crate::source::SourceLocation;
use serde_yaml_ng::Value;
use std::path::Path;

/// One body setting found in a proxy config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    /// `max_request_bytes` / `maxRequestBytes` (0 when unset: Envoy then sends no body).
    max_bytes: u64,
}

/// Problems of a standalone Envoy config for routes reading up to `needed` body bytes
/// (`None`: no route maps body fields, nothing to check).
pub fn envoy_problems(
    path: &Path,
    docs: &[Value],
    text: &str,
    needed: Option<usize>,
) -> Vec<String> {
    let Some(needed) = needed else {
        return Vec::new();
    };
    let mut asks = false;
    let mut sent = Vec::new();
    for doc in docs {
        walk(
            doc,
            &mut asks,
            &mut sent,
            "with_request_body",
            "max_request_bytes",
        );
    }
    problems(
        path,
        text,
        asks,
        &sent,
        needed,
        "with_request_body",
        "max_request_bytes",
    )
}

/// Problems of Istio files (mesh config or istiod values) for routes reading up to `needed`
/// body bytes.
pub fn istio_problems(
    path: &Path,
    docs: &[Value],
    text: &str,
    needed: Option<usize>,
) -> Vec<String> {
    let Some(needed) = needed else {
        return Vec::new();
    };
    let mut providers = 0usize;
    let mut sent = Vec::new();
    for doc in docs {
        istio_providers(doc, &mut providers, &mut sent);
    }
    if providers == 0 {
        return Vec::new();
    }
    problems(
        path,
        text,
        true,
        &sent,
        needed,
        "includeRequestBodyInCheck",
        "maxRequestBytes",
    )
}

fn problems(
    path: &Path,
    text: &str,
    asks: bool,
    sent: &[Sent],
    needed: usize,
    setting: &str,
    size: &str,
) -> Vec<String> {
    if !asks {
        return Vec::new();
    }
    let line = |nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains(setting))
            .nth(nth)
            .map(|(i, _)| i + 1)
    };
    if sent.is_empty() {
        return vec![format!(
            "{}: routes map request body fields (routes[].body, up to {needed} bytes), but this config sends no body with the Check ({setting}); every such request would be denied",
            SourceLocation::file(path)
        )];
    }
    let needed = u64::try_from(needed).unwrap_or(u64::MAX);
    sent.iter()
        .enumerate()
        .filter(|(_, s)| s.max_bytes < needed)
        .map(|(i, s)| {
            format!(
                "{}: {setting} {size} is {}, but routes[].body reads up to {needed} bytes; bodies in between arrive cut and are denied (set {size} to at least {needed}, or lower routes[].body.max_bytes)",
                SourceLocation::line(path, line(i)),
                s.max_bytes
            )
        })
        .collect()
}

/// Finds ext_authz filters (`asks`) and every `key` mapping with its `size`.
fn walk(value: &Value, asks: &mut bool, sent: &mut Vec<Sent>, key: &str, size: &str) {
    match value {
        Value::Mapping(map) => {
            if get(map, "@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(EXT_AUTHZ_TYPE))
            {
                *asks = true;
            }
            for (k, v) in map {
                if k.as_str() == Some(key) {
                    let max_bytes = v
                        .as_mapping()
                        .and_then(|m| get(m, size))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    sent.push(Sent { max_bytes });
                } else {
                    walk(v, asks, sent, key, size);
                }
            }
        }
        Value::Sequence(items) => {
            for v in items {
                walk(v, asks, sent, key, size);
            }
        }
        Value::Tagged(t) => walk(&t.value, asks, sent, key, size),
        _ => {}
    }
}

/// Counts `envoyExtAuthzGrpc` providers and collects their `includeRequestBodyInCheck`.
fn istio_providers(value: &Value, providers: &mut usize, sent: &mut Vec<Sent>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                if k.as_str() == Some("envoyExtAuthzGrpc") {
                    *providers += 1;
                    let mut asks = false;
                    walk(
                        v,
                        &mut asks,
                        sent,
                        "includeRequestBodyInCheck",
                        "maxRequestBytes",
                    );
                } else {
                    istio_providers(v, providers, sent);
                }
            }
        }
        Value::Sequence(items) => {
            for v in items {
                istio_providers(v, providers, sent);
            }
        }
        Value::Tagged(t) => istio_providers(&t.value, providers, sent),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(yaml: &str) -> Vec<Value> {
        match serde_yaml_ng::from_str(yaml) {
            Ok(v) => vec![v],
            Err(e) => panic!("yaml: {e}"),
        }
    }

    const ENVOY_FILTER: &str = r#"
http_filters:
- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
"#;

    fn envoy(extra: &str, needed: Option<usize>) -> Vec<String> {
        let text = format!("{ENVOY_FILTER}{extra}");
        envoy_problems(Path::new("envoy.yaml"), &docs(&text), &text, needed)
    }

    #[test]
    fn an_envoy_config_that_sends_no_body_fails_when_routes_map_body_fields() {
        let problems = envoy("", Some(8192));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("sends no body"), "{problems:?}");
        assert!(
            envoy("", None).is_empty(),
            "no mapped route, nothing to send"
        );
    }

    #[test]
    fn a_smaller_body_than_the_routes_read_fails_with_its_line() {
        let per_route = r#"
routes:
- typed_per_filter_config:
    envoy.filters.http.ext_authz:
      check_settings:
        with_request_body: { max_request_bytes: 4096, allow_partial_message: true }
"#;
        let problems = envoy(per_route, Some(8192));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("envoy.yaml:11:") && problems[0].contains("4096"),
            "{problems:?}"
        );
        assert!(envoy(per_route, Some(4096)).is_empty());
    }

    #[test]
    fn istio_providers_must_each_send_enough_body() {
        let one = r#"
extensionProviders:
- name: riskgate
  envoyExtAuthzGrpc:
    service: riskgate.riskgate.svc.cluster.local
    includeRequestBodyInCheck: { maxRequestBytes: 8192 }
"#;
        let check = |yaml: &str, n| istio_problems(Path::new("mesh.yaml"), &docs(yaml), yaml, n);
        assert!(check(one, Some(8192)).is_empty());
        assert_eq!(check(one, Some(16384)).len(), 1);
        // README's scoping: a second provider without a body for the other routes
        let two = format!(
            "{one}- name: riskgate-plain\n  envoyExtAuthzGrpc:\n    service: riskgate.riskgate.svc.cluster.local\n"
        );
        assert!(check(&two, Some(8192)).is_empty());
        let none = "extensionProviders:\n- name: riskgate\n  envoyExtAuthzGrpc:\n    service: s\n";
        assert!(check(none, Some(8192))[0].contains("sends no body"));
        assert!(check("a: 1\n", Some(8192)).is_empty(), "no provider here");
    }
}
