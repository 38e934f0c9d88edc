//! Per-action recommendation cache in front of a [`RiskSource`], with single flight, the
//! circuit breaker and the time budget.
//!
//! A fetch is a task of its own: it runs with the full budget whoever started it, fills the
//! cache and answers every Check waiting for it. A Check that stops waiting — its client
//! hung up, or its deadline is shorter than the budget — neither cancels the fetch nor
//! counts as a failure; only the API's own faults (the budget exceeded, connect errors,
//! 5xx, garbage) reach the breaker.
//!
//! The cache key is the SHA-256 of the action token: one token stands for one reported
//! action, and a claim decoded from the token without verification could be forged to
//! reach another action's cached answer. Only recommendations are cached, never decisions;
//! the one error cached is the API's verdict that a token is bogus (400, 404, 422), in a
//! second, short-lived cache under the same key, so repeating a bogus token costs one API
//! call per `negative_ttl` instead of one per Check. Outages, 401, 403 and 429 are never
//! cached: they say nothing final about the token.
//!
//! At most `risk.max_concurrent_calls` API calls are out at once; a fetch over the cap is
//! not made ([`FetchError::Busy`]). Neither that nor the API's own 429
//! ([`FetchError::Throttled`]) is reported to the breaker: back-pressure is not an outage,
//! and counting it would let a flood of bogus tokens open the breaker for everyone.

use super::breaker::Breaker;
use super::compact::CompactRecommendation;
use super::intern::Interner;
use super::recommendation::Recommendation;
use super::source::{BoxFuture, FetchError, RiskSource};
use crate::clock::now_ms;
use crate::state::{reccache, StateStore};
use base64::Engine as _;
use futures_util::future::{FutureExt as _, Shared};
use moka::Expiry;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

/// Default `risk.max_concurrent_calls`.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 64;

/// SHA-256 of an action token.
pub type TokenKey = [u8; 32];

/// Hashes an action token into its cache key.
pub fn token_key(action_token: &str) -> TokenKey {
    Sha256::digest(action_token.as_bytes()).into()
}

/// A cache entry: the recommendation in its compact form (one shared allocation, decoded
/// on a hit), and how long it lives.
#[derive(Debug, Clone)]
struct Cached {
    recommendation: CompactRecommendation,
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

    /// A fetch was answered by the shared (L2) cache: another replica had asked the API.
    fn shared_cache_hit(&self) {}
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
    /// How long a 400/404/422 for a token is remembered (zero: not at all).
    pub negative_ttl: Duration,
    /// Negative cache capacity.
    pub negative_max_entries: u64,
}

/// API statuses that are a final word on the token itself, and so are negatively cached.
const CACHED_REJECTIONS: [u16; 3] = [400, 404, 422];

/// Tokens the API called bogus, by key, with the status it gave.
type NegativeCache = moka::future::Cache<TokenKey, u16>;

/// One fetch's answer, shared by every Check waiting for it.
type SharedFetch = Shared<BoxFuture<'static, Result<Arc<Recommendation>, FetchError>>>;

/// Fetches in flight, by token key: a Check that misses the cache joins the running fetch
/// for its token instead of starting another.
type InFlight = Arc<Mutex<HashMap<TokenKey, SharedFetch>>>;

