//! The offline commands, for policy authors and CI (no server, no risk API):
//!
//! * `riskgate check` — one decision, like `opa eval`. The recommendation is synthesised
//!   from the given score and type, bound to the route and principal so binding checks pass.
//! * `riskgate validate` — config, routes, schema, entities, live and shadow policies, and
//!   optionally that the risk budget fits under the proxy's ext_authz timeout.
//! * `riskgate test` — policy tests in YAML ([`policy_test`]), decided with scripted risk
//!   ([`scripted`]); `riskgate check --input` reads a CheckRequest JSON ([`check_input`]).
//! * `riskgate replay` — recorded decisions re-decided with a candidate policy set
//!   ([`replay`]).

use crate::clock::now_ms;
use crate::config::proxy::{self, ProxyKind};
use crate::config::{Config, ConfigError};
use crate::decide::{DecideSettings, Decider};
use crate::decision::Decision;
use crate::policy::{load_snapshot, LoadError, Snapshot};
use crate::request::AccessRequest;
use crate::risk::source::{BoxFuture, FetchError, RiskSource};
use crate::risk::{Assessor, Breaker, Recommendation, RecommendationType};
use crate::routes::Lookup;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub mod check;
pub mod check_input;
pub mod check_request;
pub mod policy_test;
pub mod replay;
pub mod scripted;
mod unassessed;

/// The question to decide.
#[derive(Debug, Clone)]
pub struct OfflineQuestion {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Host (empty = any).
    pub host: String,
    /// Principal id (`None` = anonymous).
    pub principal: Option<String>,
    /// Extra verified claims (JSON object).
    pub claims: Map<String, Value>,
    /// Risk score; `None` = no action token.
    pub risk_score: Option<f64>,
    /// Recommendation type.
    pub recommendation: RecommendationType,
    /// Challenge type for CHALLENGE.
    pub challenge_type: Option<String>,
}

struct Synthetic(Recommendation);

