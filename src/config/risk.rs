//! Risk API configuration: where the recommendations come from, how long to wait for them,
//! how to treat outages, and how scores become bands.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// Settings for the Transmit-compatible recommendations API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// A documented region; ignored when `base_url` is set.
    #[serde(default)]
    pub region: Option<Region>,
    /// Host root of any compatible API, e.g. `http://127.0.0.1:8085` (no `/risk/v1`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// OAuth2 client id (or `RISKGATE_RISK_CLIENT_ID`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// File holding the client secret, re-read at every token refresh (Kubernetes Secret mount).
    /// `RISKGATE_RISK_CLIENT_SECRET` is the alternative; the secret is never inline.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Optional OAuth2 `resource` parameter.
    #[serde(default)]
    pub resource: Option<String>,
    /// Request header carrying the SDK's action token.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// Most time a Check spends waiting for the risk API.
    #[serde(default = "default_budget_ms")]
    pub budget_ms: u64,
    /// Time kept back from the Check's gRPC deadline for Cedar and the answer.
    #[serde(default = "default_reserve_ms")]
    pub deadline_reserve_ms: u64,
    /// Recommendations for actions reported longer ago than this are refused.
    #[serde(default = "default_max_age_ms")]
    pub max_age_ms: u64,
    /// Largest response body accepted from the API.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Per-action recommendation cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// What an outage means for the answer (routes may override).
    #[serde(default)]
    pub fail_mode: FailMode,
    /// `retry-after` seconds sent with a fail-closed 503.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u32,
    /// Score thresholds.
    #[serde(default)]
    pub bands: BandThresholds,
    /// Circuit breaker for the API.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// OAuth token refresh timing.
    #[serde(default)]
    pub token_refresh: TokenRefreshConfig,
    /// `x-risk-challenge` value when a CHALLENGE names no `challenge_type`.
    #[serde(default = "default_challenge")]
    pub default_challenge: String,
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
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Entry lifetime.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
    /// Most entries kept.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_ms: default_ttl_ms(),
            max_entries: default_max_entries(),
        }
    }
}

/// Behaviour when the risk API is unavailable; defined with the rule that applies it.
pub use crate::decide::risk::FailMode;

/// Score → band thresholds: low `[0, medium_from)`, medium `[medium_from, high_from)`,
/// high `[high_from, 100]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandThresholds {
    /// First score that is medium.
    #[serde(default = "default_medium_from")]
    pub medium_from: f64,
    /// First score that is high.
    #[serde(default = "default_high_from")]
    pub high_from: f64,
}

impl Default for BandThresholds {
    fn default() -> Self {
        BandThresholds {
            medium_from: default_medium_from(),
            high_from: default_high_from(),
        }
    }
}

/// Circuit breaker thresholds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive outages that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the breaker stays open before one half-open probe is let through.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: default_failure_threshold(),
            open_ms: default_open_ms(),
        }
    }
}

/// OAuth2 token refresh timing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRefreshConfig {
    /// Refresh when this share (percent) of the token's lifetime has passed.
    #[serde(default = "default_refresh_percent")]
    pub at_percent: u8,
    /// Never refresh sooner than this after the previous refresh (floor for short lifetimes).
    #[serde(default = "default_min_interval_ms")]
    pub min_interval_ms: u64,
    /// Wait before retrying a failed refresh.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    /// Timeout of one token request.
    #[serde(default = "default_token_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for TokenRefreshConfig {
    fn default() -> Self {
        TokenRefreshConfig {
            at_percent: default_refresh_percent(),
            min_interval_ms: default_min_interval_ms(),
            retry_ms: default_retry_ms(),
            timeout_ms: default_token_timeout_ms(),
        }
    }
}

fn default_token_header() -> String {
    "x-action-token".into()
}
fn default_budget_ms() -> u64 {
    250
}
fn default_reserve_ms() -> u64 {
    20
}
fn default_max_age_ms() -> u64 {
    300_000
}
fn default_max_response_bytes() -> usize {
    256 * 1024
}
fn default_retry_after_s() -> u32 {
    5
}
fn default_challenge() -> String {
    "step_up".into()
}
fn default_ttl_ms() -> u64 {
    300_000
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_medium_from() -> f64 {
    40.0
}
fn default_high_from() -> f64 {
    80.0
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_open_ms() -> u64 {
    10_000
}
fn default_refresh_percent() -> u8 {
    80
}
fn default_min_interval_ms() -> u64 {
    1_000
}
fn default_retry_ms() -> u64 {
    1_000
}
fn default_token_timeout_ms() -> u64 {
    5_000
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
        if self.budget_ms == 0 {
            return Err(ConfigError::field("risk.budget_ms", "must be positive"));
        }
        if self.token_header.is_empty() || self.token_header.contains(char::is_whitespace) {
            return Err(ConfigError::field(
                "risk.token_header",
                "must be a header name",
            ));
        }
        if self.cache.max_entries == 0 || self.cache.ttl_ms == 0 {
            return Err(ConfigError::field(
                "risk.cache",
                "`ttl_ms` and `max_entries` must be positive",
            ));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(ConfigError::field(
                "risk.breaker.failure_threshold",
                "must be at least 1",
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
