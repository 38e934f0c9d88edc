//! Stage 4, risk: the rules about recommendations. [`crate::risk`] only *gets* a
//! recommendation (cache, API, breaker); this stage decides what it means for this
//! request — which token counts, whether the recommendation is bound to this request
//! ([`binding`]), which [`Band`] it falls in ([`band`]), what an outage turns into
//! ([`FailMode`]), whether DENY/high end the decision, and whether a CHALLENGE is met. A
//! Check that would call the API is first charged to its source's [`budget`].

pub mod band;
pub mod binding;
pub mod budget;
pub mod fail_mode;
pub mod skip;
pub mod sticky;
pub mod transaction;

pub use band::{score_for_policy, Band};
pub use binding::BindingViolation;
pub use budget::{CallBudget, CallBudgetSettings};
pub use fail_mode::FailMode;

use super::DecideSettings;
use crate::clock::now_ms;
use crate::config::RiskMode;
use crate::decision::{Decision, DenyReason, RiskFacts};
use crate::identity::{self, Principal};
use crate::request::AccessRequest;
use crate::risk::{Assessment, Assessor, FetchError, RecommendationType};
use crate::routes::Route;
use crate::state::StateStore;

/// Longest action token accepted before asking the API (SDK tokens are a few hundred bytes).
pub const MAX_ACTION_TOKEN_LEN: usize = 8 * 1024;

/// What the risk stage found, when it did not end the decision.
#[derive(Debug, Clone)]
pub struct RiskOutcome {
    /// The band policies see.
    pub band: Band,
    /// The bound recommendation, if one was assessed.
    pub assessment: Option<Assessment>,
    /// The band stands in for an assessment the risk API could not give (a fail mode).
    pub outage: bool,
}

impl RiskOutcome {
    const UNASSESSED: RiskOutcome = RiskOutcome {
        band: Band::Unassessed,
        assessment: None,
        outage: false,
    };

    /// The recommendation type, if a recommendation was assessed.
    pub fn recommendation(&self) -> Option<RecommendationType> {
        self.assessment.as_ref().map(|a| a.recommendation.kind)
    }
}

/// What the risk stage consults besides the request: the API (through the assessor, if
/// risk is configured), the state store (each user's [`sticky`] risk), the per-source
/// call budget, and the [`skip`] probe that can make an API call unnecessary.
#[derive(Clone, Copy)]
pub struct RiskSources<'a> {
    /// The risk API behind its caches, if risk is configured.
    pub assessor: Option<&'a Assessor>,
    /// Where sticky risk is kept (per replica or shared).
    pub store: &'a dyn StateStore,
    /// Charged before a Check causes an API call.
    pub budget: &'a CallBudget,
    /// Cedar with `context.risk` unknown, asked before any API call.
    pub skip: &'a skip::Probe<'a>,
}

/// Assesses the request's action token for `route`: recommendation, binding and band, or
/// the fail mode on an outage. Records the facts on `d` (also when binding refuses).
/// `with.store` keeps each user's [`sticky`] risk: what a request without a token gets. A
/// Check that would call the API is charged to `with.budget` first.
pub async fn assess(
    settings: &DecideSettings,
    with: &RiskSources<'_>,
    route: &Route,
    req: &AccessRequest,
    principal: &Principal,
    d: &mut Decision,
) -> Result<RiskOutcome, DenyReason> {
    let RiskSources {
        assessor,
        store,
        budget,
        skip,
    } = *with;
    if route.risk == RiskMode::Off {
        return Ok(RiskOutcome::UNASSESSED);
    }
    let token = req
        .header(&settings.token_header)
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return match route.risk {
            RiskMode::Required => Err(DenyReason::ActionTokenRequired),
            _ => {
                sticky::tokenless(settings, store, principal, d).await?;
                Ok(RiskOutcome::UNASSESSED)
            }
        };
    };
    if token.len() > MAX_ACTION_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DenyReason::TokenRejected);
    }
    let fail_mode = route.fail_mode.unwrap_or(settings.fail_mode);
    if let Some(assessor) = assessor {
        skip::check(assessor, token, skip, req, d).await?;
    }
    budget
        .charge_if_calling(assessor, token, principal, req.source_ip)
        .await?;
    let fetched = match assessor {
        Some(assessor) => assessor.assess(token, req.deadline).await,
        None => Err(FetchError::NoToken("risk not configured".into())),
    };
    let assessment = match fetched {
        Ok(assessment) => assessment,
        Err(FetchError::Rejected(status)) => {
            tracing::debug!(status, "risk api rejected the action token");
            return Err(DenyReason::TokenRejected);
        }
        Err(FetchError::CallerDeadline) => {
            tracing::debug!("check deadline too short to wait for the risk api");
            return Err(DenyReason::RiskUnavailable {
                retry_after_s: settings.retry_after_s,
            });
        }
        Err(FetchError::Busy) => return Err(budget::busy(settings.retry_after_s)),
        Err(FetchError::Throttled { retry_after_s }) => {
            return Err(budget::throttled(retry_after_s, settings.retry_after_s));
        }
        Err(outage) => {
            d.fail_mode = Some((fail_mode.label(), outage.label()));
            let band = fail_mode.apply(&outage, settings.retry_after_s)?;
            return Ok(RiskOutcome {
                band,
                assessment: None,
                outage: true,
            });
        }
    };
    let rec = &assessment.recommendation;
    d.risk = Some(RiskFacts {
        score: rec.risk_score,
        recommendation: rec.kind.as_str(),
        reasons: rec.reasons.clone(),
        action_id: rec.action_id.clone(),
        action_type: rec.action_type.clone(),
        cache_hit: assessment.cache_hit,
    });
    let band = Band::from_score(rec.risk_score, &settings.bands);
    d.band = band; // shown in the audit line even when binding refuses
    let limits = binding::AgeLimits {
        max_age_ms: settings.max_age_ms,
        clock_skew_ms: settings.clock_skew_ms,
    };
    binding::check(
        rec,
        &route.action_types,
        principal.user_id(),
        limits,
        now_ms(),
    )
    .map_err(DenyReason::Binding)?;
    sticky::record(settings, store, principal, rec, band).await;
    Ok(RiskOutcome {
        band,
        assessment: Some(assessment),
        outage: false,
    })
}

/// Risk precedence: a DENY recommendation or the high band end the decision before Cedar.
pub fn gate(outcome: &RiskOutcome) -> Result<(), DenyReason> {
    if outcome.recommendation() == Some(RecommendationType::Deny) {
        return Err(DenyReason::RiskDeny);
    }
    if outcome.band == Band::High {
        return Err(DenyReason::RiskHigh);
    }
    Ok(())
}

/// After Cedar allowed: a CHALLENGE recommendation needs the configured step-up claim.
pub fn require_step_up(
    settings: &DecideSettings,
    outcome: &RiskOutcome,
    principal: &Principal,
) -> Result<(), DenyReason> {
    let Some(a) = &outcome.assessment else {
        return Ok(());
    };
    if a.recommendation.kind != RecommendationType::Challenge
        || identity::step_up_done(&settings.identity, principal, settings.clock_skew_ms)
    {
        return Ok(());
    }
    Err(DenyReason::StepUpRequired {
        challenge: a
            .recommendation
            .challenge_type
            .clone()
            .unwrap_or_else(|| settings.default_challenge.clone()),
    })
}
