//! The recommendation as the Transmit Recommendations API documents it
//! (`GET /risk/v1/recommendation`), parsed strictly: a missing required field, a score that
//! is not a number in 0–100, or an unknown recommendation type is an API error, never a
//! guess. Unknown fields are tolerated so API additions do not break riskgate.

use serde::Deserialize;
use std::fmt;
use std::sync::Arc;

use super::intern::Interner;

/// `recommendation.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecommendationType {
    /// Trusted user and device.
    Trust,
    /// Proceed.
    Allow,
    /// Proceed only after step-up authentication.
    Challenge,
    /// Block.
    Deny,
}

impl RecommendationType {
    /// Upper-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecommendationType::Trust => "TRUST",
            RecommendationType::Allow => "ALLOW",
            RecommendationType::Challenge => "CHALLENGE",
            RecommendationType::Deny => "DENY",
        }
    }

    /// Accepts the documented names in either case.
    pub fn parse(s: &str) -> Option<RecommendationType> {
        match s.to_ascii_uppercase().as_str() {
            "TRUST" => Some(RecommendationType::Trust),
            "ALLOW" => Some(RecommendationType::Allow),
            "CHALLENGE" => Some(RecommendationType::Challenge),
            "DENY" => Some(RecommendationType::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for RecommendationType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated recommendation: only what riskgate uses, plus the informative parts
/// kept for the audit log. Compact, because up to `risk.cache.max_entries` of them are held
/// (issue #14): no raw JSON, boxed strings, and the repeating codes (`action_type`,
/// reasons, threats) as `Arc<str>` that the assessor interns; the parts a decision copies
/// (`action_id`, `action_type`, `reasons`) are reference-counted, so a Check copies none.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// Recommendation identifier (`id`).
    pub id: Box<str>,
    /// `issued_at`, epoch ms.
    pub issued_at_ms: i64,
    /// `recommendation.type`.
    pub kind: RecommendationType,
    /// `recommendation.challenge_type`.
    pub challenge_type: Option<String>,
    /// `risk_score`, 0–100.
    pub risk_score: f64,
    /// `context.action_id`: which reported action this is.
    pub action_id: Arc<str>,
    /// `context.action_type`: bound to the route.
    pub action_type: Arc<str>,
    /// `context.action_performed_at`, epoch ms.
    pub action_performed_at_ms: i64,
    /// `context.user_id`: bound to the principal on authenticated routes.
    pub user_id: Option<String>,
    /// `reasons`.
    pub reasons: Arc<[Arc<str>]>,
    /// `threats`.
    pub threats: Box<[Arc<str>]>,
    /// `transaction_data`, when the client SDK reported a usable one: what transaction
    /// binding compares with the request body (`routes[].body`).
    pub transaction: Option<TransactionData>,
}

/// What binding needs of `transaction_data` (amount, currency, payee), already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionData {
    /// `amount` (major units on the wire) in ISO 4217 minor units of `currency`.
    pub amount_minor: i64,
    /// `currency`, upper case.
    pub currency: Box<str>,
    /// The string leaves under `payee` (or `payee` itself when it is a string), each with
    /// its JSON pointer from `transaction_data` (`/payee/account`); at most
    /// [`MAX_PAYEE_LEAVES`], each at most [`MAX_PAYEE_LEN`] bytes.
    pub payee: Box<[(Box<str>, Box<str>)]>,
}

/// Most payee leaves kept from `transaction_data.payee` (more: the payee is not kept).
pub const MAX_PAYEE_LEAVES: usize = 8;
/// Longest payee leaf (pointer or value) kept, in bytes.
pub const MAX_PAYEE_LEN: usize = 256;

impl TransactionData {
    /// `transaction_data` as the API sent it, or `None` when it is not usable (no number
    /// amount, an unknown currency, an amount that is negative, too precise or too large):
    /// binding then finds no transaction to match.
    pub fn from_json(data: &serde_json::Value) -> Option<TransactionData> {
        let serde_json::Value::Number(amount) = data.get("amount")? else {
            return None;
        };
        let serde_json::Value::String(currency) = data.get("currency")? else {
            return None;
        };
        let (amount_minor, currency) = crate::money::amount(amount, currency).ok()?;
        let mut payee = Vec::new();
        if let Some(p) = data.get("payee") {
            leaves(p, "/payee".to_owned(), 0, &mut payee)?;
        }
        Some(TransactionData {
            amount_minor,
            currency: currency.into(),
            payee: payee.into(),
        })
    }

    /// The payee string at `pointer` (from `transaction_data`), if reported.
    pub fn payee_at(&self, pointer: &str) -> Option<&str> {
        self.payee
            .iter()
            .find(|(p, _)| **p == *pointer)
            .map(|(_, v)| &**v)
    }
}

/// Collects the string leaves of `v` at `at` (depth at most 4); `None` past the bounds.
fn leaves(
    v: &serde_json::Value,
    at: String,
    depth: usize,
    out: &mut Vec<(Box<str>, Box<str>)>,
) -> Option<()> {
    match v {
        serde_json::Value::String(s) => {
            if out.len() >= MAX_PAYEE_LEAVES || s.len() > MAX_PAYEE_LEN || at.len() > MAX_PAYEE_LEN
            {
                return None;
            }
            out.push((at.into(), s.as_str().into()));
        }
        serde_json::Value::Object(map) if depth < 4 => {
            for (k, child) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                leaves(child, format!("{at}/{escaped}"), depth + 1, out)?;
            }
        }
        serde_json::Value::Object(_) => return None,
        // numbers, booleans, arrays and nulls are not payee identifiers
        _ => {}
    }
    Some(())
}

