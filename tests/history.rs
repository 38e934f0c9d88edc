//! Recent history in `context.history` (issue #16, item 5): step-up after repeated denies
//! (a `@step_up` forbid), the window's expiry, no history (and no store call) for anonymous
//! callers or when no policy reads it, and the amount cap under parallel withdrawals on the
//! memory store and on a real Redis — reserved atomically before Cedar, released on deny.
//!
//! Policies: the shipped set plus `policies/examples/history.cedar` (decider tests), or a
//! permit-every-withdrawal set plus that file's cap (cap tests). Until the body stage
//! (items 1–2) fills `context.transaction`, the cap tests run the history stage, Cedar and
//! the settlement themselves with a transaction they set.
//!
//! Timing: `RISKGATE_TEST_HISTORY_WINDOW_MS` (300), the window of the expiry test (the test
//! waits past it, so a slow machine only waits longer).

mod common;
mod support;

use common::*;
use riskgate::config::{Config, HistoryConfig};
use riskgate::decide::authorize::{self, Subject};
use riskgate::decide::risk::{Band, RiskOutcome};
use riskgate::decide::{history, principal, DecideSettings, Decider};
use riskgate::decision::{Decision, DenyReason, Verdict};
use riskgate::policy::{RequestFacts, Snapshot, Transaction};
use riskgate::request::AccessRequest;
use riskgate::risk::{Assessor, Breaker, RecommendationType as R};
use riskgate::state::{
    self, BoxFuture, HistoryTotals, HistoryUpdate, HistoryWindow, Key, MemoryStore, StateStore,
    StoreError, UseOutcome,
};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The memory store, counting history operations.
struct Counting {
    inner: MemoryStore,
    history: AtomicUsize,
}

impl Counting {
    fn new() -> Arc<Counting> {
        Arc::new(Counting {
            inner: MemoryStore::new(10_000),
            history: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.history.load(Ordering::SeqCst)
    }
}

impl StateStore for Counting {
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        until: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
        self.inner.consume_use(key, max_uses, until)
    }
    fn incr_window<'a>(&'a self, key: &'a Key, ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.incr_window(key, ms)
    }
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        self.inner.get(key)
    }
    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.put(key, value, ttl_ms)
    }
    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: HistoryWindow,
        update: HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
        self.history.fetch_add(1, Ordering::SeqCst);
        self.inner.history(principal, window, update)
    }
    fn kind(&self) -> &'static str {
        "counting"
    }
}

/// A policy directory: the shipped `*.cedar` files (or none) plus `extra` files.
fn policy_dir(dir: &Path, shipped: bool, extra: &[(&str, &str)]) {
    if shipped {
        for (name, content) in example_policies() {
            if name.ends_with(".cedar") {
                if let Err(e) = std::fs::write(dir.join(&name), content) {
                    panic!("write {name}: {e}");
                }
            }
        }
    }
    for (name, content) in extra {
        if let Err(e) = std::fs::write(dir.join(name), content) {
            panic!("write {name}: {e}");
        }
    }
}

fn history_example() -> String {
    match std::fs::read_to_string(repo("policies/examples/history.cedar")) {
        Ok(s) => s,
        Err(e) => panic!("read the history example: {e}"),
    }
}

/// The shipped config over `dir`'s policies.
fn config_over(dir: &Path) -> Config {
    let mut config = example_config("http://127.0.0.1:9");
    config.policies.dir = dir.to_owned();
    config
}

