//! The decision core: a plain [`AccessRequest`] in, a [`Decision`] out.
//!
//! ```text
//! hygiene ─► route ─► principal ─► risk (cache/API, binding) ─► band ─► Cedar ─► challenge ─► uses
//!   403       403/default  403        401/403/503/fail mode      403      403       401         403
//! ```
//!
//! Every early exit is an explicit rule with its own [`DenyReason`]; nothing falls through
//! to allow.

use crate::canonical;
use crate::config::{
    BandThresholds, Config, DefaultAnswer, FailMode, IdentityConfig, Mode, RiskMode,
};
use crate::decision::{Decision, DenyReason, RiskFacts, ShadowOutcome, Verdict};
use crate::identity::{self, Principal};
use crate::policy::{ContextInput, PolicyAnswer, PolicyInput, PolicySnapshot};
use crate::request::AccessRequest;
use crate::risk::assessor::now_ms;
use crate::risk::band::score_for_policy;
use crate::risk::ledger::UseRefused;
use crate::risk::{
    binding, Assessment, Assessor, Band, BindingViolation, FetchError, RecommendationType,
};
use crate::routes::{Lookup, Route, RouteTable};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Instant;

/// Headers that ask an origin to treat the request as another method. Denied: riskgate
/// authorizes the method Envoy saw, which must be the method the upstream runs.
const METHOD_OVERRIDE_HEADERS: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// Longest action token accepted before asking the API (SDK tokens are a few hundred bytes).
const MAX_ACTION_TOKEN_LEN: usize = 8 * 1024;

/// Routes and policies that are swapped together on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled route table.
    pub routes: RouteTable,
    /// The validated Cedar set.
    pub policies: PolicySnapshot,
    /// The shadow set (same schema and entities), evaluated beside the live one.
    pub shadow: Option<PolicySnapshot>,
}

/// Settings the decision reads on every Check (fixed for the process lifetime).
#[derive(Debug, Clone)]
pub struct DecideSettings {
    /// Enforce or dry-run.
    pub mode: Mode,
    /// Identity sources.
    pub identity: IdentityConfig,
    /// Lower-case strip patterns.
    pub strip_headers: Vec<String>,
    /// Action token header (lower-case).
    pub token_header: String,
    /// Global fail mode.
    pub fail_mode: FailMode,
    /// Band thresholds.
    pub bands: BandThresholds,
    /// Max action age.
    pub max_age_ms: u64,
    /// Retry-after for fail-closed.
    pub retry_after_s: u32,
    /// Challenge value when the API names none.
    pub default_challenge: String,
}

impl DecideSettings {
    /// From the config.
    pub fn from_config(config: &Config) -> DecideSettings {
        let risk = config.risk.as_ref();
        DecideSettings {
            mode: config.mode,
            identity: config.identity.clone(),
            strip_headers: config.effective_strip_headers(),
            token_header: risk
                .map_or("x-action-token", |r| r.token_header.as_str())
                .to_ascii_lowercase(),
            fail_mode: risk.map(|r| r.fail_mode).unwrap_or_default(),
            bands: risk.map(|r| r.bands).unwrap_or_default(),
            max_age_ms: risk.map_or(300_000, |r| {
                u64::try_from(r.max_age.as_millis()).unwrap_or(u64::MAX)
            }),
            retry_after_s: risk.map_or(5, |r| {
                u32::try_from(r.retry_after.as_secs()).unwrap_or(u32::MAX)
            }),
            default_challenge: risk
                .map_or_else(|| "step_up".to_owned(), |r| r.default_challenge.clone()),
        }
    }
}

/// The decision engine.
pub struct Decider {
    settings: DecideSettings,
    snapshot: ArcSwap<Snapshot>,
    risk: Option<Arc<Assessor>>,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What the risk stage produced when it did not end the decision.
struct RiskStage {
    band: Band,
    assessment: Option<Assessment>,
}

impl Decider {
    /// A decider over a loaded snapshot and an optional risk assessor.
    pub fn new(
        settings: DecideSettings,
        snapshot: Snapshot,
        risk: Option<Arc<Assessor>>,
    ) -> Decider {
        Decider {
            settings,
            snapshot: ArcSwap::from_pointee(snapshot),
            risk,
        }
    }

    /// Replaces routes and policies atomically; in-flight decisions finish on the old set.
    pub fn swap_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The risk assessor, if risk is configured.
    pub fn assessor(&self) -> Option<&Arc<Assessor>> {
        self.risk.as_ref()
    }

    /// Settings.
    pub fn settings(&self) -> &DecideSettings {
        &self.settings
    }

