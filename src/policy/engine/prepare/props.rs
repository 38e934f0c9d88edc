//! Property: the prepared request (context type-checked once per shape, entity set taken
//! as closed at load) gets exactly the answer of Cedar's public, fully checked path — the
//! context parsed from JSON against the schema, the entity set parsed from JSON against
//! the schema and closed anew, the request checked — for generated requests in sequence
//! on one snapshot: nested groups, claims of every type (some off the schema), typed
//! headers (some of the wrong type), every optional context record present or absent,
//! IPv4 and IPv6 addresses. A request refused by one path must be refused by the other.

use super::super::slicing_props::snapshot_from;
use super::super::{
    answer_of, ContextInput, FactValue, History, PolicyAnswer, PolicyInput, PolicySnapshot,
    RequestFacts, Transaction, Workload,
};
use crate::identity::Principal;
use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request};
use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};
use std::net::IpAddr;
use std::sync::Arc;

const SCHEMA: &str = r#"
entity Group in [Group];
entity Anonymous;
entity User in [Group] = { "dept"?: String, "level"?: Long, "admin"?: Bool, "tags"?: Set<String> };
entity Account in [Group] = { "owner"?: User };
type Risk = { "present": Bool, "outage": Bool, "score": Long, "band": String, "recommendation": String, "reasons": Set<String> };
type Headers = { "x_tenant"?: String, "x_level"?: Long };
type HttpRequest = { "method": String, "path": String, "host": String, "ip"?: __cedar::ipaddr, "headers"?: Headers };
type Source = { "principal": String, "trust_domain": String, "namespace": String, "service_account": String };
type Transaction = { "amount": Long, "currency": String, "payee"?: String };
type History = { "recent_denies": Long, "recent_challenges": Long, "recent_amount_total": Long };
type Ctx = { "risk": Risk, "request": HttpRequest, "source"?: Source, "transaction"?: Transaction, "history"?: History };
action "read";
action "view" in ["read"] appliesTo { principal: [User, Anonymous], resource: [Account], context: Ctx };
action "pay" appliesTo { principal: [User], resource: [Account], context: Ctx };
"#;

