//! Risk API configuration: where the recommendations come from, how long to wait for them,
//! how to treat outages, and how scores become bands.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Settings for the Transmit-compatible recommendations API. Every field has a default
/// ([`RiskConfig::default`]); `client_id` and `region` / `base_url` are checked by
/// [`RiskConfig::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// A documented region; ignored when `base_url` is set.
    pub region: Option<Region>,
    /// Host root of any compatible API, e.g. `http://127.0.0.1:8085` (no `/risk/v1`).
    pub base_url: Option<String>,
    /// OAuth2 client id (or `RISKGATE_RISK_CLIENT_ID`).
    pub client_id: Option<String>,
    /// File holding the client secret, re-read at every token refresh (Kubernetes Secret mount).
    /// `RISKGATE_RISK_CLIENT_SECRET` is the alternative; the secret is never inline.
    pub client_secret_file: Option<PathBuf>,
    /// Optional OAuth2 `resource` parameter.
    pub resource: Option<String>,
    /// Request header carrying the SDK's action token.
    pub token_header: String,
    /// Most time a Check spends waiting for the risk API (legacy `budget_ms`).
    #[serde(alias = "budget_ms", deserialize_with = "duration::millis")]
    pub budget: Duration,
    /// Time kept back from the Check's gRPC deadline for Cedar and the answer (legacy
    /// `deadline_reserve_ms`).
    #[serde(alias = "deadline_reserve_ms", deserialize_with = "duration::millis")]
    pub deadline_reserve: Duration,
    /// Recommendations for actions reported longer ago than this are refused (legacy
    /// `max_age_ms`).
    #[serde(alias = "max_age_ms", deserialize_with = "duration::millis")]
    pub max_age: Duration,
    /// How far the risk API's and the identity provider's clocks may run ahead of ours: an
    /// `action_performed_at` or an `auth_time` later than now plus this is refused (it would
    /// pass every age check for longer than allowed). Legacy spelling `clock_skew_ms`.
    #[serde(alias = "clock_skew_ms", deserialize_with = "duration::millis")]
    pub clock_skew: Duration,
    /// Largest response body accepted from the API.
    pub max_response_bytes: usize,
    /// Per-action recommendation cache.
    pub cache: CacheConfig,
    /// How long the API's 400/404/422 for a token is remembered, so a repeated bogus token
    /// does not reach the API again (`ttl: 0s` turns it off).
    pub negative_cache: NegativeCacheConfig,
    /// What an outage means for the answer (routes may override).
    pub fail_mode: FailMode,
    /// `retry-after` sent with a fail-closed 503, in whole seconds (legacy `retry_after_s`;
    /// a bare number is seconds).
    #[serde(alias = "retry_after_s", deserialize_with = "duration::secs")]
    pub retry_after: Duration,
    /// Score thresholds.
    pub bands: BandThresholds,
    /// Circuit breaker for the API.
    pub breaker: BreakerConfig,
    /// OAuth token refresh timing.
    pub token_refresh: TokenRefreshConfig,
    /// `x-risk-challenge` value when a CHALLENGE names no `challenge_type`.
    pub default_challenge: String,
    /// Sticky risk: after a principal's bound DENY or high-band recommendation, that
    /// principal's requests without an action token (on `risk: optional` routes) are
    /// treated as band high for this long, and an unanswered CHALLENGE answers them with
    /// the step-up 401 for at most this long. `0s` turns sticky risk off.
    #[serde(deserialize_with = "duration::millis")]
    pub sticky_window: Duration,
    /// Risk-API calls one source may cause per window (by principal when authenticated,
    /// else by client address); over it a Check gets 429 without an API call.
    pub call_budget: CallBudgetConfig,
    /// Most risk-API calls in flight at once per replica (0: no cap); over it a Check gets
    /// 503 + `retry-after` without an API call.
    pub max_concurrent_calls: u32,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            region: None,
            base_url: None,
            client_id: None,
            client_secret_file: None,
            resource: None,
            token_header: "x-action-token".into(),
            budget: Duration::from_millis(250),
            deadline_reserve: Duration::from_millis(20),
            max_age: Duration::from_secs(300),
            clock_skew: Duration::from_secs(60),
            max_response_bytes: 256 * 1024,
            cache: CacheConfig::default(),
            negative_cache: NegativeCacheConfig::default(),
            fail_mode: FailMode::default(),
            retry_after: Duration::from_secs(5),
            bands: BandThresholds::default(),
            breaker: BreakerConfig::default(),
            token_refresh: TokenRefreshConfig::default(),
            default_challenge: "step_up".into(),
            sticky_window: Duration::from_secs(15 * 60),
            call_budget: CallBudgetConfig::default(),
            max_concurrent_calls: 64,
        }
    }
}

