//! One request as Cedar takes it — its request (principal, action, resource, context) and
//! its entity set — without redoing per request the schema work whose answer cannot
//! change (issue #15: the two schema checks and the transitive closure were a third of a
//! whole Check's instructions, more than Cedar's evaluation itself).
//!
//! What is still checked, and where:
//! - **The context** is type-checked by Cedar's own request validation the first time a
//!   context of its *shape* (the action and the type of every attribute, recursively:
//!   record keys, `Long`/`String`/`Bool`, set element types, extension type names, and
//!   entity references by value) is seen in this snapshot; later requests of an accepted
//!   shape skip it, since Cedar's check depends on nothing else. A shape that fails is
//!   never remembered, so it fails every time, with Cedar's message.
//! - **Principal, action and resource** are checked against the schema on every request
//!   (declared types, `appliesTo`, enumerated ids): cheap lookups.
//! - **The principal entity** (the entities file's record plus verified claims) is checked
//!   against the schema on every request: claims are per request.
//! - **The file's entities and the schema's actions** were checked and transitively closed
//!   when the snapshot was loaded; the per-request set takes them as they are (Cedar's
//!   `AssumeAlreadyComputed`) instead of checking and closing them again.
//!
//! This uses cedar-policy-core types that cedar-policy converts from (hidden from its
//! docs), which is why both are pinned to one exact version in `Cargo.toml`;
//! `prepare_props` checks on generated requests that every answer equals the one Cedar's
//! public, fully checked path gives.

use super::{EvalError, PolicyInput, PolicySnapshot, ANONYMOUS_TYPE, USER_TYPE};
use crate::identity::Principal;
use cedar_policy::{Entities, EntityId, EntityTypeName, EntityUid, Request, Schema};
use cedar_policy_core::ast::{self, Literal, RequestSchema as _, ValueKind};
use cedar_policy_core::entities::conformance::EntitySchemaConformanceChecker;
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::validator::CoreSchema;
use serde_json::Value as Json;
use smol_str::SmolStr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, RwLock};

/// The context shapes remembered per snapshot, at most (a bound, not a working set: the
/// shapes riskgate builds are few — which optional facts are present).
const MAX_SHAPES: usize = 4096;

/// A request ready for [`cedar_policy::Authorizer`].
#[derive(Debug)]
pub(super) struct Prepared {
    /// The principal (for slice selection).
    pub principal: EntityUid,
    /// The action.
    pub action: EntityUid,
    /// The resource.
    pub resource: EntityUid,
    /// The request, checked against the schema as the module docs say.
    pub request: Request,
    /// The principal, resource, action and their ancestors.
    pub entities: Entities,
}

/// Entity type names parsed once per snapshot (Cedar's name parser costs more per call
/// than evaluating a small policy set).
#[derive(Debug, Default)]
pub(super) struct TypeNames(HashMap<String, EntityTypeName>);

impl TypeNames {
    /// Every entity type of `schema`, and `Action`.
    pub fn of(schema: &Schema) -> TypeNames {
        let mut names: HashMap<String, EntityTypeName> = schema
            .entity_types()
            .map(|t| (t.to_string(), t.clone()))
            .collect();
        for name in ["Action", USER_TYPE, ANONYMOUS_TYPE] {
            if let Ok(parsed) = name.parse::<EntityTypeName>() {
                names.entry(name.to_owned()).or_insert(parsed);
            }
        }
        TypeNames(names)
    }

    /// The uid of `id` of type `type_name` (parsed here only for a type the schema lacks).
    pub fn uid(&self, type_name: &str, id: &str) -> Result<EntityUid, EvalError> {
        match self.0.get(type_name) {
            Some(t) => Ok(EntityUid::from_type_name_and_id(
                t.clone(),
                EntityId::new(id),
            )),
            None => super::uid(type_name, id),
        }
    }
}

/// Context shapes Cedar's request validation accepted in this snapshot (see the module
/// docs). Keys hold the action and the shape, never values (but entity references).
#[derive(Debug, Default)]
pub(super) struct CheckedShapes(RwLock<HashSet<Vec<u8>>>);

impl CheckedShapes {
    fn contains(&self, shape: &[u8]) -> bool {
        self.0.read().is_ok_and(|seen| seen.contains(shape))
    }

    fn remember(&self, shape: Vec<u8>) {
        if let Ok(mut seen) = self.0.write() {
            if seen.len() < MAX_SHAPES {
                seen.insert(shape);
            }
        }
    }