impl RiskSource for Synthetic {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// An offline decision and the snapshot it was made with (for policy origins).
#[derive(Debug)]
pub struct OfflineAnswer {
    /// The decision.
    pub decision: Decision,
    /// Routes and policies used.
    pub snapshot: Arc<Snapshot>,
}

/// Decides `q` against the config's routes and policies.
pub async fn decide(config: &Config, q: &OfflineQuestion) -> Result<OfflineAnswer, LoadError> {
    let snapshot = load_snapshot(config)?;
    let action_type = match snapshot.routes.lookup(&q.host, &q.method, &q.path, false) {
        Ok(Lookup::Matched { route, .. }) => {
            route.action_types.first().cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    let rec = Recommendation {
        id: "offline".into(),
        issued_at_ms: now_ms(),
        kind: q.recommendation,
        challenge_type: q.challenge_type.clone(),
        risk_score: q.risk_score.unwrap_or(0.0),
        action_id: "offline".into(),
        action_type: action_type.into(),
        action_performed_at_ms: now_ms(),
        user_id: q.principal.clone(),
        reasons: Arc::from([]),
        threats: Box::default(),
        transaction: None,
    };
    let mut settings = DecideSettings::from_config(config);
    settings.call_budget.calls = 0; // a synthetic recommendation: no API call to budget
    let assessor = Assessor::new(
        Arc::new(Synthetic(rec)),
        Arc::new(Breaker::new(1, Duration::from_secs(1))),
        crate::risk::AssessorSettings {
            budget: Duration::from_secs(5),
            deadline_reserve: Duration::ZERO,
            ttl: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            max_entries: 16,
            negative_ttl: Duration::ZERO,
            negative_max_entries: 0,
        },
        None,
    );
    let mut req = AccessRequest::new(&q.method, &q.path);
    req.host = q.host.to_ascii_lowercase();
    if q.risk_score.is_some() {
        req.headers
            .insert(settings.token_header.clone(), "offline-check".into());
    }
    if let (Some(id), Some(src)) = (&q.principal, &config.identity.jwt_metadata) {
        let mut claims = q.claims.clone();
        claims.insert(config.identity.claim.clone(), Value::String(id.clone()));
        let mut ns = Map::new();
        ns.insert(src.key.clone(), Value::Object(claims));
        req.metadata.insert(src.namespace.clone(), ns);
    }
    // one decision: a fresh per-process store (uses are never shared with a running riskgate)
    // with room for its two records: the action's use and the principal's count of uses
    let uses = Arc::new(crate::state::MemoryStore::new(2));
    let decider = Decider::new(settings, snapshot, Some(Arc::new(assessor)), uses);
    let decision = decider.decide(&req).await;
    Ok(OfflineAnswer {
        decision,
        snapshot: decider.snapshot(),
    })
}

/// Proxy configs whose ext_authz timeout the risk budget must fit under.
#[derive(Debug, Clone, Default)]
pub struct ProxyFiles {
    /// Standalone Envoy configs.
    pub envoy: Vec<PathBuf>,
    /// Istio mesh configs.
    pub istio: Vec<PathBuf>,
}

/// What `riskgate validate` found.
#[derive(Debug, Default)]
pub struct Validation {
    /// One line per problem, `file:line: message` where a line is known.
    pub problems: Vec<String>,
    /// What was checked, for the success message.
    pub checked: Vec<String>,
    /// Likely mistakes that do not fail validation (printed, exit status unchanged).
    pub warnings: Vec<String>,
}

impl Validation {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Validates everything `riskgate serve` would load, plus the proxies' timeouts.
pub fn validate(config_path: &Path, proxies: &ProxyFiles) -> Validation {
    let mut v = Validation::default();
    let config = match Config::load(config_path).and_then(|c| {
        c.risk.as_ref().map(|r| r.host_root()).transpose()?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            v.problems.push(match e {
                ConfigError::Field { .. } => format!("{}: {e}", config_path.display()),
                other => other.to_string(),
            });
            return v;
        }
    };
    match load_snapshot(&config) {
        Ok(s) => {
            v.checked
                .push(format!("{} routes", s.routes.routes().len()));
            v.checked
                .push(format!("{} policies", s.policies.policy_count()));
            if let Some(shadow) = &s.shadow {
                v.checked
                    .push(format!("{} shadow policies", shadow.policy_count()));
            }
            let bands = config.risk_or_default().bands;
            v.warnings
                .extend(unassessed::warnings(&config.routes, &s.policies, &bands));
        }
        Err(LoadError::Policy(e)) => v.problems.extend(e.0.iter().map(ToString::to_string)),
        Err(LoadError::Config(e)) => v.problems.push(format!("{}: {e}", config_path.display())),
    }
    if let Some(tls) = &config.listen.tls {
        match crate::serve::tls::load(tls) {
            Ok(_) if tls.requires_client_cert() => {
                v.checked.push("TLS certificate, key and client CA".into())
            }
            Ok(_) => v.checked.push("TLS certificate and key".into()),
            Err(e) => v.problems.push(format!(
                "{}: {}",
                config_path.display(),
                crate::serve::tls::error_chain(&e)
            )),
        }
    }
    let (budget, reserve) = config
        .risk
        .as_ref()
        .map_or((Duration::ZERO, Duration::ZERO), |r| {
            (r.budget, r.deadline_reserve)
        });
    let files = proxies
        .envoy
        .iter()
        .map(|p| (p, ProxyKind::Envoy))
        .chain(proxies.istio.iter().map(|p| (p, ProxyKind::Istio)));
    for (path, kind) in files {
        match proxy::timeouts(path, kind) {
            Ok(timeouts) => {
                let problems = proxy::check_budget(&timeouts, budget, reserve);
                if problems.is_empty() {
                    for t in &timeouts {
                        v.checked.push(format!(
                            "{} {} ms fits risk budget {} ms + reserve {} ms",
                            t.what,
                            t.timeout.as_millis(),
                            budget.as_millis(),
                            reserve.as_millis()
                        ));
                    }
                }
                v.problems.extend(problems.iter().map(ToString::to_string));
            }
            // An Istio file of RequestAuthentications and AuthorizationPolicies has no
            // extension provider of its own; it is there for the trusted-header check.
            Err(problems)
                if kind == ProxyKind::Istio
                    && problems
                        .iter()
                        .all(|p| matches!(p, proxy::ProxyConfigError::NotFound { .. }))
                    && proxy::read_documents(path)
                        .is_ok_and(|(_, docs)| proxy::trust::has_istio_resources(&docs)) => {}
            Err(problems) => v.problems.extend(problems.iter().map(ToString::to_string)),
        }
    }
    let body_needed = config
        .routes
        .iter()
        .filter_map(|r| r.body.as_ref().map(|b| b.max_bytes))
        .max();
    let problems = body_problems(&proxies.envoy, &proxies.istio, body_needed);
    if let (Some(n), true, false) = (
        body_needed,
        problems.is_empty(),
        proxies.envoy.is_empty() && proxies.istio.is_empty(),
    ) {
        v.checked.push(format!(
            "body-mapped routes get up to {n} bytes of body from the proxy configs"
        ));
    }
    v.problems.extend(problems);
    let hops = config.client_address.xff_trusted_hops;
    for path in &proxies.envoy {
        // a file that cannot be read is already reported by the timeout check above
        if let Ok((text, docs)) = proxy::read_documents(path) {
            let problems = proxy::xff::envoy_problems(path, &docs, &text, hops);
            if problems.is_empty() {
                v.checked.push(format!(
                    "{}: client address agrees with client_address.xff_trusted_hops {hops}",
                    path.display()
                ));
            }
            v.problems.extend(problems.iter().map(ToString::to_string));
        }
    }
    if !proxies.istio.is_empty() {
        let problems = istio_mesh_problems(&proxies.istio, hops);
        if problems.is_empty() {
            v.checked.push(format!(
                "Istio: waypoint-enforced workloads admit only their waypoint; gateways asking riskgate trust {hops} x-forwarded-for hops like client_address.xff_trusted_hops"
            ));
        }
        v.problems.extend(problems);
    }
    if let Some(h) = &config.identity.trusted_header {
        v.problems.extend(trusted_header_problems(&h.name, proxies));
        if !proxies.envoy.is_empty() || !proxies.istio.is_empty() {
            v.checked.push(format!(
                "trusted header `{}` is removed from client requests by every proxy config given",
                h.name
            ));
        }
    }
    v.warnings
        .extend(context_header_warnings(&config.context.headers, proxies));
    v
}

/// Proxy configs that send body-mapped routes less body than they read, or none
/// ([`proxy::body`]).
fn body_problems(envoy: &[PathBuf], istio: &[PathBuf], needed: Option<usize>) -> Vec<String> {
    let read = |p: &PathBuf| proxy::read_documents(p).ok();
    let envoy = envoy.iter().filter_map(|p| {
        read(p).map(|(text, docs)| proxy::body::envoy_problems(p, &docs, &text, needed))
    });
    let istio = istio.iter().filter_map(|p| {
        read(p).map(|(text, docs)| proxy::body::istio_problems(p, &docs, &text, needed))
    });
    envoy.chain(istio).flatten().collect()
}

/// `context.headers` entries that some given proxy config lets a client send (no `jwt_authn`
/// or header mutation writes them before ext_authz, [`proxy::trust`]): facts a client
/// chooses, which a policy must never read as identity or tenant. Nothing without proxy
/// configs, which alone can show who writes a header.
fn context_header_warnings(
    fields: &[crate::config::ContextField],
    proxies: &ProxyFiles,
) -> Vec<String> {
    if proxies.envoy.is_empty() && proxies.istio.is_empty() {
        return Vec::new();
    }
    fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !trusted_header_problems(&f.name, proxies).is_empty())
        .map(|(i, f)| {
            format!(
                "context.headers[{i}] `{}` (context.request.headers.{}) is client-controlled: a given proxy config does not remove or overwrite a client-sent copy before ext_authz, so a policy may read it as the client's claim, never as identity or tenant",
                f.name.to_ascii_lowercase(),
                f.attr
            )
        })
        .collect()
}

/// Across all the Istio files: ambient workloads that can be reached around the waypoint
/// asking riskgate ([`proxy::ambient`]), and a gateway asking riskgate whose
/// `numTrustedProxies` differs from `hops` ([`proxy::xff::istio_problems`]). A file that
/// cannot be read is already reported by the timeout check.
fn istio_mesh_problems(paths: &[PathBuf], hops: u32) -> Vec<String> {
    let read: Vec<(&Path, String, Vec<serde_yaml_ng::Value>)> = paths
        .iter()
        .filter_map(|p| {
            let (text, docs) = proxy::read_documents(p).ok()?;
            Some((p.as_path(), text, docs))
        })
        .collect();
    let files: Vec<(&Path, &str, &[serde_yaml_ng::Value])> = read
        .iter()
        .map(|(p, t, d)| (*p, t.as_str(), d.as_slice()))
        .collect();
    proxy::ambient::waypoint_problems(&files)
        .iter()
        .chain(proxy::xff::istio_problems(&files, hops).iter())
        .map(ToString::to_string)
        .collect()
}

/// riskgate trusts `header` as proxy-written: every given proxy config must remove a
/// client-sent copy before ext_authz (see [`proxy::trust`]).
fn trusted_header_problems(header: &str, proxies: &ProxyFiles) -> Vec<String> {
    let mut problems = Vec::new();
    for path in &proxies.envoy {
        match proxy::read_documents(path) {
            Ok((text, docs)) => problems.extend(
                proxy::trust::envoy_problems(path, &docs, &text, header)
                    .iter()
                    .map(ToString::to_string),
            ),
            Err(e) => problems.push(e.to_string()),
        }
    }
    let mut istio = Vec::new();
    for path in &proxies.istio {
        match proxy::read_documents(path) {
            Ok((text, docs)) => istio.push((path.as_path(), text, docs)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !istio.is_empty() {
        let files: Vec<(&Path, &str, &[serde_yaml_ng::Value])> = istio
            .iter()
            .map(|(p, t, d)| (*p, t.as_str(), d.as_slice()))
            .collect();
        problems.extend(
            proxy::trust::istio_problems(&files, header)
                .iter()
                .map(ToString::to_string),
        );
    }
    problems
}
