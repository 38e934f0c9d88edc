//! The proxy's side of the deadline: the ext_authz timeout configured in a standalone Envoy
//! config (`envoy.filters.http.ext_authz` → `grpc_service.timeout`, default 200 ms) or in
//! Istio's mesh config (`extensionProviders[].envoyExtAuthzGrpc.timeout`, default 10 min).
//! `riskgate validate` checks that the risk budget plus its reserve fits under it; otherwise
//! Envoy gives up (and answers its own 403/503) before riskgate's fail mode can answer.
//!
//! The YAML is read generically (any nesting, several documents, Istio's `mesh` ConfigMap key
//! holding YAML as a string), so the check works on bootstrap files, IstioOperator resources,
//! Helm values and ConfigMaps alike.

pub mod ambient;
pub mod body;
mod duration;
pub mod trust;
pub mod xff;

pub use duration::parse_duration;

use crate::source::SourceLocation;
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `@type` of the ext_authz HTTP filter's config.
const EXT_AUTHZ_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
/// Envoy's default when `grpc_service.timeout` is unset.
const ENVOY_DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Istio's default for `envoyExtAuthzGrpc.timeout`.
const ISTIO_DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Which proxy configuration a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// A standalone Envoy config (bootstrap or a fragment with the HTTP filter).
    Envoy,
    /// Istio mesh config (IstioOperator, Helm values, the `istio` ConfigMap or MeshConfig).
    Istio,
}

/// One ext_authz timeout found in a proxy config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzTimeout {
    /// Where it is set (or where the filter is, when defaulted).
    pub at: SourceLocation,
    /// What it is, e.g. ``ext_authz `grpc_service.timeout` ``.
    pub what: String,
    /// The timeout in force.
    pub timeout: Duration,
    /// Not set: the proxy's default applies.
    pub defaulted: bool,
}

/// A problem with a proxy config or with the budget against it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("{at}: invalid yaml: {message}")]
    Parse {
        /// Where the parser stopped.
        at: SourceLocation,
        /// The parser's message.
        message: String,
    },
    /// Nothing to check in the file.
    #[error("{at}: {message}")]
    NotFound {
        /// The file.
        at: SourceLocation,
        /// What was looked for.
        message: &'static str,
    },
    /// A timeout that is not a duration.
    #[error("{at}: {what} `{value}` is not a duration (e.g. `0.5s`, `1s`, `500ms`)")]
    BadTimeout {
        /// Where.
        at: SourceLocation,
        /// Which field.
        what: String,
        /// The value as written.
        value: String,
    },
    /// The ext_authz filter talks HTTP; riskgate serves gRPC only.
    #[error(
        "{at}: ext_authz uses `http_service`; riskgate serves gRPC ext_authz (use `grpc_service`)"
    )]
    HttpService {
        /// Where.
        at: SourceLocation,
    },
    /// riskgate trusts a header that a client can send through this proxy config.
    #[error("{at}: riskgate trusts header `{header}` (identity.trusted_header), but {why}")]
    UnguardedHeader {
        /// Where (the ext_authz filter or the AuthorizationPolicy).
        at: SourceLocation,
        /// The header, lower-case.
        header: String,
        /// Why the proxy does not guarantee it.
        why: String,
    },
    /// The proxy and riskgate disagree on which address is the client's.
    #[error(
        "{at}: riskgate client_address.xff_trusted_hops is {riskgate_hops}, but this HTTP connection manager has use_remote_address is {use_remote_address}, xff_num_trusted_hops is {proxy_hops}{}; set xff_num_trusted_hops to the same N with use_remote_address: true (or both to 0)",
        if *skip_append { ", skip_xff_append: true" } else { "" }
    )]
    ClientAddress {
        /// The ext_authz filter's HCM.
        at: SourceLocation,
        /// `client_address.xff_trusted_hops`.
        riskgate_hops: u32,
        /// The HCM's `use_remote_address`.
        use_remote_address: bool,
        /// The HCM's `xff_num_trusted_hops`.
        proxy_hops: u64,
        /// The HCM's `skip_xff_append`.
        skip_append: bool,
    },
    /// Ambient mode: workloads behind a riskgate-enforcing waypoint accept traffic that did
    /// not pass through the waypoint, so riskgate is not asked about it.
    #[error("{at}: {why}")]
    WaypointBypass {
        /// The CUSTOM policy, or the ALLOW policy that lets traffic around the waypoint.
        at: SourceLocation,
        /// What is missing or too wide.
        why: String,
    },
    /// An Istio gateway that asks riskgate counts `x-forwarded-for` hops differently.
    #[error(
        "{at}: riskgate client_address.xff_trusted_hops is {riskgate_hops}, but Istio's gatewayTopology numTrustedProxies is {proxy_hops}{} ({source_kind}) and riskgate is asked at a gateway (AuthorizationPolicy `{policy}`); set numTrustedProxies and xff_trusted_hops to the same N",
        if *defaulted { " (unset: the default)" } else { "" }
    )]
    GatewayClientAddress {
        /// Where numTrustedProxies is set (or the mesh config that leaves it unset).
        at: SourceLocation,
        /// `client_address.xff_trusted_hops`.
        riskgate_hops: u32,
        /// The gateway's `numTrustedProxies`.
        proxy_hops: u64,
        /// Not set anywhere: Istio's default 0 applies.
        defaulted: bool,
        /// Mesh default or gateway pod annotation.
        source_kind: &'static str,
        /// `namespace/name` of a CUSTOM policy enforced at a gateway.
        policy: String,
    },
    /// The risk budget does not fit under the proxy's timeout.
    #[error(
        "{}: {} is {} ms{}, but risk.budget ({} ms) + risk.deadline_reserve ({} ms) = {} ms; raise the timeout to at least {} ms or lower the budget",
        timeout.at,
        timeout.what,
        timeout.timeout.as_millis(),
        if timeout.defaulted { " (the default)" } else { "" },
        budget.as_millis(),
        reserve.as_millis(),
        (*budget + *reserve).as_millis(),
        (*budget + *reserve).as_millis()
    )]
    TooShort {
        /// The timeout at fault.
        timeout: AuthzTimeout,
        /// `risk.budget`.
        budget: Duration,
        /// `risk.deadline_reserve`.
        reserve: Duration,
    },
}

