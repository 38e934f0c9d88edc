//! What Cedar was asked, as the audit line records it (`input`), so `riskgate replay` can
//! put the same question to a candidate policy set. Built from the [`PolicyInput`] itself,
//! so it holds exactly what Cedar saw and nothing else: the principal's type and id, only
//! the claims configured as attributes (`identity.claims_as_attributes`), the action, the
//! resource, and the `context` record. Never a header, a token or a cookie (the request's
//! headers are not part of a `PolicyInput`).
//!
//! The line stays bounded: a claim value longer than [`MAX_CLAIM_BYTES`] or reasons beyond
//! [`MAX_REASONS`] are left out and the input is marked `truncated`, which replay counts as
//! "cannot re-decide" rather than guess.

use crate::identity::Principal;
use crate::policy::{ContextInput, PolicyInput};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Longest serialised claim value recorded (bytes).
pub const MAX_CLAIM_BYTES: usize = 512;
/// Most reason codes recorded.
pub const MAX_REASONS: usize = 32;

/// Cedar's own answer at the Cedar stage (not the final verdict: step-up and use counting
/// come after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CedarOutcome {
    /// An error-free permit.
    Allow,
    /// No permit, or a forbid.
    Deny,
    /// The request could not be evaluated, or a policy errored (denies).
    Error,
}

impl CedarOutcome {
    /// `allow`, `deny` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CedarOutcome::Allow => "allow",
            CedarOutcome::Deny => "deny",
            CedarOutcome::Error => "error",
        }
    }

    /// The client is let through (only an error-free permit).
    pub fn allows(self) -> bool {
        self == CedarOutcome::Allow
    }
}

/// The principal as Cedar saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedPrincipal {
    /// `User` or `Anonymous`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Entity id (the configured claim, issuer-qualified when several issuers are set).
    pub id: String,
    /// The claims configured as attributes that the token carried.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub claims: Map<String, Value>,
}

/// `context.risk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRisk {
    /// A recommendation was obtained.
    pub present: bool,
    /// The band came from a fail mode.
    pub outage: bool,
    /// Score as Cedar saw it (rounded up).
    pub score: i64,
    /// Band name.
    pub band: String,
    /// Recommendation type or `NONE`.
    pub recommendation: String,
    /// Reason codes.
    pub reasons: Vec<String>,
}

/// `context.request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Host.
    pub host: String,
    /// Client address, if known (`null` otherwise).
    pub ip: Option<std::net::IpAddr>,
}