    /// Decides one request.
    pub async fn decide(&self, req: &AccessRequest) -> Decision {
        let started = Instant::now();
        let mut d = Decision::new(req.request_id.clone());
        d.strip_headers = self.headers_to_strip(req);
        d.enforced = self.settings.mode == Mode::Enforce;
        let snapshot = self.snapshot.load_full();
        d.verdict = match self.evaluate(&snapshot, req, &mut d).await {
            Ok(()) => Verdict::Allow,
            Err(reason) => Verdict::Deny(reason),
        };
        d.timings.total = started.elapsed();
        d
    }

    /// Exact names always (a header Envoy did not show riskgate is still removed), and the
    /// request's headers that match a `prefix*` pattern.
    fn headers_to_strip(&self, req: &AccessRequest) -> Vec<String> {
        let patterns = &self.settings.strip_headers;
        let mut names: Vec<String> = patterns
            .iter()
            .filter(|p| !p.ends_with('*'))
            .cloned()
            .collect();
        names.extend(
            req.headers
                .keys()
                .filter(|name| {
                    patterns
                        .iter()
                        .filter_map(|p| p.strip_suffix('*'))
                        .any(|prefix| name.starts_with(prefix))
                })
                .cloned(),
        );
        names.sort();
        names.dedup();
        names
    }

    async fn evaluate(
        &self,
        snapshot: &Snapshot,
        req: &AccessRequest,
        d: &mut Decision,
    ) -> Result<(), DenyReason> {
        // 1. Hygiene.
        if req.method.is_empty() {
            return Err(DenyReason::Malformed("missing method"));
        }
        if req.path.is_empty() {
            return Err(DenyReason::Malformed("missing path"));
        }
        if METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|h| req.headers.contains_key(*h))
        {
            return Err(DenyReason::MethodOverride);
        }
        canonical::check_path(&req.path).map_err(DenyReason::NonCanonicalPath)?;

        // 2. Route.
        let preflight =
            req.method == "OPTIONS" && req.headers.contains_key("access-control-request-method");
        let lookup = snapshot
            .routes
            .lookup(&req.host, &req.method, &req.path, preflight)
            .map_err(|_| DenyReason::Malformed("bad path parameter"))?;
        let (route, resource_id) = match lookup {
            Lookup::Matched { route, resource_id } => (route, resource_id),
            Lookup::CorsPreflight => {
                d.route = Some("cors-preflight".into());
                return Ok(());
            }
            Lookup::Unmatched(DefaultAnswer::Allow) => {
                d.route = Some("default-allow".into());
                return Ok(());
            }
            Lookup::Unmatched(DefaultAnswer::Deny) => return Err(DenyReason::NoRoute),
        };
        d.route = Some(route.name.clone());
        if route.dry_run {
            d.enforced = false;
        }
        d.action = Some(route.action.clone());
        d.resource = Some(format!("{}::{:?}", route.resource.entity_type, resource_id));

        // 3. Principal.
        let principal = identity::principal(&self.settings.identity, req).map_err(|e| {
            tracing::debug!(error = %e, "identity rejected");
            DenyReason::BadIdentity
        })?;
        d.principal = Some(principal.label());

        // 4. Risk.
        let risk_started = Instant::now();
        let stage = self.risk_stage(route, req, &principal, d).await;
        d.timings.risk = risk_started.elapsed();
        let stage = stage?;
        d.band = stage.band;
        let recommendation = stage.assessment.as_ref().map(|a| a.recommendation.kind);

        // 5. Risk precedence: DENY or high band end it before Cedar.
        if recommendation == Some(RecommendationType::Deny) {
            return Err(DenyReason::RiskDeny);
        }
        if stage.band == Band::High {
            return Err(DenyReason::RiskHigh);
        }