/// Per-source budget of risk-API calls: at most `calls` per fixed `window` (aligned to the
/// clock, shared by the replicas of one state store). Cache hits cost nothing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallBudgetConfig {
    /// Calls per window and source (0: no budget).
    pub calls: u32,
    /// The window (at least 1s; a bare number is milliseconds).
    #[serde(deserialize_with = "duration::millis")]
    pub window: Duration,
}

impl Default for CallBudgetConfig {
    fn default() -> Self {
        CallBudgetConfig {
            calls: 60,
            window: Duration::from_secs(60),
        }
    }
}

/// The documented API regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// `api.sbx.transmitsecurity.io`
    Sandbox,
    /// `api.transmitsecurity.io`
    Us,
    /// `api.eu.transmitsecurity.io`
    Eu,
    /// `api.ca.transmitsecurity.io`
    Ca,
    /// `api.au.transmitsecurity.io`
    Au,
}

impl Region {
    /// The region's host root (the API paths are appended to it).
    pub fn host_root(self) -> &'static str {
        match self {
            Region::Sandbox => "https://api.sbx.transmitsecurity.io",
            Region::Us => "https://api.transmitsecurity.io",
            Region::Eu => "https://api.eu.transmitsecurity.io",
            Region::Ca => "https://api.ca.transmitsecurity.io",
            Region::Au => "https://api.au.transmitsecurity.io",
        }
    }
}

/// Recommendation cache sizing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Entry lifetime (legacy `ttl_ms`).
    #[serde(alias = "ttl_ms", deserialize_with = "duration::millis")]
    pub ttl: Duration,
    /// Most entries kept.
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(300),
            max_entries: 100_000,
        }
    }
}

/// Negative cache sizing: the API's 400/404/422 per token (never 401/403/429 or outages).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NegativeCacheConfig {
    /// Entry lifetime; short, as a rejection is cheap to ask again about.
    #[serde(deserialize_with = "duration::millis")]
    pub ttl: Duration,
    /// Most entries kept (bounds the memory a flood of random tokens can take).
    pub max_entries: u64,
}

impl Default for NegativeCacheConfig {
    fn default() -> Self {
        NegativeCacheConfig {
            ttl: Duration::from_secs(30),
            max_entries: 100_000,
        }
    }
}

/// Behaviour when the risk API is unavailable; defined with the rule that applies it.
pub use crate::decide::risk::FailMode;

/// Score → band thresholds: low `[0, medium_from)`, medium `[medium_from, high_from)`,
/// high `[high_from, 100]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandThresholds {
    /// First score that is medium.
    pub medium_from: f64,
    /// First score that is high.
    pub high_from: f64,
}

impl Default for BandThresholds {
    fn default() -> Self {
        BandThresholds {
            medium_from: 40.0,
            high_from: 80.0,
        }
    }
}

/// Circuit breaker thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive outages that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one half-open probe is let through (legacy
    /// `open_ms`).
    #[serde(alias = "open_ms", deserialize_with = "duration::millis")]
    pub open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open: Duration::from_secs(10),
        }
    }
}

