//! The Cedar engine: one immutable, validated snapshot of schema + policies + entities,
//! and the evaluation of one request against it.

use super::load::{self, Loaded, PolicyError, PolicyProblem};
use super::slice::{PolicySlices, Selected};
use crate::identity::Principal;
use crate::routes::Route;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Response, Schema,
};
use cedar_policy_core::ast::Value;
pub use facts::{FactValue, History, RequestFacts, Transaction, Workload, NO_FACTS};
use smol_str::SmolStr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

/// Entity type of a verified user principal.
pub const USER_TYPE: &str = "User";
/// Entity type of the caller without verified identity (its own type, so no user id can
/// ever collide with it).
pub const ANONYMOUS_TYPE: &str = "Anonymous";
/// The action group that marks read-only actions.
pub const READ_GROUP: &str = "read";

/// Everything Cedar needs for one request, in plain types.
#[derive(Debug, Clone)]
pub struct PolicyInput<'a> {
    /// The caller.
    pub principal: &'a Principal,
    /// Claims copied onto the principal entity.
    pub claims_as_attributes: &'a [String],
    /// Action id.
    pub action: &'a str,
    /// Resource entity type.
    pub resource_type: &'a str,
    /// Resource entity id (any string: escaped by Cedar's constructors).
    pub resource_id: &'a str,
    /// The `context` record (risk and request), checked against the schema by `Request::new`.
    pub context: ContextInput<'a>,
}

/// Cedar's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAnswer {
    /// Allowed by at least one permit and no forbid.
    pub allowed: bool,
    /// `@id`s of the policies that determined the answer, sorted.
    pub determining: Vec<String>,
    /// Evaluation errors (policies that errored are skipped by Cedar, which may deny), sorted.
    pub errors: Vec<String>,
}

/// A request that could not even be put to Cedar (bad entity data, context off-schema).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build cedar request: {0}")]
pub struct EvalError(pub String);

/// A validated, immutable policy snapshot. Replaced as a whole on reload.
#[derive(Debug)]
pub struct PolicySnapshot {
    schema: Schema,
    policies: PolicySet,
    /// `policies` indexed by scope: what each request is actually put to.
    slices: PolicySlices,
    entities: Entities,
    /// The schema's actions and their groups, always available (even without an entities
    /// file) so `action in Action::"read"` works.
    actions: Entities,
    read_actions: HashSet<String>,
    origins: HashMap<String, String>,
    /// History reads and step-up forbids (see [`traits`]).
    traits: traits::PolicyTraits,
    /// Entity type names, parsed once.
    type_names: prepare::TypeNames,
    /// Context shapes the schema accepted (see [`prepare`]).
    checked_shapes: prepare::CheckedShapes,
}

fn type_name(name: &str) -> Result<EntityTypeName, EvalError> {
    EntityTypeName::from_str(name).map_err(|e| EvalError(format!("entity type `{name}`: {e}")))
}

/// An entity uid from a type and any id string (escaped by Cedar, never formatted).
pub fn uid(type_name_str: &str, id: &str) -> Result<EntityUid, EvalError> {
    Ok(EntityUid::from_type_name_and_id(
        type_name(type_name_str)?,
        EntityId::new(id),
    ))
}

impl PolicySnapshot {
    /// Loads and validates all inputs, and checks that every route names an action and a
    /// resource type the schema knows.
    pub fn load(
        dir: &Path,
        schema: &Path,
        entities: Option<&Path>,
        routes: &[Route],
    ) -> Result<PolicySnapshot, PolicyError> {
        let loaded = load::load(dir, schema, entities)?;
        let snapshot = PolicySnapshot::from_loaded(loaded)?;
        snapshot.check_routes(routes, schema)?;
        Ok(snapshot)
    }

    /// A snapshot with the same schema and entities as this one and the policies of `dir`
    /// (strictly validated, unique `@id`s): the shadow set.
    pub fn with_policies_from(&self, dir: &Path) -> Result<PolicySnapshot, PolicyError> {
        let (policies, origins) = load::load_policy_set(dir, &self.schema)?;
        let slices = PolicySlices::build(&policies, &self.schema, &[&self.actions, &self.entities]);
        let traits = traits::PolicyTraits::of(&policies);
        Ok(PolicySnapshot {
            traits,
            type_names: prepare::TypeNames::of(&self.schema),
            checked_shapes: prepare::CheckedShapes::default(),
            schema: self.schema.clone(),
            policies,
            slices,
            entities: self.entities.clone(),
            actions: self.actions.clone(),
            read_actions: self.read_actions.clone(),
            origins,
        })
    }

