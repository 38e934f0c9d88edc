//! The shared recommendation cache (L2 behind the per-replica moka cache): a token assessed
//! on one replica is not fetched again on another. Keyed by the token's SHA-256 (never the
//! token), stored with the same TTL the L1 entry gets, in a compact, versioned encoding
//! (JSON with one-letter field names: ~200 bytes for a typical recommendation).

use super::{Key, StateStore, StoreError};
use crate::risk::recommendation::{Recommendation, RecommendationType, TransactionData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Encoding version; a reader skips entries written with another one. Version 2 added
/// `tx` (`transaction_data`): a version-1 entry lacks it, and would fail transaction
/// binding instead of being fetched again.
const VERSION: u8 = 2;

// `pr` (the `preview_rule` object) is no longer written nor read: entries written by an
// older riskgate with it still decode (unknown fields are skipped).
#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    i: Box<str>,
    at: i64,
    t: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    s: f64,
    a: Arc<str>,
    at_t: Arc<str>,
    pa: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    r: Arc<[Arc<str>]>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    th: Box<[Arc<str>]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx: Option<WireTransaction>,
}

/// `transaction_data` as binding needs it.
#[derive(Serialize, Deserialize)]
struct WireTransaction {
    a: i64,
    c: Box<str>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    p: Box<[(Box<str>, Box<str>)]>,
}

/// The L2 key of `action_token`.
pub fn key_for_token(action_token: &str) -> Key {
    let digest: [u8; 32] = Sha256::digest(action_token.as_bytes()).into();
    Key::recommendation(&digest)
}

/// Encodes a recommendation for the store.
pub fn encode(rec: &Recommendation) -> Vec<u8> {
    let wire = Wire {
        v: VERSION,
        i: rec.id.clone(),
        at: rec.issued_at_ms,
        t: rec.kind.as_str().into(),
        c: rec.challenge_type.clone(),
        s: rec.risk_score,
        a: rec.action_id.clone(),
        at_t: rec.action_type.clone(),
        pa: rec.action_performed_at_ms,
        u: rec.user_id.clone(),
        r: rec.reasons.clone(),
        th: rec.threats.clone(),
        tx: rec.transaction.as_ref().map(|t| WireTransaction {
            a: t.amount_minor,
            c: t.currency.clone(),
            p: t.payee.clone(),
        }),
    };
    // Serialising plain strings and numbers cannot fail; an empty entry decodes as a miss.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Decodes a stored recommendation; `None` (a miss) for anything unreadable, another
/// version, or a score outside 0–100 — a bad L2 entry never becomes a decision.
pub fn decode(bytes: &[u8]) -> Option<Recommendation> {
    let w: Wire = serde_json::from_slice(bytes).ok()?;
    if w.v != VERSION || !(0.0..=100.0).contains(&w.s) {
        return None;
    }
    Some(Recommendation {
        id: w.i,
        issued_at_ms: w.at,
        kind: RecommendationType::parse(&w.t)?,
        challenge_type: w.c,
        risk_score: w.s,
        action_id: w.a,
        action_type: w.at_t,
        action_performed_at_ms: w.pa,
        user_id: w.u,
        reasons: w.r,
        threats: w.th,
        transaction: w.tx.map(|t| TransactionData {
            amount_minor: t.a,
            currency: t.c,
            payee: t.p,
        }),
    })
}

/// The shared recommendation for `action_token`, if another replica stored one.
pub async fn get(
    store: &dyn StateStore,
    action_token: &str,
) -> Result<Option<Recommendation>, StoreError> {
    let key = key_for_token(action_token);
    Ok(store.get(&key).await?.as_deref().and_then(decode))
}

/// Shares `rec` for `ttl_ms` (the L1 entry's TTL).
pub async fn put(
    store: &dyn StateStore,
    action_token: &str,
    rec: &Recommendation,
    ttl_ms: u64,
) -> Result<(), StoreError> {
    let key = key_for_token(action_token);
    store.put(&key, &encode(rec), ttl_ms).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn sample() -> Recommendation {
        Recommendation {
            id: "rec-1".into(),
            issued_at_ms: 1_700_000_000_000,
            kind: RecommendationType::Challenge,
            challenge_type: Some("otp".into()),
            risk_score: 55.5,
            action_id: "act-1".into(),
            action_type: "withdraw".into(),
            action_performed_at_ms: 1_699_999_999_000,
            user_id: Some("alice".into()),
            reasons: Arc::from([Arc::from("NEW_DEVICE")]),
            threats: Box::default(),
            transaction: Some(TransactionData {
                amount_minor: 12_000,
                currency: "USD".into(),
                payee: Box::from([(Box::from("/payee/account"), Box::from("DE89"))]),
            }),
        }
    }

    #[test]
    fn round_trips_and_stays_small() {
        let bytes = encode(&sample());
        assert!(bytes.len() < 260, "{} bytes", bytes.len());
        assert_eq!(decode(&bytes), Some(sample()));
    }

    /// Entries written before the compact recommendation (with `pr`, the raw `preview_rule`)
    /// still decode: replicas of both versions share one store during a roll-out.
    #[test]
    fn entries_with_a_preview_rule_still_decode() {
        let old = String::from_utf8(encode(&sample()))
            .unwrap_or_default()
            .replacen('}', r#","pr":{"rule_name":"r","recommendation":"x"}}"#, 1);
        assert!(old.contains("\"pr\""), "{old}");
        assert_eq!(decode(old.as_bytes()), Some(sample()));
    }

    #[test]
    fn bad_entries_are_misses() {
        assert_eq!(decode(b"not json"), None);
        let mut bad = sample();
        bad.risk_score = 101.0;
        assert_eq!(decode(&encode(&bad)), None);
        let other = String::from_utf8(encode(&sample()))
            .unwrap_or_default()
            .replace("\"v\":2", "\"v\":1");
        assert!(other.contains("\"v\":1"), "{other}");
        assert_eq!(
            decode(other.as_bytes()),
            None,
            "a version-1 entry has no transaction"
        );
    }

    #[tokio::test]
    async fn shared_by_token_hash() -> Result<(), StoreError> {
        let store = MemoryStore::new(10);
        put(&store, "tok.en", &sample(), 60_000).await?;
        assert_eq!(get(&store, "tok.en").await?, Some(sample()));
        assert_eq!(get(&store, "other").await?, None);
        assert!(!key_for_token("tok.en").render("p").contains("tok.en"));
        Ok(())
    }
}