fn decider(config: &Config, risk: Arc<ScriptedRisk>, store: Arc<dyn StateStore>) -> Decider {
    let snapshot = match riskgate::policy::load_snapshot(config) {
        Ok(s) => s,
        Err(e) => panic!("policies must load: {e}"),
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

/// Scripts token `token`: a withdrawal recommendation for `user` at `score`, with its own
/// action id (each write token is single-use).
fn script(risk: &ScriptedRisk, token: &str, score: f64, user: &str) {
    let mut r = rec(score, R::Allow, "withdraw", Some(user));
    r.action_id = format!("act-{token}").into();
    risk.set(token, Ok(r));
}

fn withdraw(user: &str, account: &str, token: &str, claims: serde_json::Value) -> AccessRequest {
    with_user(
        request(
            "POST",
            &format!("/accounts/{account}/withdraw"),
            Some(token),
        ),
        user,
        claims,
    )
}

fn step_up() -> Verdict {
    Verdict::Deny(DenyReason::StepUpRequired {
        challenge: "step_up".into(),
    })
}

async fn decide(d: &Decider, req: AccessRequest) -> Decision {
    d.decide(&req).await
}

#[tokio::test]
async fn writes_need_step_up_after_three_denies_and_the_claim_lets_them_through() {
    let dir = support::procs::TestDir::new("history-step-up");
    policy_dir(dir.path(), true, &[("history.cedar", &history_example())]);
    let config = config_over(dir.path());
    let risk = Arc::new(ScriptedRisk::default());
    for i in 0..3 {
        script(&risk, &format!("medium{i}"), 55.0, "u1");
    }
    for i in 0..4 {
        script(&risk, &format!("low{i}"), 12.0, "u1");
    }
    script(&risk, "u2-low", 12.0, "u2");
    let d = decider(&config, risk, Counting::new());

    for i in 0..2 {
        let denied = decide(&d, withdraw("u1", "a1", &format!("medium{i}"), json!({}))).await;
        assert_eq!(denied.verdict, Verdict::Deny(DenyReason::PolicyDeny), "{i}");
    }
    let two = decide(&d, withdraw("u1", "a1", "low0", json!({}))).await;
    assert_eq!(two.verdict, Verdict::Allow, "two denies: no step-up yet");
    let third = decide(&d, withdraw("u1", "a1", "medium2", json!({}))).await;
    assert_eq!(third.verdict, Verdict::Deny(DenyReason::PolicyDeny));

    let asked = decide(&d, withdraw("u1", "a1", "low1", json!({}))).await;
    assert_eq!(asked.verdict, step_up(), "three denies: step-up");
    assert_eq!(asked.verdict.http_status(), 401);
    assert_eq!(asked.policies, ["history-writes-step-up-after-denies"]);
    let again = decide(&d, withdraw("u1", "a1", "low2", json!({}))).await;
    assert_eq!(again.verdict, step_up(), "a step-up answer is not a deny");

    let mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let stepped_up = decide(&d, withdraw("u1", "a1", "low3", mfa.clone())).await;
    assert_eq!(stepped_up.verdict, Verdict::Allow, "fresh step-up claim");
    assert_eq!(stepped_up.policies, ["account-owner-write-low-risk"]);

    let other = decide(&d, withdraw("u2", "a2", "u2-low", json!({}))).await;
    assert_eq!(
        other.verdict,
        Verdict::Allow,
        "another user's history is its own"
    );
}

#[tokio::test]
async fn a_stepped_up_principal_still_meets_every_other_policy() {
    let dir = support::procs::TestDir::new("history-step-up-others");
    policy_dir(dir.path(), true, &[("history.cedar", &history_example())]);
    let config = config_over(dir.path());
    let risk = Arc::new(ScriptedRisk::default());
    for i in 0..4 {
        script(&risk, &format!("medium{i}"), 55.0, "u1");
    }
    let d = decider(&config, risk, Counting::new());
    for i in 0..3 {
        decide(&d, withdraw("u1", "a1", &format!("medium{i}"), json!({}))).await;
    }
    let mfa = json!({"amr": ["mfa"], "auth_time": now_ms() / 1000});
    let medium = decide(&d, withdraw("u1", "a1", "medium3", mfa)).await;
    assert_eq!(
        medium.verdict,
        Verdict::Deny(DenyReason::PolicyDeny),
        "the step-up forbid is waived, the band rule still holds"
    );
}

#[tokio::test]
async fn history_lapses_after_the_window() {
    let window = ms("RISKGATE_TEST_HISTORY_WINDOW_MS", 300);
    let dir = support::procs::TestDir::new("history-window");
    policy_dir(dir.path(), true, &[("history.cedar", &history_example())]);
    let mut config = config_over(dir.path());
    config.history = HistoryConfig {
        window,
        buckets: 3,
        ..HistoryConfig::default()
    };
    let risk = Arc::new(ScriptedRisk::default());
    for i in 0..3 {
        script(&risk, &format!("medium{i}"), 55.0, "u1");
    }
    script(&risk, "low0", 12.0, "u1");
    script(&risk, "low1", 12.0, "u1");
    let d = decider(&config, risk, Counting::new());
    for i in 0..3 {
        decide(&d, withdraw("u1", "a1", &format!("medium{i}"), json!({}))).await;
    }
    let asked = decide(&d, withdraw("u1", "a1", "low0", json!({}))).await;
    assert_eq!(asked.verdict, step_up());
    // every outcome so far is at most `window` old once `window` has passed after this point
    tokio::time::sleep(window + Duration::from_millis(20)).await;
    let later = decide(&d, withdraw("u1", "a1", "low1", json!({}))).await;
    assert_eq!(later.verdict, Verdict::Allow, "the denies left the window");
}

#[tokio::test]
async fn no_history_and_no_store_call_for_anonymous_callers_or_without_readers() {
    let with = support::procs::TestDir::new("history-readers");
    policy_dir(with.path(), true, &[("history.cedar", &history_example())]);
    let without = support::procs::TestDir::new("history-no-readers");
    policy_dir(without.path(), true, &[]);
    let balance = |user: Option<&str>, account: &str| {
        let req = request("GET", &format!("/accounts/{account}/balance"), None);
        match user {
            Some(u) => with_user(req, u, json!({})),
            None => req,
        }
    };

    let store = Counting::new();
    let d = decider(
        &config_over(with.path()),
        Arc::new(ScriptedRisk::default()),
        store.clone(),
    );
    let allowed = decide(&d, balance(Some("u1"), "a1")).await;
    assert_eq!(allowed.verdict, Verdict::Allow);
    assert_eq!(store.calls(), 1, "an allow: the read only");
    let denied = decide(&d, balance(Some("u2"), "a1")).await;
    assert_eq!(denied.verdict, Verdict::Deny(DenyReason::PolicyDeny));
    assert_eq!(store.calls(), 3, "a deny: read, then counted");
    let anonymous = decide(&d, balance(None, "a1")).await;
    assert!(matches!(anonymous.verdict, Verdict::Deny(_)));
    assert_eq!(store.calls(), 3, "anonymous: no history");

    let store = Counting::new();
    let d = decider(
        &config_over(without.path()),
        Arc::new(ScriptedRisk::default()),
        store.clone(),
    );
    decide(&d, balance(Some("u1"), "a1")).await;
    decide(&d, balance(Some("u2"), "a1")).await;
    assert_eq!(store.calls(), 0, "no policy reads context.history");
}

#[tokio::test]
async fn a_store_that_cannot_answer_denies_with_503() {
    struct Down(MemoryStore);
    impl StateStore for Down {
        fn consume_use<'a>(
            &'a self,
            k: &'a Key,
            m: u32,
            u: i64,
        ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
            self.0.consume_use(k, m, u)
        }
        fn incr_window<'a>(&'a self, k: &'a Key, w: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.0.incr_window(k, w)
        }
        fn get<'a>(&'a self, k: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
            self.0.get(k)
        }
        fn put<'a>(
            &'a self,
            k: &'a Key,
            v: &'a [u8],
            t: u64,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            self.0.put(k, v, t)
        }
        fn history<'a>(
            &'a self,
            _: &'a str,
            _: HistoryWindow,
            _: HistoryUpdate<'a>,
        ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
            Box::pin(async { Err(StoreError::Timeout) })
        }
        fn kind(&self) -> &'static str {
            "down"
        }
    }
    let dir = support::procs::TestDir::new("history-down");
    policy_dir(dir.path(), true, &[("history.cedar", &history_example())]);
    let d = decider(
        &config_over(dir.path()),
        Arc::new(ScriptedRisk::default()),
        Arc::new(Down(MemoryStore::new(100))),
    );
    let req = with_user(
        request("GET", "/accounts/a1/balance", None),
        "u1",
        json!({}),
    );
    let answer = decide(&d, req).await;
    assert!(
        matches!(
            answer.verdict,
            Verdict::Deny(DenyReason::StateUnavailable { .. })
        ),
        "{:?}",
        answer.verdict
    );
    assert_eq!(answer.verdict.http_status(), 503);
}

