//! Oracle for the risk skip (issue 13, item 4): for generated permit and forbid policies —
//! scoped and unscoped, with conditions over every risk attribute (`score`, `band`,
//! `recommendation`, `reasons.contains`, `present`, `outage`, `has`), expressions that
//! error for some risks (overflow, type errors, missing attributes) and conditions without
//! risk — a request [`PolicySnapshot::denied_whatever_risk`] reports as denied must be
//! denied by the full evaluation at every point band × recommendation × score
//! {0, 24, 25, 39, 40, 79, 80, 100} (with `present`, `outage` and `reasons` varied across
//! them, see [`grid`]). A skip is wrong if any point allows.
//!
//! Deterministic by default (CI runs the same cases); `RISKGATE_PROPTEST_RANDOM=1` draws
//! fresh ones, `RISKGATE_PROPTEST_CASES` sets the count (default 64).

use super::super::{ContextInput, PolicyInput, PolicySnapshot};
use crate::identity::Principal;
use cedar_policy::{Authorizer, Decision};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

const SCHEMA: &str = include_str!("../../../../policies/schema.cedarschema");
const ENTITIES: &str = include_str!("../../../../policies/entities.json");

const SCORES: [i64; 8] = [0, 24, 25, 39, 40, 79, 80, 100];
const BANDS: [&str; 4] = ["low", "medium", "high", "unassessed"];
const RECOMMENDATIONS: [&str; 5] = ["TRUST", "ALLOW", "CHALLENGE", "DENY", "NONE"];

/// (action, resource type, resource ids) of the shipped schema.
const TARGETS: [(&str, &str, &[&str]); 6] = [
    ("login", "Application", &["bank"]),
    ("view_balance", "Account", &["a1", "a2"]),
    ("list_transactions", "Account", &["a1"]),
    ("withdraw", "Account", &["a1", "a2"]),
    ("transfer", "Account", &["a1", "a2"]),
    ("update_profile", "User", &["u1", "u2"]),
];

fn quoted(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(options).prop_map(|s| format!("\"{s}\""))
}

/// One condition over risk, or over something else, or one that errors.
fn atom() -> impl Strategy<Value = String> {
    let cmp = prop::sample::select(vec!["<", "<=", ">", ">=", "==", "!="]);
    let threshold = prop_oneof![prop::sample::select(SCORES.to_vec()), -1..102i64];
    prop_oneof![
        (cmp, threshold).prop_map(|(op, n)| format!("context.risk.score {op} {n}")),
        quoted(&["low", "medium", "high", "unassessed", "other"])
            .prop_map(|b| format!("context.risk.band == {b}")),
        quoted(&["TRUST", "ALLOW", "CHALLENGE", "DENY", "NONE"])
            .prop_map(|r| format!("context.risk.recommendation == {r}")),
        Just("[\"low\", \"medium\"].contains(context.risk.band)".to_owned()),
        quoted(&["x", "new_device", "y"])
            .prop_map(|r| format!("context.risk.reasons.contains({r})")),
        Just("context.risk.reasons.isEmpty()".to_owned()),
        Just("context.risk.present".to_owned()),
        Just("context.risk.outage".to_owned()),
        quoted(&["score", "band", "recommendation", "reasons", "nothing"])
            .prop_map(|a| format!("context.risk has {a}")),
        Just("context has risk".to_owned()),
        // errors whenever the score is ≥ 1 / ≥ 2: an overflow
        Just("context.risk.score + 9223372036854775807 > 0".to_owned()),
        Just("context.risk.score * 9223372036854775807 > 1".to_owned()),
        // a type error at run time (the oracle's policies are not validated)
        Just("context.risk.band > 1".to_owned()),
        Just("context.risk.nothing == 1".to_owned()),
        // an error that depends on the score only through `if`
        Just("(if context.risk.score > 50 then context.risk.nothing else true)".to_owned()),
        // no risk at all
        Just("resource.owner == principal".to_owned()),
        Just("principal.roles.contains(\"admin\")".to_owned()),
        quoted(&["GET", "POST"]).prop_map(|m| format!("context.request.method == {m}")),
        Just("true".to_owned()),
        Just("false".to_owned()),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    atom().prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

fn scope() -> impl Strategy<Value = String> {
    let principal = prop::sample::select(vec![
        "principal",
        "principal",
        "principal is User",
        "principal is Anonymous",
        "principal == User::\"u1\"",
    ]);
    let action = prop::sample::select(vec![
        "action",
        "action",
        "action in Action::\"read\"",
        "action in Action::\"write\"",
        "action == Action::\"login\"",
        "action == Action::\"transfer\"",
        "action in [Action::\"withdraw\", Action::\"update_profile\"]",
    ]);
    let resource = prop::sample::select(vec![
        "resource",
        "resource",
        "resource is Account",
        "resource is Application",
        "resource == Account::\"a1\"",
    ]);
    (principal, action, resource).prop_map(|(p, a, r)| format!("{p}, {a}, {r}"))
}

fn policy() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.65),
        scope(),
        prop::option::weighted(0.85, (any::<bool>(), condition())),
    )
        .prop_map(|(permit, scope, condition)| {
            let effect = if permit { "permit" } else { "forbid" };
            match condition {
                None => format!("{effect} ({scope});"),
                Some((true, c)) => format!("{effect} ({scope}) when {{ {c} }};"),
                Some((false, c)) => format!("{effect} ({scope}) unless {{ {c} }};"),
            }
        })
}