/// Why a response body is not a usable recommendation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or a required field missing or of the wrong type.
    #[error("response is not a recommendation: {0}")]
    Shape(String),
    /// `risk_score` outside 0–100 or not finite.
    #[error("risk_score `{0}` is outside 0..=100")]
    ScoreOutOfRange(String),
    /// `recommendation.type` not one of TRUST, ALLOW, CHALLENGE, DENY.
    #[error("unknown recommendation type `{0}`")]
    UnknownType(String),
}

// `preview_rule` (an object) is not read: it never changes the outcome, and keeping it
// would mean keeping raw JSON in every cached entry.
#[derive(Deserialize)]
struct Wire {
    id: Box<str>,
    issued_at: f64,
    recommendation: WireRecommendation,
    risk_score: f64,
    context: WireContext,
    reasons: Vec<Arc<str>>,
    #[serde(default)]
    threats: Option<Vec<Arc<str>>>,
    #[serde(default)]
    transaction_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireRecommendation {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    challenge_type: Option<String>,
}

#[derive(Deserialize)]
struct WireContext {
    action_id: Box<str>,
    action_type: Box<str>,
    action_performed_at: f64,
    #[allow(
        dead_code,
        reason = "documented as required: checked for presence only"
    )]
    application_id: String,
    #[allow(
        dead_code,
        reason = "documented as required: checked for presence only"
    )]
    device_id: String,
    #[allow(
        dead_code,
        reason = "documented as required: checked for presence only"
    )]
    device_fingerprint: String,
    #[serde(default)]
    user_id: Option<String>,
}

