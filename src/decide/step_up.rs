//! After Cedar denied: a deny determined only by `@step_up` forbids (see
//! [`crate::policy::STEP_UP_ANNOTATION`]) is a request for step-up, not a refusal. Without a
//! fresh step-up claim it answers [`DenyReason::StepUpRequired`] (the 401 with the challenge
//! the forbid names, else `risk.default_challenge`); with one the step-up forbids are
//! waived and Cedar is asked again without them, so every other policy still holds.

use super::authorize::{input_of, Subject};
use super::risk::RiskOutcome;
use super::DecideSettings;
use crate::decision::{Decision, DenyReason};
use crate::identity;
use crate::policy::PolicySnapshot;
use crate::request::AccessRequest;

/// Turns the Cedar stage's `denied` into the step-up answer, or an allow once stepped up,
/// when only step-up forbids determined it; any other result is returned unchanged.
pub fn from_policies(
    settings: &DecideSettings,
    live: &PolicySnapshot,
    subject: &Subject<'_>,
    req: &AccessRequest,
    risk: &RiskOutcome,
    denied: Result<(), DenyReason>,
    d: &mut Decision,
) -> Result<(), DenyReason> {
    if !matches!(denied, Err(DenyReason::PolicyDeny)) {
        return denied;
    }
    let Some(challenge) = live.step_up_for(&d.policies) else {
        return denied;
    };
    if !identity::step_up_done(
        &settings.identity,
        subject.principal,
        settings.clock_skew_ms,
    ) {
        return Err(DenyReason::StepUpRequired {
            challenge: challenge.unwrap_or_else(|| settings.default_challenge.clone()),
        });
    }
    match live.evaluate_waiving_step_up(&input_of(subject, req, risk)) {
        Ok(answer) if answer.errors.is_empty() && answer.allowed => {
            d.policies = answer.determining;
            Ok(())
        }
        Ok(answer) => {
            if answer.errors.is_empty() {
                d.policies = answer.determining;
                return Err(DenyReason::PolicyDeny);
            }
            tracing::warn!(errors = ?answer.errors, "cedar evaluation errors with step-up waived: denied");
            Err(DenyReason::PolicyError)
        }
        Err(e) => {
            tracing::warn!(error = %e, "request could not be evaluated with step-up waived");
            Err(DenyReason::PolicyError)
        }
    }
}
