//! Sticky risk: a user whose bound recommendation said DENY or high, or CHALLENGE, must
//! not escape it by dropping the action token on a `risk: optional` route (which would be
//! `unassessed`, allowed by a read policy).
//!
//! * [`record`] runs after binding passed, so only a recommendation bound to this verified
//!   user changes its record (a forged or unbound token cannot poison someone else's):
//!   DENY or band high → tokenless requests are band high until `risk.sticky_window` has
//!   passed; an unanswered CHALLENGE → they get the step-up 401.
//! * [`tokenless`] runs for a request without a token on an optional route: it reads the
//!   record and answers [`DenyReason::RiskSticky`] (403) or the step-up 401, or lets the
//!   request go on `unassessed`. The challenge is answered — and cleared — by a request
//!   whose verified claims show the step-up with an `auth_time` at or after the challenge
//!   (less `risk.clock_skew`); it lapses after the window like the rest.
//!
//! Anonymous callers have no record. The record is one [`PrincipalRecord`] per principal
//! in the state store, read then written (not atomic: two replicas recording at once may
//! keep one of the two updates; the transactional issue replaces this with a script).
//!
//! Store failures: a record that cannot be *read* for a tokenless request denies with a
//! 503 (`state_unavailable`) — with `state.on_failure: local` the guarded store answers
//! from this replica's memory instead, so this is the `closed` outcome. A record that
//! cannot be *written* is logged (rate-limited) and counted by the state store metrics
//! (`riskgate_state_operations_total{op="put"}`); the request's own answer is unchanged.

use super::Band;
use crate::clock::now_ms;
use crate::decide::DecideSettings;
use crate::decision::{Decision, DenyReason};
use crate::identity::{self, Principal};
use crate::log_limit::LogLimit;
use crate::risk::{Recommendation, RecommendationType};
use crate::state::principal_record::{PrincipalRecord, MAX_CHALLENGE_LEN};
use crate::state::{Key, StateStore};
use serde_json::Value;

/// A request without an action token on an optional route, by `principal`: the answer its
/// record calls for, or `Ok` to go on `unassessed`.
pub async fn tokenless(
    settings: &DecideSettings,
    store: &dyn StateStore,
    principal: &Principal,
    d: &mut Decision,
) -> Result<(), DenyReason> {
    let window = settings.sticky_window_ms;
    let Principal::User { id, .. } = principal else {
        return Ok(());
    };
    if window == 0 {
        return Ok(());
    }
    let key = PrincipalRecord::key(id);
    let record = match read(store, &key).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(()),
        Err(e) => {
            static DOWN: LogLimit = LogLimit::per(1_000);
            if let Some(suppressed) = DOWN.admit() {
                tracing::warn!(error = %e, store = store.kind(), suppressed, "state store cannot read a principal's sticky risk: denied");
            }
            return Err(DenyReason::StateUnavailable {
                retry_after_s: settings.retry_after_s,
            });
        }
    };
    let now = now_ms();
    if record.high_at(now) {
        d.band = Band::High;
        return Err(DenyReason::RiskSticky);
    }
    let Some(challenged_at) = record.open_challenge(now, window) else {
        return Ok(());
    };
    if answers_challenge(settings, principal, challenged_at) {
        let mut cleared = record;
        cleared.challenge_at_ms = None;
        cleared.challenge = None;
        write(store, &key, &cleared, window, now).await;
        return Ok(());
    }
    Err(DenyReason::StepUpRequired {
        challenge: record
            .challenge
            .unwrap_or_else(|| settings.default_challenge.clone()),
    })
}