const ENTITIES: &str = r#"[
  { "uid": { "type": "Group", "id": "root" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Group", "id": "staff" }, "attrs": {}, "parents": [{ "type": "Group", "id": "root" }] },
  { "uid": { "type": "Group", "id": "tellers" }, "attrs": {}, "parents": [{ "type": "Group", "id": "staff" }] },
  { "uid": { "type": "User", "id": "u0" }, "attrs": { "dept": "ops" }, "parents": [{ "type": "Group", "id": "tellers" }] },
  { "uid": { "type": "User", "id": "u1" }, "attrs": {}, "parents": [{ "type": "Group", "id": "staff" }] },
  { "uid": { "type": "Account", "id": "a0" }, "attrs": { "owner": { "__entity": { "type": "User", "id": "u0" } } }, "parents": [{ "type": "Group", "id": "tellers" }] },
  { "uid": { "type": "Account", "id": "a1" }, "attrs": {}, "parents": [] }
]"#;

const POLICIES: &str = r#"
@id("staff-view") permit (principal in Group::"root", action in Action::"read", resource);
@id("owner-pays") permit (principal, action == Action::"pay", resource) when { resource has owner && resource.owner == principal };
@id("level-pays") permit (principal is User, action == Action::"pay", resource) when { principal has level && principal.level > 3 };
@id("anyone-low") permit (principal, action, resource) when { context.risk.score < 20 };
@id("no-tellers-net") forbid (principal in Group::"tellers", action, resource) when { context.request has ip && context.request.ip.isInRange(ip("10.0.0.0/8")) };
@id("no-admin-high") forbid (principal, action, resource) when { principal has admin && principal.admin && context.risk.score > 70 };
@id("no-big") forbid (principal, action == Action::"pay", resource) when { context has transaction && context.transaction.amount > 100000 };
@id("no-tenant-x") forbid (principal, action, resource) when { context.request has headers && context.request.headers has x_tenant && context.request.headers.x_tenant == "x" };
@id("no-level-9") forbid (principal, action, resource) when { context.request has headers && context.request.headers has x_level && context.request.headers.x_level == 9 };
@id("no-history") forbid (principal, action, resource) when { context has history && context.history.recent_denies > 2 };
@id("mesh-only") forbid (principal, action == Action::"pay", resource) when { context has source && context.source.namespace == "evil" };
@id("tagged") permit (principal is User, action, resource) when { principal has tags && principal.tags.contains("vip") };
@id("reasons") forbid (principal, action, resource) when { context.risk.reasons.contains("BOT") };
"#;

#[derive(Debug, Clone)]
struct Case {
    user: Option<u8>,
    claims: Vec<(&'static str, Json)>,
    action: &'static str,
    resource: &'static str,
    score: i64,
    reasons: Vec<&'static str>,
    ip: Option<IpAddr>,
    headers: Option<Vec<(String, FactValue)>>,
    source: Option<&'static str>,
    transaction: Option<(i64, bool)>,
    history: Option<i64>,
}

fn claim() -> impl Strategy<Value = (&'static str, Json)> {
    prop_oneof![
        Just(("dept", json!("risk"))),
        Just(("dept", json!(7))),
        (0..10i64).prop_map(|n| ("level", json!(n))),
        Just(("level", json!("high"))),
        any::<bool>().prop_map(|b| ("admin", json!(b))),
        Just(("tags", json!(["vip", "beta"]))),
        Just(("tags", json!(["a"]))),
        Just(("tags", json!([1, 2]))),
        Just(("unknown", json!("x"))),
    ]
}

fn header() -> impl Strategy<Value = (String, FactValue)> {
    prop_oneof![
        prop::sample::select(vec!["x", "y"])
            .prop_map(|v| ("x_tenant".to_owned(), FactValue::String(v.into()))),
        (8..10i64).prop_map(|n| ("x_level".to_owned(), FactValue::Long(n))),
        // Off the schema: the wrong type, or an attribute it does not declare.
        Just(("x_level".to_owned(), FactValue::String("9".into()))),
        Just(("x_other".to_owned(), FactValue::Bool(true))),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            prop::option::of(0..3u8),
            prop::collection::vec(claim(), 0..3),
            prop::sample::select(vec!["view", "pay"]),
            prop::sample::select(vec!["a0", "a1", "a9"]),
            0..100i64,
            prop::collection::vec(prop::sample::select(vec!["BOT", "NEW_DEVICE"]), 0..3),
        ),
        (
            prop::option::of(prop::sample::select(vec![
                "10.1.2.3",
                "192.0.2.1",
                "2001:db8::1",
            ])),
            prop::option::of(prop::collection::vec(header(), 0..3)),
            prop::option::of(prop::sample::select(vec!["bank", "evil"])),
            prop::option::of((0..200_000i64, any::<bool>())),
            prop::option::of(0..5i64),
        ),
    )
        .prop_map(
            |(
                (user, mut claims, action, resource, score, reasons),
                (ip, headers, source, transaction, history),
            )| Case {
                user,
                claims: {
                    // A token has each claim once.
                    let mut seen = Vec::new();
                    claims.retain(|(name, _)| {
                        let first = !seen.contains(name);
                        seen.push(*name);
                        first
                    });
                    claims
                },
                action,
                resource,
                score,
                reasons,
                ip: ip.and_then(|a| a.parse().ok()),
                headers: headers.map(|mut h| {
                    h.sort_by(|a, b| a.0.cmp(&b.0));
                    h.dedup_by(|a, b| a.0 == b.0);
                    h
                }),
                source,
                transaction,
                history,
            },
        )
}

fn principal_of(case: &Case) -> Principal {
    match case.user {
        None => Principal::Anonymous,
        Some(i) => Principal::User {
            id: format!("u{i}"),
            subject: format!("u{i}"),
            claims: case
                .claims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<Map<String, Json>>(),
        },
    }
}

fn facts_of(case: &Case) -> RequestFacts {
    RequestFacts {
        headers: case.headers.clone(),
        query: None,
        source: case.source.map(|ns| Workload {
            principal: format!("spiffe://cluster.local/ns/{ns}/sa/app"),
            trust_domain: "cluster.local".into(),
            namespace: ns.into(),
            service_account: "app".into(),
        }),
        transaction: case.transaction.map(|(amount, payee)| Transaction {
            amount_minor: amount,
            currency: "USD".into(),
            payee: payee.then(|| "acme".to_owned()),
        }),
        history: case.history.map(|n| History {
            recent_denies: n,
            recent_challenges: 0,
            recent_amount_total: 0,
        }),
    }
}

const CLAIMS: [&str; 5] = ["dept", "level", "admin", "tags", "unknown"];

fn input_of<'a>(
    case: &'a Case,
    principal: &'a Principal,
    facts: &'a RequestFacts,
    claims: &'a [String],
    reasons: &'a [Arc<str>],
) -> PolicyInput<'a> {
    PolicyInput {
        principal,
        claims_as_attributes: claims,
        action: case.action,
        resource_type: "Account",
        resource_id: case.resource,
        context: ContextInput {
            risk_present: true,
            outage: false,
            score: case.score,
            band: "low",
            recommendation: "ALLOW",
            reasons,
            method: "POST",
            path: "/p",
            host: "h",
            ip: case.ip,
            facts,
        },
    }
}