/// Cached, budgeted, breaker-protected access to recommendations.
pub struct Assessor {
    fetcher: Arc<Fetcher>,
    cache: moka::future::Cache<TokenKey, Cached>,
    negative: Option<NegativeCache>,
    negative_hits: AtomicU64,
    in_flight: InFlight,
    settings: AssessorSettings,
    /// Cleans the caches of expired entries on a timer (aborted with the assessor).
    _housekeeper: Option<AbortOnDrop>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often expired entries are removed when no Check touches the cache (moka only cleans
/// up while it is used): an idle replica gives its expired entries back within this.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(5);

/// What a detached fetch task needs: the source, the breaker, the budget, the observer and
/// the shared cache, if any.
#[derive(Clone)]
struct Fetcher {
    source: Arc<dyn RiskSource>,
    breaker: Arc<Breaker>,
    budget: Duration,
    observer: Option<Arc<dyn RiskObserver>>,
    /// The L2 cache shared by all replicas (`state.share_recommendations`).
    shared: Option<Arc<dyn StateStore>>,
    /// Permits for API calls in flight (`risk.max_concurrent_calls`); `None`: no cap.
    permits: Option<Arc<Semaphore>>,
    /// Shares the repeating codes of cached recommendations between entries.
    interner: Arc<Interner>,
}

impl std::fmt::Debug for Assessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assessor")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Records an outage if a fetch task is dropped before it reported (the runtime is
/// shutting down), so the breaker never keeps a half-open probe it will not hear back from.
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
        let negative = (!settings.negative_ttl.is_zero() && settings.negative_max_entries > 0)
            .then(|| {
                moka::future::Cache::builder()
                    .max_capacity(settings.negative_max_entries)
                    .time_to_live(settings.negative_ttl)
                    .build()
            });
        Assessor {
            fetcher: Arc::new(Fetcher {
                source,
                breaker,
                budget: settings.budget,
                observer,
                shared: None,
                permits: Some(Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_CALLS))),
                interner: Arc::default(),
            }),
            _housekeeper: housekeeper(&cache, &negative, HOUSEKEEPING_EVERY),
            cache,
            negative,
            negative_hits: AtomicU64::new(0),
            in_flight: Arc::default(),
            settings,
        }
    }

    /// Shares recommendations with other replicas through `store` (an L2 behind the moka
    /// cache, keyed by the token's SHA-256, with the same TTL rules): a token assessed on one
    /// replica is not fetched again on another. Part of building the assessor.
    pub fn with_shared_cache(mut self, store: Arc<dyn StateStore>) -> Assessor {
        let mut fetcher = (*self.fetcher).clone();
        fetcher.shared = Some(store);
        self.fetcher = Arc::new(fetcher);
        self
    }

    /// Caps the API calls in flight at `max` (`risk.max_concurrent_calls`; 0: no cap). A
    /// fetch over the cap fails with [`FetchError::Busy`] without calling. Part of building
    /// the assessor (the default is [`DEFAULT_MAX_CONCURRENT_CALLS`]).
    pub fn with_max_concurrent_calls(mut self, max: usize) -> Assessor {
        let mut fetcher = (*self.fetcher).clone();
        fetcher.permits =
            (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))));
        self.fetcher = Arc::new(fetcher);
        self
    }

    /// Whether assessing `action_token` now would start an API call — a miss in the
    /// recommendation and the negative cache with no fetch for it in flight — so the caller
    /// can charge its call budget first. Cheap: no cache read is recorded. A fetch that the
    /// shared cache then answers was still charged.
    pub fn needs_call(&self, action_token: &str) -> bool {
        let key = token_key(action_token);
        let known = self.cache.contains_key(&key)
            || self
                .negative
                .as_ref()
                .is_some_and(|negative| negative.contains_key(&key));
        !known
            && !self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&key)
    }

    /// Removes expired entries every `every` instead of [`HOUSEKEEPING_EVERY`] (tests).
    pub fn with_housekeeping(mut self, every: Duration) -> Assessor {
        self._housekeeper = housekeeper(&self.cache, &self.negative, every);
        self
    }

    /// The breaker (for metrics).
    pub fn breaker(&self) -> &Breaker {
        &self.fetcher.breaker
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

    /// The cached recommendation for `action_token`, if any: a peek that never calls the
    /// API (for the stages that decide whether a call is worth making).
    pub async fn cached(&self, action_token: &str) -> Option<Assessment> {
        let hit = self.cache_get(&token_key(action_token)).await?;
        Some(Assessment {
            recommendation: hit,
            cache_hit: true,
        })
    }

    /// The status the API rejected `action_token` with, if that rejection is still
    /// remembered: a peek (not counted as a negative-cache hit) that never calls the API.
    pub async fn rejected(&self, action_token: &str) -> Option<u16> {
        self.negative.as_ref()?.get(&token_key(action_token)).await
    }

    /// The recommendation for `action_token`, from the cache or the API.
    ///
    /// A miss joins the fetch in flight for the token, or starts one. This Check waits at
    /// most [`Self::budget_for`] its deadline; when that is shorter than the budget and
    /// runs out, it gets [`FetchError::CallerDeadline`] while the fetch goes on.
    pub async fn assess(
        &self,
        action_token: &str,
        deadline: Option<Duration>,
    ) -> Result<Assessment, FetchError> {
        let key = token_key(action_token);
        if let Some(hit) = self.cache_get(&key).await {
            return Ok(Assessment {
                recommendation: hit,
                cache_hit: true,
            });
        }
        if let Some(negative) = &self.negative {
            if let Some(status) = negative.get(&key).await {
                self.negative_hits.fetch_add(1, Ordering::Relaxed);
                return Err(FetchError::Rejected(status));
            }
        }
        let wait = self.budget_for(deadline);
        if wait.is_zero() {
            return Err(FetchError::CallerDeadline);
        }
        let fetch = self.join_or_start(key, action_token);
        let result = if wait >= self.settings.budget {
            // the fetch itself ends within the budget
            fetch.await
        } else {
            tokio::time::timeout(wait, fetch)
                .await
                .unwrap_or(Err(FetchError::CallerDeadline))
        };
        result.map(|recommendation| Assessment {
            recommendation,
            cache_hit: false,
        })
    }

    /// The cached recommendation under `key`, decoded. An entry that does not decode (it
    /// cannot happen: this assessor encoded it) is a miss.
    async fn cache_get(&self, key: &TokenKey) -> Option<Arc<Recommendation>> {
        let cached = self.cache.get(key).await?;
        cached
            .recommendation
            .decode(&self.fetcher.interner)
            .map(Arc::new)
    }

    /// The fetch in flight for `key`, or a new detached one.
    fn join_or_start(&self, key: TokenKey, action_token: &str) -> SharedFetch {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = in_flight.get(&key) {
            return running.clone();
        }
        let task = tokio::spawn(fetch_task(
            self.fetcher.clone(),
            self.cache.clone(),
            self.negative.clone(),
            self.in_flight.clone(),
            key,
            action_token.to_owned(),
            self.settings.clone(),
        ));
        let shared: SharedFetch = async move { task.await.unwrap_or(Err(FetchError::Aborted)) }
            .boxed()
            .shared();
        in_flight.insert(key, shared.clone());
        shared
    }

    /// Entries in the recommendation cache (approximate, for metrics).
    pub fn cached_entries(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs both caches' pending housekeeping now: removes expired entries (freeing their
    /// memory) and applies pending evictions. moka does this only while the cache is used.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
        if let Some(negative) = &self.negative {
            negative.run_pending_tasks().await;
        }
    }

    /// Checks answered from the negative cache without an API call (for metrics).
    pub fn negative_cache_hits(&self) -> u64 {
        self.negative_hits.load(Ordering::Relaxed)
    }
}

