//! Getting a recommendation: the Transmit-compatible recommendations client, its OAuth
//! token, the per-action cache with single flight, and the breaker. What a recommendation
//! *means* for a request (binding, bands, fail modes, uses) is the decision's business:
//! [`crate::decide::risk`].
//!
//! ```text
//! decide::risk ──► Assessor (moka cache, single flight, concurrency cap, breaker, budget)
//!                 └──► dyn RiskSource ──► TransmitClient ──► GET {host}/risk/v1/recommendation
//!                                              └──► TokenManager ──► POST {host}/oidc/token
//! ```

pub mod assessor;
pub mod breaker;
pub mod client;
pub mod compact;
pub mod credentials;
pub mod intern;
pub mod reasons;
pub mod recommendation;
pub mod source;
pub mod token;

pub use assessor::{Assessment, Assessor, AssessorSettings, RiskObserver, TokenKey};
pub use breaker::Breaker;
pub use recommendation::{Recommendation, RecommendationType};
pub use source::{FetchError, RiskSource};

use crate::config::{ConfigError, RiskConfig};
use std::sync::Arc;
use std::time::Duration;
use token::{Credentials, SecretSource, TokenManager};

/// Builds the production assessor for `config`: reqwest client, token manager (with its
/// background refresher started) and the Transmit client behind the cache, reporting its
/// API calls to `observer`.
pub fn build_assessor(
    config: &RiskConfig,
    observer: Option<Arc<dyn RiskObserver>>,
) -> Result<(Assessor, Arc<TokenManager>), ConfigError> {
    let root = config.host_root()?;
    let http = reqwest::Client::builder()
        .connect_timeout(config.budget.max(Duration::from_secs(1)))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ConfigError::field("risk", format!("cannot build http client: {e}")))?;
    let secret = match &config.client_secret_file {
        Some(path) => SecretSource::File(path.clone()),
        None => SecretSource::Env("RISKGATE_RISK_CLIENT_SECRET".into()),
    };
    let credentials = Credentials {
        client_id: config.client_id.clone().unwrap_or_default(),
        secret,
        resource: config.resource.clone(),
    };
    let tokens = Arc::new(TokenManager::new(
        http.clone(),
        &root,
        credentials,
        config.token_refresh.clone(),
    ));
    tokens.spawn_refresher();
    let client =
        client::TransmitClient::new(http, &root, tokens.clone(), config.max_response_bytes);
    let breaker = Arc::new(Breaker::new(
        config.breaker.failure_threshold,
        config.breaker.open,
    ));
    let max_concurrent = usize::try_from(config.max_concurrent_calls).unwrap_or(usize::MAX);
    let assessor = Assessor::new(Arc::new(client), breaker, settings_from(config), observer)
        .with_max_concurrent_calls(max_concurrent);
    Ok((assessor, tokens))
}

/// Assessor timing from config.
pub fn settings_from(config: &RiskConfig) -> AssessorSettings {
    AssessorSettings {
        budget: config.budget,
        deadline_reserve: config.deadline_reserve,
        ttl: config.cache.ttl,
        max_age: config.max_age,
        max_entries: config.cache.max_entries,
        negative_ttl: config.negative_cache.ttl,
        negative_max_entries: config.negative_cache.max_entries,
    }
}
