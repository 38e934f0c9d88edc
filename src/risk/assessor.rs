//! Per-action recommendation cache in front of a [`RiskSource`], with single flight, the
//! circuit breaker, the time budget and the per-token use counter.
//!
//! The cache key is the SHA-256 of the action token: one token stands for one reported
//! action, and a claim decoded from the token without verification could be forged to
//! reach another action's cached answer. Only recommendations are cached, never errors
//! and never decisions.

use super::breaker::Breaker;
use super::ledger::{UseLedger, UseRefused};
use super::recommendation::Recommendation;
use super::source::{FetchError, RiskSource};
use base64::Engine as _;
use moka::Expiry;
use sha2::{Digest, Sha256};

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;

/// SHA-256 of an action token.
pub type TokenKey = [u8; 32];

/// Hashes an action token into its cache key.
pub fn token_key(action_token: &str) -> TokenKey {
    Sha256::digest(action_token.as_bytes()).into()
}

#[derive(Debug, Clone)]
struct Cached {
    recommendation: Arc<Recommendation>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<TokenKey, Cached> for PerEntryTtl {
    fn expire_after_create(&self, _: &TokenKey, value: &Cached, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Told about every real API call (not cache hits), for metrics.
pub trait RiskObserver: Send + Sync + 'static {
    /// One call finished with `result` (`ok` or a [`FetchError::label`]) after `elapsed`.
    fn api_call(&self, result: &'static str, elapsed: Duration);
}

/// A recommendation for this request.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// The recommendation.
    pub recommendation: Arc<Recommendation>,
    /// Served from the cache.
    pub cache_hit: bool,
}

/// Timing knobs of the assessor.
#[derive(Debug, Clone)]
pub struct AssessorSettings {
    /// Most time one Check waits for the API.
    pub budget: Duration,
    /// Kept back from the Check's deadline.
    pub deadline_reserve: Duration,
    /// Default cache entry lifetime.
    pub ttl: Duration,
    /// Actions older than this are refused, so caching them longer is pointless.
    pub max_age: Duration,
    /// Cache capacity.
    pub max_entries: u64,
}

/// Cached, budgeted, breaker-protected access to recommendations.
pub struct Assessor {
    source: Arc<dyn RiskSource>,
    cache: moka::future::Cache<TokenKey, Cached>,
    uses: UseLedger,
    breaker: Arc<Breaker>,
    settings: AssessorSettings,
    observer: Option<Arc<dyn RiskObserver>>,
}

impl std::fmt::Debug for Assessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assessor")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Records an outage if a fetch is abandoned (its Check ran out of budget) before it
/// reported, so a hanging API trips the breaker once per call, not once per waiting Check.
struct OutcomeGuard<'a>(Option<&'a Breaker>);

impl Drop for OutcomeGuard<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0 {
            b.on_outage();
        }
    }
}

impl Assessor {
    /// An assessor over `source`, reporting its API calls to `observer` (e.g. the metrics).
    pub fn new(
        source: Arc<dyn RiskSource>,
        breaker: Arc<Breaker>,
        settings: AssessorSettings,
        observer: Option<Arc<dyn RiskObserver>>,
    ) -> Assessor {
        let cache = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(PerEntryTtl)
            .build();
        let uses = UseLedger::new(
            usize::try_from(settings.max_entries).unwrap_or(usize::MAX),
            settings.ttl.max(settings.max_age),
        );
        Assessor {
            source,
            cache,
            uses,
            breaker,
            settings,
            observer,
        }
    }

    /// The breaker (for metrics).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Time this Check may spend on the API: the budget, but never more than the remaining
    /// gRPC deadline minus the reserve, so riskgate answers before Envoy gives up.
    pub fn budget_for(&self, deadline: Option<Duration>) -> Duration {
        match deadline {
            Some(d) => self
                .settings
                .budget
                .min(d.saturating_sub(self.settings.deadline_reserve)),
            None => self.settings.budget,
        }
    }

