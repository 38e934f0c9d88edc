//! Stage between facts and risk: the principal's recent history (`context.history`, issue
//! #16 item 5), read before the risk-skip probe and Cedar so both see it.
//!
//! * [`open`] — only for an authenticated principal, and only when some loaded policy reads
//!   `context.history` (no store call otherwise): reads the window and, when the request
//!   carries a transaction amount, **reserves** it in the same atomic store operation, so
//!   the total a policy compares with a cap already holds every parallel request's
//!   reservation (two withdrawals cannot together pass a cap each passes alone).
//! * [`close`] — once the verdict is known: a deny releases the reservation; a deny counts
//!   in `recent_denies`, a step-up answer in `recent_challenges` (one store operation).
//!   riskgate's own outages (risk API or store unavailable, budgets, a full ledger) are
//!   not held against the principal: they release, but count nothing.
//!
//! Dry run (`mode: dry_run` or a dry-run route): the request goes through whatever the
//! verdict, so its amount stays reserved (the money moved); the would-be deny or step-up
//! is counted as enforcement would count it, so history-based rules behave in the dry run
//! as they will when enforced.
//!
//! A Check whose caller goes away before the verdict (the client hung up, Envoy cancelled
//! the Check and the decision's future was dropped) was never forwarded: [`Unsettled`]
//! releases its reservation from `Drop` (a spawned store call), counting nothing, so a
//! cancelled withdrawal does not keep its amount in the window.
//!
//! A store failure while opening denies with 503 `state_unavailable` (with `state.on_failure:
//! local` the guarded store answers from this replica's memory instead), like the sticky-risk
//! read; a failure while closing is logged (rate-limited) and leaves the answer unchanged.

use crate::clock::now_ms;
use crate::decision::{DenyReason, Verdict};
use crate::identity::Principal;
use crate::log_limit::LogLimit;
use crate::policy::{History, RequestFacts};
use crate::state::{HistoryUpdate, HistoryWindow, StateStore, StoreError};
use std::sync::Arc;

/// What [`open`] needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct HistorySettings {
    /// The window and its slicing (`history.window`, `history.buckets`).
    pub window: HistoryWindow,
    /// Seconds for `retry-after` when the store cannot be read.
    pub retry_after_s: u32,
}

/// A history opened for one Check: settled by [`close`] once the verdict is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    principal: String,
    at_ms: i64,
    /// The reservation made, if any: currency and minor units.
    reserved: Option<(String, i64)>,
}

/// Puts the principal's history (and this request's reservation) into `facts.history`,
/// when some policy reads it (`wanted`) and the principal is authenticated; else leaves it
/// absent and calls no store.
pub async fn open(
    settings: &HistorySettings,
    store: &dyn StateStore,
    wanted: bool,
    principal: &Principal,
    facts: &mut RequestFacts,
) -> Result<Option<Ticket>, DenyReason> {
    let Principal::User { id, .. } = principal else {
        return Ok(None);
    };
    if !wanted {
        return Ok(None);
    }
    let at_ms = now_ms();
    let reserved = facts
        .transaction
        .as_ref()
        .filter(|t| t.amount_minor > 0)
        .map(|t| (t.currency.clone(), t.amount_minor));
    let currency = facts.transaction.as_ref().map(|t| t.currency.as_str());
    let update = HistoryUpdate {
        at_ms,
        currency,
        amount: reserved.as_ref().map_or(0, |(_, amount)| *amount),
        denies: 0,
        challenges: 0,
    };
    let totals = match store.history(id, settings.window, update).await {
        Ok(totals) => totals,
        Err(e) => {
            static DOWN: LogLimit = LogLimit::per(1_000);
            if let Some(suppressed) = DOWN.admit() {
                tracing::warn!(error = %e, store = store.kind(), suppressed, "state store cannot read a principal's history: denied");
            }
            return Err(DenyReason::StateUnavailable {
                retry_after_s: settings.retry_after_s,
            });
        }
    };
    facts.history = Some(History {
        recent_denies: totals.denies,
        recent_challenges: totals.challenges,
        recent_amount_total: totals.amount,
    });
    Ok(Some(Ticket {
        principal: id.clone(),
        at_ms,
        reserved,
    }))
}

