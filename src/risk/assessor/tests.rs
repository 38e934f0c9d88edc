//! Unit tests of the parent module (kept apart so the module reads in one screen).

use super::*;
use crate::risk::breaker::BreakerState;
use crate::risk::recommendation::RecommendationType;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Fake {
    calls: AtomicUsize,
    delay: Duration,
    answer: Result<(), FetchError>,
}

fn rec(performed_at_ms: i64) -> Recommendation {
    Recommendation {
        id: "r".into(),
        issued_at_ms: performed_at_ms,
        kind: RecommendationType::Allow,
        challenge_type: None,
        risk_score: 12.5,
        action_id: "act-1".into(),
        action_type: "withdraw".into(),
        action_performed_at_ms: performed_at_ms,
        user_id: Some("u1".into()),
        reasons: Arc::from([]),
        threats: Box::default(),
        transaction: None,
    }
}

impl RiskSource for Fake {
    fn fetch<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.answer.clone().map(|_| rec(now_ms()))
        })
    }
}

fn assessor(fake: Arc<Fake>, ttl_ms: u64) -> Assessor {
    Assessor::new(
        fake,
        Arc::new(Breaker::new(3, Duration::from_secs(60))),
        AssessorSettings {
            budget: Duration::from_millis(200),
            deadline_reserve: Duration::from_millis(20),
            ttl: Duration::from_millis(ttl_ms),
            max_age: Duration::from_secs(300),
            max_entries: 100,
            negative_ttl: Duration::from_secs(30),
            negative_max_entries: 100,
        },
        None,
    )
}

fn fake(delay_ms: u64, answer: Result<(), FetchError>) -> Arc<Fake> {
    Arc::new(Fake {
        calls: AtomicUsize::new(0),
        delay: Duration::from_millis(delay_ms),
        answer,
    })
}

#[test]
fn key_is_sha256_of_the_whole_token() {
    assert_ne!(token_key("a.b.c"), token_key("a.b.d"));
    assert_eq!(token_key("t"), token_key("t"));
}

#[tokio::test]
async fn second_check_is_a_cache_hit() -> Result<(), FetchError> {
    let f = fake(0, Ok(()));
    let a = assessor(f.clone(), 60_000);
    assert!(!a.assess("tok", None).await?.cache_hit);
    let again = a.assess("tok", None).await?;
    assert!(again.cache_hit);
    assert_eq!(&*again.recommendation.action_id, "act-1");
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A test timing in ms, from the environment or its default.
fn env_ms(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Issue #14: an entry that expires while no Check touches the cache is still removed (and
/// its memory freed); moka alone only cleans up while the cache is used.
#[tokio::test]
async fn expired_entries_are_removed_without_traffic() -> Result<(), FetchError> {
    let ttl = env_ms("RISKGATE_TEST_TTL_MS", 50);
    let every = env_ms("RISKGATE_TEST_HOUSEKEEPING_MS", 20);
    let a = assessor(fake(0, Ok(())), ttl).with_housekeeping(Duration::from_millis(every));
    for token in ["t1", "t2", "t3"] {
        a.assess(token, None).await?;
    }
    a.run_pending_tasks().await;
    assert_eq!(a.cached_entries(), 3);
    // moka's timer wheel works in ~1 s buckets: wait up to a bound, touching nothing
    // (`cached_entries` only reads a counter).
    let give_up =
        Instant::now() + Duration::from_millis(env_ms("RISKGATE_TEST_EXPIRY_WAIT_MS", 5_000));
    while a.cached_entries() > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.cached_entries(), 0, "expired entries still held");
    Ok(())
}

#[tokio::test]
async fn concurrent_checks_share_one_fetch() {
    let f = fake(30, Ok(()));
    let a = Arc::new(assessor(f.clone(), 60_000));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.assess("same", None).await.is_ok() })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await, Ok(true)));
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let f = fake(0, Err(FetchError::Unavailable(503)));
    let a = assessor(f.clone(), 60_000);
    assert!(a.assess("t", None).await.is_err());
    assert!(a.assess("t", None).await.is_err());
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn ttl_expiry_refetches() -> Result<(), FetchError> {
    let f = fake(0, Ok(()));
    let a = assessor(f.clone(), 50);
    a.assess("t", None).await?;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!a.assess("t", None).await?.cache_hit);
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn slow_source_times_out_within_budget_and_deadline() {
    let f = fake(2_000, Ok(()));
    let a = assessor(f, 60_000);
    let started = Instant::now();
    let got = a.assess("t", Some(Duration::from_millis(100))).await;
    // the Check's deadline, not the API, ran out first
    assert_eq!(got.err(), Some(FetchError::CallerDeadline));
    // deadline 100 ms − reserve 20 ms: well under the 200 ms budget.
    assert!(started.elapsed() < Duration::from_millis(190));
}

