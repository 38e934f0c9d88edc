//! Stage 6, uses: an allowed request spends one use of its action (`max_uses`; writes
//! default to single use). Only allowed requests consume, so a denied attempt never uses
//! up a token.
//!
//! The [`UseLedger`] counts uses per API `context.action_id` — the action itself, not the
//! token's spelling — and never evicts before the action is too old to be accepted
//! anyway: a cache that forgot a count under pressure would let a single-use token be
//! replayed. When full of live entries it refuses, so pressure fails closed. Per replica.

use super::risk::{BindingViolation, RiskOutcome};
use crate::decision::DenyReason;
use crate::policy::PolicySnapshot;
use crate::routes::Route;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a use was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseRefused {
    /// The action has authorized `max_uses` requests already.
    UsedUp,
    /// The ledger is full of live entries.
    Full,
}

/// Use counts per action.
#[derive(Debug)]
pub struct UseLedger {
    entries: Mutex<Ledger>,
    capacity: usize,
    keep_for: Duration,
}

#[derive(Debug, Default)]
struct Ledger {
    counts: HashMap<String, (u32, Instant)>,
    last_purge: Option<Instant>,
}

impl UseLedger {
    /// A ledger of at most `capacity` actions. `keep_for` is the longest an action can stay
    /// acceptable; a full ledger purges expired entries at most every tenth of it.
    pub fn new(capacity: usize, keep_for: Duration) -> UseLedger {
        UseLedger {
            entries: Mutex::new(Ledger::default()),
            capacity: capacity.max(1),
            keep_for,
        }
    }

    /// Counts one authorized use of `action_id`, refusing beyond `max_uses`.
    ///
    /// The count lives until `keep_until_ms` (epoch ms): the moment the action is too old to
    /// be accepted, after which binding refuses it anyway.
    pub fn consume(
        &self,
        action_id: &str,
        max_uses: u32,
        keep_until_ms: i64,
    ) -> Result<(), UseRefused> {
        let now = Instant::now();
        let left = keep_until_ms.saturating_sub(crate::clock::now_ms());
        let until = now + Duration::from_millis(u64::try_from(left).unwrap_or(0));
        let mut ledger = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, until)) = ledger.counts.get_mut(action_id) {
            if *until > now {
                if *count >= max_uses {
                    return Err(UseRefused::UsedUp);
                }
                *count += 1;
                return Ok(());
            }
        }
        if ledger.counts.len() >= self.capacity {
            // Purge expired entries, at most ten times per lifetime, so a full ledger under
            // attack does not cost a scan per Check.
            let due = ledger
                .last_purge
                .is_none_or(|at| now.duration_since(at) >= self.keep_for / 10);
            if due {
                ledger.counts.retain(|_, (_, until)| *until > now);
                ledger.last_purge = Some(now);
            }
            if ledger.counts.len() >= self.capacity {
                return Err(UseRefused::Full);
            }
        }
        if max_uses == 0 {
            return Err(UseRefused::UsedUp);
        }
        ledger.counts.insert(action_id.to_owned(), (1, until));
        Ok(())
    }
}

/// Spends one use of the assessed action when the route limits uses: the route's
/// `max_uses`, else one for a write (an action the policies do not mark as a read).
pub fn consume(
    ledger: &UseLedger,
    policies: &PolicySnapshot,
    route: &Route,
    risk: &RiskOutcome,
    max_age_ms: u64,
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
    // one second past the last instant binding still accepts the action
    let keep_until_ms = rec
        .action_performed_at_ms
        .saturating_add(i64::try_from(max_age_ms).unwrap_or(i64::MAX))
        .saturating_add(1_000);
    match ledger.consume(&rec.action_id, max, keep_until_ms) {
        Ok(()) => Ok(()),
        Err(UseRefused::UsedUp) => Err(DenyReason::Binding(BindingViolation::UsedUp)),
        Err(UseRefused::Full) => {
            tracing::warn!("replay ledger full of live actions: write denied");
            Err(DenyReason::Binding(BindingViolation::LedgerFull))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch ms `ms` from now.
    fn later(ms: i64) -> i64 {
        crate::clock::now_ms() + ms
    }

    #[test]
    fn counts_per_action_up_to_max_uses() {
        let l = UseLedger::new(10, Duration::from_secs(60));
        assert_eq!(l.consume("a", 2, later(60_000)), Ok(()));
        assert_eq!(l.consume("a", 2, later(60_000)), Ok(()));
        assert_eq!(l.consume("a", 2, later(60_000)), Err(UseRefused::UsedUp));
        assert_eq!(l.consume("b", 1, later(60_000)), Ok(()));
    }

    #[test]
    fn a_full_ledger_refuses_instead_of_forgetting() {
        let l = UseLedger::new(100, Duration::from_secs(60));
        for i in 0..100 {
            assert_eq!(l.consume(&format!("t{i}"), 1, later(60_000)), Ok(()));
        }
        assert_eq!(l.consume("new", 1, later(60_000)), Err(UseRefused::Full));
        // every earlier single-use action is still remembered
        for i in 0..100 {
            assert_eq!(
                l.consume(&format!("t{i}"), 1, later(60_000)),
                Err(UseRefused::UsedUp),
                "t{i}"
            );
        }
    }

    #[test]
    fn expired_entries_make_room() {
        let l = UseLedger::new(2, Duration::from_millis(20));
        assert_eq!(l.consume("a", 1, later(20)), Ok(()));
        assert_eq!(l.consume("b", 1, later(20)), Ok(()));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(l.consume("c", 1, later(20)), Ok(()));
        assert_eq!(
            l.consume("a", 1, later(20)),
            Ok(()),
            "an expired action starts again"
        );
    }

    /// Issue 11 item 4: a count lives until its action is too old to be accepted, not a
    /// fixed time after first use. Failed on the previous code (kept `keep_for` = 60 s,
    /// so the full ledger refused "b").
    #[test]
    fn a_count_lives_until_its_action_expires() {
        let l = UseLedger::new(1, Duration::from_secs(60));
        assert_eq!(l.consume("a", 1, later(20)), Ok(()));
        assert_eq!(l.consume("a", 1, later(20)), Err(UseRefused::UsedUp));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(l.consume("b", 1, later(60_000)), Ok(()));
    }
}
