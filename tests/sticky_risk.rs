//! Sticky risk (issue 13, item 5) at the decision core, shipped config and policies, a
//! scripted risk source: a user whose bound recommendation was DENY, high or an unanswered
//! CHALLENGE cannot drop the action token on a `risk: optional` route to get `unassessed`.
//! Only a bound recommendation of a verified user is recorded; a `state: redis` store
//! shares the record between replicas.
//!
//! Timing: `RISKGATE_TEST_STICKY_WINDOW_MS` (300), the window of the expiry test.

mod common;
mod support;

use common::*;
use riskgate::config::Config;
use riskgate::decide::{DecideSettings, Decider};
use riskgate::decision::{Decision, DenyReason, Verdict};
use riskgate::request::AccessRequest;
use riskgate::risk::{Assessor, Breaker, RecommendationType as R};
use riskgate::state::{self, BoxFuture, Key, MemoryStore, StateStore, StoreError, UseOutcome};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The memory store, counting writes (to see that nothing was recorded) or failing reads.
struct Probe {
    inner: MemoryStore,
    puts: AtomicUsize,
    fail_reads: bool,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            inner: MemoryStore::new(1_000),
            puts: AtomicUsize::new(0),
            fail_reads: false,
        })
    }

    fn failing() -> Arc<Probe> {
        Arc::new(Probe {
            inner: MemoryStore::new(1_000),
            puts: AtomicUsize::new(0),
            fail_reads: true,
        })
    }
}

impl StateStore for Probe {
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        keep_until_epoch_ms: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
        self.inner.consume_use(key, max_uses, keep_until_epoch_ms)
    }

    fn incr_window<'a>(
        &'a self,
        key: &'a Key,
        window_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.incr_window(key, window_ms)
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        if self.fail_reads {
            return Box::pin(async { Err(StoreError::Timeout) });
        }
        self.inner.get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value, ttl_ms)
    }

    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: state::HistoryWindow,
        update: state::HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<state::HistoryTotals, StoreError>> {
        self.inner.history(principal, window, update)
    }

    fn kind(&self) -> &'static str {
        "probe"
    }
}

/// A decider over the shipped config with `risk` and the given state store (one per
/// replica; the record lives in the store).
fn decider(config: &Config, risk: Arc<ScriptedRisk>, store: Arc<dyn StateStore>) -> Decider {
    let snapshot = match riskgate::policy::load_snapshot(config) {
        Ok(s) => s,
        Err(e) => panic!("shipped policies must load: {e}"),
    };
    let settings = match config.risk.as_ref() {
        Some(r) => riskgate::risk::settings_from(r),
        None => panic!("shipped config has a risk section"),
    };
    let assessor = Assessor::new(
        risk,
        Arc::new(Breaker::new(5, Duration::from_secs(10))),
        settings,
        None,
    );
    Decider::new(
        DecideSettings::from_config(config),
        snapshot,
        Some(Arc::new(assessor)),
        store,
    )
}

fn config_with_window(window: Duration) -> Config {
    let mut config = example_config("http://127.0.0.1:9");
    match config.risk.as_mut() {
        Some(r) => r.sticky_window = window,
        None => panic!("shipped config has a risk section"),
    }
    config
}

/// `GET /accounts/{account}/balance` (a `risk: optional` read) as `user`.
fn balance(
    user: &str,
    account: &str,
    token: Option<&str>,
    claims: serde_json::Value,
) -> AccessRequest {
    with_user(
        request("GET", &format!("/accounts/{account}/balance"), token),
        user,
        claims,
    )
}

async fn verdict(decider: &Decider, req: AccessRequest) -> Decision {
    decider.decide(&req).await
}

fn deny(reason: DenyReason) -> Verdict {
    Verdict::Deny(reason)
}

fn step_up() -> Verdict {
    deny(DenyReason::StepUpRequired {
        challenge: "step_up".into(),
    })
}

#[tokio::test]
async fn deny_or_high_then_no_token_is_denied_for_that_user_only() {
    let config = config_with_window(Duration::from_secs(900));
    for (case, score, kind, first) in [
        ("DENY", 10.0, R::Deny, DenyReason::RiskDeny),
        ("score 85", 85.0, R::Allow, DenyReason::RiskHigh),
    ] {
        let risk = Arc::new(ScriptedRisk::default());
        risk.set("t", Ok(rec(score, kind, "login", Some("u1"))));
        let d = decider(&config, risk, Probe::new());
        // before: without a token the read is allowed (unassessed)
        let before = verdict(&d, balance("u1", "a1", None, json!({}))).await;
        assert_eq!(before.verdict, Verdict::Allow, "{case}: before");
        let with_token = verdict(&d, balance("u1", "a1", Some("t"), json!({}))).await;
        assert_eq!(with_token.verdict, deny(first), "{case}: with the token");
        let dropped = verdict(&d, balance("u1", "a1", None, json!({}))).await;
        assert_eq!(
            dropped.verdict,
            deny(DenyReason::RiskSticky),
            "{case}: token dropped"
        );
        assert_eq!(dropped.verdict.http_status(), 403, "{case}");
        assert_eq!(
            dropped.band.as_str(),
            "high",
            "{case}: the audit shows the band"
        );
        let other = verdict(&d, balance("u2", "a2", None, json!({}))).await;
        assert_eq!(
            other.verdict,
            Verdict::Allow,
            "{case}: another user is not affected"
        );
    }
}