#[test]
fn budget_never_exceeds_deadline_minus_reserve() {
    let a = assessor(fake(0, Ok(())), 1);
    assert_eq!(a.budget_for(None), Duration::from_millis(200));
    assert_eq!(
        a.budget_for(Some(Duration::from_millis(1_000))),
        Duration::from_millis(200)
    );
    assert_eq!(
        a.budget_for(Some(Duration::from_millis(100))),
        Duration::from_millis(80)
    );
    assert_eq!(
        a.budget_for(Some(Duration::from_millis(10))),
        Duration::ZERO
    );
}

#[tokio::test]
async fn breaker_opens_after_outages_and_fails_fast() {
    let f = fake(0, Err(FetchError::Unavailable(502)));
    let a = assessor(f.clone(), 60_000);
    for _ in 0..3 {
        assert_eq!(
            a.assess("t", None).await.err(),
            Some(FetchError::Unavailable(502))
        );
    }
    assert_eq!(
        a.assess("t", None).await.err(),
        Some(FetchError::BreakerOpen)
    );
    assert_eq!(f.calls.load(Ordering::SeqCst), 3);
}

/// Issue 11 item 3: a Check cancelled because its client hung up is not a risk-API
/// failure. Failed on the old code: five abandoned fetches opened the breaker.
#[tokio::test]
async fn cancelled_checks_never_trip_the_breaker() {
    let f = fake(60, Ok(()));
    let a = assessor(f.clone(), 60_000);
    for i in 0..5 {
        let token = format!("t{i}");
        let check = a.assess(&token, None);
        // the client hangs up: the Check's future is dropped mid-fetch
        assert!(tokio::time::timeout(Duration::from_millis(5), check)
            .await
            .is_err());
    }
    assert_eq!(
        a.breaker().state(),
        crate::risk::breaker::BreakerState::Closed
    );
    assert!(a.assess("fresh", None).await.is_ok());
}

