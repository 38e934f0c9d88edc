//! Unit tests of the parent module (kept apart so the module reads in one screen).

use super::*;
use crate::risk::intern::{MAX_CODES, MAX_CODE_LEN};
use proptest::prelude::*;

/// The API reference's example shape: 64-hex ids, four reasons, two threats.
fn documented() -> Recommendation {
    Recommendation {
        id: "385cd06b527a974982e0560b67123fe2b1b5a39fd98d8d32cdbaca8ec16fd62d".into(),
        issued_at_ms: 1_648_028_118_123,
        kind: RecommendationType::Challenge,
        challenge_type: Some("email_otp".into()),
        risk_score: 73.2,
        action_id: "885cd06b527a97498200560b67123fe221b5a39fd98d8d22cdb7ca8ec16ed62d".into(),
        action_type: "login".into(),
        action_performed_at_ms: 1_648_028_118_123,
        user_id: Some("5c4afa75c".into()),
        reasons: [
            "BEHAVIOR_BOT",
            "IP_RISKY_REPUTATION",
            "DEVICE_SUSPICIOUS_ATTRIBUTE",
            "PROFILE_DEVICE_NEW",
        ]
        .map(Arc::<str>::from)
        .into(),
        threats: ["ACCOUNT_TAKEOVER", "NEW_FRAUD_ACCOUNT"]
            .map(Arc::<str>::from)
            .into(),
        transaction: None,
    }
}

#[test]
fn the_documented_example_round_trips_in_few_bytes() {
    let interner = Interner::default();
    let rec = documented();
    let compact = CompactRecommendation::encode(&rec, &interner);
    assert_eq!(compact.decode(&interner), Some(rec));
    // flags (1) + numbers (6 + 1 + 2) + two 32-byte ids with tag and length (68) + 7 codes
    // and the challenge (8) + user (11) + two counts (2): far below the ~440 heap bytes of
    // the parsed struct
    assert!(compact.len() <= 100, "{} bytes", compact.len());
}

#[test]
fn a_transaction_round_trips_in_few_bytes() {
    let interner = Interner::default();
    let plain = CompactRecommendation::encode(&documented(), &interner).len();
    let mut rec = documented();
    rec.transaction = Some(TransactionData {
        amount_minor: 1_200_000,
        currency: "USD".into(),
        payee: Box::from([(
            Box::from("/payee/account"),
            Box::from("DE89370400440532013000"),
        )]),
    });
    let compact = CompactRecommendation::encode(&rec, &interner);
    assert_eq!(compact.decode(&interner), Some(rec));
    // amount (3) + currency (5) + count (1) + pointer (16) + account (24)
    assert!(compact.len() <= plain + 50, "{} bytes", compact.len());
}

#[test]
fn decoded_codes_are_the_interned_ones() {
    let interner = Interner::default();
    let a = CompactRecommendation::encode(&documented(), &interner).decode(&interner);
    let b = CompactRecommendation::encode(&documented(), &interner).decode(&interner);
    let (Some(a), Some(b)) = (a, b) else {
        panic!("must decode")
    };
    assert!(Arc::ptr_eq(&a.action_type, &b.action_type));
    assert!(Arc::ptr_eq(&a.reasons[3], &b.reasons[3]));
    assert!(Arc::ptr_eq(&a.threats[1], &b.threats[1]));
}

#[test]
fn codes_past_a_full_table_are_kept_inline() {
    let interner = Interner::default();
    for i in 0..MAX_CODES {
        interner.index_of(&format!("FILL_{i}"));
    }
    let mut rec = documented();
    rec.reasons = [
        Arc::from("NEVER_SEEN"),
        Arc::from("X".repeat(MAX_CODE_LEN + 1)),
    ]
    .into();
    let compact = CompactRecommendation::encode(&rec, &interner);
    assert_eq!(compact.decode(&interner), Some(rec));
}

#[test]
fn scores_are_exact_whatever_their_decimals() {
    let interner = Interner::default();
    for score in [0.0, -0.0, 73.2, 12.5, 100.0, 33.333, 99.99, 0.01, 1e-9] {
        let mut rec = documented();
        rec.risk_score = score;
        let back = CompactRecommendation::encode(&rec, &interner).decode(&interner);
        assert_eq!(
            back.map(|r| r.risk_score.to_bits()),
            Some(score.to_bits()),
            "{score}"
        );
    }
}