    fn from_loaded(loaded: Loaded) -> Result<PolicySnapshot, PolicyError> {
        let Loaded {
            schema,
            policies,
            entities,
            origins,
        } = loaded;
        let actions = schema
            .action_entities()
            .map_err(|e| PolicyError(vec![PolicyProblem::new("<schema>", None, e.to_string())]))?;
        let read_group = uid("Action", READ_GROUP).ok();
        let read_actions = schema
            .actions()
            .filter(|a| {
                actions
                    .ancestors(a)
                    .is_some_and(|mut anc| anc.any(|x| Some(x) == read_group.as_ref()))
            })
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        let slices = PolicySlices::build(&policies, &schema, &[&actions, &entities]);
        let traits = traits::PolicyTraits::of(&policies);
        Ok(PolicySnapshot {
            traits,
            type_names: prepare::TypeNames::of(&schema),
            checked_shapes: prepare::CheckedShapes::default(),
            schema,
            policies,
            slices,
            entities,
            actions,
            read_actions,
            origins,
        })
    }

    fn check_routes(&self, routes: &[Route], schema_path: &Path) -> Result<(), PolicyError> {
        let known_actions: HashSet<String> = self
            .schema
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        let known_types: HashSet<String> = self
            .schema
            .entity_types()
            .map(ToString::to_string)
            .collect();
        let mut problems = Vec::new();
        for route in routes {
            if !known_actions.contains(&route.action) {
                problems.push(PolicyProblem::new(
                    schema_path,
                    None,
                    format!(
                        "route `{}` names action `{}`, which the schema does not declare",
                        route.name, route.action
                    ),
                ));
            }
            if !known_types.contains(&route.resource.entity_type) {
                problems.push(PolicyProblem::new(
                    schema_path,
                    None,
                    format!(
                        "route `{}` names resource type `{}`, which the schema does not declare",
                        route.name, route.resource.entity_type
                    ),
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError(problems))
        }
    }

    /// Whether `action` is in the schema's `read` action group.
    pub fn is_read(&self, action: &str) -> bool {
        self.read_actions.contains(action)
    }

    /// Number of policies (for logs and metrics).
    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// Ids of the entities file's entities of type `type_name`, sorted: the principals and
    /// resources `riskgate validate` tries a route with.
    pub fn entity_ids(&self, type_name: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entities
            .iter()
            .map(Entity::uid)
            .filter(|uid| uid.type_name().to_string() == type_name)
            .map(|uid| uid.id().unescaped().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// Every policy id with its `file:line`, sorted by id: what `riskgate test` reports
    /// when no test case exercised it.
    pub fn origins(&self) -> Vec<(&str, &str)> {
        let mut all: Vec<(&str, &str)> = self
            .origins
            .iter()
            .map(|(id, at)| (id.as_str(), at.as_str()))
            .collect();
        all.sort_unstable();
        all
    }

    /// `file:line` of a policy id, for `riskgate check` output.
    pub fn origin(&self, id: &str) -> Option<&str> {
        self.origins.get(id).map(String::as_str)
    }

    /// Evaluates one request against the policies whose scope can match it (see
    /// [`super::slice`]): the same answer as the whole set, at a cost that does not grow
    /// with policies written for other principals, actions or resource types.
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> Result<PolicyAnswer, EvalError> {
        self.evaluate_in(input, true)
    }

    /// Evaluates one request against the whole set, or against its slices.
    fn evaluate_in(
        &self,
        input: &PolicyInput<'_>,
        sliced: bool,
    ) -> Result<PolicyAnswer, EvalError> {
        let prepared = self.prepare(input)?;
        let selected = if sliced {
            self.slices.select(
                &prepared.principal,
                &prepared.action,
                prepared.resource.type_name(),
            )
        } else {
            Selected::Full
        };
        let (request, entities) = (&prepared.request, &prepared.entities);
        let authorizer = Authorizer::new();
        let answer = match selected {
            Selected::Full => {
                answer_of(&[authorizer.is_authorized(request, &self.policies, entities)])
            }
            Selected::Sliced(shared, None) => {
                answer_of(&[authorizer.is_authorized(request, shared, entities)])
            }
            Selected::Sliced(shared, Some(own)) => answer_of(&[
                authorizer.is_authorized(request, shared, entities),
                authorizer.is_authorized(request, own, entities),
            ]),
        };
        Ok(answer)
    }
}

/// The answer of the union of disjoint policy sets, from each set's response, as Cedar
/// gives it for the union: any satisfied forbid denies and determines; otherwise any
/// satisfied permit allows and determines; otherwise deny with nothing determining.
/// Errors are those of every set.
fn answer_of(responses: &[Response]) -> PolicyAnswer {
    let mut forbids = Vec::new();
    let mut permits = Vec::new();
    let mut errors = Vec::new();
    for response in responses {
        let diagnostics = response.diagnostics();
        let reasons = diagnostics.reason().map(ToString::to_string);
        // A deny with reasons names satisfied forbids; an allow names satisfied permits.
        match response.decision() {
            CedarDecision::Allow => permits.extend(reasons),
            CedarDecision::Deny => forbids.extend(reasons),
        }
        errors.extend(diagnostics.errors().map(ToString::to_string));
    }
    errors.sort();
    let (allowed, mut determining) = if !forbids.is_empty() {
        (false, forbids)
    } else if !permits.is_empty() {
        (true, permits)
    } else {
        (false, Vec::new())
    };
    determining.sort();
    PolicyAnswer {
        allowed,
        determining,
        errors,
    }
}

/// Builds the `context` record policies see.
#[derive(Debug, Clone)]
pub struct ContextInput<'a> {
    /// A recommendation was obtained.
    pub risk_present: bool,
    /// The band came from a fail mode (risk API outage), not an assessment.
    pub outage: bool,
    /// Score rounded up (0 when absent).
    pub score: i64,
    /// Band name.
    pub band: &'a str,
    /// Recommendation type name, or `NONE`.
    pub recommendation: &'a str,
    /// Reason codes.
    pub reasons: &'a [std::sync::Arc<str>],
    /// HTTP method.
    pub method: &'a str,
    /// Path.
    pub path: &'a str,
    /// Host.
    pub host: &'a str,
    /// The client address (`context.request.ip`, an `ipaddr`; left out when unknown).
    pub ip: Option<std::net::IpAddr>,
    /// Configured headers and query parameters, and the calling workload.
    pub facts: &'a RequestFacts,
}

impl ContextInput<'_> {
    /// The Cedar record.
    pub fn to_cedar(&self) -> Result<Context, EvalError> {
        Ok(Context::from(cedar_policy_core::ast::Context::Value(
            std::sync::Arc::new(self.values()?),
        )))
    }

    /// The record's attributes as Cedar values, built directly: no restricted expression
    /// to interpret (building the context through Cedar's expression API cost more than
    /// evaluating the example policies), no JSON.
    pub(super) fn values(&self) -> Result<BTreeMap<SmolStr, Value>, EvalError> {
        let s = |v: &str| Value::from(v);
        let reasons = Value::set(self.reasons.iter().map(|r| s(r)), None);
        let risk = Value::record(
            [
                ("present", Value::from(self.risk_present)),
                ("outage", Value::from(self.outage)),
                ("score", Value::from(self.score)),
                ("band", s(self.band)),
                ("recommendation", s(self.recommendation)),
                ("reasons", reasons),
            ],
            None,
        );
        let mut values: BTreeMap<SmolStr, Value> = self.fact_values()?.into_iter().collect();
        values.insert(SmolStr::new_static("risk"), risk);
        Ok(values)
    }

    /// The context entries besides `risk`: `request` and, when known, `source`,
    /// `transaction` and `history`.
    fn fact_values(&self) -> Result<Vec<(SmolStr, Value)>, EvalError> {
        let mut pairs = vec![(SmolStr::new_static("request"), self.request_record()?)];
        if let Some(source) = &self.facts.source {
            pairs.push((
                SmolStr::new_static("source"),
                facts::workload_record(source),
            ));
        }
        if let Some(transaction) = &self.facts.transaction {
            pairs.push((
                SmolStr::new_static("transaction"),
                facts::transaction_record(transaction),
            ));
        }
        if let Some(history) = &self.facts.history {
            pairs.push((
                SmolStr::new_static("history"),
                facts::history_record(history),
            ));
        }
        Ok(pairs)
    }

    /// The `context.request` record (the HTTP facts).
    fn request_record(&self) -> Result<Value, EvalError> {
        let s = |v: &str| Value::from(v);
        let mut pairs = vec![
            ("method", s(self.method)),
            ("path", s(self.path)),
            ("host", s(self.host)),
        ];
        if let Some(ip) = self.ip {
            pairs.push(("ip", facts::ip_value(ip)?));
        }
        if let Some(headers) = &self.facts.headers {
            pairs.push(("headers", facts::values_record(headers)));
        }
        if let Some(query) = &self.facts.query {
            pairs.push(("query", facts::values_record(query)));
        }
        Ok(Value::record(pairs, None))
    }

    /// A context with neutral risk and request fields, for the start-up schema check.
    fn sample(ip: Option<std::net::IpAddr>, facts: &RequestFacts) -> ContextInput<'_> {
        ContextInput {
            risk_present: false,
            outage: false,
            score: 0,
            band: "unassessed",
            recommendation: "NONE",
            reasons: &[],
            method: "GET",
            path: "/",
            host: "",
            ip,
            facts,
        }
    }
}

mod facts;
mod partial;
mod prepare;
mod traits;
pub use traits::STEP_UP_ANNOTATION;
#[cfg(test)]
mod slicing_props;
