//! A `riskgate validate` warning: on a `risk: optional` route, a principal the policies
//! allow at band `unassessed` (no action token) but not at `medium` gains access by not
//! running the SDK. Sticky risk covers a user whose recent token said DENY, high or
//! CHALLENGE; a user with no such record still gets `unassessed`, so such a policy is
//! almost always a mistake (the shipped read policy allows both bands).
//!
//! Each optional route is tried with every `User` of the entities file and `Anonymous`,
//! against the route's fixed resource or every entity of its resource type in the file
//! (at most [`MAX_PAIRS`] principal × resource pairs per route). A pair that Cedar cannot
//! evaluate counts as denied, as it is when serving.

use crate::config::{BandThresholds, RiskMode, RouteConfig};
use crate::decide::risk::score_for_policy;
use crate::identity::Principal;
use crate::policy::engine::{ANONYMOUS_TYPE, USER_TYPE};
use crate::policy::{ContextInput, PolicyInput, PolicySnapshot};
use serde_json::Map;

/// Most principal × resource pairs tried per route (sorted ids: the same pairs every run).
pub const MAX_PAIRS: usize = 10_000;

/// The warnings for `routes` under `policies`, one per optional route that has at least
/// one principal allowed at `unassessed` but not at `medium`.
pub fn warnings(
    routes: &[RouteConfig],
    policies: &PolicySnapshot,
    bands: &BandThresholds,
) -> Vec<String> {
    let mut principals: Vec<Principal> = policies
        .entity_ids(USER_TYPE)
        .into_iter()
        .map(|id| Principal::User {
            subject: id.clone(),
            id,
            claims: Map::new(),
        })
        .collect();
    principals.push(Principal::Anonymous);
    let medium_score = score_for_policy(bands.medium_from);
    let mut out = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        if route.risk != RiskMode::Optional {
            continue;
        }
        let resources = match &route.resource.id {
            Some(id) => vec![id.clone()],
            None => policies.entity_ids(&route.resource.entity_type),
        };
        let mut gaining: Vec<String> = Vec::new();
        let pairs = principals
            .iter()
            .flat_map(|p| resources.iter().map(move |r| (p, r)))
            .take(MAX_PAIRS);
        for (principal, resource) in pairs {
            let at =
                |band: &str, score: i64| allowed(policies, route, principal, resource, band, score);
            if at("unassessed", 0) && !at("medium", medium_score) {
                let label = principal.label();
                if !gaining.contains(&label) {
                    gaining.push(label);
                }
            }
        }
        if !gaining.is_empty() {
            let anonymous = gaining.iter().any(|l| l == ANONYMOUS_TYPE);
            out.push(format!(
                "routes[{index}] ({} {}{}) is `risk: optional` and the policies allow {} at band `unassessed` but not at `medium`: \
                 a client that drops the action token gets more than one that sends it{}",
                route.method,
                route.host.as_deref().unwrap_or(""),
                route.path,
                gaining.join(", "),
                if anonymous { " (Anonymous has no sticky risk)" } else { "" }
            ));
        }
    }
    out
}

/// Whether `principal` may do `route`'s action on `resource` at `band`, as the Cedar stage
/// would answer (an evaluation error denies).
fn allowed(
    policies: &PolicySnapshot,
    route: &RouteConfig,
    principal: &Principal,
    resource: &str,
    band: &str,
    score: i64,
) -> bool {
    let assessed = band != "unassessed";
    let input = PolicyInput {
        principal,
        claims_as_attributes: &[],
        action: &route.action,
        resource_type: &route.resource.entity_type,
        resource_id: resource,
        context: ContextInput {
            risk_present: assessed,
            outage: false,
            score,
            band,
            recommendation: if assessed { "ALLOW" } else { "NONE" },
            reasons: &[],
            method: &route.method,
            path: &route.path,
            host: route.host.as_deref().unwrap_or(""),
            ip: None,
            facts: &crate::policy::NO_FACTS,
        },
    };
    policies
        .evaluate(&input)
        .is_ok_and(|a| a.allowed && a.errors.is_empty())
}
