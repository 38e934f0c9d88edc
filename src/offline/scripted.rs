//! One offline decision with scripted risk: the request and identity as given, the risk API
//! replaced by a source that answers the given recommendation or fails like an outage. The
//! decision runs through the same [`Decider`] stages as `serve` (route, principal from the
//! claims, risk with the route's fail mode, Cedar, step-up, uses), with a fresh store and
//! breaker per decision so no decision leaks into the next.

use crate::clock::now_ms;
use crate::config::Config;
use crate::config::TrustedHeaderFormat;
use crate::decide::{DecideSettings, Decider};
use crate::decision::Decision;
use crate::policy::{load_snapshot, LoadError, Snapshot};
use crate::request::AccessRequest;
use crate::risk::source::{BoxFuture, FetchError, RiskSource};
use crate::risk::{Assessor, AssessorSettings, Breaker, Recommendation, RecommendationType};
use crate::routes::Lookup;
use base64::Engine as _;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// What the risk API says about the request's action token.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptedRisk {
    /// No action token is sent (any token header in the request is removed).
    NoToken,
    /// A token is sent and the risk API is down (5xx): the route's fail mode applies.
    Outage,
    /// A token is sent and the API answers this recommendation.
    Answer(ScriptedRecommendation),
}

/// A recommendation to answer; binding fields default to what fits the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedRecommendation {
    /// `risk_score`, 0–100.
    pub score: f64,
    /// `recommendation.type`.
    pub kind: RecommendationType,
    /// `recommendation.challenge_type`.
    pub challenge_type: Option<String>,
    /// `reasons`.
    pub reasons: Vec<String>,
    /// `context.action_type`; `None` = the matched route's first `action_types`.
    pub action_type: Option<String>,
    /// `context.user_id`; `None` = the identity's principal claim (absent when anonymous).
    pub user_id: Option<String>,
}

/// Why a scripted decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The config or its policies do not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// An identity was given but the config has no source to carry it.
    #[error("an identity is given but the config has neither `identity.jwt_metadata` nor `identity.trusted_header`")]
    NoIdentitySource,
    /// Claims cannot be serialised for a trusted header.
    #[error("claims cannot be encoded: {0}")]
    Claims(#[from] serde_json::Error),
}

struct Scripted(Result<Recommendation, FetchError>);

impl RiskSource for Scripted {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move { self.0.clone() })
    }
}

/// Puts verified `claims` on `req` the way the config's identity source receives them
/// (Envoy `jwt_authn` metadata, else the trusted header).
pub fn attach_identity(
    config: &Config,
    req: &mut AccessRequest,
    claims: Map<String, Value>,
) -> Result<(), ScriptError> {
    let identity = &config.identity;
    if let Some(src) = &identity.jwt_metadata {
        req.metadata
            .entry(src.namespace.clone())
            .or_default()
            .insert(src.key.clone(), Value::Object(claims));
        return Ok(());
    }
    let header = identity
        .trusted_header
        .as_ref()
        .ok_or(ScriptError::NoIdentitySource)?;
    let value = match header.format {
        TrustedHeaderFormat::JwtPayload => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&Value::Object(claims))?),
        TrustedHeaderFormat::Plain => claims
            .get(&identity.claim)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    req.headers.insert(header.name.to_ascii_lowercase(), value);
    Ok(())
}

