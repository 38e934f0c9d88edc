//! `riskgate check`: one decision without any server or risk API, like `opa eval` — for
//! policy authors and CI. The recommendation is synthesised from the given score and type,
//! bound to the route and principal so binding checks pass.

use crate::config::Config;
use crate::decide::{DecideSettings, Decider};
use crate::decision::Decision;
use crate::request::AccessRequest;
use crate::risk::assessor::now_ms;
use crate::risk::source::{BoxFuture, FetchError, RiskSource};
use crate::risk::{Assessor, Breaker, Recommendation, RecommendationType};
use crate::routes::Lookup;
use crate::server::{load_snapshot, StartError};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

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

/// Decides `q` against the config's routes and policies.
pub async fn decide(config: &Config, q: &OfflineQuestion) -> Result<Decision, StartError> {
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
        action_type,
        action_performed_at_ms: now_ms(),
        user_id: q.principal.clone(),
        reasons: Vec::new(),
        threats: Vec::new(),
        preview_rule: None,
    };
    let settings = DecideSettings::from_config(config);
    let assessor = Assessor::new(
        Arc::new(Synthetic(rec)),
        Arc::new(Breaker::new(1, Duration::from_secs(1))),
        crate::risk::AssessorSettings {
            budget: Duration::from_secs(5),
            deadline_reserve: Duration::ZERO,
            ttl: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            max_entries: 16,
        },
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
    let decider = Decider::new(settings, snapshot, Some(Arc::new(assessor)));
    Ok(decider.decide(&req).await)
}