/// OAuth2 token refresh timing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenRefreshConfig {
    /// Refresh when this share (percent) of the token's lifetime has passed.
    pub at_percent: u8,
    /// Never refresh sooner than this after the previous refresh (floor for short
    /// lifetimes; legacy `min_interval_ms`).
    #[serde(alias = "min_interval_ms", deserialize_with = "duration::millis")]
    pub min_interval: Duration,
    /// Wait before retrying a failed refresh (legacy `retry_ms`).
    #[serde(alias = "retry_ms", deserialize_with = "duration::millis")]
    pub retry: Duration,
    /// Timeout of one token request (legacy `timeout_ms`).
    #[serde(alias = "timeout_ms", deserialize_with = "duration::millis")]
    pub timeout: Duration,
}

impl Default for TokenRefreshConfig {
    fn default() -> Self {
        TokenRefreshConfig {
            at_percent: 80,
            min_interval: Duration::from_secs(1),
            retry: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

impl RiskConfig {
    /// The API host root, from `base_url` or `region`, without a trailing `/` and
    /// without a `/risk/v1` suffix (the client appends the paths itself).
    pub fn host_root(&self) -> Result<String, ConfigError> {
        let raw = match (&self.base_url, self.region) {
            (Some(url), _) => url.as_str(),
            (None, Some(region)) => region.host_root(),
            (None, None) => {
                return Err(ConfigError::field(
                    "risk.region",
                    "set `region` (sandbox, us, eu, ca, au) or `base_url`",
                ))
            }
        };
        let trimmed = raw.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/risk/v1").unwrap_or(trimmed);
        // The client secret and bearer tokens travel to this host: plain http only to a
        // loopback simulator.
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|prefix| {
                trimmed.strip_prefix(prefix).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with(':') || rest.starts_with('/')
                })
            });
        if !(trimmed.starts_with("https://") || loopback) {
            return Err(ConfigError::field(
                "risk.base_url",
                format!("`{raw}` must be an https URL (plain http only for loopback)"),
            ));
        }
        Ok(trimmed.to_owned())
    }

    pub(super) fn apply_env(
        &mut self,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = lookup("RISKGATE_RISK_CLIENT_ID") {
            self.client_id = Some(v);
        }
        if let Some(v) = lookup("RISKGATE_RISK_BASE_URL") {
            self.base_url = Some(v);
        }
        if let Some(v) = lookup("RISKGATE_RISK_CLIENT_SECRET_FILE") {
            self.client_secret_file = Some(PathBuf::from(v));
        }
        Ok(())
    }

