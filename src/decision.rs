//! What riskgate decided, and why — one vocabulary shared by the answer, the audit log and
//! the metrics. A denial is a normal answer, never an error.

use crate::canonical::NonCanonical;
use crate::decide::risk::{Band, BindingViolation};
use std::time::Duration;

/// The outcome of one Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request.
    Allow,
    /// Answer the client directly.
    Deny(DenyReason),
}

/// Why a request is not forwarded. Each reason has exactly one HTTP status (DESIGN §1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The CheckRequest lacks what is needed (no method, no path, bad parameter).
    Malformed(&'static str),
    /// `..`, `//`, encoded separators, bad percent-encoding.
    NonCanonicalPath(NonCanonical),
    /// `x-http-method-override` and kin.
    MethodOverride,
    /// No route and the default is deny.
    NoRoute,
    /// No route as sent, but one if case or a trailing slash were ignored, which many
    /// upstreams do: denied whatever the host's default (`hosts[].near_miss`).
    NearMissPath,
    /// A verified identity source was present but unusable.
    BadIdentity,
    /// The route requires risk but no action token came: run the SDK and retry.
    ActionTokenRequired,
    /// The risk API rejected the token (4xx), or the token is malformed.
    TokenRejected,
    /// The recommendation does not fit this request.
    Binding(BindingViolation),
    /// The recommendation is DENY.
    RiskDeny,
    /// The score is in the high band.
    RiskHigh,
    /// No action token came, and this principal's recent risk was DENY or high (sticky
    /// risk, `risk.sticky_window`): the band is high without asking the API.
    RiskSticky,
    /// Cedar denied.
    PolicyDeny,
    /// The request could not be put to Cedar (entity or context off-schema).
    PolicyError,
    /// Cedar allowed but the recommendation is CHALLENGE and no step-up is shown.
    StepUpRequired {
        /// `challenge_type` from the API, or the configured default.
        challenge: String,
    },
    /// Risk API outage under fail mode `closed`.
    RiskUnavailable {
        /// Seconds for `retry-after`.
        retry_after_s: u32,
    },
    /// The shared state store could not count a use (`state.on_failure: closed`): an
    /// outage of riskgate's own, not a verdict on the client.
    StateUnavailable {
        /// Seconds for `retry-after`.
        retry_after_s: u32,
    },
    /// The source (principal, else client address) has spent its budget of risk-API calls
    /// for this window (`risk.call_budget`): 429, no API call made.
    RiskBudgetExceeded {
        /// Seconds until the window ends, for `retry-after`.
        retry_after_s: u32,
    },
    /// `risk.max_concurrent_calls` API calls were already out: 503, no API call made.
    RiskApiBusy {
        /// Seconds for `retry-after`.
        retry_after_s: u32,
    },
    /// The risk API answered 429: 503, whatever the fail mode (back-pressure is not an
    /// outage, so it never buys a fail-open answer nor opens the breaker).
    RiskApiThrottled {
        /// The API's `Retry-After` (bounded), else `risk.retry_after`.
        retry_after_s: u32,
    },
    /// The use ledger cannot take another entry (issue 14): the store is full of live
    /// actions, or this principal holds its share. An outage of riskgate's — 503 +
    /// `retry-after` — not a verdict on the user.
    LedgerFull {
        /// Which capacity ran out.
        scope: LedgerScope,
        /// Seconds for `retry-after`.
        retry_after_s: u32,
    },
    /// The Check exceeds one of riskgate's own limits (`limits.*`): it is not parsed further.
    RequestTooLarge(Limit),
    /// The action-token header came more than once (e.g. `X-Action-Token` and
    /// `x-action-token` from a direct gRPC caller): which one would count is ambiguous.
    DuplicateActionToken,
}

/// Which capacity of the use ledger ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerScope {
    /// The whole store (`state.max_entries`).
    Store,
    /// One authenticated principal's share (`state.max_uses_per_principal`).
    Principal,
}

impl LedgerScope {
    /// Label value (`riskgate_use_ledger_full_total{scope}`).
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerScope::Store => "store",
            LedgerScope::Principal => "principal",
        }
    }
}

/// Which of riskgate's own limits a Check exceeded (`limits` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_headers`.
    HeaderCount,
    /// `limits.max_header_bytes`.
    HeaderBytes,
    /// `limits.max_path_bytes`.
    PathBytes,
    /// `limits.max_body_bytes`.
    BodyBytes,
}

/// Outcome class for metrics (`riskgate_decisions_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    /// 200.
    Allow,
    /// 403.
    Deny,
    /// 401.
    Challenge,
    /// 503.
    Error,
}

impl OutcomeClass {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Allow => "allow",
            OutcomeClass::Deny => "deny",
            OutcomeClass::Challenge => "challenge",
            OutcomeClass::Error => "error",
        }
    }
}