#[derive(Debug, Clone)]
struct Req {
    /// `None`: anonymous; else `u{n}`.
    user: Option<u8>,
    target: usize,
    resource: usize,
    post: bool,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::option::of(1..3u8),
        0..TARGETS.len(),
        0..2usize,
        any::<bool>(),
    )
        .prop_map(|(user, target, resource, post)| Req {
            user,
            target,
            resource,
            post,
        })
}

fn snapshot(policies: &[String]) -> PolicySnapshot {
    let text: String = policies
        .iter()
        .enumerate()
        .map(|(i, p)| format!("@id(\"p{i}\")\n{p}\n"))
        .collect();
    snapshot_of_text(&text)
}

/// A snapshot of policies that each carry an `@id`, over the shipped schema and entities.
fn snapshot_of_text(text: &str) -> PolicySnapshot {
    crate::policy::engine::slicing_props::snapshot_from(SCHEMA, ENTITIES, text)
}

fn principal_of(user: Option<u8>) -> Principal {
    match user {
        None => Principal::Anonymous,
        Some(i) => Principal::User {
            id: format!("u{i}"),
            subject: format!("u{i}"),
            claims: serde_json::Map::new(),
        },
    }
}

/// One risk point of the grid.
#[derive(Debug, Clone, Copy)]
struct Point {
    band: &'static str,
    recommendation: &'static str,
    score: i64,
    present: bool,
    outage: bool,
    reasons: &'static [&'static str],
}

/// Every band × recommendation × score; across the eight scores of each (band,
/// recommendation) pair, `present`, `outage` and `reasons` take all eight combinations
/// (rotated, so each score also meets all eight).
fn grid() -> Vec<Point> {
    let mut points = Vec::new();
    for (b, band) in BANDS.into_iter().enumerate() {
        for (r, recommendation) in RECOMMENDATIONS.into_iter().enumerate() {
            for (k, score) in SCORES.into_iter().enumerate() {
                let extras = (k + b + r) % 8;
                points.push(Point {
                    band,
                    recommendation,
                    score,
                    present: extras & 1 != 0,
                    outage: extras & 2 != 0,
                    reasons: if extras & 4 != 0 {
                        &["x", "new_device"]
                    } else {
                        &[]
                    },
                });
            }
        }
    }
    points
}

/// The input of `r` at risk `p`.
fn with_risk<'a>(
    principal: &'a Principal,
    r: &Req,
    p: Point,
    reasons: &'a [std::sync::Arc<str>],
) -> PolicyInput<'a> {
    let (action, resource_type, ids) = TARGETS[r.target];
    PolicyInput {
        principal,
        claims_as_attributes: &[],
        action,
        resource_type,
        resource_id: ids[r.resource % ids.len()],
        context: ContextInput {
            risk_present: p.present,
            outage: p.outage,
            score: p.score,
            band: p.band,
            recommendation: p.recommendation,
            reasons,
            method: if r.post { "POST" } else { "GET" },
            path: "/",
            host: "h",
            ip: None,
            facts: &crate::policy::NO_FACTS,
        },
    }
}

/// The first point of the grid at which Cedar allows `r`, if any: the whole set (not
/// its slices) evaluated concretely.
fn allowed_somewhere(snapshot: &PolicySnapshot, r: &Req, grid: &[Point]) -> Option<String> {
    let principal = principal_of(r.user);
    let authorizer = Authorizer::new();
    grid.iter().find_map(|&p| {
        let reasons: Vec<std::sync::Arc<str>> = p.reasons.iter().map(|s| (*s).into()).collect();
        let input = with_risk(&principal, r, p, &reasons);
        let prepared = snapshot
            .prepare(&input)
            .unwrap_or_else(|e| panic!("the oracle's request does not fit the schema: {e}"));
        let response =
            authorizer.is_authorized(&prepared.request, &snapshot.policies, &prepared.entities);
        (response.decision() == Decision::Allow).then(|| format!("{p:?} allowed by {response:?}"))
    })
}

