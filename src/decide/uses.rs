//! Stage 6, uses: an allowed request spends one use of its action (`max_uses`; writes
//! default to single use). Only allowed requests consume, so a denied attempt never uses
//! up a token.
//!
//! Uses are counted per API `context.action_id` — the action itself, not the token's
//! spelling — in the [state store](crate::state) (per replica, or shared by all replicas
//! on Redis), atomically, and never forgotten before the action is too old to be accepted
//! anyway: a store that forgot a count under pressure would let a single-use token be
//! replayed. A full store refuses, so pressure fails closed.

use super::risk::{BindingViolation, RiskOutcome};
use crate::decision::DenyReason;
use crate::log_limit::LogLimit;
use crate::policy::PolicySnapshot;
use crate::routes::Route;
use crate::state::{Key, StateStore, UseOutcome};
/// Spends one use of the assessed action when the route limits uses: the route's
/// `max_uses`, else one for a write (an action the policies do not mark as a read). The
/// count lives in the state store (per replica or shared); a store that cannot count denies
/// with a 503 — reads, which count nothing, go on.
pub async fn consume(
    store: &dyn StateStore,
    policies: &PolicySnapshot,
    route: &Route,
    risk: &RiskOutcome,
    limits: UseLimits,
) -> Result<(), DenyReason> {
    let Some(assessment) = &risk.assessment else {
        return Ok(());
    };
    let max_uses = route
        .max_uses
        .or_else(|| (!policies.is_read(&route.action)).then_some(1));
    let Some(max) = max_uses else {
        return Ok(());
    };
    let rec = &assessment.recommendation;
    let key = Key::action_use(&rec.action_id);
    let keep_until = keep_until_ms(rec.action_performed_at_ms, limits.max_age_ms);
    match store.consume_use(&key, max, keep_until).await {
        Ok(UseOutcome::Allowed) => Ok(()),
        Ok(UseOutcome::UsedUp) => Err(DenyReason::Binding(BindingViolation::UsedUp)),
        Ok(UseOutcome::Full) => {
            static FULL: LogLimit = LogLimit::per(1_000);
            if let Some(suppressed) = FULL.admit() {
                tracing::warn!(suppressed, "use ledger full of live actions: write denied");
            }
            Err(DenyReason::Binding(BindingViolation::LedgerFull))
        }
        Err(e) => {
            static DOWN: LogLimit = LogLimit::per(1_000);
            if let Some(suppressed) = DOWN.admit() {
                tracing::warn!(error = %e, store = store.kind(), suppressed, "state store cannot count a use: denied");
            }
            Err(DenyReason::StateUnavailable {
                retry_after_s: limits.retry_after_s,
            })
        }
    }
}

/// Timing the uses stage needs from the settings.
#[derive(Debug, Clone, Copy)]
pub struct UseLimits {
    /// Oldest accepted action: a count is kept until then.
    pub max_age_ms: u64,
    /// `retry-after` when the store cannot count.
    pub retry_after_s: u32,
}

/// How long a count must live: one second past the last instant binding still accepts
/// the action (`action_performed_at + max_age`); after that binding refuses it anyway.
fn keep_until_ms(performed_at_ms: i64, max_age_ms: u64) -> i64 {
    performed_at_ms
        .saturating_add(i64::try_from(max_age_ms).unwrap_or(i64::MAX))
        .saturating_add(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 item 4: a count lives until its action is too old to be accepted, not a
    /// fixed time after first use (the store's own tests show it then makes room).
    #[test]
    fn a_count_lives_until_its_action_expires() {
        assert_eq!(keep_until_ms(1_000_000, 300_000), 1_301_000);
        assert_eq!(keep_until_ms(i64::MAX - 5, 300_000), i64::MAX);
    }
}
