//! The simulator's mutable state, shared by the HTTP handlers and [`super::SimHandle`].
//!
//! Everything that changes (script, tokens, counters, outage switch) sits behind one mutex, so a
//! request sees and updates it in one step and never observes it half-changed. Critical sections
//! are short and never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::script::Script;
use super::tokens::TokenStore;

/// Counters of what the simulator has answered, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Every `POST /oidc/token`, successful or not.
    pub token_requests: u64,
    /// Every `GET /risk/v1/recommendation`, whatever the answer.
    pub recommendation_requests: u64,
    /// Every 401 answered, by either endpoint.
    pub unauthorized: u64,
    /// Recommendation calls per `action_token` (counted on arrival, whatever the answer).
    pub per_token: HashMap<String, u64>,
}

/// The part of the state that changes while serving.
#[derive(Debug, Default)]
pub struct Mutable {
    /// Action token → scripted behaviour.
    pub script: Script,
    /// Issued bearer tokens.
    pub tokens: TokenStore,
    /// Counters.
    pub stats: SimStats,
    /// When set, every recommendation call answers this status (an outage).
    pub outage: Option<u16>,
}

/// Fixed settings plus the mutable state.
#[derive(Debug)]
pub struct SimState {
    client_id: String,
    /// Only a digest of the secret is kept, so it cannot leak through `Debug` or a log.
    secret_digest: [u8; 32],
    /// How long an issued bearer token is honoured.
    pub token_lifetime: Duration,
    /// `token_lifetime` in milliseconds, as configured.
    pub token_lifetime_ms: u64,
    inner: Mutex<Mutable>,
}

impl SimState {
    /// Builds the state from the configured credentials, lifetime and initial script.
    pub fn new(
        client_id: &str,
        client_secret: &str,
        token_lifetime_ms: u64,
        script: Script,
    ) -> Self {
        Self {
            client_id: client_id.to_owned(),
            secret_digest: Sha256::digest(client_secret.as_bytes()).into(),
            token_lifetime: Duration::from_millis(token_lifetime_ms),
            token_lifetime_ms,
            inner: Mutex::new(Mutable {
                script,
                ..Mutable::default()
            }),
        }
    }

    /// Whether the presented client credentials are the configured ones. Secrets are compared as
    /// digests, so the comparison time does not reveal how much of the secret matched.
    pub fn credentials_match(&self, client_id: &str, client_secret: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(client_secret.as_bytes()).into();
        client_id == self.client_id && presented == self.secret_digest
    }

    /// Locks the mutable state. A poisoned lock is taken over: every update is a single
    /// assignment or counter bump, so a panic elsewhere cannot leave it inconsistent.
    pub fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_must_both_match() {
        let state = SimState::new("id", "secret", 1000, Script::new());
        assert!(state.credentials_match("id", "secret"));
        assert!(!state.credentials_match("id", "secret2"));
        assert!(!state.credentials_match("other", "secret"));
        assert!(!format!("{state:?}").contains("secret\""));
    }
}