    /// Field-level checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.host_root()?;
        if self.client_id.as_deref().unwrap_or("").is_empty() {
            return Err(ConfigError::field(
                "risk.client_id",
                "required (or set RISKGATE_RISK_CLIENT_ID)",
            ));
        }
        let b = self.bands;
        if !(b.medium_from > 0.0 && b.medium_from <= b.high_from && b.high_from <= 100.0) {
            return Err(ConfigError::field(
                "risk.bands",
                format!(
                    "need 0 < medium_from <= high_from <= 100, got {} and {}",
                    b.medium_from, b.high_from
                ),
            ));
        }
        if self.budget.is_zero() {
            return Err(ConfigError::field("risk.budget", "must be positive"));
        }
        if self.token_header.is_empty() || self.token_header.contains(char::is_whitespace) {
            return Err(ConfigError::field(
                "risk.token_header",
                "must be a header name",
            ));
        }
        if self.cache.max_entries == 0 || self.cache.ttl.is_zero() {
            return Err(ConfigError::field(
                "risk.cache",
                "`ttl` and `max_entries` must be positive",
            ));
        }
        if !self.negative_cache.ttl.is_zero() && self.negative_cache.max_entries == 0 {
            return Err(ConfigError::field(
                "risk.negative_cache.max_entries",
                "must be positive (or set `ttl: 0s` to turn the negative cache off)",
            ));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(ConfigError::field(
                "risk.breaker.failure_threshold",
                "must be at least 1",
            ));
        }
        if self.call_budget.calls > 0
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400))
                .contains(&self.call_budget.window)
        {
            return Err(ConfigError::field(
                "risk.call_budget.window",
                "must be between 1s and 24h (or set `calls: 0` to turn the budget off)",
            ));
        }
        if self.max_concurrent_calls > 100_000 {
            return Err(ConfigError::field(
                "risk.max_concurrent_calls",
                format!(
                    "{} is over 100000 (0 turns the cap off)",
                    self.max_concurrent_calls
                ),
            ));
        }
        let pct = self.token_refresh.at_percent;
        if !(10..=95).contains(&pct) {
            return Err(ConfigError::field(
                "risk.token_refresh.at_percent",
                format!("{pct} is outside 10..=95"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(region: Option<Region>, base_url: Option<&str>) -> RiskConfig {
        let mut c: RiskConfig = match serde_yaml_ng::from_str("client_id: x") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        c.region = region;
        c.base_url = base_url.map(String::from);
        c
    }

    #[test]
    fn regions_map_to_documented_host_roots() -> Result<(), ConfigError> {
        let cases = [
            (Region::Sandbox, "https://api.sbx.transmitsecurity.io"),
            (Region::Us, "https://api.transmitsecurity.io"),
            (Region::Eu, "https://api.eu.transmitsecurity.io"),
            (Region::Ca, "https://api.ca.transmitsecurity.io"),
            (Region::Au, "https://api.au.transmitsecurity.io"),
        ];
        for (region, root) in cases {
            assert_eq!(with(Some(region), None).host_root()?, root);
        }
        Ok(())
    }

    #[test]
    fn base_url_with_api_prefix_is_not_doubled() -> Result<(), ConfigError> {
        let c = with(None, Some("https://api.sbx.transmitsecurity.io/risk/v1/"));
        assert_eq!(c.host_root()?, "https://api.sbx.transmitsecurity.io");
        let c = with(Some(Region::Us), Some("http://127.0.0.1:8085/"));
        assert_eq!(c.host_root()?, "http://127.0.0.1:8085");
        Ok(())
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:8085",
            "http://localhost:1",
            "http://[::1]:9",
            "https://risk.example",
        ] {
            assert!(with(None, Some(ok)).host_root().is_ok(), "{ok}");
        }
        for bad in [
            "http://risk.example",
            "http://127.0.0.1.evil.example",
            "ftp://x",
        ] {
            let msg = with(None, Some(bad))
                .host_root()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains("risk.base_url"), "{bad}: {msg}");
        }
    }

    #[test]
    fn missing_region_names_the_field() {
        let msg = with(None, None)
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("risk.region"), "{msg}");
    }

    #[test]
    fn call_budget_and_concurrency_are_validated_naming_the_field() {
        let msg = |c: &RiskConfig| {
            c.validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let mut c = with(Some(Region::Us), None);
        assert_eq!(c.call_budget.calls, 60, "on by default");
        assert!(c.max_concurrent_calls > 0, "on by default");
        c.call_budget.window = Duration::from_millis(500);
        assert!(msg(&c).contains("risk.call_budget.window"), "{}", msg(&c));
        c.call_budget.calls = 0;
        assert!(c.validate().is_ok(), "no budget: the window is unused");
        c.max_concurrent_calls = 1_000_000;
        assert!(msg(&c).contains("risk.max_concurrent_calls"), "{}", msg(&c));
    }

    #[test]
    fn call_budget_parses_from_yaml() {
        let c: RiskConfig = match serde_yaml_ng::from_str(
            "call_budget: { calls: 5, window: 2m }\nmax_concurrent_calls: 0",
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.call_budget.calls, 5);
        assert_eq!(c.call_budget.window, Duration::from_secs(120));
        assert_eq!(c.max_concurrent_calls, 0);
    }

    #[test]
    fn inverted_bands_are_rejected() {
        let mut c = with(Some(Region::Us), None);
        c.bands = BandThresholds {
            medium_from: 80.0,
            high_from: 40.0,
        };
        let msg = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("risk.bands"), "{msg}");
    }
}
