//! Property: for generated policy sets and requests, the sliced evaluation gives exactly the
//! answer of the whole set — decision, determining policies and errors, or the same error
//! when the request cannot be built. Policies cover every scope form (`==`, `is`, `in`,
//! `is … in`, action groups and lists) and conditions that error (attributes a principal or
//! resource lacks), over a schema with a group hierarchy.

use super::{ContextInput, PolicyInput, PolicySnapshot};
use crate::identity::Principal;
use crate::policy::load::Loaded;
use cedar_policy::{Entities, PolicySet, Schema};
use proptest::prelude::*;
use std::collections::HashMap;
use std::str::FromStr;

const SCHEMA: &str = r#"
entity Group;
entity Anonymous;
entity User in [Group] = { "roles"?: Set<String> };
entity Folder;
entity Account in [Folder] = { "owner": User };
entity Application;
type Risk = { "present": Bool, "outage": Bool, "score": Long, "band": String, "recommendation": String, "reasons": Set<String> };
type HttpRequest = { "method": String, "path": String, "host": String, "ip"?: __cedar::ipaddr };
type RequestContext = { "risk": Risk, "request": HttpRequest };
action "read";
action "write";
action "login" appliesTo { principal: [User, Anonymous], resource: [Application], context: RequestContext };
action "view" in ["read"] appliesTo { principal: [User, Anonymous], resource: [Account], context: RequestContext };
action "transfer" in ["write"] appliesTo { principal: [User], resource: [Account, Application], context: RequestContext };
action "update_profile" in ["write"] appliesTo { principal: [User, Anonymous], resource: [User], context: RequestContext };
"#;

const ENTITIES: &str = r#"[
  { "uid": { "type": "Group", "id": "g0" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Group", "id": "g1" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "User", "id": "u0" }, "attrs": { "roles": ["admin"] }, "parents": [{ "type": "Group", "id": "g0" }] },
  { "uid": { "type": "User", "id": "u1" }, "attrs": {}, "parents": [{ "type": "Group", "id": "g1" }] },
  { "uid": { "type": "User", "id": "u2" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Folder", "id": "f0" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Account", "id": "a0" }, "attrs": { "owner": { "__entity": { "type": "User", "id": "u0" } } }, "parents": [{ "type": "Folder", "id": "f0" }] },
  { "uid": { "type": "Account", "id": "a1" }, "attrs": { "owner": { "__entity": { "type": "User", "id": "u1" } } }, "parents": [] }
]"#;

const ACTIONS: [&str; 4] = ["login", "view", "transfer", "update_profile"];
const RESOURCE_TYPES: [&str; 3] = ["Account", "Application", "User"];

fn principal_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("principal".to_owned()),
        (0..4u8).prop_map(|i| format!("principal == User::\"u{i}\"")),
        Just("principal == Anonymous::\"anonymous\"".to_owned()),
        Just("principal is User".to_owned()),
        Just("principal is Anonymous".to_owned()),
        (0..2u8).prop_map(|i| format!("principal in Group::\"g{i}\"")),
        (0..3u8).prop_map(|i| format!("principal in User::\"u{i}\"")),
        (0..2u8).prop_map(|i| format!("principal is User in Group::\"g{i}\"")),
    ]
}

fn action_scope() -> impl Strategy<Value = String> {
    let any_action = prop::sample::select(vec![
        "login",
        "view",
        "transfer",
        "update_profile",
        "read",
        "write",
    ]);
    prop_oneof![
        Just("action".to_owned()),
        any_action
            .clone()
            .prop_map(|a| format!("action == Action::\"{a}\"")),
        prop::collection::vec(any_action, 1..3).prop_map(|list| {
            let list: Vec<String> = list.iter().map(|a| format!("Action::\"{a}\"")).collect();
            format!("action in [{}]", list.join(", "))
        }),
    ]
}

fn resource_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("resource".to_owned()),
        (0..3u8).prop_map(|i| format!("resource == Account::\"a{i}\"")),
        (0..2u8).prop_map(|i| format!("resource == User::\"u{i}\"")),
        prop::sample::select(RESOURCE_TYPES.to_vec()).prop_map(|t| format!("resource is {t}")),
        Just("resource in Folder::\"f0\"".to_owned()),
        Just("resource is Account in Folder::\"f0\"".to_owned()),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (0..100i64).prop_map(|n| format!("when {{ context.risk.score < {n} }}")),
        // Errors on a resource without `owner` (Application, User).
        Just("when { resource.owner == principal }".to_owned()),
        // Errors on a principal without `roles` (Anonymous, most users).
        Just("when { principal.roles.contains(\"admin\") }".to_owned()),
        Just("unless { context.risk.band == \"high\" }".to_owned()),
    ]
}