/// Everything Cedar was asked for one decision, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CedarInput {
    /// Who asked.
    pub principal: RecordedPrincipal,
    /// Cedar action id.
    pub action: String,
    /// Resource entity type.
    pub resource_type: String,
    /// Resource entity id.
    pub resource_id: String,
    /// `context.risk`.
    pub risk: RecordedRisk,
    /// `context.request`.
    pub request: RecordedRequest,
    /// What the live set answered.
    pub cedar: CedarOutcome,
    /// Something was left out to keep the line bounded: the input cannot be replayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl CedarInput {
    /// The record of `input` answered with `cedar`.
    pub fn record(input: &PolicyInput<'_>, cedar: CedarOutcome) -> CedarInput {
        // Configured request facts (typed headers, query parameters, the workload) are
        // not recorded: a line whose Cedar input held any is marked incomplete, so replay
        // counts it as not re-decidable instead of guessing without them.
        let facts = input.context.facts;
        let mut truncated =
            facts.headers.is_some() || facts.query.is_some() || facts.source.is_some();
        let principal = match input.principal {
            Principal::Anonymous => RecordedPrincipal {
                kind: crate::policy::engine::ANONYMOUS_TYPE.into(),
                id: "anonymous".into(),
                claims: Map::new(),
            },
            Principal::User { id, claims, .. } => {
                let mut kept = Map::new();
                for name in input.claims_as_attributes {
                    let Some(value) = claims.get(name) else {
                        continue;
                    };
                    if serde_json::to_string(value).map_or(usize::MAX, |s| s.len())
                        > MAX_CLAIM_BYTES
                    {
                        truncated = true;
                        continue;
                    }
                    kept.insert(name.clone(), value.clone());
                }
                RecordedPrincipal {
                    kind: crate::policy::engine::USER_TYPE.into(),
                    id: id.clone(),
                    claims: kept,
                }
            }
        };
        let c = &input.context;
        if c.reasons.len() > MAX_REASONS {
            truncated = true;
        }
        CedarInput {
            principal,
            action: input.action.to_owned(),
            resource_type: input.resource_type.to_owned(),
            resource_id: input.resource_id.to_owned(),
            risk: RecordedRisk {
                present: c.risk_present,
                outage: c.outage,
                score: c.score,
                band: c.band.to_owned(),
                recommendation: c.recommendation.to_owned(),
                reasons: c
                    .reasons
                    .iter()
                    .take(MAX_REASONS)
                    .map(|r| r.to_string())
                    .collect(),
            },
            request: RecordedRequest {
                method: c.method.to_owned(),
                path: c.path.to_owned(),
                host: c.host.to_owned(),
                ip: c.ip,
            },
            cedar,
            truncated,
        }
    }

    /// The principal to put to Cedar again (`None` for an unknown principal type). Its
    /// claims are exactly the recorded attributes.
    pub fn principal(&self) -> Option<Principal> {
        match self.principal.kind.as_str() {
            crate::policy::engine::ANONYMOUS_TYPE => Some(Principal::Anonymous),
            crate::policy::engine::USER_TYPE => Some(Principal::User {
                id: self.principal.id.clone(),
                subject: self.principal.id.clone(),
                claims: self.principal.claims.clone(),
            }),
            _ => None,
        }
    }

    /// The names of the recorded claims (all of them become attributes on replay).
    pub fn claim_names(&self) -> Vec<String> {
        self.principal.claims.keys().cloned().collect()
    }

    /// The reason codes in the form [`ContextInput`] takes.
    pub fn reasons(&self) -> Vec<Arc<str>> {
        self.risk.reasons.iter().map(|r| Arc::from(&**r)).collect()
    }

    /// The `context` record as it was (borrowing `reasons` from [`CedarInput::reasons`]).
    pub fn context<'a>(&'a self, reasons: &'a [Arc<str>]) -> ContextInput<'a> {
        ContextInput {
            risk_present: self.risk.present,
            outage: self.risk.outage,
            score: self.risk.score,
            band: &self.risk.band,
            recommendation: &self.risk.recommendation,
            reasons,
            method: &self.request.method,
            path: &self.request.path,
            host: &self.request.host,
            ip: self.request.ip,
            facts: &crate::policy::NO_FACTS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(claims: Value) -> Principal {
        let Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        Principal::User {
            id: "u1".into(),
            subject: "u1".into(),
            claims,
        }
    }

    fn input<'a>(principal: &'a Principal, names: &'a [String]) -> PolicyInput<'a> {
        PolicyInput {
            principal,
            claims_as_attributes: names,
            action: "withdraw",
            resource_type: "Account",
            resource_id: "a1",
            context: ContextInput {
                risk_present: true,
                outage: false,
                score: 18,
                band: "low",
                recommendation: "ALLOW",
                reasons: &[],
                method: "POST",
                path: "/accounts/a1/withdraw",
                host: "bank.example",
                ip: "10.0.0.1".parse().ok(),
                facts: &crate::policy::NO_FACTS,
            },
        }
    }

    #[test]
    fn only_configured_claims_are_recorded() {
        let p = user(json!({"sub": "u1", "amr": ["mfa"], "email": "u1@example.com"}));
        let names = vec!["amr".to_owned(), "acr".to_owned()];
        let rec = CedarInput::record(&input(&p, &names), CedarOutcome::Allow);
        assert_eq!(rec.principal.claims.len(), 1);
        assert_eq!(rec.principal.claims["amr"], json!(["mfa"]));
        assert!(!rec.truncated);
        let text = serde_json::to_string(&rec).unwrap_or_default();
        assert!(!text.contains("u1@example.com"), "{text}");
    }

    #[test]
    fn an_oversized_claim_is_left_out_and_marked() {
        let p = user(json!({"roles": ["x".repeat(MAX_CLAIM_BYTES)]}));
        let names = vec!["roles".to_owned()];
        let rec = CedarInput::record(&input(&p, &names), CedarOutcome::Deny);
        assert!(rec.principal.claims.is_empty());
        assert!(rec.truncated);
    }

    #[test]
    fn round_trips_through_json() -> Result<(), serde_json::Error> {
        let p = user(json!({"amr": ["pwd", "mfa"]}));
        let names = vec!["amr".to_owned()];
        let rec = CedarInput::record(&input(&p, &names), CedarOutcome::Allow);
        let back: CedarInput = serde_json::from_str(&serde_json::to_string(&rec)?)?;
        assert_eq!(back, rec);
        assert_eq!(back.principal(), Some(p.clone()));
        Ok(())
    }
}