impl DenyReason {
    /// The HTTP status the client gets.
    pub fn http_status(&self) -> u16 {
        match self {
            DenyReason::ActionTokenRequired | DenyReason::StepUpRequired { .. } => 401,
            DenyReason::RiskUnavailable { .. }
            | DenyReason::StateUnavailable { .. }
            | DenyReason::RiskApiBusy { .. }
            | DenyReason::RiskApiThrottled { .. }
            | DenyReason::LedgerFull { .. } => 503,
            DenyReason::RiskBudgetExceeded { .. } => 429,
            _ => 403,
        }
    }

    /// Bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DenyReason::Malformed(_) => "malformed_request",
            DenyReason::NonCanonicalPath(_) => "non_canonical_path",
            DenyReason::MethodOverride => "method_override",
            DenyReason::NoRoute => "no_route",
            DenyReason::NearMissPath => "near_miss_path",
            DenyReason::BadIdentity => "bad_identity",
            DenyReason::ActionTokenRequired => "action_token_required",
            DenyReason::TokenRejected => "token_rejected",
            DenyReason::Binding(v) => match v {
                BindingViolation::ActionType => "binding_action_type",
                BindingViolation::UserMismatch => "binding_user_mismatch",
                BindingViolation::MissingUser => "binding_missing_user",
                BindingViolation::Stale => "binding_stale",
                BindingViolation::FromTheFuture => "binding_future",
                BindingViolation::UsedUp => "binding_used_up",
                BindingViolation::TransactionMissing => "binding_transaction_missing",
                BindingViolation::TransactionMismatch => "binding_transaction_mismatch",
            },
            DenyReason::RiskDeny => "risk_deny",
            DenyReason::RiskHigh => "risk_high",
            DenyReason::RiskSticky => "risk_sticky",
            DenyReason::PolicyDeny => "policy_deny",
            DenyReason::PolicyError => "policy_error",
            DenyReason::StepUpRequired { .. } => "step_up_required",
            DenyReason::RiskUnavailable { .. } => "risk_unavailable",
            DenyReason::StateUnavailable { .. } => "state_unavailable",
            DenyReason::RiskBudgetExceeded { .. } => "risk_budget_exceeded",
            DenyReason::RiskApiBusy { .. } => "risk_api_busy",
            DenyReason::RiskApiThrottled { .. } => "risk_api_throttled",
            DenyReason::LedgerFull { scope, .. } => match scope {
                LedgerScope::Store => "use_ledger_full",
                LedgerScope::Principal => "principal_uses_full",
            },
            DenyReason::RequestTooLarge(limit) => match limit {
                Limit::HeaderCount => "too_many_headers",
                Limit::HeaderBytes => "headers_too_large",
                Limit::PathBytes => "path_too_long",
                Limit::BodyBytes => "body_too_large",
            },
            DenyReason::DuplicateActionToken => "duplicate_action_token",
        }
    }

    /// `retry-after` seconds, for the reasons that carry one.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            DenyReason::RiskUnavailable { retry_after_s }
            | DenyReason::StateUnavailable { retry_after_s }
            | DenyReason::RiskBudgetExceeded { retry_after_s }
            | DenyReason::RiskApiBusy { retry_after_s }
            | DenyReason::RiskApiThrottled { retry_after_s }
            | DenyReason::LedgerFull { retry_after_s, .. } => Some(*retry_after_s),
            _ => None,
        }
    }

    /// Outcome class (a 429 is a deny: a verdict on the caller, not riskgate's outage).
    pub fn class(&self) -> OutcomeClass {
        match self.http_status() {
            401 => OutcomeClass::Challenge,
            503 => OutcomeClass::Error,
            _ => OutcomeClass::Deny,
        }
    }
}

impl Verdict {
    /// HTTP status of the answer this verdict gives when enforced.
    pub fn http_status(&self) -> u16 {
        match self {
            Verdict::Allow => 200,
            Verdict::Deny(r) => r.http_status(),
        }
    }

    /// Outcome class.
    pub fn class(&self) -> OutcomeClass {
        match self {
            Verdict::Allow => OutcomeClass::Allow,
            Verdict::Deny(r) => r.class(),
        }
    }

    /// Label: `allow` or the deny reason.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny(r) => r.label(),
        }
    }
}

/// What riskgate learned about risk for this request.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskFacts {
    /// Score 0–100 as the API gave it.
    pub score: f64,
    /// `TRUST`/`ALLOW`/`CHALLENGE`/`DENY`.
    pub recommendation: &'static str,
    /// Reason codes (shared with the cached recommendation: copying them costs no allocation).
    pub reasons: std::sync::Arc<[std::sync::Arc<str>]>,
    /// `context.action_id`.
    pub action_id: std::sync::Arc<str>,
    /// `context.action_type`.
    pub action_type: std::sync::Arc<str>,
    /// Served from the cache.
    pub cache_hit: bool,
}

/// Time spent per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Waiting for the risk API (or the cache).
    pub risk: Duration,
    /// Cedar evaluation.
    pub cedar: Duration,
    /// The whole decision.
    pub total: Duration,
}

