//! OAuth2 client-credentials bearer for the risk API (`POST {host}/oidc/token`).
//!
//! A background task refreshes the token at `at_percent` of its lifetime (never sooner
//! than `min_interval` after the last one), so in steady state no Check waits for a
//! token. The client secret is re-read at every refresh (a rotated Kubernetes Secret is
//! picked up without a restart) and never appears in logs or errors.

use super::credentials::CredentialStatus;
use crate::config::TokenRefreshConfig;
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// A string that must not be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the client secret is read from, at every refresh.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// A mounted file (trailing whitespace trimmed).
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
    /// A value held in memory (tests).
    Value(Secret),
}

impl SecretSource {
    fn read(&self) -> Result<Secret, TokenError> {
        match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end().to_owned()))
                .map_err(|e| TokenError::Secret(format!("`{}`: {}", path.display(), e.kind()))),
            SecretSource::Env(name) => std::env::var(name).map(Secret).map_err(|_| {
                TokenError::Secret(format!("environment variable `{name}` is not set"))
            }),
            SecretSource::Value(s) => Ok(s.clone()),
        }
    }
}

/// Client credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// OAuth2 client id.
    pub client_id: String,
    /// Where to read the secret.
    pub secret: SecretSource,
    /// Optional `resource` parameter.
    pub resource: Option<String>,
}

/// Why no token could be obtained. Messages never contain the secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The secret could not be read.
    #[error("cannot read client secret: {0}")]
    Secret(String),
    /// Network failure or timeout.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// Non-2xx answer.
    #[error("token endpoint answered status {0}")]
    Status(u16),
    /// 2xx but not a token response.
    #[error("token endpoint answered an unusable body")]
    BadBody,
}

/// A bearer token and the generation it belongs to (to avoid redundant forced refreshes).
#[derive(Debug, Clone)]
pub struct Bearer {
    /// The `Authorization: Bearer` value.
    pub value: Secret,
    /// Increments at every refresh.
    pub generation: u64,
}

#[derive(Debug, Clone)]
struct Held {
    bearer: Bearer,
    obtained_at: Instant,
    lifetime: Duration,
}