impl Recommendation {
    /// Parses and validates a response body.
    pub fn from_json(body: &[u8]) -> Result<Recommendation, ParseError> {
        let wire: Wire = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message names the field, never echoes the body.
            ParseError::Shape(e.to_string())
        })?;
        if !(wire.risk_score.is_finite() && (0.0..=100.0).contains(&wire.risk_score)) {
            return Err(ParseError::ScoreOutOfRange(wire.risk_score.to_string()));
        }
        let kind = RecommendationType::parse(&wire.recommendation.kind)
            .ok_or_else(|| ParseError::UnknownType(truncate(&wire.recommendation.kind)))?;
        Ok(Recommendation {
            id: wire.id,
            issued_at_ms: wire.issued_at as i64,
            kind,
            // It goes into a response header: only a short token is passed on (else the
            // configured default challenge is used).
            challenge_type: wire.recommendation.challenge_type.filter(|c| {
                !c.is_empty()
                    && c.len() <= 64
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }),
            risk_score: wire.risk_score,
            action_id: wire.context.action_id.into(),
            action_type: wire.context.action_type.into(),
            action_performed_at_ms: wire.context.action_performed_at as i64,
            user_id: wire.context.user_id.filter(|u| !u.is_empty()),
            reasons: wire.reasons.into(),
            threats: wire.threats.unwrap_or_default().into(),
            transaction: wire
                .transaction_data
                .as_ref()
                .and_then(TransactionData::from_json),
        })
    }

    /// The same recommendation with its codes (action type, reasons, threats) shared
    /// through `interner`: what the assessor caches.
    pub fn interned(mut self, interner: &Interner) -> Recommendation {
        self.action_type = interner.intern(&self.action_type);
        self.reasons = interner.intern_all(&self.reasons).into();
        self.threats = interner.intern_all(&self.threats).into();
        self
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The example response from the API reference (abridged where it says `…`).
    fn documented() -> Value {
        json!({
          "id": "385cd06b527a974982e0560b67123fe2b1b5a39fd98d8d32cdbaca8ec16fd62d",
          "issued_at": 1648028118123u64,
          "recommendation": { "type": "CHALLENGE", "result": "success", "challenge_type": "email_otp" },
          "risk_score": 73.2,
          "context": {
            "action_id": "885cd06b527a97498200560b67123fe221b5a39fd98d8d22cdb7ca8ec16ed62d",
            "action_type": "login", "action_performed_at": 1648028118123u64,
            "device_timestamp": 1648028107819u64, "client_id": "d152ddd.ece93f4.c2a3d12.riskid.security",
            "application_id": "ece93f4", "tenant_id": "c2a3d12", "device_id": "eyJhbGciOi...",
            "correlation_id": "bcb934d8-89cb-433b-a4c7-b7d94299586b",
            "device_fingerprint": "a3c8f5ea75cb65fcdc3d0452b985f957a46e24afdc912e93dac1e115ecf408e5",
            "user_id": "5c4afa75c", "ip": "192.168.0.1", "ip_location_zip": 92131,
            "device_languages": ["en-US", "en"]
          },
          "risk_signals": { "device": {}, "network": {}, "behavior": {}, "history": {} },
          "reasons": ["BEHAVIOR_BOT", "IP_RISKY_REPUTATION"],
          "transaction_data": { "amount": 120, "currency": "USD" },
          "threats": ["ACCOUNT_TAKEOVER"],
          "preview_rule": { "rule_name": "string", "recommendation": "string" },
          "some_future_field": { "x": 1 }
        })
    }

    fn parse(v: &Value) -> Result<Recommendation, ParseError> {
        Recommendation::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn documented_example_parses() -> Result<(), ParseError> {
        let r = parse(&documented())?;
        assert_eq!(r.kind, RecommendationType::Challenge);
        assert_eq!(r.challenge_type.as_deref(), Some("email_otp"));
        assert_eq!(r.risk_score, 73.2);
        assert_eq!(&*r.action_type, "login");
        assert_eq!(r.user_id.as_deref(), Some("5c4afa75c"));
        assert_eq!(r.action_performed_at_ms, 1648028118123);
        assert!(r.action_id.starts_with("885cd06b"));
        assert_eq!(r.reasons.len(), 2);
        assert_eq!(&*r.threats, &[Arc::<str>::from("ACCOUNT_TAKEOVER")]);
        assert_eq!(
            r.transaction,
            Some(TransactionData {
                amount_minor: 12_000,
                currency: "USD".into(),
                payee: Box::default(),
            })
        );
        Ok(())
    }

    #[test]
    fn interned_recommendations_share_their_codes() -> Result<(), ParseError> {
        let interner = Interner::default();
        let a = parse(&documented())?.interned(&interner);
        let b = parse(&documented())?.interned(&interner);
        assert_eq!(a, parse(&documented())?, "interning changes no value");
        assert!(Arc::ptr_eq(&a.action_type, &b.action_type));
        assert!(Arc::ptr_eq(&a.reasons[1], &b.reasons[1]));
        assert!(Arc::ptr_eq(&a.threats[0], &b.threats[0]));
        Ok(())
    }

    #[test]
    fn odd_challenge_types_are_not_passed_on() -> Result<(), ParseError> {
        for bad in ["email otp", "x\r\nset-cookie: a=b", "é"] {
            let mut v = documented();
            v["recommendation"]["challenge_type"] = json!(bad);
            assert_eq!(parse(&v)?.challenge_type, None, "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn type_in_lower_case_is_accepted() -> Result<(), ParseError> {
        let mut v = documented();
        v["recommendation"]["type"] = json!("deny");
        assert_eq!(parse(&v)?.kind, RecommendationType::Deny);
        Ok(())
    }

    #[test]
    fn optional_parts_may_be_missing() -> Result<(), ParseError> {
        let mut v = documented();
        for key in [
            "risk_signals",
            "transaction_data",
            "threats",
            "preview_rule",
        ] {
            v.as_object_mut().map(|o| o.remove(key));
        }
        v["recommendation"]
            .as_object_mut()
            .map(|o| o.remove("challenge_type"));
        v["context"].as_object_mut().map(|o| o.remove("user_id"));
        let r = parse(&v)?;
        assert_eq!(r.challenge_type, None);
        assert_eq!(r.user_id, None);
        Ok(())
    }

    #[test]
    fn transaction_data_keeps_amount_currency_and_payee() -> Result<(), ParseError> {
        let mut v = documented();
        v["transaction_data"] = json!({
            "amount": 12000.5, "currency": "USD", "payer": {"name": "A"},
            "payee": {"name": "Bob", "account": "DE89", "type": "iban", "bank": {"bic": "X"}, "n": 3}
        });
        let t = parse(&v)?.transaction;
        assert_eq!(t.as_ref().map(|t| t.amount_minor), Some(1_200_050));
        assert_eq!(
            t.as_ref().and_then(|t| t.payee_at("/payee/account")),
            Some("DE89")
        );
        assert_eq!(
            t.as_ref().and_then(|t| t.payee_at("/payee/bank/bic")),
            Some("X")
        );
        assert_eq!(t.as_ref().and_then(|t| t.payee_at("/payee/n")), None);
        assert_eq!(t.as_ref().and_then(|t| t.payee_at("/payer/name")), None);
        v["transaction_data"] = json!({"amount": 1, "currency": "JPY", "payee": "acct-7"});
        let t = parse(&v)?.transaction;
        assert_eq!(
            t.as_ref().and_then(|t| t.payee_at("/payee")),
            Some("acct-7")
        );
        Ok(())
    }

    #[test]
    fn unusable_transaction_data_is_dropped_not_an_error() -> Result<(), ParseError> {
        for bad in [
            json!({"amount": "120", "currency": "USD"}),
            json!({"amount": 120}),
            json!({"amount": -1, "currency": "USD"}),
            json!({"amount": 1.001, "currency": "USD"}),
            json!({"amount": 1, "currency": "XYZ"}),
            json!({"amount": 1, "currency": "USD", "payee": {"a": "x".repeat(300)}}),
            json!({"amount": 1, "currency": "USD", "payee": {"a": {"b": {"c": {"d": {"e": "x"}}}}}}),
            json!(42),
        ] {
            let mut v = documented();
            v["transaction_data"] = bad.clone();
            assert_eq!(parse(&v)?.transaction, None, "{bad}");
        }
        Ok(())
    }

    #[test]
    fn missing_required_fields_are_errors() {
        for path in [
            "id",
            "issued_at",
            "risk_score",
            "reasons",
            "recommendation.type",
            "context.action_id",
            "context.action_type",
            "context.action_performed_at",
            "context.application_id",
        ] {
            let mut v = documented();
            match path.split_once('.') {
                Some((outer, inner)) => v[outer].as_object_mut().map(|o| o.remove(inner)),
                None => v.as_object_mut().map(|o| o.remove(path)),
            };
            assert!(matches!(parse(&v), Err(ParseError::Shape(_))), "{path}");
        }
    }

    #[test]
    fn bad_scores_are_errors() {
        for bad in [json!(100.5), json!(-1), json!("73"), json!(null)] {
            let mut v = documented();
            v["risk_score"] = bad.clone();
            assert!(parse(&v).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_type_and_garbage_are_errors() {
        let mut v = documented();
        v["recommendation"]["type"] = json!("MAYBE");
        assert!(matches!(parse(&v), Err(ParseError::UnknownType(_))));
        assert!(Recommendation::from_json(b"<html>oops</html>").is_err());
    }
}