/// Policies of the cap tests: every withdrawal permitted, the example's USD cap (500000).
const CAP: i64 = 500_000;
const PERMIT_WITHDRAW: &str =
    "@id(\"withdraw-any\")\npermit (principal is User, action == Action::\"withdraw\", resource);\n";

/// The history stage, Cedar and the settlement for one withdrawal of `amount` USD minor
/// units — `Decider::evaluate`'s order, with a transaction the body stage would give.
struct CapHarness {
    snapshot: Snapshot,
    settings: DecideSettings,
    store: Arc<dyn StateStore>,
}

impl CapHarness {
    fn new(dir: &Path, store: Arc<dyn StateStore>) -> CapHarness {
        let cap = history_example()
            .split("@id(")
            .find(|p| p.starts_with("\"history-withdraw-cap-usd\""))
            .map(|p| format!("@id({p}"))
            .unwrap_or_else(|| panic!("the example has the cap policy"));
        policy_dir(
            dir,
            false,
            &[("withdraw.cedar", PERMIT_WITHDRAW), ("cap.cedar", &cap)],
        );
        let config = config_over(dir);
        let snapshot = match riskgate::policy::load_snapshot(&config) {
            Ok(s) => s,
            Err(e) => panic!("cap policies must load: {e}"),
        };
        assert!(snapshot.policies.reads_history());
        CapHarness {
            snapshot,
            settings: DecideSettings::from_config(&config),
            store,
        }
    }