/// Issue 11 item 3: a waiter with a short deadline stops waiting without cutting the
/// shared fetch, which runs with the full budget and fills the cache. Failed on the
/// old code: each short waiter cut (and counted) its own call.
#[tokio::test]
async fn short_deadlines_do_not_cut_the_shared_fetch() {
    // the fetch (150 ms) fits the 200 ms budget; three 20 ms waiters give up before it ends
    let f = fake(150, Ok(()));
    let a = assessor(f.clone(), 60_000);
    for _ in 0..3 {
        // 40 ms deadline − 20 ms reserve: the waiter gives up after 20 ms
        let got = a.assess("t", Some(Duration::from_millis(40))).await;
        assert_eq!(got.err(), Some(FetchError::CallerDeadline));
    }
    assert_eq!(
        a.breaker().state(),
        crate::risk::breaker::BreakerState::Closed
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = a.assess("t", None).await;
    assert!(
        later.is_ok_and(|x| x.cache_hit),
        "the fetch finished for the cache"
    );
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

/// Issue 11 item 3: single flight holds when the API is slower than the budget.
/// Failed on the old code: 5 staggered Checks made 5 calls.
#[tokio::test]
async fn single_flight_holds_when_the_api_is_slower_than_the_budget() {
    let f = fake(1_000, Ok(()));
    let a = Arc::new(assessor(f.clone(), 60_000));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move { a.assess("slow", None).await }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for t in tasks {
        assert!(matches!(t.await, Ok(Err(FetchError::Timeout))));
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rejected_tokens_never_trip_the_breaker() {
    let f = fake(0, Err(FetchError::Rejected(400)));
    let a = assessor(f.clone(), 60_000);
    for i in 0..10 {
        // distinct tokens: a repeated one would be answered by the negative cache
        assert_eq!(
            a.assess(&format!("t{i}"), None).await.err(),
            Some(FetchError::Rejected(400))
        );
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn only_400_404_422_are_negatively_cached() {
    for (status, calls) in [(400, 1), (404, 1), (422, 1), (403, 3), (409, 3)] {
        let f = fake(0, Err(FetchError::Rejected(status)));
        let a = assessor(f.clone(), 60_000);
        for _ in 0..3 {
            assert_eq!(
                a.assess("t", None).await.err(),
                Some(FetchError::Rejected(status))
            );
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), calls, "status {status}");
    }
    let f = fake(0, Err(FetchError::Unavailable(503)));
    let a = assessor(f.clone(), 60_000);
    for _ in 0..2 {
        let _ = a.assess("t", None).await;
    }
    assert_eq!(
        f.calls.load(Ordering::SeqCst),
        2,
        "outages are never cached"
    );
    assert_eq!(a.negative_cache_hits(), 0);
}

#[test]
fn token_exp_only_shortens_the_ttl() {
    let a = assessor(fake(0, Ok(())), 60_000);
    let payload = |exp: i64| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::json!({ "exp": exp }).to_string())
    };
    let soon = format!("h.{}.s", payload(now_ms() / 1000 + 5));
    let ttl = ttl_for(&a.settings, &soon, &rec(now_ms()));
    assert!(
        ttl <= Duration::from_secs(5) && ttl > Duration::from_secs(3),
        "{ttl:?}"
    );
    let late = format!("h.{}.s", payload(now_ms() / 1000 + 100_000));
    assert_eq!(
        ttl_for(&a.settings, &late, &rec(now_ms())),
        Duration::from_millis(60_000)
    );
    assert_eq!(
        ttl_for(&a.settings, "opaque", &rec(now_ms())),
        Duration::from_millis(60_000)
    );
}

/// Issue 12 item 4: with a shared (L2) cache, a token assessed on one replica is not
/// fetched again on another; without it, every replica asks the API.
#[tokio::test]
async fn a_shared_cache_saves_other_replicas_the_call() -> Result<(), FetchError> {
    let shared: Arc<dyn StateStore> = Arc::new(crate::state::MemoryStore::new(100));
    let (f1, f2, f3) = (fake(0, Ok(())), fake(0, Ok(())), fake(0, Ok(())));
    let replica1 = assessor(f1.clone(), 60_000).with_shared_cache(shared.clone());
    let replica2 = assessor(f2.clone(), 60_000).with_shared_cache(shared.clone());
    let unshared = assessor(f3.clone(), 60_000);
    replica1.assess("tok", None).await?;
    // the share is written in the background, after the waiters got their answer
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = replica2.assess("tok", None).await?;
    assert_eq!(&*got.recommendation.action_id, "act-1");
    unshared.assess("tok", None).await?;
    assert_eq!(f1.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        f2.calls.load(Ordering::SeqCst),
        0,
        "served by the shared cache"
    );
    assert_eq!(f3.calls.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A shared entry never outlives the action: an entry for a stale action is not shared.
#[tokio::test]
async fn a_shared_entry_keeps_the_ttl_rules() -> Result<(), crate::state::StoreError> {
    let shared = Arc::new(crate::state::MemoryStore::new(100));
    let f = fake(0, Ok(()));
    let a = assessor(f, 80).with_shared_cache(shared.clone());
    assert!(a.assess("tok", None).await.is_ok());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(reccache::get(&*shared, "tok").await?.is_some(), "shared");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reccache::get(&*shared, "tok").await?.is_none(),
        "gone with the L1 ttl (80 ms)"
    );
    Ok(())
}

/// Issue 13 item 2: the API's 429 is back-pressure, not an outage. Failed on the old
/// code: three 429s opened the breaker (threshold 3) for every other token.
#[tokio::test]
async fn the_apis_429_never_trips_the_breaker() {
    let throttled = FetchError::Throttled {
        retry_after_s: Some(2),
    };
    let f = fake(0, Err(throttled.clone()));
    let a = assessor(f.clone(), 60_000);
    for _ in 0..10 {
        assert_eq!(a.assess("t", None).await.err(), Some(throttled.clone()));
    }
    assert_eq!(f.calls.load(Ordering::SeqCst), 10, "a 429 is never cached");
    assert_eq!(a.breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn calls_over_the_cap_are_not_made_nor_counted_by_the_breaker() {
    let f = fake(100, Ok(()));
    let a = assessor(f.clone(), 60_000).with_max_concurrent_calls(1);
    let first = a.assess("t1", None);
    let others = async {
        while f.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut refused = Vec::new();
        for i in 2..6 {
            refused.push(a.assess(&format!("t{i}"), None).await.err());
        }
        refused
    };
    let (first, refused) = tokio::join!(first, others);
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(refused, vec![Some(FetchError::Busy); 4]);
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.breaker().state(), BreakerState::Closed);
    // the permit is back: the next call is made
    assert!(a.assess("t2", None).await.is_ok());
}

#[tokio::test]
async fn needs_call_is_false_for_cached_rejected_and_in_flight_tokens() {
    let f = fake(50, Ok(()));
    let a = assessor(f.clone(), 60_000);
    assert!(a.needs_call("t"));
    let fetch = a.assess("t", None);
    let peek = async {
        while f.calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        a.needs_call("t")
    };
    let (fetched, in_flight) = tokio::join!(fetch, peek);
    assert!(fetched.is_ok());
    assert!(!in_flight, "joining a fetch in flight costs no call");
    assert!(!a.needs_call("t"), "cached");
    let rejected = fake(0, Err(FetchError::Rejected(400)));
    let a = assessor(rejected, 60_000);
    let _ = a.assess("bogus", None).await;
    assert!(!a.needs_call("bogus"), "negatively cached");
    assert!(a.needs_call("other"));
}