fn uid(t: &str, id: &str) -> Json {
    json!({ "type": t, "id": id })
}

/// The context as JSON, from the case itself (not from riskgate's context builder).
fn context_json(case: &Case) -> Json {
    let mut request = json!({ "method": "POST", "path": "/p", "host": "h" });
    if let Some(ip) = case.ip {
        request["ip"] = json!({ "__extn": { "fn": "ip", "arg": ip.to_string() } });
    }
    if let Some(headers) = &case.headers {
        let record: Map<String, Json> = headers
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    FactValue::String(s) => json!(s),
                    FactValue::Long(n) => json!(n),
                    FactValue::Bool(b) => json!(b),
                };
                (k.clone(), v)
            })
            .collect();
        request["headers"] = Json::Object(record);
    }
    let mut context = json!({
        "risk": { "present": true, "outage": false, "score": case.score, "band": "low",
                  "recommendation": "ALLOW", "reasons": case.reasons },
        "request": request,
    });
    if let Some(ns) = case.source {
        context["source"] = json!({ "principal": format!("spiffe://cluster.local/ns/{ns}/sa/app"),
            "trust_domain": "cluster.local", "namespace": ns, "service_account": "app" });
    }
    if let Some((amount, payee)) = case.transaction {
        context["transaction"] = json!({ "amount": amount, "currency": "USD" });
        if payee {
            context["transaction"]["payee"] = json!("acme");
        }
    }
    if let Some(n) = case.history {
        context["history"] =
            json!({ "recent_denies": n, "recent_challenges": 0, "recent_amount_total": 0 });
    }
    context
}

/// The entities file with the principal's record replaced by file record + claims: every
/// entity parsed from JSON against the schema and closed by Cedar.
fn entities_json(case: &Case) -> Json {
    let Json::Array(mut all) = serde_json::from_str::<Json>(ENTITIES).unwrap_or(Json::Null) else {
        panic!("entities fixture");
    };
    match case.user {
        None => {
            all.push(json!({ "uid": uid("Anonymous", "anonymous"), "attrs": {}, "parents": [] }))
        }
        Some(i) => {
            let id = format!("u{i}");
            let at = all.iter().position(|e| e["uid"] == uid("User", &id));
            let mut record = match at {
                Some(at) => all.remove(at),
                None => json!({ "uid": uid("User", &id), "attrs": {}, "parents": [] }),
            };
            for (name, value) in &case.claims {
                let file_sets = record["attrs"].get(*name).is_some();
                let representable = match value {
                    Json::String(_) | Json::Bool(_) => true,
                    Json::Number(n) => n.is_i64(),
                    Json::Array(items) => items.iter().all(Json::is_string),
                    _ => false,
                };
                if !file_sets && representable {
                    record["attrs"][*name] = value.clone();
                }
            }
            all.push(record);
        }
    }
    Json::Array(all)
}