/// After binding passed: remembers a DENY or high band, or an unanswered CHALLENGE, for
/// `principal`'s tokenless requests; a CHALLENGE met with a step-up authenticated after an
/// open challenge clears it. Does nothing for anything else (no store call), and writes
/// only a record that changed.
pub async fn record(
    settings: &DecideSettings,
    store: &dyn StateStore,
    principal: &Principal,
    rec: &Recommendation,
    band: Band,
) {
    let window = settings.sticky_window_ms;
    let Principal::User { id, .. } = principal else {
        return;
    };
    let high = rec.kind == RecommendationType::Deny || band == Band::High;
    let challenged = rec.kind == RecommendationType::Challenge;
    let stepped_up =
        challenged && identity::step_up_done(&settings.identity, principal, settings.clock_skew_ms);
    let challenge = challenged && !stepped_up;
    if window == 0 || !(high || challenged) {
        return;
    }
    let key = PrincipalRecord::key(id);
    // an unreadable record is replaced: what this recommendation says still holds
    let mut record = match read(store, &key).await {
        Ok(found) => found.unwrap_or_default(),
        Err(e) => {
            log_write_failure(store, &e);
            PrincipalRecord::default()
        }
    };
    let before = record.clone();
    let now = now_ms();
    let until = now.saturating_add(i64::try_from(window).unwrap_or(i64::MAX));
    if high {
        record.risk_high_until_ms = Some(record.risk_high_until_ms.map_or(until, |u| u.max(until)));
    }
    if challenge && record.open_challenge(now, window).is_none() {
        record.challenge_at_ms = Some(now);
        record.challenge = rec
            .challenge_type
            .clone()
            .filter(|c| c.len() <= MAX_CHALLENGE_LEN);
    }
    if stepped_up
        && record
            .open_challenge(now, window)
            .is_some_and(|at| answers_challenge(settings, principal, at))
    {
        record.challenge_at_ms = None;
        record.challenge = None;
    }
    if record != before {
        write(store, &key, &record, window, now).await;
    }
}

/// Whether `principal`'s verified claims show the step-up, authenticated at or after
/// `challenged_at_ms` (less the tolerated clock skew of the identity provider).
fn answers_challenge(
    settings: &DecideSettings,
    principal: &Principal,
    challenged_at_ms: i64,
) -> bool {
    let Principal::User { claims, .. } = principal else {
        return false;
    };
    let Some(auth_time_s) = claims.get("auth_time").and_then(Value::as_i64) else {
        return false;
    };
    let skew = i64::try_from(settings.clock_skew_ms).unwrap_or(i64::MAX);
    identity::step_up_done(&settings.identity, principal, settings.clock_skew_ms)
        && auth_time_s.saturating_mul(1_000).saturating_add(skew) >= challenged_at_ms
}

/// Reads and decodes the record; a record that does not decode counts as none.
async fn read(
    store: &dyn StateStore,
    key: &Key,
) -> Result<Option<PrincipalRecord>, crate::state::StoreError> {
    let Some(bytes) = store.get(key).await? else {
        return Ok(None);
    };
    match PrincipalRecord::decode(&bytes) {
        Ok(record) => Ok(Some(record)),
        Err(e) => {
            static BAD: LogLimit = LogLimit::per(1_000);
            if let Some(suppressed) = BAD.admit() {
                tracing::warn!(error = %e, suppressed, "unreadable principal record ignored");
            }
            Ok(None)
        }
    }
}

/// Stores `record` for as long as it has something to say (deletes it when nothing is
/// left); a failure is logged, never the request's answer.
async fn write(
    store: &dyn StateStore,
    key: &Key,
    record: &PrincipalRecord,
    window_ms: u64,
    now: i64,
) {
    let mut until = record.live_until_ms(window_ms);
    if !record.rest.is_empty() {
        // fields of a later release: kept for at least one window
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        until = until.max(Some(now.saturating_add(window)));
    }
    let ttl = until
        .map(|u| u.saturating_sub(now))
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or(0);
    if let Err(e) = store.put(key, &record.encode(), ttl).await {
        log_write_failure(store, &e);
    }
}

fn log_write_failure(store: &dyn StateStore, e: &crate::state::StoreError) {
    static WRITE: LogLimit = LogLimit::per(1_000);
    if let Some(suppressed) = WRITE.admit() {
        tracing::warn!(error = %e, store = store.kind(), suppressed, "cannot record a principal's sticky risk");
    }
}