/// Reads `path` and returns every ext_authz timeout it configures.
pub fn timeouts(path: &Path, kind: ProxyKind) -> Result<Vec<AuthzTimeout>, Vec<ProxyConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ProxyConfigError::Read {
            path: path.to_owned(),
            source,
        }]
    })?;
    timeouts_in(&text, path, kind)
}

/// Like [`timeouts`], over text already read.
pub fn timeouts_in(
    text: &str,
    path: &Path,
    kind: ProxyKind,
) -> Result<Vec<AuthzTimeout>, Vec<ProxyConfigError>> {
    let docs = documents(text, path).map_err(|e| vec![e])?;
    let mut found = Vec::new();
    for doc in &docs {
        match kind {
            ProxyKind::Envoy => find_ext_authz(doc, &mut found),
            ProxyKind::Istio => find_istio_providers(doc, &mut found)?,
        }
    }
    let (anchor, missing) = match kind {
        ProxyKind::Envoy => (
            EXT_AUTHZ_TYPE,
            "no `envoy.filters.http.ext_authz` filter (typed_config `@type` ExtAuthz) found",
        ),
        ProxyKind::Istio => (
            "envoyExtAuthzGrpc",
            "no `extensionProviders[].envoyExtAuthzGrpc` found",
        ),
    };
    if found.is_empty() {
        return Err(vec![ProxyConfigError::NotFound {
            at: SourceLocation::file(path),
            message: missing,
        }]);
    }
    let lines = anchor_lines(text, anchor);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, f) in found.into_iter().enumerate() {
        let line = lines.get(i).copied().map(|(anchor, timeout)| match f {
            Found::Set { .. } => timeout.unwrap_or(anchor),
            _ => anchor,
        });
        let at = SourceLocation::line(path, line);
        match f {
            Found::Set { what, value } => match parse_duration(&value) {
                Some(timeout) => out.push(AuthzTimeout {
                    at,
                    what,
                    timeout,
                    defaulted: false,
                }),
                None => problems.push(ProxyConfigError::BadTimeout {
                    at,
                    what,
                    value: value_text(&value),
                }),
            },
            Found::Default { what, timeout } => out.push(AuthzTimeout {
                at,
                what,
                timeout,
                defaulted: true,
            }),
            Found::Http => problems.push(ProxyConfigError::HttpService { at }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Checks `budget + reserve` (`risk.budget`, `risk.deadline_reserve`) against each timeout.
pub fn check_budget(
    timeouts: &[AuthzTimeout],
    budget: Duration,
    reserve: Duration,
) -> Vec<ProxyConfigError> {
    let need = budget.saturating_add(reserve);
    timeouts
        .iter()
        .filter(|t| t.timeout < need)
        .map(|t| ProxyConfigError::TooShort {
            timeout: t.clone(),
            budget,
            reserve,
        })
        .collect()
}

enum Found {
    Set { what: String, value: Value },
    Default { what: String, timeout: Duration },
    Http,
}

/// Reads `path` as text and as its YAML documents.
pub fn read_documents(path: &Path) -> Result<(String, Vec<Value>), ProxyConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProxyConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let docs = documents(&text, path)?;
    Ok((text, docs))
}

fn documents(text: &str, path: &Path) -> Result<Vec<Value>, ProxyConfigError> {
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let doc = Value::deserialize(de).map_err(|e| ProxyConfigError::Parse {
            at: SourceLocation::of_yaml(path, &e),
            message: e.to_string(),
        })?;
        docs.push(doc);
    }
    Ok(docs)
}

fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(Value::String(key.to_owned()))
}

