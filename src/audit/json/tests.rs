//! The hand-written line equals serde's derive of [`AuditLine`], byte for byte, on
//! generated lines: every optional field present and absent, strings with quotes,
//! backslashes, control characters and any Unicode, any score (NaN and infinities too).

use super::write_line;
use crate::audit::input::{
    CedarInput, CedarOutcome, RecordedPrincipal, RecordedRequest, RecordedRisk,
};
use crate::audit::{AuditLine, Latency, ShadowLine};
use proptest::prelude::*;
use std::sync::Arc;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_:/.-]{0,12}",
        any::<String>(),
        Just("quote\" back\\slash \n\t\u{1}\u{7f} é 🦀".to_owned()),
    ]
}

fn label() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "allow",
        "policy_deny",
        "risk_deny",
        "malformed_request",
    ])
}

#[derive(Debug, Clone)]
struct Owned {
    strings: Vec<String>,
    opts: Vec<Option<String>>,
    score: Option<f64>,
    reasons: Option<Vec<Arc<str>>>,
    numbers: (u16, u64, u64, u64, i64),
    flags: (bool, Option<bool>, Option<bool>, bool),
    labels: (
        &'static str,
        Option<&'static str>,
        Option<(&'static str, &'static str)>,
    ),
    input: Option<CedarInput>,
}

fn input() -> impl Strategy<Value = CedarInput> {
    (
        (text(), text(), text(), text(), text()),
        (
            any::<i64>(),
            text(),
            text(),
            prop::collection::vec(text(), 0..3),
        ),
        (text(), text(), text(), prop::option::of(any::<[u8; 4]>())),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (kind, id, action, rt, rid),
                (score, band, rec, reasons),
                (m, p, h, ip),
                (present, outage, truncated, claims),
            )| {
                let mut claim_map = serde_json::Map::new();
                if claims {
                    claim_map.insert("roles".into(), serde_json::json!(["a\"b", 3, null]));
                }
                CedarInput {
                    principal: RecordedPrincipal {
                        kind,
                        id,
                        claims: claim_map,
                    },
                    action,
                    resource_type: rt,
                    resource_id: rid,
                    risk: RecordedRisk {
                        present,
                        outage,
                        score,
                        band,
                        recommendation: rec,
                        reasons,
                    },
                    request: RecordedRequest {
                        method: m,
                        path: p,
                        host: h,
                        ip: ip.map(std::net::IpAddr::from),
                    },
                    cedar: if truncated {
                        CedarOutcome::Error
                    } else {
                        CedarOutcome::Allow
                    },
                    truncated,
                }
            },
        )
}

fn owned() -> impl Strategy<Value = Owned> {
    (
        (
            prop::collection::vec(text(), 4),
            prop::collection::vec(prop::option::of(text()), 7),
        ),
        (
            prop::option::of(any::<f64>()),
            prop::option::of(prop::collection::vec(text().prop_map(Arc::from), 0..3)),
            any::<(u16, u64, u64, u64, i64)>(),
            any::<(bool, Option<bool>, Option<bool>, bool)>(),
        ),
        (
            label(),
            prop::option::of(label()),
            prop::option::of((label(), label())),
            prop::option::of(input()),
        ),
    )
        .prop_map(
            |((strings, opts), (score, reasons, numbers, flags), (l0, l1, l2, input))| Owned {
                strings,
                opts,
                score,
                reasons,
                numbers,
                flags,
                labels: (l0, l1, l2),
                input,
            },
        )
}

fn line(o: &Owned) -> AuditLine<'_> {
    let s = &o.strings;
    let opt = |i: usize| o.opts[i].as_deref();
    AuditLine {
        time: &s[0],
        decision_id: &s[1],
        request_id: opt(0),
        trace_id: opt(1),
        principal: opt(2),
        action: opt(3),
        resource: opt(4),
        route: opt(5),
        decision: o.labels.0,
        status: o.numbers.0,
        enforced: o.flags.0,
        score: o.score,
        band: o.labels.0,
        recommendation: o.labels.1,
        reasons: o.reasons.as_deref(),
        action_id: opt(6),
        fail_mode: o.labels.2,
        policies: &s[2..],
        cache_hit: o.flags.1,
        risk: o.labels.1,
        shadow: o.flags.2.map(|allowed| ShadowLine {
            allowed,
            disagrees: o.flags.3,
            policies: &s[3..],
        }),
        latency_us: Latency {
            risk: o.numbers.1,
            cedar: o.numbers.2,
            total: o.numbers.3,
        },
        input: o.input.as_ref(),
    }
}

proptest! {
    #[test]
    fn the_written_line_is_serdes_line(o in owned()) {
        let line = line(&o);
        let mut written = Vec::new();
        write_line(&mut written, &line);
        let derived = serde_json::to_vec(&line).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&derived));
    }
}