#[tokio::test]
async fn the_window_ends_and_zero_turns_sticky_risk_off() {
    let window = ms("RISKGATE_TEST_STICKY_WINDOW_MS", 300);
    let risk = Arc::new(ScriptedRisk::default());
    risk.set("deny", Ok(rec(10.0, R::Deny, "login", Some("u1"))));
    let d = decider(&config_with_window(window), risk.clone(), Probe::new());
    verdict(&d, balance("u1", "a1", Some("deny"), json!({}))).await;
    let during = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(during.verdict, deny(DenyReason::RiskSticky));
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let after = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(after.verdict, Verdict::Allow, "after the window");

    let store = Probe::new();
    let off = decider(&config_with_window(Duration::ZERO), risk, store.clone());
    verdict(&off, balance("u1", "a1", Some("deny"), json!({}))).await;
    let dropped = verdict(&off, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(dropped.verdict, Verdict::Allow, "sticky_window: 0s");
    assert_eq!(store.puts.load(Ordering::SeqCst), 0, "nothing recorded");
}

#[tokio::test]
async fn anonymous_and_unbound_recommendations_are_never_recorded() {
    let config = config_with_window(Duration::from_secs(900));
    let risk = Arc::new(ScriptedRisk::default());
    // anonymous login, DENY: bound (no user on either side), but nobody to remember it for
    risk.set("anon", Ok(rec(10.0, R::Deny, "login", None)));
    // u1's DENY presented without identity: binding has no user to compare
    risk.set("u1s", Ok(rec(10.0, R::Deny, "login", Some("u1"))));
    // u2's DENY presented by u1, and a DENY bound to no user presented by u1
    risk.set("u2s", Ok(rec(95.0, R::Deny, "login", Some("u2"))));
    risk.set("nobody", Ok(rec(95.0, R::Deny, "login", None)));
    let store = Probe::new();
    let d = decider(&config, risk, store.clone());
    for token in ["anon", "u1s"] {
        let anon = verdict(&d, request("POST", "/login", Some(token))).await;
        assert_eq!(anon.verdict, deny(DenyReason::RiskDeny), "{token}");
    }
    for token in ["u2s", "nobody"] {
        let forged = verdict(&d, balance("u1", "a1", Some(token), json!({}))).await;
        assert!(
            matches!(forged.verdict, Verdict::Deny(DenyReason::Binding(_))),
            "{token}: {:?}",
            forged.verdict
        );
    }
    assert_eq!(store.puts.load(Ordering::SeqCst), 0, "nothing recorded");
    for (user, account) in [("u1", "a1"), ("u2", "a2")] {
        let d2 = verdict(&d, balance(user, account, None, json!({}))).await;
        assert_eq!(d2.verdict, Verdict::Allow, "{user} is not poisoned");
    }
}

#[tokio::test]
async fn an_unanswered_challenge_holds_until_a_later_step_up() {
    let config = config_with_window(Duration::from_secs(900));
    let risk = Arc::new(ScriptedRisk::default());
    risk.set(
        "challenge",
        Ok(rec(10.0, R::Challenge, "login", Some("u1"))),
    );
    let d = decider(&config, risk, Probe::new());
    let now_s = now_ms() / 1000;
    let with_token = verdict(&d, balance("u1", "a1", Some("challenge"), json!({}))).await;
    assert_eq!(with_token.verdict, step_up(), "the CHALLENGE itself");
    let dropped = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(dropped.verdict, step_up(), "token dropped: the same 401");
    // an MFA from before the challenge (older than the 60 s clock skew) does not answer it
    let old_mfa = json!({"amr": ["mfa"], "auth_time": now_s - 120});
    let stale = verdict(&d, balance("u1", "a1", None, old_mfa)).await;
    assert_eq!(stale.verdict, step_up(), "step-up before the challenge");
    let other = verdict(&d, balance("u2", "a2", None, json!({}))).await;
    assert_eq!(other.verdict, Verdict::Allow, "another user");
    let fresh_mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let answered = verdict(&d, balance("u1", "a1", None, fresh_mfa)).await;
    assert_eq!(
        answered.verdict,
        Verdict::Allow,
        "step-up after the challenge"
    );
    let later = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(later.verdict, Verdict::Allow, "the challenge is cleared");
}

#[tokio::test]
async fn a_challenge_answered_on_the_spot_is_not_recorded() {
    let config = config_with_window(Duration::from_secs(900));
    let risk = Arc::new(ScriptedRisk::default());
    risk.set(
        "challenge",
        Ok(rec(10.0, R::Challenge, "login", Some("u1"))),
    );
    let store = Probe::new();
    let d = decider(&config, risk, store.clone());
    let mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let met = verdict(&d, balance("u1", "a1", Some("challenge"), mfa)).await;
    assert_eq!(met.verdict, Verdict::Allow);
    assert_eq!(store.puts.load(Ordering::SeqCst), 0);
    let dropped = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(dropped.verdict, Verdict::Allow);
}

#[tokio::test]
async fn a_challenge_met_later_with_a_token_clears_the_open_one() {
    let config = config_with_window(Duration::from_secs(900));
    let risk = Arc::new(ScriptedRisk::default());
    risk.set(
        "challenge",
        Ok(rec(10.0, R::Challenge, "login", Some("u1"))),
    );
    let d = decider(&config, risk, Probe::new());
    verdict(&d, balance("u1", "a1", Some("challenge"), json!({}))).await;
    let dropped = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(dropped.verdict, step_up(), "open challenge");
    let mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let met = verdict(&d, balance("u1", "a1", Some("challenge"), mfa)).await;
    assert_eq!(
        met.verdict,
        Verdict::Allow,
        "the CHALLENGE met with a fresh step-up"
    );
    let later = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(
        later.verdict,
        Verdict::Allow,
        "the open challenge is cleared"
    );
}

#[tokio::test]
async fn a_store_that_cannot_read_the_record_fails_closed() {
    let config = config_with_window(Duration::from_secs(900));
    let d = decider(&config, Arc::new(ScriptedRisk::default()), Probe::failing());
    let user = verdict(&d, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(
        user.verdict,
        deny(DenyReason::StateUnavailable { retry_after_s: 5 })
    );
    // anonymous callers have no record to read
    let anon = verdict(&d, request("GET", "/accounts/a1/balance", None)).await;
    assert_eq!(anon.verdict, deny(DenyReason::PolicyDeny));
}

#[tokio::test]
async fn sticky_risk_holds_across_replicas_sharing_redis() {
    let Some(bins) = support::redis::binaries() else {
        return;
    };
    let dir = support::procs::TestDir::new("sticky-redis");
    let server = support::redis::Redis::start(&bins, &dir, "redis", &[]).await;
    let mut config = config_with_window(Duration::from_secs(900));
    config.state = riskgate::config::StateConfig {
        store: riskgate::config::StoreKind::Redis,
        timeout: support::wait::env_ms("RISKGATE_TEST_STATE_TIMEOUT_MS", 500),
        redis: Some(riskgate::config::RedisConfig {
            url: Some(server.url()),
            ..riskgate::config::RedisConfig::default()
        }),
        ..riskgate::config::StateConfig::default()
    };
    let store = || async {
        match state::build(&config.state, Arc::new(state::NoObserver)).await {
            Ok(s) => s,
            Err(e) => panic!("build the store: {e}"),
        }
    };
    let risk = Arc::new(ScriptedRisk::default());
    risk.set("deny", Ok(rec(10.0, R::Deny, "login", Some("u1"))));
    risk.set(
        "challenge",
        Ok(rec(10.0, R::Challenge, "login", Some("u2"))),
    );
    let a = decider(&config, risk.clone(), store().await);
    let b = decider(&config, risk, store().await);
    verdict(&a, balance("u1", "a1", Some("deny"), json!({}))).await;
    verdict(&a, balance("u2", "a2", Some("challenge"), json!({}))).await;
    let on_b = verdict(&b, balance("u1", "a1", None, json!({}))).await;
    assert_eq!(
        on_b.verdict,
        deny(DenyReason::RiskSticky),
        "DENY seen by the other replica"
    );
    let on_b = verdict(&b, balance("u2", "a2", None, json!({}))).await;
    assert_eq!(
        on_b.verdict,
        step_up(),
        "CHALLENGE seen by the other replica"
    );
    let fresh_mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let answered = verdict(&b, balance("u2", "a2", None, fresh_mfa)).await;
    assert_eq!(answered.verdict, Verdict::Allow);
    let on_a = verdict(&a, balance("u2", "a2", None, json!({}))).await;
    assert_eq!(on_a.verdict, Verdict::Allow, "cleared for every replica");
}