fn skipped(snapshot: &PolicySnapshot, r: &Req) -> bool {
    let principal = principal_of(r.user);
    let p = Point {
        band: "unassessed",
        recommendation: "NONE",
        score: 0,
        present: false,
        outage: false,
        reasons: &[],
    };
    snapshot
        .denied_whatever_risk(&with_risk(&principal, r, p, &[]))
        .is_some()
}

#[test]
fn a_skip_is_never_wrong_at_any_risk_point() {
    let cases: u32 = std::env::var("RISKGATE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    };
    let mut runner = if std::env::var("RISKGATE_PROPTEST_RANDOM").is_ok_and(|v| v == "1") {
        TestRunner::new(config)
    } else {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    };
    let grid = grid();
    let skips = std::sync::atomic::AtomicU64::new(0);
    let asks = std::sync::atomic::AtomicU64::new(0);
    let strategy = (
        prop::collection::vec(policy(), 0..7),
        prop::collection::vec(request(), 1..3),
    );
    let result = runner.run(&strategy, |(policies, requests)| {
        let snapshot = snapshot(&policies);
        for r in &requests {
            if !skipped(&snapshot, r) {
                asks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            skips.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(allowed) = allowed_somewhere(&snapshot, r, &grid) {
                return Err(TestCaseError::fail(format!(
                    "skipped, but {allowed}\nrequest {r:?}\npolicies {policies:#?}"
                )));
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (skips, asks) = (skips.into_inner(), asks.into_inner());
    eprintln!("{skips} requests skipped, {asks} asked");
    // Not vacuous: both answers occur (with a fixed seed they always do).
    assert!(skips > 10 && asks > 10, "skips {skips}, asks {asks}");
}

fn shipped() -> PolicySnapshot {
    let policies = [
        include_str!("../../../../policies/accounts.cedar"),
        include_str!("../../../../policies/guardrails.cedar"),
        include_str!("../../../../policies/login.cedar"),
        include_str!("../../../../policies/profile.cedar"),
    ];
    snapshot_of_text(&policies.concat())
}

/// Requests of the shipped policies: (user, target, resource) and whether Cedar denies
/// them whatever the risk.
#[test]
fn shipped_policies_skip_exactly_the_requests_no_risk_can_allow() {
    let snapshot = shipped();
    let grid = grid();
    let req = |user, target, resource| Req {
        user,
        target,
        resource,
        post: true,
    };
    let cases = [
        // anonymous writes: `forbid-anonymous-writes`
        (req(None, 3, 0), true),
        (req(None, 4, 0), true),
        (req(None, 5, 0), true),
        // anonymous reads: no permit names Anonymous
        (req(None, 1, 0), true),
        // someone else's account: the owner conditions are false whatever the risk
        (req(Some(2), 3, 0), true),
        // own account, own profile, login: the band decides
        (req(Some(1), 3, 0), false),
        (req(Some(1), 1, 0), false),
        (req(Some(1), 4, 0), false),
        (req(Some(1), 5, 0), false),
        (req(None, 0, 0), false),
        (req(Some(1), 0, 0), false),
    ];
    for (r, skip) in cases {
        assert_eq!(skipped(&snapshot, &r), skip, "{r:?}");
        // and the oracle agrees: a skipped request is denied everywhere, an asked one
        // here is allowed somewhere
        assert_eq!(
            allowed_somewhere(&snapshot, &r, &grid).is_none(),
            skip,
            "{r:?}"
        );
    }
}

#[test]
fn a_forbid_that_ignores_risk_is_named_as_determining() {
    let snapshot = shipped();
    let principal = principal_of(None);
    let r = Req {
        user: None,
        target: 3,
        resource: 0,
        post: true,
    };
    let p = grid()[0];
    let input = with_risk(&principal, &r, p, &[]);
    assert_eq!(
        snapshot.denied_whatever_risk(&input),
        Some(vec!["forbid-anonymous-writes".to_owned()])
    );
}

#[test]
fn a_residual_forbid_or_permit_is_not_a_skip() {
    // the permit depends on the band; the forbid on the score: both residual
    let snapshot = snapshot(&[
        "permit (principal, action, resource) when { context.risk.band == \"low\" };".to_owned(),
        "forbid (principal, action, resource) when { context.risk.score > 50 };".to_owned(),
    ]);
    for target in 0..TARGETS.len() {
        let r = Req {
            user: Some(1),
            target,
            resource: 0,
            post: false,
        };
        assert!(!skipped(&snapshot, &r), "{r:?}");
    }
    // an empty set denies everything whatever the risk
    let empty = snapshot_of_nothing();
    let r = Req {
        user: Some(1),
        target: 0,
        resource: 0,
        post: false,
    };
    assert!(skipped(&empty, &r));
}

fn snapshot_of_nothing() -> PolicySnapshot {
    snapshot(&[])
}
