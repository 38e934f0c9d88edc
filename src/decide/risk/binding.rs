//! Binding a recommendation to the request it is used for. One action token stands for
//! one reported action: a `login` token must not authorize `withdraw`, u1's token must
//! not authorize u2, and an old action must not authorize a new request.

use crate::risk::Recommendation;

/// A recommendation that does not fit the request. Always a 403; never a fail mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingViolation {
    /// `context.action_type` is not accepted by the route.
    #[error("action type does not fit the route")]
    ActionType,
    /// `context.user_id` differs from the authenticated principal.
    #[error("action was reported for another user")]
    UserMismatch,
    /// Authenticated route, but the action carries no `user_id`.
    #[error("action carries no user id")]
    MissingUser,
    /// `action_performed_at` older than `max_age`.
    #[error("action is too old")]
    Stale,
    /// `action_performed_at` later than now plus the allowed clock skew.
    #[error("action is dated in the future")]
    FromTheFuture,
    /// The token has authorized `max_uses` requests already.
    #[error("action token already used")]
    UsedUp,
    /// A route with `transaction_binding: required`, and the recommendation carries no
    /// usable `transaction_data` (see [`super::transaction`]).
    #[error("action carries no transaction data")]
    TransactionMissing,
    /// The recommendation's `transaction_data` describes another amount, currency or payee
    /// than the request body.
    #[error("action was reported for another transaction")]
    TransactionMismatch,
}

impl BindingViolation {
    /// Bounded label for metrics and audit.
    pub fn label(self) -> &'static str {
        match self {
            BindingViolation::ActionType => "action_type",
            BindingViolation::UserMismatch => "user_mismatch",
            BindingViolation::MissingUser => "missing_user",
            BindingViolation::Stale => "stale",
            BindingViolation::FromTheFuture => "future",
            BindingViolation::UsedUp => "used_up",
            BindingViolation::TransactionMissing => "transaction_missing",
            BindingViolation::TransactionMismatch => "transaction_mismatch",
        }
    }
}

/// How old an action may be, and how far clocks may disagree, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeLimits {
    /// Oldest accepted action.
    pub max_age_ms: u64,
    /// Tolerated clock difference with the risk API (an action dated later than now plus
    /// this is refused).
    pub clock_skew_ms: u64,
}

/// Checks action type, user and age. `principal` is the authenticated user id, if any.
pub fn check(
    rec: &Recommendation,
    accepted_action_types: &[String],
    principal: Option<&str>,
    limits: AgeLimits,
    now_ms: i64,
) -> Result<(), BindingViolation> {
    if !accepted_action_types
        .iter()
        .any(|t| **t == *rec.action_type)
    {
        return Err(BindingViolation::ActionType);
    }
    if let Some(user) = principal {
        match rec.user_id.as_deref() {
            None => return Err(BindingViolation::MissingUser),
            Some(u) if u != user => return Err(BindingViolation::UserMismatch),
            Some(_) => {}
        }
    }
    let age_ms = now_ms.saturating_sub(rec.action_performed_at_ms);
    if age_ms > i64::try_from(limits.max_age_ms).unwrap_or(i64::MAX) {
        return Err(BindingViolation::Stale);
    }
    if -age_ms > i64::try_from(limits.clock_skew_ms).unwrap_or(i64::MAX) {
        return Err(BindingViolation::FromTheFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::recommendation::RecommendationType;
    use std::sync::Arc;

    fn rec(action_type: &str, user: Option<&str>, performed_at: i64) -> Recommendation {
        Recommendation {
            id: "r".into(),
            issued_at_ms: performed_at,
            kind: RecommendationType::Allow,
            challenge_type: None,
            risk_score: 10.0,
            action_id: "a".into(),
            action_type: action_type.into(),
            action_performed_at_ms: performed_at,
            user_id: user.map(String::from),
            reasons: Arc::from([]),
            threats: Box::default(),
            transaction: None,
        }
    }

    const NOW: i64 = 1_700_000_000_000;
    const LIMITS: AgeLimits = AgeLimits {
        max_age_ms: 300_000,
        clock_skew_ms: 60_000,
    };
    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fitting_recommendation_binds() {
        let r = rec("withdraw", Some("u1"), NOW - 1_000);
        assert_eq!(
            check(&r, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Ok(())
        );
    }

    #[test]
    fn login_token_cannot_authorize_withdraw() {
        let r = rec("login", Some("u1"), NOW);
        assert_eq!(
            check(&r, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Err(BindingViolation::ActionType)
        );
    }

    #[test]
    fn another_users_token_is_refused() {
        let r = rec("withdraw", Some("u2"), NOW);
        assert_eq!(
            check(&r, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Err(BindingViolation::UserMismatch)
        );
    }

    #[test]
    fn authenticated_route_needs_a_user_id() {
        let r = rec("withdraw", None, NOW);
        assert_eq!(
            check(&r, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Err(BindingViolation::MissingUser)
        );
        // Anonymous callers (e.g. login) need none.
        assert_eq!(check(&r, &types(&["withdraw"]), None, LIMITS, NOW), Ok(()));
    }

    #[test]
    fn stale_action_is_refused() {
        let r = rec("withdraw", Some("u1"), NOW - 300_001);
        assert_eq!(
            check(&r, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Err(BindingViolation::Stale)
        );
    }

    #[test]
    fn future_action_is_refused_beyond_the_skew() {
        let within = rec("withdraw", Some("u1"), NOW + 60_000);
        assert_eq!(
            check(&within, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Ok(())
        );
        let beyond = rec("withdraw", Some("u1"), NOW + 60_001);
        assert_eq!(
            check(&beyond, &types(&["withdraw"]), Some("u1"), LIMITS, NOW),
            Err(BindingViolation::FromTheFuture)
        );
    }
}