    /// How many shapes are remembered (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.read().map_or(0, |seen| seen.len())
    }
}

impl PolicySnapshot {
    /// `input` as Cedar takes it.
    pub(super) fn prepare(&self, input: &PolicyInput<'_>) -> Result<Prepared, EvalError> {
        let principal_entity = self.principal_entity(input)?;
        let principal = EntityUid::from(principal_entity.uid().clone());
        let action = self.type_names.uid("Action", input.action)?;
        let resource = self
            .type_names
            .uid(input.resource_type, input.resource_id)?;
        let context = input.context.values()?;
        let request = self.checked_request(&principal, &action, &resource, context)?;
        let entities = self.request_entities(principal_entity, [&action, &resource])?;
        Ok(Prepared {
            principal,
            action,
            resource,
            request,
            entities,
        })
    }

    /// The request, its context type-checked once per shape, its scope every time.
    fn checked_request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: BTreeMap<SmolStr, ast::Value>,
    ) -> Result<Request, EvalError> {
        let shape = shape_of(action, &context);
        let context = ast::Context::Value(Arc::new(context));
        let (p, a, r) = (
            principal.as_ref().clone(),
            action.as_ref().clone(),
            resource.as_ref().clone(),
        );
        let schema = self.schema.as_ref();
        let request = if self.checked_shapes.contains(&shape) {
            schema
                .validate_scope_variables(Some(&p), Some(&a), Some(&r))
                .map_err(|e| EvalError(e.to_string()))?;
            ast::Request::new_unchecked(
                ast::EntityUIDEntry::known(p, None),
                ast::EntityUIDEntry::known(a, None),
                ast::EntityUIDEntry::known(r, None),
                Some(context),
            )
        } else {
            let checked = ast::Request::new(
                (p, None),
                (a, None),
                (r, None),
                context,
                Some(schema),
                Extensions::all_available(),
            )
            .map_err(|e| EvalError(e.to_string()))?;
            self.checked_shapes.remember(shape);
            checked
        };
        Ok(Request::from(request))
    }

    /// The principal entity: for a user, the entities file's record (its groups and
    /// attributes: block lists and roles kept there must keep working) plus the verified
    /// claims the config copies, a claim never overriding an attribute the file sets;
    /// checked against the schema (a claim of the wrong type is refused, not coerced)
    /// unless it is the file's record as loaded (checked then).
    pub(super) fn principal_entity(
        &self,
        input: &PolicyInput<'_>,
    ) -> Result<ast::Entity, EvalError> {
        let entity = match input.principal {
            Principal::Anonymous => {
                let uid = self.type_names.uid(ANONYMOUS_TYPE, "anonymous")?;
                ast::Entity::with_uid(uid.as_ref().clone())
            }
            Principal::User { id, claims, .. } => {
                let user = self.type_names.uid(USER_TYPE, id)?;
                let known = self.entities.get(&user).map(|e| e.as_ref());
                let added: Vec<(SmolStr, ast::PartialValue)> = input
                    .claims_as_attributes
                    .iter()
                    .filter(|name| known.is_none_or(|k| k.get(name).is_none()))
                    .filter_map(|name| {
                        let value = claims.get(name).and_then(claim_value)?;
                        Some((SmolStr::from(name.as_str()), value.into()))
                    })
                    .collect();
                match known {
                    // Checked against the schema when the entities file was loaded.
                    Some(known) if added.is_empty() => return Ok(known.clone()),
                    Some(known) => {
                        let (uid, attrs, indirect, parents, tags) = known.clone().into_inner();
                        ast::Entity::new_with_attr_partial_value(
                            uid,
                            attrs.into_iter().chain(added),
                            indirect,
                            parents,
                            tags,
                        )
                    }
                    None => ast::Entity::new_with_attr_partial_value(
                        user.as_ref().clone(),
                        added,
                        HashSet::new(),
                        HashSet::new(),
                        [],
                    ),
                }
            }
        };
        let schema = CoreSchema::new(self.schema.as_ref());
        EntitySchemaConformanceChecker::new(&schema, Extensions::all_available())
            .validate_entity(&entity)
            .map_err(|e| EvalError(e.to_string()))?;
        Ok(entity)
    }

    /// The entities one request needs: the principal, and from the entities file and the
    /// schema's actions the resource, the action, and the ancestors of all three. Built
    /// per request from the (immutable) stores, so its cost does not grow with the file: a
    /// copy of the whole set per Check cost 150 ms with 100,000 entities. A policy that
    /// dereferences an entity beyond these (say `resource.owner.name`) errors, which denies.
    ///
    /// The stores' entities carry their transitive ancestors (closed at load), and so does
    /// the principal (the file's record, or none), so the set is closed as it is.
    pub(super) fn request_entities(
        &self,
        principal: ast::Entity,
        uids: [&EntityUid; 2],
    ) -> Result<Entities, EvalError> {
        let stores = [&self.entities, &self.actions];
        let mut picked: Vec<ast::Entity> = Vec::with_capacity(8);
        let pick = |uid: &EntityUid, picked: &mut Vec<ast::Entity>| {
            if picked.iter().any(|e| e.uid() == uid.as_ref()) {
                return;
            }
            if let Some(entity) = stores.iter().find_map(|s| s.get(uid)) {
                picked.push(entity.as_ref().clone());
            }
        };
        let ancestors: Vec<EntityUid> = principal
            .ancestors()
            .cloned()
            .map(EntityUid::from)
            .collect();
        // The principal goes in first: a resource naming the same entity keeps this copy.
        picked.push(principal);
        for ancestor in &ancestors {
            pick(ancestor, &mut picked);
        }
        for uid in uids {
            pick(uid, &mut picked);
            for store in stores {
                if let Some(ancestors) = store.ancestors(uid) {
                    for ancestor in ancestors {
                        pick(ancestor, &mut picked);
                    }
                }
            }
        }
        CoreEntities::from_entities(
            picked,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map(Entities::from)
        .map_err(|e| EvalError(e.to_string()))
    }
}

