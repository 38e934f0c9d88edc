//! The decision core: a plain [`AccessRequest`] in, a [`Decision`] out. One stage per
//! module, each a function returning `Result<_, DenyReason>`; this file only runs them in
//! order and records what they found.
//!
//! ```text
//! hygiene ─► route ─► principal ─► facts+body ─► history ─► risk+transaction ─► gate ─► authorize ─► step-up ─► uses
//!   403     403/pass     403          403          503    401/403/429/503     403     403/401        401      403/503
//! ```
//!
//! Every early exit is an explicit rule with its own [`DenyReason`]; nothing falls through
//! to allow. The [`history`] opened before risk is settled with the verdict in
//! [`Decider::decide`] (a deny releases the reservation and is counted).

pub mod authorize;
pub mod body;
pub mod facts;
pub mod history;
pub mod hygiene;
pub mod principal;
pub mod risk;
pub mod route;
pub mod step_up;
pub mod strip;
pub mod uses;

use crate::config::{BandThresholds, Config, IdentityConfig, Mode};
use crate::decision::{Decision, DenyReason, Verdict};
use crate::policy::Snapshot;
use crate::request::AccessRequest;
use crate::risk::Assessor;
use crate::routes::Route;
use crate::state::StateStore;
use arc_swap::ArcSwap;
use risk::FailMode;
use route::Routed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings the decision reads on every Check (fixed for the process lifetime).
#[derive(Debug, Clone)]
pub struct DecideSettings {
    /// Enforce or dry-run.
    pub mode: Mode,
    /// Identity sources.
    pub identity: IdentityConfig,
    /// Lower-case strip patterns.
    pub strip_headers: Vec<String>,
    /// The same, compiled once.
    pub strip: strip::StripRules,
    /// What answers carry besides the verdict.
    pub answer: crate::config::AnswerConfig,
    /// Action token header (lower-case).
    pub token_header: String,
    /// Global fail mode.
    pub fail_mode: FailMode,
    /// Band thresholds.
    pub bands: BandThresholds,
    /// Max action age.
    pub max_age_ms: u64,
    /// Tolerated clock difference for `action_performed_at` and `auth_time`.
    pub clock_skew_ms: u64,
    /// Retry-after for fail-closed.
    pub retry_after_s: u32,
    /// Challenge value when the API names none.
    pub default_challenge: String,
    /// `risk.sticky_window` in ms (0: sticky risk off); see [`risk::sticky`].
    pub sticky_window_ms: u64,
    /// Per-source budget of risk-API calls (`risk.call_budget`).
    pub call_budget: risk::CallBudgetSettings,
    /// Most uses one authenticated principal counts per action age (`state`).
    pub max_uses_per_principal: u32,
    /// Headers, query parameters and workload put into Cedar's context (`context`).
    pub facts: facts::FactRules,
    /// The per-principal window behind `context.history` (`history`).
    pub history: history::HistorySettings,
}

impl DecideSettings {
    /// From the config (risk defaults when risk is not configured).
    pub fn from_config(config: &Config) -> DecideSettings {
        let risk = config.risk_or_default();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        DecideSettings {
            mode: config.mode,
            identity: config.identity.clone(),
            strip_headers: config.effective_strip_headers(),
            strip: strip::StripRules::new(&config.effective_strip_headers()),
            answer: config.answer,
            token_header: risk.token_header.to_ascii_lowercase(),
            fail_mode: risk.fail_mode,
            bands: risk.bands,
            max_age_ms: millis(risk.max_age),
            clock_skew_ms: millis(risk.clock_skew),
            retry_after_s: u32::try_from(risk.retry_after.as_secs()).unwrap_or(u32::MAX),
            default_challenge: risk.default_challenge,
            sticky_window_ms: millis(risk.sticky_window),
            call_budget: risk::CallBudgetSettings {
                calls: risk.call_budget.calls,
                window_ms: millis(risk.call_budget.window),
            },
            max_uses_per_principal: config.state.max_uses_per_principal,
            facts: facts::FactRules::new(&config.context),
            history: history::HistorySettings {
                window: config.history.window(),
                retry_after_s: u32::try_from(risk.retry_after.as_secs()).unwrap_or(u32::MAX),
            },
        }
    }
}

