//! Policy slicing: the policy set indexed by scope, so a request is evaluated against only
//! the policies whose scope can match it. Cedar evaluates every policy of the set it is
//! given (1,000 principal-scoped policies cost ≈ 0.7 ms per decision); a policy whose scope
//! cannot match contributes nothing to the answer — Cedar checks the scope first and stops
//! there, so such a policy is neither satisfied nor in error — and can be left out.
//!
//! Built once per snapshot, from the schema's request environments (every action with the
//! principal and resource types it applies to):
//!
//! * a **shared slice** per (action, principal type, resource type): every policy whose
//!   scope may match, except those naming one principal with `principal ==`;
//! * an **own slice** per (principal, action, resource type): the `principal ==` policies
//!   of that one principal (10,000 users with one policy each make 10,000 small sets rather
//!   than one set of 10,000).
//!
//! When in doubt a policy goes into a slice, never out of it: `in` scopes (which depend on
//! the entity hierarchy) count as matching any principal or resource; an action group
//! matches every action the schema or the entities file put under it; a set holding
//! template-linked policies is not sliced at all, and a request outside the schema's
//! environments is put to the full set.

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema,
};
use std::collections::{HashMap, HashSet};

/// One (principal type, resource type) slice of an action.
#[derive(Debug)]
struct SharedSlice {
    principal_type: EntityTypeName,
    resource_type: EntityTypeName,
    policies: PolicySet,
}

/// One principal's own `principal ==` policies for an (action, resource type).
#[derive(Debug)]
struct OwnSlice {
    action: EntityUid,
    resource_type: EntityTypeName,
    policies: PolicySet,
}

/// The policy sets one request is put to.
#[derive(Debug, Clone, Copy)]
pub enum Selected<'a> {
    /// No slice covers the request (or the set is not sliced): the whole set.
    Full,
    /// The shared slice, and the principal's own slice when it has one.
    Sliced(&'a PolicySet, Option<&'a PolicySet>),
}

/// The index of a policy set by scope. Immutable; built with its snapshot.
#[derive(Debug, Default)]
pub struct PolicySlices {
    /// Shared slices by action.
    shared: HashMap<EntityUid, Vec<SharedSlice>>,
    /// Own slices by principal.
    own: HashMap<EntityUid, Vec<OwnSlice>>,
}

/// A request environment of the schema: an action, a principal type and a resource type.
struct Env<'a> {
    action: &'a EntityUid,
    /// The action and every group it is in.
    action_and_groups: HashSet<EntityUid>,
    principal_type: &'a EntityTypeName,
    resource_type: &'a EntityTypeName,
}

impl PolicySlices {
    /// Indexes `policies` by the schema's request environments. `stores` are the entity
    /// sets a request's action may take its groups from (the schema's actions and the
    /// entities file).
    pub fn build(policies: &PolicySet, schema: &Schema, stores: &[&Entities]) -> PolicySlices {
        // Template-linked policies are refused at load; should one ever arrive, the whole
        // set is used for every request rather than reasoning about slots.
        if policies.templates().next().is_some() || policies.policies().any(|p| !p.is_static()) {
            return PolicySlices::default();
        }
        let envs = request_envs(schema, stores);
        let mut slices = PolicySlices::default();
        for env in &envs {
            let mut set = PolicySet::new();
            for policy in policies.policies() {
                let shared = !matches!(policy.principal_constraint(), PrincipalConstraint::Eq(_));
                if shared && may_apply(policy, env) && set.add(policy.clone()).is_err() {
                    // Cannot happen (ids are unique in the source set); when in doubt, the
                    // request goes to the full set.
                    return PolicySlices::default();
                }
            }
            slices
                .shared
                .entry(env.action.clone())
                .or_default()
                .push(SharedSlice {
                    principal_type: env.principal_type.clone(),
                    resource_type: env.resource_type.clone(),
                    policies: set,
                });
        }
        for policy in policies.policies() {
            let PrincipalConstraint::Eq(principal) = policy.principal_constraint() else {
                continue;
            };
            for env in envs
                .iter()
                .filter(|e| e.principal_type == principal.type_name())
            {
                if !may_apply(policy, env) {
                    continue;
                }
                let own = slices.own.entry(principal.clone()).or_default();
                let position = own
                    .iter()
                    .position(|s| &s.action == env.action && &s.resource_type == env.resource_type);
                let slot = match position {
                    Some(i) => &mut own[i],
                    None => {
                        own.push(OwnSlice {
                            action: env.action.clone(),
                            resource_type: env.resource_type.clone(),
                            policies: PolicySet::new(),
                        });
                        let last = own.len() - 1;
                        &mut own[last]
                    }
                };
                if slot.policies.add(policy.clone()).is_err() {
                    return PolicySlices::default();
                }
            }
        }
        slices
    }

    /// The sets a request of `principal` doing `action` on a resource of `resource_type`
    /// is put to.
    pub fn select(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource_type: &EntityTypeName,
    ) -> Selected<'_> {
        let principal_type = principal.type_name();
        let shared = self.shared.get(action).and_then(|slices| {
            slices
                .iter()
                .find(|s| &s.principal_type == principal_type && &s.resource_type == resource_type)
        });
        let Some(shared) = shared else {
            return Selected::Full;
        };
        let own = self.own.get(principal).and_then(|slices| {
            slices
                .iter()
                .find(|s| &s.action == action && &s.resource_type == resource_type)
        });
        Selected::Sliced(&shared.policies, own.map(|s| &s.policies))
    }
}