/// A JSON claim as a Cedar value: strings, booleans, integers, arrays of strings; any
/// other claim is left off the entity.
fn claim_value(value: &Json) -> Option<ast::Value> {
    match value {
        Json::String(s) => Some(ast::Value::from(s.as_str())),
        Json::Bool(b) => Some(ast::Value::from(*b)),
        Json::Number(n) => n.as_i64().map(ast::Value::from),
        Json::Array(items) => {
            let strings: Option<Vec<ast::Value>> = items
                .iter()
                .map(|v| v.as_str().map(ast::Value::from))
                .collect();
            strings.map(|s| ast::Value::set(s, None))
        }
        _ => None,
    }
}

/// The action and the type of every context attribute, as bytes: equal for two requests
/// exactly when Cedar's context check cannot tell them apart.
pub(super) fn shape_of(action: &EntityUid, context: &BTreeMap<SmolStr, ast::Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    let action_type = action.type_name();
    let parts = || {
        action_type
            .namespace_components()
            .chain([action_type.basename(), action.id().unescaped()])
    };
    out.extend_from_slice(
        &u32::try_from(parts().count())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for part in parts() {
        put_str(part, &mut out);
    }
    record_shape(context, &mut out);
    out
}

/// `s` with its length in front, so no two sequences of strings give the same bytes.
fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn record_shape(record: &BTreeMap<SmolStr, ast::Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (key, value) in record {
        put_str(key, out);
        value_shape(value, out);
    }
    out.push(b'}');
}

fn value_shape(value: &ast::Value, out: &mut Vec<u8>) {
    match &value.value {
        ValueKind::Lit(Literal::Bool(_)) => out.push(b'b'),
        ValueKind::Lit(Literal::Long(_)) => out.push(b'l'),
        ValueKind::Lit(Literal::String(_)) => out.push(b's'),
        ValueKind::Lit(Literal::EntityUID(uid)) => {
            // By value: an enumerated entity type accepts only some ids.
            out.push(b'e');
            let _ = write!(out, "{uid}");
            out.push(0);
        }
        ValueKind::Set(set) => {
            // The distinct shapes of the elements, in order: Cedar checks that they agree.
            let mut elements: Vec<Vec<u8>> = Vec::new();
            for element in set.iter() {
                let mut shape = Vec::new();
                value_shape(element, &mut shape);
                if !elements.contains(&shape) {
                    elements.push(shape);
                }
            }
            elements.sort();
            out.push(b'[');
            for shape in elements {
                out.extend_from_slice(&shape);
            }
            out.push(b']');
        }
        ValueKind::Record(record) => record_shape(record, out),
        ValueKind::ExtensionValue(ext) => {
            out.push(b'x');
            let _ = write!(out, "{}", ext.typename());
            out.push(0);
        }
    }
}

#[cfg(test)]
mod props;