/// Loads the config's snapshot and decides `req` with `risk`. `subject` is the principal
/// claim of the identity attached to `req` (the default `context.user_id`).
pub async fn decide(
    config: &Config,
    mut req: AccessRequest,
    subject: Option<&str>,
    risk: &ScriptedRisk,
) -> Result<(Decision, Arc<Snapshot>), ScriptError> {
    let snapshot = load_snapshot(config)?;
    let mut settings = DecideSettings::from_config(config);
    settings.call_budget.calls = 0; // no real API call to budget
    let answer = match risk {
        ScriptedRisk::NoToken | ScriptedRisk::Outage => Err(FetchError::Unavailable(503)),
        ScriptedRisk::Answer(r) => Ok(recommendation(&snapshot, &req, subject, r)),
    };
    req.headers.remove(&settings.token_header);
    if *risk != ScriptedRisk::NoToken {
        req.headers
            .insert(settings.token_header.clone(), "offline-token".into());
    }
    let assessor = Assessor::new(
        Arc::new(Scripted(answer)),
        Arc::new(Breaker::new(1, Duration::from_secs(1))),
        AssessorSettings {
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
    // room for the action's use and the principal's count of uses
    let uses = Arc::new(crate::state::MemoryStore::new(2));
    let decider = Decider::new(settings, snapshot, Some(Arc::new(assessor)), uses);
    let decision = decider.decide(&req).await;
    Ok((decision, decider.snapshot()))
}

fn recommendation(
    snapshot: &Snapshot,
    req: &AccessRequest,
    subject: Option<&str>,
    r: &ScriptedRecommendation,
) -> Recommendation {
    let route = match snapshot
        .routes
        .lookup(&req.host, &req.method, &req.path, false)
    {
        Ok(Lookup::Matched { route, .. }) => Some(route),
        _ => None,
    };
    let route_action_type = || {
        route
            .and_then(|r| r.action_types.first().cloned())
            .unwrap_or_default()
    };
    let now = now_ms();
    Recommendation {
        id: "offline".into(),
        issued_at_ms: now,
        kind: r.kind,
        challenge_type: r.challenge_type.clone(),
        risk_score: r.score,
        action_id: "offline".into(),
        action_type: r
            .action_type
            .clone()
            .unwrap_or_else(route_action_type)
            .into(),
        action_performed_at_ms: now,
        user_id: r.user_id.clone().or_else(|| subject.map(str::to_owned)),
        reasons: r.reasons.iter().map(|s| Arc::from(s.as_str())).collect(),
        threats: Box::default(),
        transaction: route.and_then(|r| assessed_transaction(r, req)),
    }
}

/// The synthetic recommendation is made for the request as it is: on a body-mapped route,
/// its `transaction_data` is the body's transaction (so offline answers show the policies,
/// not a binding failure; a body that does not parse is denied before binding anyway).
fn assessed_transaction(
    route: &crate::routes::Route,
    req: &AccessRequest,
) -> Option<crate::risk::recommendation::TransactionData> {
    let rules = route.body.as_ref()?;
    let t = crate::decide::body::read(rules, req).ok()?;
    let payee = match (t.payee, &rules.transaction_payee) {
        (Some(p), Some(pointer)) => vec![(pointer.as_str().into(), p.into_boxed_str())],
        _ => Vec::new(),
    };
    Some(crate::risk::recommendation::TransactionData {
        amount_minor: t.amount_minor,
        currency: t.currency.into_boxed_str(),
        payee: payee.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedHeader;
    use crate::identity::Principal;

    fn claims() -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("sub".into(), Value::String("u1".into()));
        c
    }

    fn subject(config: &Config, req: &AccessRequest) -> Option<String> {
        match crate::identity::principal(&config.identity, req) {
            Ok(Principal::User { subject, .. }) => Some(subject),
            _ => None,
        }
    }

    #[test]
    fn claims_reach_riskgate_through_each_identity_source() -> Result<(), ScriptError> {
        let mut config = Config::default();
        let mut req = AccessRequest::new("GET", "/");
        attach_identity(&config, &mut req, claims())?;
        assert_eq!(subject(&config, &req).as_deref(), Some("u1"));

        config.identity.jwt_metadata = None;
        for format in [TrustedHeaderFormat::JwtPayload, TrustedHeaderFormat::Plain] {
            config.identity.trusted_header = Some(TrustedHeader {
                name: "X-Jwt-Payload".into(),
                format,
            });
            let mut req = AccessRequest::new("GET", "/");
            attach_identity(&config, &mut req, claims())?;
            assert_eq!(subject(&config, &req).as_deref(), Some("u1"), "{format:?}");
        }

        config.identity.trusted_header = None;
        let mut req = AccessRequest::new("GET", "/");
        assert!(matches!(
            attach_identity(&config, &mut req, claims()),
            Err(ScriptError::NoIdentitySource)
        ));
        Ok(())
    }
}