/// Cedar's public, fully checked path.
fn reference(snapshot: &PolicySnapshot, case: &Case) -> Result<PolicyAnswer, String> {
    let schema = &snapshot.schema;
    let principal: EntityUid = match case.user {
        None => r#"Anonymous::"anonymous""#.parse(),
        Some(i) => format!(r#"User::"u{i}""#).parse(),
    }
    .map_err(|e| format!("{e}"))?;
    let action: EntityUid = format!(r#"Action::"{}""#, case.action)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let resource: EntityUid = format!(r#"Account::"{}""#, case.resource)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let context = Context::from_json_value(context_json(case), Some((schema, &action)))
        .map_err(|e| e.to_string())?;
    let request = Request::new(principal, action, resource, context, Some(schema))
        .map_err(|e| e.to_string())?;
    let entities =
        Entities::from_json_value(entities_json(case), Some(schema)).map_err(|e| e.to_string())?;
    Ok(answer_of(&[Authorizer::new().is_authorized(
        &request,
        &snapshot.policies,
        &entities,
    )]))
}

fn prepared(snapshot: &PolicySnapshot, case: &Case) -> Result<PolicyAnswer, String> {
    let principal = principal_of(case);
    let facts = facts_of(case);
    let claims: Vec<String> = CLAIMS.iter().map(|c| (*c).to_owned()).collect();
    let reasons: Vec<Arc<str>> = case.reasons.iter().map(|r| (*r).into()).collect();
    let input = input_of(case, &principal, &facts, &claims, &reasons);
    let prepared = snapshot.prepare(&input).map_err(|e| e.to_string())?;
    Ok(answer_of(&[Authorizer::new().is_authorized(
        &prepared.request,
        &snapshot.policies,
        &prepared.entities,
    )]))
}

fn snapshot() -> PolicySnapshot {
    snapshot_from(SCHEMA, ENTITIES, POLICIES)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_prepared_request_gets_the_answer_of_the_fully_checked_path(
        cases in prop::collection::vec(case(), 1..24),
    ) {
        let snapshot = snapshot();
        for case in &cases {
            let fast = prepared(&snapshot, case);
            let full = reference(&snapshot, case);
            match (&fast, &full) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", case),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{:?}\nprepared: {:?}\nreference: {:?}", case, fast, full),
            }
        }
    }
}

fn plain(user: Option<u8>) -> Case {
    Case {
        user,
        claims: Vec::new(),
        action: "view",
        resource: "a0",
        score: 50,
        reasons: Vec::new(),
        ip: None,
        headers: None,
        source: None,
        transaction: None,
        history: None,
    }
}

/// Guards against a vacuous property: each kind of outcome the property compares occurs.
#[test]
fn the_fixture_allows_denies_and_refuses() {
    let snapshot = snapshot();
    let allowed = prepared(&snapshot, &plain(Some(0)));
    assert!(allowed.as_ref().is_ok_and(|a| a.allowed), "{allowed:?}");
    let mut grandchild = plain(Some(0));
    grandchild.ip = "10.1.2.3".parse().ok();
    let denied = prepared(&snapshot, &grandchild);
    assert_eq!(
        denied.map(|a| a.determining),
        Ok(vec!["no-tellers-net".to_owned()]),
        "u0 ∈ tellers ∈ staff: the forbid on tellers applies through the closed set"
    );
    let mut wrong_claim = plain(Some(2));
    wrong_claim.claims = vec![("level", json!("high"))];
    assert!(
        prepared(&snapshot, &wrong_claim).is_err(),
        "a claim off the schema is refused"
    );
}

/// A context shape accepted once does not let a different shape through: the cache is keyed
/// by the shape, and a refused shape is never remembered.
#[test]
fn an_accepted_shape_does_not_admit_another() {
    let snapshot = snapshot();
    let mut good = plain(Some(1));
    good.headers = Some(vec![("x_level".into(), FactValue::Long(9))]);
    let mut bad = plain(Some(1));
    bad.headers = Some(vec![("x_level".into(), FactValue::String("9".into()))]);
    for _ in 0..3 {
        assert!(prepared(&snapshot, &good).is_ok());
        assert!(
            prepared(&snapshot, &bad).is_err(),
            "a Long header sent as a String"
        );
    }
    assert_eq!(
        snapshot.checked_shapes.len(),
        1,
        "only the accepted shape is kept"
    );
    let denied = prepared(&snapshot, &good).map(|a| a.determining);
    assert_eq!(denied, Ok(vec!["no-level-9".to_owned()]));
}