        // 6. Cedar.
        let no_reasons = Vec::new();
        let rec = stage.assessment.as_ref().map(|a| &a.recommendation);
        let context = ContextInput {
            risk_present: rec.is_some(),
            score: rec.map_or(0, |r| score_for_policy(r.risk_score)),
            band: stage.band.as_str(),
            recommendation: recommendation.map_or("NONE", RecommendationType::as_str),
            reasons: rec.map_or(&no_reasons, |r| &r.reasons),
            method: &req.method,
            path: &req.path,
            host: &req.host,
            ip: req.source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        let cedar_started = Instant::now();
        let input = PolicyInput {
            principal: &principal,
            claims_as_attributes: &self.settings.identity.claims_as_attributes,
            action: &route.action,
            resource_type: &route.resource.entity_type,
            resource_id: &resource_id,
            context,
        };
        let answer = snapshot.policies.evaluate(&input);
        d.timings.cedar = cedar_started.elapsed();
        if let Some(shadow) = &snapshot.shadow {
            d.shadow = Some(shadow_outcome(shadow, &input, answer.as_ref().ok(), d));
        }
        let answer = answer.map_err(|e| {
            tracing::warn!(error = %e, route = %route.name, "request could not be evaluated");
            DenyReason::PolicyError
        })?;
        d.policies = answer.determining;
        // Cedar skips a policy whose evaluation errors (say, it reads an attribute of an
        // entity the entities file lacks). A skipped forbid would let the request through,
        // so any error denies.
        if !answer.errors.is_empty() {
            tracing::warn!(errors = ?answer.errors, route = %route.name, "cedar evaluation errors: denied");
            return Err(DenyReason::PolicyError);
        }
        if !answer.allowed {
            return Err(DenyReason::PolicyDeny);
        }

        // 7. Step-up.
        if let Some(a) = &stage.assessment {
            if a.recommendation.kind == RecommendationType::Challenge
                && !identity::step_up_done(&self.settings.identity, &principal)
            {
                return Err(DenyReason::StepUpRequired {
                    challenge: a
                        .recommendation
                        .challenge_type
                        .clone()
                        .unwrap_or_else(|| self.settings.default_challenge.clone()),
                });
            }
        }

        // 8. Token uses (only allowed requests consume one).
        if let (Some(a), Some(risk)) = (&stage.assessment, &self.risk) {
            let max_uses = route
                .max_uses
                .or_else(|| (!snapshot.policies.is_read(&route.action)).then_some(1));
            if let Some(max) = max_uses {
                match risk.consume_use(&a.recommendation.action_id, max) {
                    Ok(()) => {}
                    Err(UseRefused::UsedUp) => {
                        return Err(DenyReason::Binding(BindingViolation::UsedUp))
                    }
                    Err(UseRefused::Full) => {
                        tracing::warn!("replay ledger full of live actions: write denied");
                        return Err(DenyReason::Binding(BindingViolation::LedgerFull));
                    }
                }
            }
        }
        Ok(())
    }

    async fn risk_stage(
        &self,
        route: &Route,
        req: &AccessRequest,
        principal: &Principal,
        d: &mut Decision,
    ) -> Result<RiskStage, DenyReason> {
        let unassessed = RiskStage {
            band: Band::Unassessed,
            assessment: None,
        };
        if route.risk == RiskMode::Off {
            return Ok(unassessed);
        }
        let token = req
            .header(&self.settings.token_header)
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return match route.risk {
                RiskMode::Required => Err(DenyReason::ActionTokenRequired),
                _ => Ok(unassessed),
            };
        };
        if token.len() > MAX_ACTION_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DenyReason::TokenRejected);
        }
        let fail_mode = route.fail_mode.unwrap_or(self.settings.fail_mode);
        let Some(assessor) = &self.risk else {
            return self.fail(
                fail_mode,
                &FetchError::NoToken("risk not configured".into()),
                d,
            );
        };
        match assessor.assess(token, req.deadline).await {
            Ok(assessment) => {
                let rec = &assessment.recommendation;
                d.risk = Some(RiskFacts {
                    score: rec.risk_score,
                    recommendation: rec.kind.as_str(),
                    reasons: rec.reasons.clone(),
                    action_id: rec.action_id.clone(),
                    action_type: rec.action_type.clone(),
                    cache_hit: assessment.cache_hit,
                });
                let band = Band::from_score(rec.risk_score, &self.settings.bands);
                d.band = band; // shown in the audit line even when binding refuses
                binding::check(
                    rec,
                    &route.action_types,
                    principal.user_id(),
                    self.settings.max_age_ms,
                    now_ms(),
                )
                .map_err(DenyReason::Binding)?;
                Ok(RiskStage {
                    band,
                    assessment: Some(assessment),
                })
            }
            Err(FetchError::Rejected(status)) => {
                tracing::debug!(status, "risk api rejected the action token");
                Err(DenyReason::TokenRejected)
            }
            Err(outage) => self.fail(fail_mode, &outage, d),
        }
    }

    /// Applies the fail mode to an outage.
    fn fail(
        &self,
        mode: FailMode,
        outage: &FetchError,
        d: &mut Decision,
    ) -> Result<RiskStage, DenyReason> {
        let (name, band) = match mode {
            FailMode::Closed => ("closed", None),
            FailMode::ReadOnly => ("read_only", Some(Band::Medium)),
            FailMode::Open => ("open", Some(Band::Low)),
        };
        d.fail_mode = Some((name, outage.label()));
        match band {
            None => {
                tracing::warn!(cause = outage.label(), "risk api outage: failing closed");
                Err(DenyReason::RiskUnavailable {
                    retry_after_s: self.settings.retry_after_s,
                })
            }
            Some(band) => {
                if mode == FailMode::Open {
                    tracing::error!(
                        cause = outage.label(),
                        "risk api outage: FAILING OPEN (band low)"
                    );
                } else {
                    tracing::warn!(
                        cause = outage.label(),
                        "risk api outage: read-only (band medium)"
                    );
                }
                Ok(RiskStage {
                    band,
                    assessment: None,
                })
            }
        }
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