    /// The recommendation for `action_token`, from the cache or the API.
    pub async fn assess(
        &self,
        action_token: &str,
        deadline: Option<Duration>,
    ) -> Result<Assessment, FetchError> {
        let key = token_key(action_token);
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(Assessment {
                recommendation: hit.recommendation,
                cache_hit: true,
            });
        }
        let budget = self.budget_for(deadline);
        if budget.is_zero() {
            return Err(FetchError::Timeout);
        }
        let init = self.fetch_and_wrap(action_token);
        match tokio::time::timeout(budget, self.cache.try_get_with(key, init)).await {
            Err(_) => Err(FetchError::Timeout),
            Ok(Err(shared)) => Err((*shared).clone()),
            Ok(Ok(fresh)) => Ok(Assessment {
                recommendation: fresh.recommendation,
                cache_hit: false,
            }),
        }
    }

    async fn fetch_and_wrap(&self, action_token: &str) -> Result<Cached, FetchError> {
        if !self.breaker.try_acquire() {
            return Err(FetchError::BreakerOpen);
        }
        let mut guard = OutcomeGuard(Some(&self.breaker));
        let started = Instant::now();
        let result = self
            .source
            .fetch(action_token)
            .instrument(tracing::debug_span!("risk_api_call"))
            .await;
        guard.0 = None;
        if let Some(o) = &self.observer {
            let label = result.as_ref().map_or_else(FetchError::label, |_| "ok");
            o.api_call(label, started.elapsed());
        }
        match &result {
            Ok(_) | Err(FetchError::Rejected(_)) => self.breaker.on_success(),
            Err(_) => self.breaker.on_outage(),
        }
        let recommendation = result?;
        let ttl = self.ttl_for(action_token, &recommendation);
        Ok(Cached {
            recommendation: Arc::new(recommendation),
            ttl,
        })
    }

    /// The configured TTL, shortened to the token's own `exp` when it has one (read
    /// without verification: it can only shorten, never lengthen, the entry's life) and
    /// to the moment the action becomes too old to authorize anything.
    fn ttl_for(&self, action_token: &str, rec: &Recommendation) -> Duration {
        let now_ms = now_ms();
        let mut ttl = self.settings.ttl;
        if let Some(exp_s) = unverified_exp(action_token) {
            ttl = ttl.min(Duration::from_millis(
                u64::try_from(exp_s.saturating_mul(1000).saturating_sub(now_ms)).unwrap_or(0),
            ));
        }
        let stale_at = rec
            .action_performed_at_ms
            .saturating_add(i64::try_from(self.settings.max_age.as_millis()).unwrap_or(i64::MAX));
        ttl.min(Duration::from_millis(
            u64::try_from(stale_at.saturating_sub(now_ms)).unwrap_or(0),
        ))
    }

    /// Counts one authorized use of the action (`context.action_id`), refusing beyond
    /// `max_uses` or when the ledger is full of live actions (per replica).
    pub fn consume_use(&self, action_id: &str, max_uses: u32) -> Result<(), UseRefused> {
        self.uses.consume(action_id, max_uses)
    }

    /// Entries in the recommendation cache (approximate, for metrics).
    pub fn cached_entries(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `exp` (epoch seconds) of a JWT-shaped token, read without verification.
fn unverified_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::risk::recommendation::RecommendationType;
    use crate::risk::source::BoxFuture;
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
            reasons: vec![],
            threats: vec![],
            preview_rule: None,
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
        assert_eq!(again.recommendation.action_id, "act-1");
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
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
        assert_eq!(got.err(), Some(FetchError::Timeout));
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

    #[tokio::test]
    async fn rejected_tokens_never_trip_the_breaker() {
        let f = fake(0, Err(FetchError::Rejected(400)));
        let a = assessor(f.clone(), 60_000);
        for _ in 0..10 {
            assert_eq!(
                a.assess("t", None).await.err(),
                Some(FetchError::Rejected(400))
            );
        }
        assert_eq!(f.calls.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn uses_are_counted_per_action() {
        let a = assessor(fake(0, Ok(())), 60_000);
        assert_eq!(a.consume_use("act-1", 1), Ok(()));
        assert_eq!(a.consume_use("act-1", 1), Err(UseRefused::UsedUp));
        assert_eq!(a.consume_use("act-2", 1), Ok(()));
    }

    #[test]
    fn token_exp_only_shortens_the_ttl() {
        let a = assessor(fake(0, Ok(())), 60_000);
        let payload = |exp: i64| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::json!({ "exp": exp }).to_string())
        };
        let soon = format!("h.{}.s", payload(now_ms() / 1000 + 5));
        let ttl = a.ttl_for(&soon, &rec(now_ms()));
        assert!(
            ttl <= Duration::from_secs(5) && ttl > Duration::from_secs(3),
            "{ttl:?}"
        );
        let late = format!("h.{}.s", payload(now_ms() / 1000 + 100_000));
        assert_eq!(
            a.ttl_for(&late, &rec(now_ms())),
            Duration::from_millis(60_000)
        );
        assert_eq!(
            a.ttl_for("opaque", &rec(now_ms())),
            Duration::from_millis(60_000)
        );
    }
}