/// A task removing expired entries `every` so often ([`HOUSEKEEPING_EVERY`]), when built inside a Tokio
/// runtime (outside one, moka still cleans up as the cache is used).
fn housekeeper(
    cache: &moka::future::Cache<TokenKey, Cached>,
    negative: &Option<NegativeCache>,
    every: Duration,
) -> Option<AbortOnDrop> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (cache, negative) = (cache.clone(), negative.clone());
    let task = async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            cache.run_pending_tasks().await;
            if let Some(negative) = &negative {
                negative.run_pending_tasks().await;
            }
        }
    };
    Some(AbortOnDrop(runtime.spawn(task.instrument(
        tracing::debug_span!("risk_cache_housekeeping"),
    ))))
}

/// One API call with the full budget, run as its own task: it reports to the breaker and
/// the observer, fills the cache on success (the negative cache on a 400/404/422) and
/// leaves the in-flight map when done — after filling, so no Check slips between the two.
async fn fetch_task(
    fetcher: Arc<Fetcher>,
    cache: moka::future::Cache<TokenKey, Cached>,
    negative: Option<NegativeCache>,
    in_flight: InFlight,
    key: TokenKey,
    action_token: String,
    settings: AssessorSettings,
) -> Result<Arc<Recommendation>, FetchError> {
    let started = Instant::now();
    let shared_hit = fetcher.shared_get(&action_token).await;
    let from_api = shared_hit.is_none();
    let result = match shared_hit {
        Some(recommendation) => Ok(recommendation),
        None => {
            let left = fetcher.budget.saturating_sub(started.elapsed());
            fetcher.call(&action_token, left).await
        }
    }
    .map(|rec| Arc::new(rec.interned(&fetcher.interner)));
    if let Ok(recommendation) = &result {
        let ttl = ttl_for(&settings, &action_token, recommendation);
        if from_api {
            fetcher.share(action_token.clone(), recommendation.clone(), ttl);
        }
        let cached = Cached {
            recommendation: CompactRecommendation::encode(recommendation, &fetcher.interner),
            ttl,
        };
        cache.insert(key, cached).await;
    }
    if let (Err(FetchError::Rejected(status)), Some(negative)) = (&result, &negative) {
        if CACHED_REJECTIONS.contains(status) {
            negative.insert(key, *status).await;
        }
    }
    in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    result
}