    async fn withdraw(&self, user: &str, amount: i64) -> Verdict {
        let req = with_user(
            request("POST", "/accounts/a1/withdraw", None),
            user,
            json!({}),
        );
        let principal = match principal::identify(&self.settings.identity, &req) {
            Ok(p) => p,
            Err(e) => panic!("identify: {e:?}"),
        };
        let mut facts = RequestFacts {
            transaction: Some(Transaction {
                amount_minor: amount,
                currency: "USD".into(),
                payee: None,
            }),
            ..RequestFacts::default()
        };
        let store = &*self.store;
        let opened =
            history::open(&self.settings.history, store, true, &principal, &mut facts).await;
        let ticket = match opened {
            Ok(t) => t,
            Err(e) => panic!("open: {e:?}"),
        };
        let route = self
            .snapshot
            .routes
            .routes()
            .iter()
            .find(|r| r.action == "withdraw")
            .unwrap_or_else(|| panic!("a withdraw route"));
        let subject = Subject {
            route,
            resource_id: "a1",
            principal: &principal,
            claims_as_attributes: &[],
            facts: &facts,
        };
        let risk = RiskOutcome {
            band: Band::Low,
            assessment: None,
            outage: false,
        };
        let mut d = Decision::new(None);
        let verdict = match authorize::authorize(
            &self.snapshot.policies,
            None,
            &subject,
            &req,
            &risk,
            &mut d,
        ) {
            Ok(()) => Verdict::Allow,
            Err(reason) => Verdict::Deny(reason),
        };
        match &ticket {
            Some(t) => history::close(&self.settings.history, store, t, &verdict, true).await,
            None => panic!("an authenticated principal's history is opened"),
        }
        verdict
    }

    /// The principal's USD total in the window now.
    async fn total(&self, user: &str) -> i64 {
        let mut read = HistoryUpdate::read(now_ms());
        read.currency = Some("USD");
        match self
            .store
            .history(user, self.settings.history.window, read)
            .await
        {
            Ok(t) => t.amount,
            Err(e) => panic!("read: {e}"),
        }
    }
}

async fn rollback_on_deny(h: &CapHarness, user: &str) {
    assert_eq!(h.withdraw(user, 400_000).await, Verdict::Allow);
    assert_eq!(
        h.withdraw(user, 200_000).await,
        Verdict::Deny(DenyReason::PolicyDeny),
        "600000 is over the cap"
    );
    assert_eq!(
        h.total(user).await,
        400_000,
        "the denied amount was released"
    );
    assert_eq!(
        h.withdraw(user, 100_000).await,
        Verdict::Allow,
        "500000: at the cap"
    );
    assert_eq!(h.total(user).await, CAP);
}

/// `trials` rounds of `parallel` concurrent 100000 withdrawals by a fresh principal: exactly
/// the first five reservations pass (five fit the cap, each later one sees them), never more.
async fn parallel_withdrawals(h: Arc<CapHarness>, tag: &str, trials: usize, parallel: usize) {
    const AMOUNT: i64 = 100_000;
    for trial in 0..trials {
        let user = format!("{tag}-{trial}");
        let barrier = Arc::new(tokio::sync::Barrier::new(parallel));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let (h, user, barrier) = (h.clone(), user.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                h.withdraw(&user, AMOUNT).await
            }));
        }
        let mut allowed = 0;
        for task in tasks {
            match task.await {
                Ok(Verdict::Allow) => allowed += 1,
                Ok(Verdict::Deny(DenyReason::PolicyDeny)) => {}
                other => panic!("trial {trial}: {other:?}"),
            }
        }
        let moved = AMOUNT * allowed;
        assert!(moved <= CAP, "trial {trial}: {moved} moved, over the cap");
        assert_eq!(allowed, 5, "trial {trial}: the cap holds exactly five");
        assert_eq!(
            h.total(&user).await,
            moved,
            "trial {trial}: denied amounts released"
        );
    }
}

