//! Cedar with `context.risk` unknown: does the policy set deny this request *whatever* the
//! risk API would say? If so riskgate can deny without asking the API (issue 13, item 4).
//!
//! Uses cedar-policy's `partial-eval` feature, which is experimental; `Cargo.toml` pins
//! cedar-policy to one exact version so an upgrade is a deliberate step (re-run
//! `tests/risk_skip_oracle.rs` on it).
//!
//! The answer is sound only in one direction, and only that direction is used: a request
//! is reported as denied when some forbid is satisfied without looking at risk, or when
//! no permit is satisfied or even residual (every permit is false or errors whatever the
//! risk). A residual forbid, a residual permit, an evaluation error building the request:
//! all count as "risk may matter".

use super::{PolicyInput, PolicySnapshot};
use crate::policy::slice::Selected;
use cedar_policy::{Authorizer, Context, Effect, PartialResponse, Request, RestrictedExpression};
use cedar_policy_core::ast;

/// The name of the unknown standing for the whole `context.risk` record.
const RISK_UNKNOWN: &str = "risk";

impl PolicySnapshot {
    /// `Some(ids)` when Cedar denies `input` whatever `context.risk` holds (every value of
    /// every risk attribute, present or not), with the `@id`s of the forbids that deny it
    /// regardless (empty when no permit can apply); `None` when risk may change the answer
    /// or the request cannot be put to Cedar. The risk fields of `input.context` are
    /// ignored. Evaluated on the same slices as [`PolicySnapshot::evaluate`].
    pub fn denied_whatever_risk(&self, input: &PolicyInput<'_>) -> Option<Vec<String>> {
        let responses = match self.evaluate_partial(input) {
            Ok(responses) => responses,
            Err(e) => {
                tracing::debug!(error = %e, "partial evaluation impossible: risk may matter");
                return None;
            }
        };
        denied_regardless(&responses)
    }

    /// The partial responses of the sets the request is put to (see `evaluate_in`).
    fn evaluate_partial(
        &self,
        input: &PolicyInput<'_>,
    ) -> Result<Vec<PartialResponse>, super::EvalError> {
        // Cedar's schema check refuses a context holding an unknown, so the request is
        // prepared (and checked) with the placeholder risk of `input` (a request off the
        // schema is not skipped: it goes on to the same error as today), then put to Cedar
        // with `context.risk` unknown, unchecked.
        let prepared = self.prepare(input)?;
        let selected = self.slices.select(
            &prepared.principal,
            &prepared.action,
            prepared.resource.type_name(),
        );
        let context = risk_unknown_context(input)?;
        let request = Request::new(
            prepared.principal,
            prepared.action,
            prepared.resource,
            context,
            None,
        )
        .map_err(|e| super::EvalError(e.to_string()))?;
        let entities = prepared.entities;
        let authorizer = Authorizer::new();
        let partial = |set| authorizer.is_authorized_partial(&request, set, &entities);
        Ok(match selected {
            Selected::Full => vec![partial(&self.policies)],
            Selected::Sliced(shared, None) => vec![partial(shared)],
            Selected::Sliced(shared, Some(own)) => vec![partial(shared), partial(own)],
        })
    }
}

/// The context of `input` with `risk` an unknown.
fn risk_unknown_context(input: &PolicyInput<'_>) -> Result<Context, super::EvalError> {
    let facts = input.context.fact_values()?.into_iter().map(|(k, v)| {
        (
            k.to_string(),
            RestrictedExpression::from(ast::RestrictedExpr::from(v)),
        )
    });
    Context::from_pairs(
        std::iter::once((
            RISK_UNKNOWN.to_owned(),
            RestrictedExpression::new_unknown(RISK_UNKNOWN),
        ))
        .chain(facts),
    )
    .map_err(|e| super::EvalError(e.to_string()))
}

/// The union of disjoint sets denies whatever the unknowns are: a forbid of any set is
/// satisfied regardless of them, or no permit of any set is satisfied or residual.
fn denied_regardless(responses: &[PartialResponse]) -> Option<Vec<String>> {
    let mut forbids: Vec<String> = responses
        .iter()
        .flat_map(PartialResponse::definitely_satisfied)
        .filter(|p| p.effect() == Effect::Forbid)
        .map(|p| p.id().to_string())
        .collect();
    if !forbids.is_empty() {
        forbids.sort();
        return Some(forbids);
    }
    let may_permit = responses.iter().any(|r| {
        r.definitely_satisfied()
            .chain(r.nontrivial_residuals())
            .any(|p| p.effect() == Effect::Permit)
    });
    (!may_permit).then(Vec::new)
}

#[cfg(test)]
mod oracle;
