//! Skipping the risk-API call when risk cannot matter (issue 13, item 4).
//!
//! Every action token that misses the cache costs one API call before Cedar runs — an
//! anonymous write with a fresh token included, though the guardrails forbid it whatever
//! its score. On a cache miss this stage first asks Cedar with `context.risk` unknown
//! ([`PolicySnapshot::denied_whatever_risk`]); when the policies deny the request for
//! every possible risk, it is denied as Cedar would deny it (403 `policy_deny`), the API
//! is not called, and the audit line says `risk: skipped`.
//!
//! Only a definite deny skips. Anything uncertain — a residual permit or forbid, a request
//! that cannot be put to Cedar, a shadow set (whose comparison needs the real risk) — asks
//! the API as before. A cached recommendation, or a rejection still in the negative cache,
//! costs nothing and is used as before (nor is Cedar asked twice for it).

use super::super::authorize::Subject;
use crate::decision::{Decision, DenyReason};
use crate::policy::{ContextInput, PolicyInput, PolicySnapshot};
use crate::request::AccessRequest;
use crate::risk::Assessor;

/// What the skip needs to ask Cedar ahead of the risk stage: the policies the Check will
/// be authorized against and the Cedar subject.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The live set.
    pub live: &'a PolicySnapshot,
    /// Whether a shadow set is loaded (then nothing is skipped).
    pub shadowed: bool,
    /// Principal, action and resource.
    pub subject: &'a Subject<'a>,
}

/// Denies (with the facts recorded on `d`) when `action_token` is not cached and the live
/// policies deny the request whatever its risk; otherwise `Ok` and the API is asked.
pub async fn check(
    assessor: &Assessor,
    action_token: &str,
    probe: &Probe<'_>,
    req: &AccessRequest,
    d: &mut Decision,
) -> Result<(), DenyReason> {
    // Only when this Check would start an API call (not cached, not a remembered rejection,
    // no fetch in flight to join): a cheap key lookup, nothing decoded.
    if probe.shadowed || !assessor.needs_call(action_token) {
        return Ok(());
    }
    let Some(policies) = denied_whatever_risk(probe, req) else {
        return Ok(());
    };
    if probe.live.step_up_for(&policies).is_some() {
        // step-up forbids ask for step-up (and are waived after it): the Cedar stage decides
        return Ok(());
    }
    d.risk_skipped = true;
    d.policies = policies;
    Err(DenyReason::PolicyDeny)
}

/// The forbids that deny the request whatever its risk (empty when no permit can apply),
/// or `None` when risk may change Cedar's answer.
pub fn denied_whatever_risk(probe: &Probe<'_>, req: &AccessRequest) -> Option<Vec<String>> {
    let subject = probe.subject;
    let input = PolicyInput {
        principal: subject.principal,
        claims_as_attributes: subject.claims_as_attributes,
        action: &subject.route.action,
        resource_type: &subject.route.resource.entity_type,
        resource_id: subject.resource_id,
        // The risk fields are replaced by an unknown; the request facts are as in
        // `authorize` (a mismatch fails the schema check, which means no skip).
        context: ContextInput {
            risk_present: false,
            outage: false,
            score: 0,
            band: "unassessed",
            recommendation: "NONE",
            reasons: &[],
            method: &req.method,
            path: &req.path,
            host: &req.host,
            ip: req.source_ip,
            facts: subject.facts,
        },
    };
    probe.live.denied_whatever_risk(&input)
}