fn trials() -> usize {
    std::env::var("RISKGATE_TEST_HISTORY_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

#[tokio::test]
async fn a_denied_withdrawal_releases_its_reservation_in_memory() {
    let dir = support::procs::TestDir::new("history-rollback");
    let h = CapHarness::new(dir.path(), Arc::new(MemoryStore::new(1_000)));
    rollback_on_deny(&h, "u1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_withdrawals_never_pass_the_cap_in_memory() {
    let dir = support::procs::TestDir::new("history-parallel");
    let h = Arc::new(CapHarness::new(
        dir.path(),
        Arc::new(MemoryStore::new(1_000)),
    ));
    parallel_withdrawals(h, "mem", trials(), 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_withdrawals_never_pass_the_cap_on_redis() {
    let Some(bins) = support::redis::binaries() else {
        return;
    };
    let dir = support::procs::TestDir::new("history-redis");
    let server = support::redis::Redis::start(&bins, &dir, "redis", &[]).await;
    let state = riskgate::config::StateConfig {
        store: riskgate::config::StoreKind::Redis,
        timeout: support::wait::env_ms("RISKGATE_TEST_STATE_TIMEOUT_MS", 500),
        redis: Some(riskgate::config::RedisConfig {
            url: Some(server.url()),
            ..riskgate::config::RedisConfig::default()
        }),
        ..riskgate::config::StateConfig::default()
    };
    let store = match state::build(&state, Arc::new(state::NoObserver)).await {
        Ok(s) => s,
        Err(e) => panic!("build the store: {e}"),
    };
    let policies = dir.path().join("policies");
    if let Err(e) = std::fs::create_dir_all(&policies) {
        panic!("{e}");
    }
    let h = Arc::new(CapHarness::new(&policies, store));
    rollback_on_deny(&h, "u1").await;
    parallel_withdrawals(h.clone(), "redis", trials(), 8).await;

    // every slice expires by itself: one window plus one slice at most
    let keys = server.cli(&["--scan", "--pattern", "riskgate:p:*:h:*"]);
    let key = keys
        .lines()
        .next()
        .unwrap_or_else(|| panic!("history keys written"));
    let ttl: i64 = server.cli(&["PTTL", key]).trim().parse().unwrap_or(-1);
    let most = i64::try_from(h.settings.history.window.ttl_ms()).unwrap_or(i64::MAX);
    assert!(
        ttl > 0 && ttl <= most,
        "PTTL {ttl} of {key}, at most {most}"
    );
}

#[tokio::test]
async fn the_risk_skip_probe_sees_the_history() {
    // Without the history in the probe's facts this permit could never hold (`context has
    // history` false), so the probe would skip the API call and deny.
    let dir = support::procs::TestDir::new("history-probe");
    let permit = "@id(\"withdraw-without-recent-denies\")\n\
        permit (principal is User, action == Action::\"withdraw\", resource)\n\
        when { context has history && context.history.recent_denies == 0 && context.risk.band == \"low\" };\n";
    policy_dir(dir.path(), false, &[("probe.cedar", permit)]);
    let risk = Arc::new(ScriptedRisk::default());
    script(&risk, "low", 12.0, "u1");
    let d = decider(&config_over(dir.path()), risk.clone(), Counting::new());
    let answer = decide(&d, withdraw("u1", "a1", "low", json!({}))).await;
    assert_eq!(answer.verdict, Verdict::Allow);
    assert!(!answer.risk_skipped);
    assert_eq!(risk.calls(), 1, "the API was asked");
}

#[tokio::test]
async fn a_reload_decides_again_whether_history_is_kept() {
    let without = support::procs::TestDir::new("history-reload-without");
    policy_dir(without.path(), true, &[]);
    let with = support::procs::TestDir::new("history-reload-with");
    policy_dir(with.path(), true, &[("history.cedar", &history_example())]);
    let store = Counting::new();
    let d = decider(
        &config_over(without.path()),
        Arc::new(ScriptedRisk::default()),
        store.clone(),
    );
    let read = || {
        with_user(
            request("GET", "/accounts/a1/balance", None),
            "u1",
            json!({}),
        )
    };
    decide(&d, read()).await;
    assert_eq!(store.calls(), 0);
    match riskgate::policy::load_snapshot(&config_over(with.path())) {
        Ok(s) => d.swap_snapshot(s),
        Err(e) => panic!("{e}"),
    }
    decide(&d, read()).await;
    assert_eq!(store.calls(), 1, "a policy now reads context.history");
    match riskgate::policy::load_snapshot(&config_over(without.path())) {
        Ok(s) => d.swap_snapshot(s),
        Err(e) => panic!("{e}"),
    }
    decide(&d, read()).await;
    assert_eq!(store.calls(), 1, "and no longer does");
}