fn find_ext_authz(value: &Value, found: &mut Vec<Found>) {
    match value {
        Value::Mapping(map) => {
            let is_ext_authz = get(map, "@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(EXT_AUTHZ_TYPE));
            if !is_ext_authz {
                map.values().for_each(|v| find_ext_authz(v, found));
                return;
            }
            let grpc = get(map, "grpc_service").and_then(Value::as_mapping);
            found.push(match (grpc, get(map, "http_service")) {
                (Some(grpc), _) => match get(grpc, "timeout") {
                    Some(t) => Found::Set {
                        what: "ext_authz `grpc_service.timeout`".into(),
                        value: t.clone(),
                    },
                    None => Found::Default {
                        what: "ext_authz `grpc_service.timeout`".into(),
                        timeout: ENVOY_DEFAULT_TIMEOUT,
                    },
                },
                (None, Some(_)) => Found::Http,
                (None, None) => Found::Default {
                    what: "ext_authz timeout".into(),
                    timeout: ENVOY_DEFAULT_TIMEOUT,
                },
            });
        }
        Value::Sequence(items) => items.iter().for_each(|v| find_ext_authz(v, found)),
        Value::Tagged(t) => find_ext_authz(&t.value, found),
        _ => {}
    }
}

fn find_istio_providers(
    value: &Value,
    found: &mut Vec<Found>,
) -> Result<(), Vec<ProxyConfigError>> {
    match value {
        Value::Mapping(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    (Some("extensionProviders"), Value::Sequence(providers)) => {
                        for p in providers.iter().filter_map(Value::as_mapping) {
                            let Some(grpc) =
                                get(p, "envoyExtAuthzGrpc").and_then(Value::as_mapping)
                            else {
                                continue;
                            };
                            let name = get(p, "name").and_then(Value::as_str).unwrap_or("?");
                            let what =
                                format!("extension provider `{name}` `envoyExtAuthzGrpc.timeout`");
                            found.push(match get(grpc, "timeout") {
                                Some(t) => Found::Set {
                                    what,
                                    value: t.clone(),
                                },
                                None => Found::Default {
                                    what,
                                    timeout: ISTIO_DEFAULT_TIMEOUT,
                                },
                            });
                        }
                    }
                    // The `istio` ConfigMap holds the mesh config as a YAML string.
                    (Some("mesh"), Value::String(inner)) => {
                        if let Ok(inner) = serde_yaml_ng::from_str::<Value>(inner) {
                            find_istio_providers(&inner, found)?;
                        }
                    }
                    _ => find_istio_providers(v, found)?,
                }
            }
            Ok(())
        }
        Value::Sequence(items) => items
            .iter()
            .try_for_each(|v| find_istio_providers(v, found)),
        Value::Tagged(t) => find_istio_providers(&t.value, found),
        _ => Ok(()),
    }
}

