//! The one record riskgate keeps about a principal (`Key::principal(id, "risk")`): what
//! its recent risk means for its requests that carry no action token (sticky risk, see
//! [`crate::decide::risk::sticky`]). Small, versioned JSON, so a later release can add
//! fields (recent history) and a replica of this release keeps them when it rewrites the
//! record: unknown fields are carried through unchanged.

use crate::state::Key;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The record's field under the principal's hash tag.
pub const FIELD: &str = "risk";

/// Version this release writes.
pub const VERSION: u32 = 1;

/// Longest challenge type kept (an API value is short; anything longer is not echoed).
pub const MAX_CHALLENGE_LEN: usize = 64;

/// What is remembered about one principal. All instants are epoch ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrincipalRecord {
    /// Format version ([`VERSION`]).
    #[serde(default)]
    pub v: u32,
    /// Until when requests without a token are band high (a DENY or high-band
    /// recommendation was bound to this principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_high_until_ms: Option<i64>,
    /// When a CHALLENGE that the principal has not answered yet was bound to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_at_ms: Option<i64>,
    /// The challenge type of that CHALLENGE, when the API named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// Fields written by a later release, kept as they are.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A stored record that is not this format (logged by the caller, then treated as empty).
#[derive(Debug, thiserror::Error)]
#[error("principal record is not valid json")]
pub struct RecordError(#[source] serde_json::Error);

impl PrincipalRecord {
    /// The store key of `principal_id`'s record (the Cedar principal id, so two issuers'
    /// `u1` never share one).
    pub fn key(principal_id: &str) -> Key {
        Key::principal(principal_id, FIELD)
    }

    /// Parses a stored record.
    pub fn decode(bytes: &[u8]) -> Result<PrincipalRecord, RecordError> {
        serde_json::from_slice(bytes).map_err(RecordError)
    }

    /// The bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.clone();
        out.v = out.v.max(VERSION);
        // serialising a struct of strings, numbers and JSON values cannot fail
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Whether requests without a token are band high at `now_ms`.
    pub fn high_at(&self, now_ms: i64) -> bool {
        self.risk_high_until_ms.is_some_and(|until| now_ms < until)
    }

    /// The open challenge at `now_ms`, if one was recorded less than `window_ms` ago.
    pub fn open_challenge(&self, now_ms: i64, window_ms: u64) -> Option<i64> {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        self.challenge_at_ms
            .filter(|at| now_ms < at.saturating_add(window))
    }

    /// Until when the record has something to say (the TTL to store it with).
    pub fn live_until_ms(&self, window_ms: u64) -> Option<i64> {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        let challenge_until = self.challenge_at_ms.map(|at| at.saturating_add(window));
        self.risk_high_until_ms.max(challenge_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_keeps_fields_of_a_later_version() {
        let stored = json!({
            "v": 2,
            "risk_high_until_ms": 2_000,
            "history": [{"band": "high", "at": 1_000}]
        });
        let record = PrincipalRecord::decode(stored.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(record.risk_high_until_ms, Some(2_000));
        assert_eq!(record.challenge_at_ms, None);
        let mut updated = record.clone();
        updated.challenge_at_ms = Some(1_500);
        let written: Value =
            serde_json::from_slice(&updated.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(written["v"], json!(2), "a later version is not downgraded");
        assert_eq!(written["history"], stored["history"], "unknown fields kept");
        assert_eq!(written["challenge_at_ms"], json!(1_500));
    }

    #[test]
    fn windows_end() {
        let record = PrincipalRecord {
            risk_high_until_ms: Some(1_000),
            challenge_at_ms: Some(500),
            ..PrincipalRecord::default()
        };
        assert!(record.high_at(999));
        assert!(!record.high_at(1_000));
        assert_eq!(record.open_challenge(900, 1_000), Some(500));
        assert_eq!(record.open_challenge(1_500, 1_000), None);
        assert_eq!(record.live_until_ms(1_000), Some(1_500));
        assert_eq!(PrincipalRecord::default().live_until_ms(1_000), None);
        assert!(PrincipalRecord::decode(b"not json").is_err());
    }
}