/// Every (action, principal type, resource type) the schema lets a request have.
fn request_envs<'a>(schema: &'a Schema, stores: &[&Entities]) -> Vec<Env<'a>> {
    let mut envs = Vec::new();
    for action in schema.actions() {
        let mut action_and_groups: HashSet<EntityUid> = HashSet::from([action.clone()]);
        for store in stores {
            if let Some(ancestors) = store.ancestors(action) {
                action_and_groups.extend(ancestors.cloned());
            }
        }
        let principals: Vec<&EntityTypeName> = schema
            .principals_for_action(action)
            .map(Iterator::collect)
            .unwrap_or_default();
        let resources: Vec<&EntityTypeName> = schema
            .resources_for_action(action)
            .map(Iterator::collect)
            .unwrap_or_default();
        for principal_type in &principals {
            for resource_type in &resources {
                envs.push(Env {
                    action,
                    action_and_groups: action_and_groups.clone(),
                    principal_type,
                    resource_type,
                });
            }
        }
    }
    envs
}

/// Whether the scope of `policy` may match a request of `env` (true when in doubt).
fn may_apply(policy: &Policy, env: &Env<'_>) -> bool {
    let principal = match policy.principal_constraint() {
        PrincipalConstraint::Any | PrincipalConstraint::In(_) => true,
        PrincipalConstraint::Eq(uid) => uid.type_name() == env.principal_type,
        PrincipalConstraint::Is(ty) | PrincipalConstraint::IsIn(ty, _) => &ty == env.principal_type,
    };
    let action = match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => &uid == env.action,
        ActionConstraint::In(groups) => groups.iter().any(|g| env.action_and_groups.contains(g)),
    };
    let resource = match policy.resource_constraint() {
        ResourceConstraint::Any | ResourceConstraint::In(_) => true,
        ResourceConstraint::Eq(uid) => uid.type_name() == env.resource_type,
        ResourceConstraint::Is(ty) | ResourceConstraint::IsIn(ty, _) => &ty == env.resource_type,
    };
    principal && action && resource
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const SCHEMA: &str = r#"
        entity Anonymous;
        entity User;
        entity Account;
        action "read";
        action "view" in ["read"] appliesTo { principal: [User, Anonymous], resource: [Account] };
        action "pay" appliesTo { principal: [User], resource: [Account] };
    "#;

    fn setup(policies: &str) -> (PolicySlices, Schema) {
        let schema = match Schema::from_cedarschema_str(SCHEMA) {
            Ok((s, _)) => s,
            Err(e) => panic!("{e}"),
        };
        let set = PolicySet::from_str(policies).unwrap_or_else(|e| panic!("{e}"));
        let actions = schema.action_entities().unwrap_or_else(|e| panic!("{e}"));
        (PolicySlices::build(&set, &schema, &[&actions]), schema)
    }

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(set: &PolicySet) -> Vec<String> {
        let mut ids: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        ids
    }

    fn selected(
        slices: &PolicySlices,
        principal: &str,
        action: &str,
    ) -> (Vec<String>, Vec<String>) {
        let ty = EntityTypeName::from_str("Account").unwrap_or_else(|e| panic!("{e}"));
        match slices.select(&uid(principal), &uid(action), &ty) {
            Selected::Full => panic!("expected a slice"),
            Selected::Sliced(shared, own) => (ids(shared), own.map(ids).unwrap_or_default()),
        }
    }

    #[test]
    fn scopes_pick_the_policies_that_can_match() {
        let (slices, _) = setup(
            r#"
            permit (principal, action, resource);
            permit (principal == User::"u1", action == Action::"view", resource);
            permit (principal == User::"u2", action, resource);
            permit (principal is Anonymous, action in [Action::"read"], resource);
            forbid (principal in User::"g", action == Action::"pay", resource is Account);
            "#,
        );
        assert_eq!(
            selected(&slices, r#"User::"u1""#, r#"Action::"view""#),
            (vec!["policy0".into()], vec!["policy1".into()])
        );
        assert_eq!(
            selected(&slices, r#"User::"u1""#, r#"Action::"pay""#),
            (vec!["policy0".into(), "policy4".into()], vec![])
        );
        // `in Action::"read"` reaches `view` through its group.
        assert_eq!(
            selected(&slices, r#"Anonymous::"anonymous""#, r#"Action::"view""#),
            (vec!["policy0".into(), "policy3".into()], vec![])
        );
        assert_eq!(
            selected(&slices, r#"User::"u2""#, r#"Action::"pay""#),
            (
                vec!["policy0".into(), "policy4".into()],
                vec!["policy2".into()]
            )
        );
    }

    #[test]
    fn a_request_outside_the_schema_gets_the_full_set() {
        let (slices, _) = setup("permit (principal, action, resource);");
        let ty = EntityTypeName::from_str("User").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            slices.select(&uid(r#"User::"u1""#), &uid(r#"Action::"view""#), &ty),
            Selected::Full
        ));
    }

    #[test]
    fn a_set_with_templates_is_not_sliced() {
        let (slices, _) = setup(
            r#"permit (principal == ?principal, action, resource);
               permit (principal, action, resource);"#,
        );
        let ty = EntityTypeName::from_str("Account").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            slices.select(&uid(r#"User::"u1""#), &uid(r#"Action::"view""#), &ty),
            Selected::Full
        ));
    }
}
