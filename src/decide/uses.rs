//! Stage 6, uses: an allowed request spends one use of its action (`max_uses`; writes
//! default to single use). Only allowed requests consume, so a denied attempt never uses
//! up a token.
//!
//! Uses are counted per API `context.action_id` — the action itself, not the token's
//! spelling — in the [state store](crate::state) (per replica, or shared by all replicas
//! on Redis), atomically, and never forgotten before the action is too old to be accepted
//! anyway: a store that forgot a count under pressure would let a single-use token be
//! replayed. A full store refuses, so pressure fails closed — with a 503 and
//! `retry-after`: a full ledger is riskgate's outage, not a verdict on the user.
//!
//! One authenticated principal may count at most `state.max_uses_per_principal` uses per
//! window of the action age (a fixed-window counter in the store, next to the principal's
//! other records), so one user cannot fill the ledger for everyone: a principal holds at
//! most twice its cap of live entries (the counts of the last two windows). The counter
//! moves before the use is spent — every write that reaches this stage counts, a replay of a
//! used-up token included — so a principal over its share never burns a token on a 503.

use super::risk::{BindingViolation, RiskOutcome};
use crate::decision::{DenyReason, LedgerScope};
use crate::identity::Principal;
use crate::log_limit::LogLimit;
use crate::policy::PolicySnapshot;
use crate::routes::Route;
use crate::state::{Key, StateStore, StoreError, UseOutcome};

/// Spends one use of the assessed action when the route limits uses: the route's
/// `max_uses`, else one for a write (an action the policies do not mark as a read). The
/// count lives in the state store (per replica or shared); a store that cannot count denies
/// with a 503 — reads, which count nothing, go on. An authenticated principal over its
/// share of the ledger gets a 503 too, before anything is counted for the action.
pub async fn consume(
    store: &dyn StateStore,
    policies: &PolicySnapshot,
    route: &Route,
    risk: &RiskOutcome,
    principal: &Principal,
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
    if principal.user_id().is_some() {
        let counter = Key::principal(&principal.label(), "uses");
        // the window lasts as long as the counts it caps
        let window_ms = limits.max_age_ms.saturating_add(1_000);
        match store.incr_window(&counter, window_ms).await {
            Ok(n) if n > u64::from(limits.max_uses_per_principal) => {
                return Err(full(LedgerScope::Principal, limits));
            }
            Ok(_) => {}
            Err(StoreError::Full) => return Err(full(LedgerScope::Store, limits)),
            Err(e) => return Err(unavailable(store, &e, limits)),
        }
    }
    match store.consume_use(&key, max, keep_until).await {
        Ok(UseOutcome::Allowed) => Ok(()),
        Ok(UseOutcome::UsedUp) => Err(DenyReason::Binding(BindingViolation::UsedUp)),
        Ok(UseOutcome::Full) => Err(full(LedgerScope::Store, limits)),
        Err(e) => Err(unavailable(store, &e, limits)),
    }
}

/// The ledger cannot take this use: a 503, logged at most once a second per scope.
fn full(scope: LedgerScope, limits: UseLimits) -> DenyReason {
    static STORE: LogLimit = LogLimit::per(1_000);
    static PRINCIPAL: LogLimit = LogLimit::per(1_000);
    match scope {
        LedgerScope::Store => {
            if let Some(suppressed) = STORE.admit() {
                tracing::warn!(
                    suppressed,
                    "use ledger full of live actions (state.max_entries): write refused with 503"
                );
            }
        }
        LedgerScope::Principal => {
            if let Some(suppressed) = PRINCIPAL.admit() {
                tracing::warn!(
                    suppressed,
                    "a principal is over state.max_uses_per_principal: its write refused with 503"
                );
            }
        }
    }
    DenyReason::LedgerFull {
        scope,
        retry_after_s: limits.retry_after_s,
    }
}

/// The store cannot count: a 503, logged at most once a second.
fn unavailable(store: &dyn StateStore, e: &StoreError, limits: UseLimits) -> DenyReason {
    static DOWN: LogLimit = LogLimit::per(1_000);
    if let Some(suppressed) = DOWN.admit() {
        tracing::warn!(error = %e, store = store.kind(), suppressed, "state store cannot count a use: denied");
    }
    DenyReason::StateUnavailable {
        retry_after_s: limits.retry_after_s,
    }
}

/// Timing the uses stage needs from the settings.
#[derive(Debug, Clone, Copy)]
pub struct UseLimits {
    /// Oldest accepted action: a count is kept until then.
    pub max_age_ms: u64,
    /// `retry-after` when the store cannot count or is full.
    pub retry_after_s: u32,
    /// Most uses one authenticated principal counts per window (`state.max_uses_per_principal`).
    pub max_uses_per_principal: u32,
}

/// A count outlives the last instant binding accepts its action by this much.
const KEEP_PAST_MAX_AGE_MS: i64 = 1_000;

/// How long a count must live: one second past the last instant binding still accepts
/// the action (`action_performed_at + max_age`); after that binding refuses it anyway.
fn keep_until_ms(performed_at_ms: i64, max_age_ms: u64) -> i64 {
    performed_at_ms
        .saturating_add(i64::try_from(max_age_ms).unwrap_or(i64::MAX))
        .saturating_add(KEEP_PAST_MAX_AGE_MS)
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