/// The decision engine.
pub struct Decider {
    settings: DecideSettings,
    snapshot: ArcSwap<Snapshot>,
    risk: Option<Arc<Assessor>>,
    uses: Arc<dyn StateStore>,
    budget: risk::CallBudget,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Decider {
    /// A decider over a loaded snapshot, an optional risk assessor, and the state store
    /// that counts uses of actions and risk-API call budgets (per replica, or shared
    /// across replicas).
    pub fn new(
        settings: DecideSettings,
        snapshot: Snapshot,
        risk: Option<Arc<Assessor>>,
        uses: Arc<dyn StateStore>,
    ) -> Decider {
        let budget =
            risk::CallBudget::new(settings.call_budget, settings.retry_after_s, uses.clone());
        Decider {
            settings,
            snapshot: ArcSwap::from_pointee(snapshot),
            risk,
            uses,
            budget,
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
        // Released by its Drop if this future is dropped before the verdict (cancelled Check).
        let mut unsettled = history::Unsettled::new(self.settings.history, &self.uses);
        d.verdict = match self
            .evaluate(&snapshot, req, &mut d, unsettled.slot())
            .await
        {
            Ok(()) => Verdict::Allow,
            Err(reason) => Verdict::Deny(reason),
        };
        if let Some(ticket) = &unsettled.take() {
            let (settings, store) = (&self.settings.history, &*self.uses);
            history::close(settings, store, ticket, &d.verdict, d.enforced).await;
        }
        d.timings.total = started.elapsed();
        d
    }

    /// The strip list for this request.
    fn headers_to_strip(&self, req: &AccessRequest) -> Vec<String> {
        self.settings
            .strip
            .for_headers(req.headers.keys().map(String::as_str))
    }

    /// The stages in order; the first deny ends the decision. `ticket` gets the history
    /// opened for this Check, which [`Decider::decide`] settles with the verdict.
    async fn evaluate(
        &self,
        snapshot: &Snapshot,
        req: &AccessRequest,
        d: &mut Decision,
        ticket: &mut Option<history::Ticket>,
    ) -> Result<(), DenyReason> {
        hygiene::check(req)?;
        let (route, resource_id) = match route::resolve(&snapshot.routes, req)? {
            Routed::Matched { route, resource_id } => (route, resource_id),
            Routed::Passed(why) => {
                d.route = Some(why.into());
                return Ok(());
            }
            Routed::NearMiss(near) => return Err(route::near_miss(d, near)),
        };
        record_route(d, route, &resource_id);

        let principal = principal::identify(&self.settings.identity, req)?;
        d.principal = Some(principal.label());
        let mut facts = facts::gather(&self.settings.facts, req)?;
        facts.transaction = body::transaction(route, req)?;
        let wanted = snapshot.policies.reads_history()
            || snapshot.shadow.as_ref().is_some_and(|s| s.reads_history());
        *ticket = history::open(
            &self.settings.history,
            &*self.uses,
            wanted,
            &principal,
            &mut facts,
        )
        .await?;

        let subject = authorize::Subject {
            route,
            resource_id: &resource_id,
            principal: &principal,
            claims_as_attributes: &self.settings.identity.claims_as_attributes,
            facts: &facts,
        };
        let probe = risk::skip::Probe {
            live: &snapshot.policies,
            shadowed: snapshot.shadow.is_some(),
            subject: &subject,
        };
        let risk_started = Instant::now();
        let sources = risk::RiskSources {
            assessor: self.risk.as_deref(),
            store: &*self.uses,
            budget: &self.budget,
            skip: &probe,
        };
        let assessed = risk::assess(&self.settings, &sources, route, req, &principal, d).await;
        d.timings.risk = risk_started.elapsed();
        let risk = assessed?;
        d.band = risk.band;
        risk::transaction::check(route, facts.transaction.as_ref(), &risk)
            .map_err(DenyReason::Binding)?;
        risk::gate(&risk)?;

        let authorized = authorize::authorize(
            &snapshot.policies,
            snapshot.shadow.as_ref(),
            &subject,
            req,
            &risk,
            d,
        );
        let live = &snapshot.policies;
        step_up::from_policies(&self.settings, live, &subject, req, &risk, authorized, d)?;
        risk::require_step_up(&self.settings, &risk, &principal)?;
        let limits = uses::UseLimits {
            max_age_ms: self.settings.max_age_ms,
            retry_after_s: self.settings.retry_after_s,
            max_uses_per_principal: self.settings.max_uses_per_principal,
        };
        uses::consume(
            &*self.uses,
            &snapshot.policies,
            route,
            &risk,
            &principal,
            limits,
        )
        .await
    }
}

/// Headers to remove from the request before it is forwarded: every exact name in
/// `patterns` (a header Envoy did not show riskgate is still removed), and each `present`
/// header name (any case) matching a `prefix*` pattern, lower-cased, sorted, deduplicated.
/// (Compiles the patterns each call: a Check uses [`DecideSettings::strip`] instead.)
pub fn headers_to_strip<'a>(
    patterns: &[String],
    present: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    strip::StripRules::new(patterns).for_headers(present)
}

/// What the audit line and metrics show of the matched route; a dry-run route is not
/// enforced whatever the global mode.
fn record_route(d: &mut Decision, route: &Route, resource_id: &str) {
    d.route = Some(route.name.clone());
    if route.dry_run {
        d.enforced = false;
    }
    d.action = Some(route.action.clone());
    d.resource = Some(format!("{}::{:?}", route.resource.entity_type, resource_id));
}