fn policy() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        principal_scope(),
        action_scope(),
        resource_scope(),
        condition(),
    )
        .prop_map(|(permit, p, a, r, c)| {
            let effect = if permit { "permit" } else { "forbid" };
            format!("{effect} ({p}, {a}, {r}) {c};")
        })
}

#[derive(Debug, Clone)]
struct Req {
    user: Option<u8>,
    action: &'static str,
    resource_type: &'static str,
    resource_id: String,
    score: i64,
    band: &'static str,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop::option::of(0..5u8),
        prop::sample::select(ACTIONS.to_vec()),
        prop::sample::select(RESOURCE_TYPES.to_vec()),
        prop::sample::select(vec!["a0", "a1", "a9", "u0", "u1", "app"]),
        0..100i64,
        prop::sample::select(vec!["low", "medium", "high"]),
    )
        .prop_map(|(user, action, resource_type, id, score, band)| Req {
            user,
            action,
            resource_type,
            resource_id: id.to_owned(),
            score,
            band,
        })
}

fn snapshot(policies: &[String]) -> PolicySnapshot {
    let text: String = policies
        .iter()
        .enumerate()
        .map(|(i, p)| format!("@id(\"p{i}\")\n{p}\n"))
        .collect();
    snapshot_from(SCHEMA, ENTITIES, &text)
}

/// A snapshot of `text` (policies that each carry an `@id`, which becomes the policy id)
/// over `schema` and `entities`; shared with the risk-skip oracle.
pub(in crate::policy::engine) fn snapshot_from(
    schema: &str,
    entities: &str,
    text: &str,
) -> PolicySnapshot {
    let schema = match Schema::from_cedarschema_str(schema) {
        Ok((s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    let parsed = PolicySet::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut set = PolicySet::new();
    for p in parsed.policies() {
        let id = p.annotation("id").unwrap_or_default().to_owned();
        if let Err(e) = set.add(p.new_id(cedar_policy::PolicyId::new(id))) {
            panic!("{e}");
        }
    }
    let entities =
        Entities::from_json_str(entities, Some(&schema)).unwrap_or_else(|e| panic!("{e}"));
    let loaded = Loaded {
        schema,
        policies: set,
        entities,
        origins: HashMap::new(),
    };
    PolicySnapshot::from_loaded(loaded).unwrap_or_else(|e| panic!("{e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sliced_answer_equals_full_answer(
        policies in prop::collection::vec(policy(), 0..16),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let snapshot = snapshot(&policies);
        for r in requests {
            let principal = match r.user {
                None => Principal::Anonymous,
                Some(i) => Principal::User {
                    id: format!("u{i}"),
                    subject: format!("u{i}"),
                    claims: serde_json::Map::new(),
                },
            };
            let input = PolicyInput {
                principal: &principal,
                claims_as_attributes: &[],
                action: r.action,
                resource_type: r.resource_type,
                resource_id: &r.resource_id,
                context: ContextInput {
                    risk_present: true,
                    outage: false,
                    score: r.score,
                    band: r.band,
                    recommendation: "ALLOW",
                    reasons: &[],
                    method: "GET",
                    path: "/",
                    host: "h",
                    ip: None,
            facts: &crate::policy::NO_FACTS,
                },
            };
            let sliced = snapshot.evaluate_in(&input, true);
            let full = snapshot.evaluate_in(&input, false);
            prop_assert_eq!(sliced, full, "request {:?}", r);
        }
    }
}

/// Guard against a vacuous property: a request that fits the schema is evaluated (not refused
/// for its context), and a permit allows it — so "sliced == full" compares real answers.
/// (The context once gained an attribute this schema lacked, and every case errored alike.)
#[test]
fn a_request_that_fits_the_schema_is_answered() {
    let snapshot =
        snapshot(&["permit (principal, action == Action::\"view\", resource);".to_owned()]);
    let principal = Principal::User {
        id: "u1".into(),
        subject: "u1".into(),
        claims: serde_json::Map::new(),
    };
    let input = PolicyInput {
        principal: &principal,
        claims_as_attributes: &[],
        action: "view",
        resource_type: "Account",
        resource_id: "a1",
        context: ContextInput {
            risk_present: true,
            outage: false,
            score: 10,
            band: "low",
            recommendation: "ALLOW",
            reasons: &[],
            method: "GET",
            path: "/",
            host: "h",
            ip: None,
            facts: &crate::policy::NO_FACTS,
        },
    };
    for sliced in [true, false] {
        let answer = snapshot.evaluate_in(&input, sliced);
        assert!(
            answer
                .as_ref()
                .is_ok_and(|a| a.allowed && a.errors.is_empty()),
            "sliced={sliced}: {answer:?}"
        );
    }
}