impl Held {
    fn valid(&self) -> bool {
        self.obtained_at.elapsed() < self.lifetime
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Holds the current bearer token and refreshes it.
#[derive(Debug)]
pub struct TokenManager {
    http: reqwest::Client,
    token_url: String,
    credentials: Credentials,
    timing: TokenRefreshConfig,
    current: RwLock<Option<Held>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Whether the secret can be read (readiness, the credentials gauge).
    status: Arc<CredentialStatus>,
    /// The last secret read, used while the source is briefly unreadable (Secret swap).
    last_secret: RwLock<Option<Secret>>,
}

impl TokenManager {
    /// A manager for `{host_root}/oidc/token`; call [`TokenManager::spawn_refresher`] to keep it fresh.
    pub fn new(
        http: reqwest::Client,
        host_root: &str,
        credentials: Credentials,
        timing: TokenRefreshConfig,
    ) -> TokenManager {
        let manager = TokenManager {
            http,
            token_url: token_url(host_root),
            credentials,
            timing,
            current: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            status: Arc::new(CredentialStatus::default()),
            last_secret: RwLock::new(None),
        };
        // Read once now, so a readable secret makes the replica ready from the start.
        let _ = manager.secret();
        manager
    }

    /// The client secret's state (shared with `/readyz` and the metrics).
    pub fn credentials(&self) -> Arc<CredentialStatus> {
        self.status.clone()
    }

    /// Reads the secret, recording the result; falls back to the last good secret when
    /// the source is unreadable now.
    fn secret(&self) -> Result<Secret, TokenError> {
        match self.credentials.secret.read() {
            Ok(secret) => {
                self.status.observe(Ok(()));
                *self.last_secret.write().unwrap_or_else(|p| p.into_inner()) = Some(secret.clone());
                Ok(secret)
            }
            Err(e) => {
                self.status.observe(Err(&e));
                self.last_secret
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .ok_or(e)
            }
        }
    }

    fn held(&self) -> Option<Held> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A valid bearer: the held one, or a fresh one if none is valid.
    pub async fn bearer(&self) -> Result<Bearer, TokenError> {
        match self.held() {
            Some(h) if h.valid() => Ok(h.bearer),
            held => self.refresh(held.map(|h| h.bearer.generation)).await,
        }
    }

    /// Replaces the token the API just refused (`stale` generation), unless another task
    /// already did.
    pub async fn force_refresh(&self, stale: u64) -> Result<Bearer, TokenError> {
        self.refresh(Some(stale)).await
    }

    async fn refresh(&self, stale: Option<u64>) -> Result<Bearer, TokenError> {
        let _guard = self.refresh_lock.lock().await;
        if let Some(h) = self.held() {
            if h.valid() && Some(h.bearer.generation) != stale {
                return Ok(h.bearer); // refreshed by someone else while we waited
            }
        }
        let (value, lifetime) = self.request().await?;
        let generation = self.held().map_or(1, |h| h.bearer.generation + 1);
        let bearer = Bearer { value, generation };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Held {
            bearer: bearer.clone(),
            obtained_at: Instant::now(),
            lifetime,
        });
        tracing::debug!(
            generation,
            lifetime_ms = lifetime.as_millis() as u64,
            "risk api token refreshed"
        );
        Ok(bearer)
    }

    async fn request(&self) -> Result<(Secret, Duration), TokenError> {
        let secret = self.secret()?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", secret.expose()),
        ];
        if let Some(resource) = &self.credentials.resource {
            form.push(("resource", resource.as_str()));
        }
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .timeout(self.timing.timeout)
            .send()
            .await
            .map_err(|e| TokenError::Transport(transport_kind(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Status(status.as_u16()));
        }
        let body: TokenResponse = response.json().await.map_err(|_| TokenError::BadBody)?;
        if body.access_token.is_empty() {
            return Err(TokenError::BadBody);
        }
        // OAuth2 says expires_in is RECOMMENDED; without it assume a short life.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(1));
        Ok((Secret(body.access_token), lifetime))
    }

    /// When the held token should be replaced.
    fn next_refresh_in(&self) -> Duration {
        let Some(h) = self.held() else {
            return Duration::ZERO;
        };
        let due = h.lifetime * u32::from(self.timing.at_percent) / 100;
        let due = due.max(self.timing.min_interval);
        due.saturating_sub(h.obtained_at.elapsed())
    }

    /// Keeps the token fresh in the background until the manager is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<TokenManager> = Arc::downgrade(self);
        let retry = self.timing.retry;
        tokio::spawn(async move {
            loop {
                let Some(wait) = weak.upgrade().map(|m| m.next_refresh_in()) else {
                    return;
                };
                tokio::time::sleep(wait).await;
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                let stale = manager.held().map(|h| h.bearer.generation);
                if let Err(e) = manager.refresh(stale).await {
                    // An unreadable secret is logged once, when it becomes unreadable.
                    if !matches!(e, TokenError::Secret(_)) {
                        tracing::warn!(error = %e, "risk api token refresh failed; retrying");
                    }
                    drop(manager);
                    tokio::time::sleep(retry).await;
                }
            }
        })
    }
}

/// `{host_root}/oidc/token`.
pub fn token_url(host_root: &str) -> String {
    format!("{}/oidc/token", host_root.trim_end_matches('/'))
}

/// A short description of a reqwest failure without its URL or body.
pub(crate) fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "bad body".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_in_debug() {
        let creds = Credentials {
            client_id: "id".into(),
            secret: SecretSource::Value(Secret::new("hunter2")),
            resource: None,
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn token_url_is_under_the_host_root() {
        assert_eq!(
            token_url("https://api.transmitsecurity.io/"),
            "https://api.transmitsecurity.io/oidc/token"
        );
    }

    #[test]
    fn missing_secret_file_names_the_file_not_a_value() {
        let err = SecretSource::File("/nonexistent/secret".into()).read();
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/nonexistent/secret"), "{msg}");
    }
}