#[test]
fn ids_are_stored_by_their_shape() {
    let interner = Interner::default();
    let mut rec = documented();
    let hex_len = CompactRecommendation::encode(&rec, &interner).len();
    rec.id = "385CD06B527A974982E0560B67123FE2B1B5A39FD98D8D32CDBACA8EC16FD62D".into();
    let upper = CompactRecommendation::encode(&rec, &interner);
    assert_eq!(
        upper.len(),
        hex_len + 32,
        "upper case is not hex: kept as text"
    );
    assert_eq!(upper.decode(&interner), Some(rec.clone()));
    rec.id = "bcb934d8-89cb-433b-a4c7-b7d94299586b".into();
    let uuid = CompactRecommendation::encode(&rec, &interner);
    assert_eq!(uuid.len(), hex_len - 33 + 16, "a UUID takes its 16 bytes");
    assert_eq!(uuid.decode(&interner), Some(rec));
}

#[test]
fn garbage_does_not_decode() {
    let interner = Interner::default();
    let good = CompactRecommendation::encode(&documented(), &interner);
    for cut in 0..good.len() {
        let truncated = CompactRecommendation(Arc::from(&good.0[..cut]));
        assert_eq!(truncated.decode(&interner), None, "cut at {cut}");
    }
    let mut longer = good.0.to_vec();
    longer.push(0);
    assert_eq!(CompactRecommendation(longer.into()).decode(&interner), None);
    // a code index the table does not have
    assert_eq!(
        CompactRecommendation::encode(&documented(), &interner).decode(&Interner::default()),
        None
    );
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{0,80}",
        "[0-9a-fA-F]{1,70}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[0-9a-fA-F-]{36}",
        "\\PC{0,80}",
    ]
}

fn code() -> impl Strategy<Value = Arc<str>> {
    prop_oneof![
        prop::sample::select(vec!["BEHAVIOR_BOT", "ACCOUNT_TAKEOVER", "login", ""])
            .prop_map(Arc::from),
        "\\PC{0,70}".prop_map(Arc::from),
    ]
}

fn kind() -> impl Strategy<Value = RecommendationType> {
    prop::sample::select(vec![
        RecommendationType::Trust,
        RecommendationType::Allow,
        RecommendationType::Challenge,
        RecommendationType::Deny,
    ])
}

prop_compose! {
    fn recommendation()(
        id in text(),
        issued_at_ms in any::<i64>(),
        kind in kind(),
        challenge_type in prop::option::of("[a-z_-]{1,64}"),
        risk_score in prop_oneof![0.0f64..=100.0, (0u16..=10_000).prop_map(|h| f64::from(h) / 100.0)],
        action_id in text(),
        action_type in code(),
        action_performed_at_ms in any::<i64>(),
        user_id in prop::option::of(text()),
        reasons in prop::collection::vec(code(), 0..8),
        threats in prop::collection::vec(code(), 0..4),
        transaction in prop::option::of(transaction()),
    ) -> Recommendation {
        Recommendation {
            id: id.into(),
            issued_at_ms,
            kind,
            challenge_type,
            risk_score,
            action_id: action_id.into(),
            action_type,
            action_performed_at_ms,
            user_id,
            reasons: reasons.into(),
            threats: threats.into(),
            transaction,
        }
    }
}

prop_compose! {
    fn transaction()(
        amount_minor in any::<i64>(),
        currency in "[A-Z]{3}",
        payee in prop::collection::vec((text(), text()), 0..4),
    ) -> TransactionData {
        TransactionData {
            amount_minor,
            currency: currency.into(),
            payee: payee.into_iter().map(|(p, v)| (p.into(), v.into())).collect(),
        }
    }
}

proptest! {
    #[test]
    fn any_recommendation_round_trips(rec in recommendation()) {
        let interner = Interner::default();
        let compact = CompactRecommendation::encode(&rec, &interner);
        prop_assert_eq!(compact.decode(&interner), Some(rec));
    }
}
