//! Bearer tokens issued by `POST /oidc/token`.
//!
//! Tokens are opaque random strings that really expire, so a client's refresh logic is exercised
//! against real expiry rather than trusted to read `expires_in`. Only a SHA-256 of each token is
//! kept, and no token is ever logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest lifetime honoured; longer configured lifetimes are cut to this.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The outcome of checking a presented bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerCheck {
    /// Issued, not expired, not revoked.
    Valid,
    /// Never issued by this simulator, or revoked.
    Unknown,
    /// Issued but past its lifetime.
    Expired,
}

/// The live bearer tokens: hash of the token → expiry instant.
#[derive(Debug, Default)]
pub struct TokenStore {
    live: HashMap<[u8; 32], Instant>,
}

impl TokenStore {
    /// Issues a fresh token valid for `lifetime` from `now`, dropping already expired ones.
    /// Lifetimes are capped at a year so the expiry instant cannot overflow.
    pub fn issue(&mut self, now: Instant, lifetime: Duration) -> String {
        self.live.retain(|_, expiry| *expiry > now);
        let token = random_hex::<32>();
        let expiry = now + lifetime.min(MAX_LIFETIME);
        self.live.insert(digest(&token), expiry);
        token
    }

    /// Checks a presented token at `now`.
    pub fn check(&self, token: &str, now: Instant) -> BearerCheck {
        match self.live.get(&digest(token)) {
            None => BearerCheck::Unknown,
            Some(expiry) if *expiry <= now => BearerCheck::Expired,
            Some(_) => BearerCheck::Valid,
        }
    }

    /// Invalidates every issued token.
    pub fn revoke_all(&mut self) {
        self.live.clear();
    }
}

/// `expires_in` for the token response: the lifetime rounded up to whole seconds, so a client
/// that refreshes "before `expires_in`" still sees the sub-second expiry the test configured.
pub fn expires_in_secs(lifetime_ms: u64) -> u64 {
    lifetime_ms.div_ceil(1000)
}

/// Lower-case hex of `N` random bytes.
pub fn random_hex<const N: usize>() -> String {
    hex(&rand::random::<[u8; N]>())
}

/// Lower-case hex of a SHA-256 of `input` (64 characters).
pub fn sha256_hex(input: &str) -> String {
    hex(&digest(input))
}

fn digest(input: &str) -> [u8; 32] {
    Sha256::digest(input.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_token_is_valid_until_its_lifetime_ends() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let token = store.issue(t0, Duration::from_millis(300));
        assert_eq!(token.len(), 64);
        assert_eq!(store.check(&token, t0), BearerCheck::Valid);
        assert_eq!(
            store.check(&token, t0 + Duration::from_millis(299)),
            BearerCheck::Valid
        );
        assert_eq!(
            store.check(&token, t0 + Duration::from_millis(300)),
            BearerCheck::Expired
        );
        assert_eq!(store.check("not-issued", t0), BearerCheck::Unknown);
    }

    #[test]
    fn tokens_are_distinct_and_revocable() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let a = store.issue(t0, Duration::from_secs(60));
        let b = store.issue(t0, Duration::from_secs(60));
        assert_ne!(a, b);
        store.revoke_all();
        assert_eq!(store.check(&a, t0), BearerCheck::Unknown);
        let c = store.issue(t0, Duration::from_secs(60));
        assert_eq!(store.check(&c, t0), BearerCheck::Valid);
    }

    #[test]
    fn expired_tokens_are_pruned_on_issue() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let old = store.issue(t0, Duration::from_millis(10));
        store.issue(t0 + Duration::from_millis(20), Duration::from_secs(1));
        assert_eq!(store.live.len(), 1);
        assert_eq!(
            store.check(&old, t0 + Duration::from_millis(20)),
            BearerCheck::Unknown
        );
    }

    #[test]
    fn expires_in_rounds_up() {
        assert_eq!(expires_in_secs(0), 0);
        assert_eq!(expires_in_secs(300), 1);
        assert_eq!(expires_in_secs(1000), 1);
        assert_eq!(expires_in_secs(1001), 2);
        assert_eq!(expires_in_secs(3_600_000), 3600);
    }

    #[test]
    fn sha256_hex_is_64_lower_hex() {
        let h = sha256_hex("abc");
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
