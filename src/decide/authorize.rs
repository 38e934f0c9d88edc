//! Stage 5, authorize: the Cedar question — may this principal do this action on this
//! resource, in this context (risk band, score, recommendation, request facts)? The
//! shadow set, when configured, answers the same input beside it and never decides.

use super::risk::{score_for_policy, RiskOutcome};
use crate::audit::input::{CedarInput, CedarOutcome};
use crate::decision::{Decision, DenyReason, ShadowOutcome};
use crate::identity::Principal;
use crate::policy::{ContextInput, PolicyAnswer, PolicyInput, PolicySnapshot, RequestFacts};
use crate::request::AccessRequest;
use crate::routes::Route;
use std::time::Instant;

/// What the Cedar stage needs besides the snapshot.
#[derive(Debug)]
pub struct Subject<'a> {
    /// The matched route.
    pub route: &'a Route,
    /// Its resource id.
    pub resource_id: &'a str,
    /// Who asks.
    pub principal: &'a Principal,
    /// Claims copied onto the principal entity.
    pub claims_as_attributes: &'a [String],
    /// Configured headers, query parameters and the calling workload.
    pub facts: &'a RequestFacts,
}

/// Asks Cedar (and the shadow set); allow only on an error-free permit.
pub fn authorize(
    live: &PolicySnapshot,
    shadow: Option<&PolicySnapshot>,
    subject: &Subject<'_>,
    req: &AccessRequest,
    risk: &RiskOutcome,
    d: &mut Decision,
) -> Result<(), DenyReason> {
    let started = Instant::now();
    let input = input_of(subject, req, risk);
    let answer = live.evaluate(&input);
    d.timings.cedar = started.elapsed();
    if let Some(shadow) = shadow {
        d.shadow = Some(shadow_outcome(shadow, &input, answer.as_ref().ok(), d));
    }
    d.input = Some(Box::new(CedarInput::record(
        &input,
        match &answer {
            Ok(a) if a.errors.is_empty() && a.allowed => CedarOutcome::Allow,
            Ok(a) if a.errors.is_empty() => CedarOutcome::Deny,
            _ => CedarOutcome::Error,
        },
    )));
    let route = &subject.route.name;
    let answer = answer.map_err(|e| {
        tracing::warn!(error = %e, route = %route, "request could not be evaluated");
        DenyReason::PolicyError
    })?;
    d.policies = answer.determining;
    // Cedar skips a policy whose evaluation errors (say, it reads an attribute of an
    // entity the entities file lacks). A skipped forbid would let the request through,
    // so any error denies.
    if !answer.errors.is_empty() {
        tracing::warn!(errors = ?answer.errors, route = %route, "cedar evaluation errors: denied");
        return Err(DenyReason::PolicyError);
    }
    if !answer.allowed {
        return Err(DenyReason::PolicyDeny);
    }
    Ok(())
}

/// The Cedar input of `subject` with the risk found: what [`authorize`] (and a
/// re-evaluation with step-up forbids waived) puts to Cedar.
pub fn input_of<'a>(
    subject: &'a Subject<'a>,
    req: &'a AccessRequest,
    risk: &'a RiskOutcome,
) -> PolicyInput<'a> {
    let rec = risk.assessment.as_ref().map(|a| &a.recommendation);
    let context = ContextInput {
        risk_present: rec.is_some(),
        outage: risk.outage,
        score: rec.map_or(0, |r| score_for_policy(r.risk_score)),
        band: risk.band.as_str(),
        recommendation: rec.map_or("NONE", |r| r.kind.as_str()),
        reasons: rec.map_or(&[][..], |r| &r.reasons[..]),
        method: &req.method,
        path: &req.path,
        host: &req.host,
        ip: req.source_ip,
        facts: subject.facts,
    };
    PolicyInput {
        principal: subject.principal,
        claims_as_attributes: subject.claims_as_attributes,
        action: &subject.route.action,
        resource_type: &subject.route.resource.entity_type,
        resource_id: subject.resource_id,
        context,
    }
}

/// Evaluates the shadow set on the same input (same context: no second risk lookup) and
/// logs a disagreement with both sides' determining policies. Never changes the answer.
fn shadow_outcome(
    shadow: &PolicySnapshot,
    input: &PolicyInput<'_>,
    live: Option<&PolicyAnswer>,
    d: &Decision,
) -> ShadowOutcome {
    let answer = shadow.evaluate(input).unwrap_or_else(|e| {
        tracing::debug!(error = %e, "shadow policies could not evaluate the request");
        PolicyAnswer {
            allowed: false,
            determining: Vec::new(),
            errors: vec![e.to_string()],
        }
    });
    let outcome = ShadowOutcome {
        live_allowed: live.is_some_and(|a| a.allowed),
        shadow_allowed: answer.allowed,
        policies: answer.determining,
    };
    if outcome.disagrees() {
        let live_policies = live.map(|a| a.determining.join(",")).unwrap_or_default();
        tracing::info!(
            decision_id = %d.id,
            route = d.route.as_deref().unwrap_or("-"),
            principal = d.principal.as_deref().unwrap_or("-"),
            live = if outcome.live_allowed { "allow" } else { "deny" },
            live_policies = %live_policies,
            shadow = if outcome.shadow_allowed { "allow" } else { "deny" },
            shadow_policies = %outcome.policies.join(","),
            "shadow policies disagree"
        );
    }
    outcome
}