/// One decision with everything the answer, the audit line and the metrics need.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Decision id: in the deny body, the audit line and dynamic metadata.
    pub id: String,
    /// What enforcement decides.
    pub verdict: Verdict,
    /// False in dry-run: the client gets 200 whatever the verdict.
    pub enforced: bool,
    /// Matched route label.
    pub route: Option<String>,
    /// Principal label (`User::"u1"`, `Anonymous`).
    pub principal: Option<String>,
    /// Cedar action id.
    pub action: Option<String>,
    /// Resource label (`Account::"a1"`).
    pub resource: Option<String>,
    /// Band used for the decision.
    pub band: Band,
    /// Risk facts when a recommendation was obtained.
    pub risk: Option<RiskFacts>,
    /// Fail mode applied because of a risk API outage, with the outage cause.
    pub fail_mode: Option<(&'static str, &'static str)>,
    /// Policies that determined Cedar's answer.
    pub policies: Vec<String>,
    /// Latency split.
    pub timings: Timings,
    /// Request headers to remove before forwarding (on allow).
    pub strip_headers: Vec<String>,
    /// The request id, for correlation.
    pub request_id: Option<String>,
    /// The trace this Check belongs to (continued from Envoy's headers), for correlation.
    pub trace_id: Option<String>,
    /// What the shadow policy set said at the Cedar stage (when one is configured and the
    /// Check reached Cedar). Never affects the answer.
    pub shadow: Option<ShadowOutcome>,
    /// The risk API was not asked: Cedar denies this request whatever risk it would report
    /// (see `decide::risk::skip`).
    pub risk_skipped: bool,
    /// What Cedar was asked and answered, when the Check reached the Cedar stage (the
    /// audit line's `input`, read by `riskgate replay`).
    pub input: Option<Box<crate::audit::input::CedarInput>>,
}

/// The shadow policy set's answer beside the live set's, at the Cedar stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowOutcome {
    /// The live set allowed.
    pub live_allowed: bool,
    /// The shadow set allowed (`false` when it could not evaluate).
    pub shadow_allowed: bool,
    /// `@id`s of the shadow policies that determined its answer.
    pub policies: Vec<String>,
}

impl ShadowOutcome {
    /// The two sets answer differently (allow vs deny).
    pub fn disagrees(&self) -> bool {
        self.live_allowed != self.shadow_allowed
    }
}

impl Decision {
    /// A fresh decision shell with a random id; the verdict starts as deny (no route).
    pub fn new(request_id: Option<String>) -> Decision {
        Decision {
            id: new_decision_id(),
            verdict: Verdict::Deny(DenyReason::NoRoute),
            enforced: true,
            route: None,
            principal: None,
            action: None,
            resource: None,
            band: Band::Unassessed,
            risk: None,
            fail_mode: None,
            policies: Vec::new(),
            timings: Timings::default(),
            strip_headers: Vec::new(),
            request_id,
            trace_id: None,
            shadow: None,
            risk_skipped: false,
            input: None,
        }
    }

    /// The verdict the client actually gets (allow in dry-run).
    pub fn answered(&self) -> Verdict {
        if self.enforced {
            self.verdict.clone()
        } else {
            Verdict::Allow
        }
    }
}

/// 128 random bits, hex.
fn new_decision_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_design_table() {
        assert_eq!(DenyReason::ActionTokenRequired.http_status(), 401);
        assert_eq!(
            DenyReason::StepUpRequired {
                challenge: "x".into()
            }
            .http_status(),
            401
        );
        assert_eq!(
            DenyReason::RiskUnavailable { retry_after_s: 5 }.http_status(),
            503
        );
        assert_eq!(
            DenyReason::RiskBudgetExceeded { retry_after_s: 5 }.http_status(),
            429
        );
        for r in [
            DenyReason::RiskApiBusy { retry_after_s: 5 },
            DenyReason::RiskApiThrottled { retry_after_s: 5 },
        ] {
            assert_eq!(r.http_status(), 503, "{r:?}");
            assert_eq!(r.retry_after_s(), Some(5), "{r:?}");
        }
        for r in [
            DenyReason::Malformed("x"),
            DenyReason::MethodOverride,
            DenyReason::NoRoute,
            DenyReason::NearMissPath,
            DenyReason::TokenRejected,
            DenyReason::Binding(BindingViolation::UsedUp),
            DenyReason::RiskDeny,
            DenyReason::RiskHigh,
            DenyReason::RiskSticky,
            DenyReason::PolicyDeny,
            DenyReason::RequestTooLarge(Limit::HeaderCount),
            DenyReason::RequestTooLarge(Limit::PathBytes),
            DenyReason::DuplicateActionToken,
        ] {
            assert_eq!(r.http_status(), 403, "{r:?}");
        }
    }

    #[test]
    fn dry_run_answers_allow_but_keeps_the_verdict() {
        let mut d = Decision::new(None);
        d.enforced = false;
        assert_eq!(d.answered(), Verdict::Allow);
        assert_eq!(d.verdict.label(), "no_route");
    }

    #[test]
    fn decision_ids_are_unique_hex() {
        let a = Decision::new(None).id;
        let b = Decision::new(None).id;
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