/// What a verdict adds to the history: (denies, challenges, release the reservation).
pub fn outcome_of(verdict: &Verdict, enforced: bool) -> (i64, i64, bool) {
    let Verdict::Deny(reason) = verdict else {
        return (0, 0, false);
    };
    let release = enforced;
    match reason {
        DenyReason::StepUpRequired { .. } => (0, 1, release),
        DenyReason::RiskUnavailable { .. }
        | DenyReason::StateUnavailable { .. }
        | DenyReason::RiskBudgetExceeded { .. }
        | DenyReason::RiskApiBusy { .. }
        | DenyReason::RiskApiThrottled { .. }
        | DenyReason::LedgerFull { .. } => (0, 0, release),
        _ => (1, 0, release),
    }
}

/// Settles `ticket` with the verdict: releases the reservation of a (enforced) deny and
/// counts the deny or step-up, in one store operation; nothing for an allow.
pub async fn close(
    settings: &HistorySettings,
    store: &dyn StateStore,
    ticket: &Ticket,
    verdict: &Verdict,
    enforced: bool,
) {
    let (denies, challenges, release) = outcome_of(verdict, enforced);
    settle(settings, store, ticket, denies, challenges, release).await;
}

/// One store operation: `denies` and `challenges` counted, and the reservation released
/// when `release`; nothing when there is nothing to write.
async fn settle(
    settings: &HistorySettings,
    store: &dyn StateStore,
    ticket: &Ticket,
    denies: i64,
    challenges: i64,
    release: bool,
) {
    let released = ticket.reserved.as_ref().filter(|_| release);
    if denies == 0 && challenges == 0 && released.is_none() {
        return;
    }
    let update = HistoryUpdate {
        at_ms: ticket.at_ms,
        currency: released.map(|(c, _)| c.as_str()),
        amount: released.map_or(0, |(_, amount)| amount.saturating_neg()),
        denies,
        challenges,
    };
    if let Err(e) = store
        .history(&ticket.principal, settings.window, update)
        .await
    {
        log_close_failure(store, &e);
    }
}

/// Holds the [`Ticket`] of a Check being decided; dropped still holding it — the decision's
/// future was dropped before [`close`] — it releases the reservation in a spawned task.
pub struct Unsettled<'a> {
    settings: HistorySettings,
    store: &'a Arc<dyn StateStore>,
    ticket: Option<Ticket>,
}

impl<'a> Unsettled<'a> {
    /// Nothing opened yet.
    pub fn new(settings: HistorySettings, store: &'a Arc<dyn StateStore>) -> Unsettled<'a> {
        Unsettled {
            settings,
            store,
            ticket: None,
        }
    }

    /// Where [`open`]'s ticket goes.
    pub fn slot(&mut self) -> &mut Option<Ticket> {
        &mut self.ticket
    }

    /// The ticket, to settle with the verdict: from now on dropping releases nothing.
    pub fn take(&mut self) -> Option<Ticket> {
        self.ticket.take()
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take().filter(|t| t.reserved.is_some()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (settings, store) = (self.settings, self.store.clone());
        runtime.spawn(async move { settle(&settings, &*store, &ticket, 0, 0, true).await });
    }
}

fn log_close_failure(store: &dyn StateStore, e: &StoreError) {
    static WRITE: LogLimit = LogLimit::per(1_000);
    if let Some(suppressed) = WRITE.admit() {
        tracing::warn!(error = %e, store = store.kind(), suppressed, "cannot record a principal's history");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::LedgerScope;

    #[test]
    fn outages_release_but_count_nothing_and_dry_runs_keep_the_amount() {
        let deny = |r| Verdict::Deny(r);
        assert_eq!(outcome_of(&Verdict::Allow, true), (0, 0, false));
        assert_eq!(
            outcome_of(&deny(DenyReason::PolicyDeny), true),
            (1, 0, true)
        );
        assert_eq!(
            outcome_of(&deny(DenyReason::PolicyDeny), false),
            (1, 0, false)
        );
        let step_up = deny(DenyReason::StepUpRequired {
            challenge: "mfa".into(),
        });
        assert_eq!(outcome_of(&step_up, true), (0, 1, true));
        let full = deny(DenyReason::LedgerFull {
            scope: LedgerScope::Store,
            retry_after_s: 1,
        });
        assert_eq!(outcome_of(&full, true), (0, 0, true));
        assert_eq!(
            outcome_of(
                &deny(DenyReason::StateUnavailable { retry_after_s: 1 }),
                true
            ),
            (0, 0, true)
        );
    }
}