/// For each non-comment line mentioning `anchor`, in order: its 1-based number, and the
/// line of the first `timeout:` key after it (before the next anchor).
fn anchor_lines(text: &str, anchor: &str) -> Vec<(usize, Option<usize>)> {
    let lines: Vec<&str> = text.lines().collect();
    let anchors: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && mentions(l, anchor))
        .map(|(i, _)| i)
        .collect();
    anchors
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = anchors.get(k + 1).copied().unwrap_or(lines.len());
            let timeout = (start..end).find(|&i| {
                lines.get(i).is_some_and(|l| {
                    l.trim_start()
                        .trim_start_matches("- ")
                        .starts_with("timeout:")
                })
            });
            (start + 1, timeout.map(|i| i + 1))
        })
        .collect()
}

/// `line` names `word` as a whole identifier (so `ExtAuthz` does not match `ExtAuthzPerRoute`).
fn mentions(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        !line[i + word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn envoy(yaml: &str) -> Result<Vec<AuthzTimeout>, Vec<ProxyConfigError>> {
        timeouts_in(yaml, Path::new("envoy.yaml"), ProxyKind::Envoy)
    }

    const FILTER: &str = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          http_filters:
          # ext_authz asks riskgate
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service:
                envoy_grpc: { cluster_name: riskgate }
                timeout: TIMEOUT
  clusters:
  - name: riskgate
    connect_timeout: 0.25s
"#;

    #[test]
    fn envoy_timeout_is_found_with_its_line() {
        let t = envoy(&FILTER.replace("TIMEOUT", "0.3s")).unwrap_or_default();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].timeout, Duration::from_millis(300));
        assert_eq!(t[0].at.line, Some(15));
        assert!(!t[0].defaulted);
    }

    #[test]
    fn envoy_default_is_200ms() {
        let yaml = FILTER.replace("                timeout: TIMEOUT\n", "");
        let t = envoy(&yaml).unwrap_or_default();
        assert_eq!(t[0].timeout, Duration::from_millis(200));
        assert!(t[0].defaulted);
        let problems = check_budget(&t, ms(250), ms(20));
        let msg = problems
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.starts_with("envoy.yaml:12: "), "{msg}");
        assert!(msg.contains("200 ms (the default)"), "{msg}");
    }

    #[test]
    fn budget_must_fit_under_the_timeout() {
        let t = envoy(&FILTER.replace("TIMEOUT", "0.25s")).unwrap_or_default();
        assert!(check_budget(&t, ms(200), ms(50)).is_empty());
        let msg = check_budget(&t, ms(250), ms(20))
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.contains("envoy.yaml:15:"), "{msg}");
        assert!(msg.contains("= 270 ms"), "{msg}");
    }

    #[test]
    fn bad_or_missing_filter_is_reported() {
        let msg = |r: Result<Vec<AuthzTimeout>, Vec<ProxyConfigError>>| {
            r.err()
                .and_then(|e| e.first().map(ToString::to_string))
                .unwrap_or_default()
        };
        assert!(msg(envoy(&FILTER.replace("TIMEOUT", "soon"))).contains("`soon` is not a duration"));
        assert!(msg(envoy("static_resources: {}\n")).contains("no `envoy.filters.http.ext_authz`"));
        assert!(msg(envoy("a: [\n")).starts_with("envoy.yaml:"));
    }

    #[test]
    fn istio_providers_in_a_configmap_string() {
        let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: istio }
data:
  mesh: |-
    extensionProviders:
    - name: riskgate
      envoyExtAuthzGrpc:
        service: riskgate.riskgate.svc.cluster.local
        port: 9001
        timeout: 0.2s
    - name: other
      envoyExtAuthzGrpc: { service: other, port: 1 }
"#;
        let t = timeouts_in(yaml, Path::new("mesh.yaml"), ProxyKind::Istio).unwrap_or_default();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].timeout, Duration::from_millis(200));
        assert_eq!(t[0].at.line, Some(12));
        assert!(t[0].what.contains("`riskgate`"));
        assert_eq!(t[1].timeout, Duration::from_secs(600));
        assert!(t[1].defaulted);
    }
}