impl Fetcher {
    /// The recommendation another replica shared for this token, if any. Bounded by a fifth
    /// of the budget (the API call gets the rest); a store error is a miss, never an outage.
    async fn shared_get(&self, action_token: &str) -> Option<Recommendation> {
        let store = self.shared.as_deref()?;
        let lookup = tokio::time::timeout(self.budget / 5, reccache::get(store, action_token));
        match lookup.await {
            Ok(Ok(Some(recommendation))) => {
                if let Some(o) = &self.observer {
                    o.shared_cache_hit();
                }
                Some(recommendation)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared recommendation cache unavailable: asking the api");
                None
            }
            Err(_) => None,
        }
    }

    /// Shares a fresh recommendation with the other replicas for `ttl`, in the background:
    /// the Checks waiting for it do not wait for the store.
    fn share(&self, action_token: String, recommendation: Arc<Recommendation>, ttl: Duration) {
        let Some(store) = self.shared.clone() else {
            return;
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = reccache::put(&*store, &action_token, &recommendation, ttl_ms).await {
                tracing::debug!(error = %e, "could not share a recommendation");
            }
        });
    }

    /// Asks the source within `budget`, behind the concurrency cap and the breaker. Only
    /// outages are reported to the breaker: a rejected token is the API answering, and the
    /// cap's overflow and the API's 429 are back-pressure (the breaker hears nothing).
    async fn call(
        &self,
        action_token: &str,
        budget: Duration,
    ) -> Result<Recommendation, FetchError> {
        let _permit = match &self.permits {
            Some(permits) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Err(FetchError::Busy),
            },
            None => None,
        };
        if !self.breaker.try_acquire() {
            return Err(FetchError::BreakerOpen);
        }
        let mut guard = OutcomeGuard(Some(&self.breaker));
        let started = Instant::now();
        let result = tokio::time::timeout(budget, self.source.fetch(action_token))
            .instrument(tracing::debug_span!("risk_api_call"))
            .await
            .unwrap_or(Err(FetchError::Timeout));
        guard.0 = None;
        if let Some(o) = &self.observer {
            let label = result.as_ref().map_or_else(FetchError::label, |_| "ok");
            o.api_call(label, started.elapsed());
        }
        match &result {
            Ok(_) | Err(FetchError::Rejected(_)) => self.breaker.on_success(),
            Err(e) if e.is_outage() => self.breaker.on_outage(),
            Err(_) => {}
        }
        result
    }
}

/// The configured TTL, shortened to the token's own `exp` when it has one (read without
/// verification: it can only shorten, never lengthen, the entry's life) and to the moment
/// the action becomes too old to authorize anything.
fn ttl_for(settings: &AssessorSettings, action_token: &str, rec: &Recommendation) -> Duration {
    let now_ms = now_ms();
    let mut ttl = settings.ttl;
    if let Some(exp_s) = unverified_exp(action_token) {
        ttl = ttl.min(Duration::from_millis(
            u64::try_from(exp_s.saturating_mul(1000).saturating_sub(now_ms)).unwrap_or(0),
        ));
    }
    let stale_at = rec
        .action_performed_at_ms
        .saturating_add(i64::try_from(settings.max_age.as_millis()).unwrap_or(i64::MAX));
    ttl.min(Duration::from_millis(
        u64::try_from(stale_at.saturating_sub(now_ms)).unwrap_or(0),
    ))
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
mod tests;
