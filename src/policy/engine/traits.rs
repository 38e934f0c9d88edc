//! What a loaded policy set asks of the decision beyond Cedar's answer (issue #16, item 5):
//!
//! * whether any policy reads `context.history` — only then is the history kept and read
//!   (found in each policy's JSON form, conservatively: an access to `context.history`, a
//!   `context has history`, or any use of `context` as a whole counts);
//! * which forbids are step-up requirements: a `forbid` annotated `@step_up` (or
//!   `@step_up("email_otp")`, naming the challenge) that alone determines a deny answers
//!   with the step-up 401 instead of 403, and is waived once the principal shows a fresh
//!   step-up claim — the request is then evaluated against the set without the step-up
//!   forbids (built once here), so every other policy still holds.

use super::{answer_of, EvalError, PolicyAnswer, PolicyInput, PolicySnapshot};
use cedar_policy::{Authorizer, Effect, PolicySet};
use serde_json::Value;
use std::collections::HashMap;

/// The annotation that makes a forbid a step-up requirement.
pub const STEP_UP_ANNOTATION: &str = "step_up";

/// What a policy set needs from the decision, found once per snapshot.
#[derive(Debug, Default)]
pub struct PolicyTraits {
    reads_history: bool,
    /// Step-up forbids by policy id, with the challenge they name (`None`: the default).
    step_up: HashMap<String, Option<String>>,
    /// The set without its step-up forbids (only when it has some).
    waived: Option<PolicySet>,
}

impl PolicyTraits {
    /// Scans `policies`.
    pub fn of(policies: &PolicySet) -> PolicyTraits {
        let mut traits = PolicyTraits::default();
        for policy in policies.policies() {
            if !traits.reads_history && policy.to_json().is_ok_and(|j| reads_history(&j)) {
                traits.reads_history = true;
            }
            if policy.effect() == Effect::Forbid {
                if let Some(challenge) = policy.annotation(STEP_UP_ANNOTATION) {
                    let challenge = (!challenge.is_empty()).then(|| challenge.to_owned());
                    traits.step_up.insert(policy.id().to_string(), challenge);
                }
            }
        }
        if !traits.step_up.is_empty() {
            let kept = policies
                .policies()
                .filter(|p| !traits.step_up.contains_key(&p.id().to_string()))
                .cloned();
            traits.waived = PolicySet::from_policies(kept).ok();
        }
        traits
    }
}

/// Whether a policy's JSON (EST) may read `context.history`.
fn reads_history(est: &Value) -> bool {
    walk(est, false)
}

/// `left_of_access`: `v` is the `left` operand of an attribute access or `has`.
fn walk(v: &Value, left_of_access: bool) -> bool {
    match v {
        Value::Object(map) => {
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                // `context` as a whole (compared, passed along): it may reach the history
                return !left_of_access;
            }
            for op in [".", "has"] {
                if let Some(Value::Object(access)) = map.get(op) {
                    let on_context = access
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context");
                    if on_context && access.get("attr").and_then(Value::as_str) == Some("history") {
                        return true;
                    }
                    let left = access.get("left").is_some_and(|l| walk(l, true));
                    let rest = access
                        .iter()
                        .filter(|(k, _)| k.as_str() != "left")
                        .any(|(_, x)| walk(x, false));
                    if left || rest {
                        return true;
                    }
                }
            }
            map.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "." | "has" | "annotations"))
                .any(|(_, x)| walk(x, false))
        }
        Value::Array(items) => items.iter().any(|x| walk(x, false)),
        _ => false,
    }
}

impl PolicySnapshot {
    /// Whether some policy may read `context.history` (then the history is kept and read).
    pub fn reads_history(&self) -> bool {
        self.traits.reads_history
    }

    /// When every policy that determined a deny is a step-up forbid: the challenge the
    /// first of them names (`Some(None)`: none named). `None` when the deny stands as is
    /// (no determining policy, or one that is not a step-up forbid).
    pub fn step_up_for(&self, determining: &[String]) -> Option<Option<String>> {
        if determining.is_empty() {
            return None;
        }
        let mut named = None;
        for id in determining {
            let challenge = self.traits.step_up.get(id)?;
            named = named.or_else(|| challenge.clone());
        }
        Some(named)
    }

    /// Cedar's answer for `input` with the step-up forbids waived (the principal has
    /// stepped up): the whole set but those forbids, unsliced.
    pub fn evaluate_waiving_step_up(
        &self,
        input: &PolicyInput<'_>,
    ) -> Result<PolicyAnswer, EvalError> {
        let Some(waived) = &self.traits.waived else {
            return self.evaluate(input);
        };
        let prepared = self.prepare(input)?;
        Ok(answer_of(&[Authorizer::new().is_authorized(
            &prepared.request,
            waived,
            &prepared.entities,
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn traits(src: &str) -> PolicyTraits {
        let set = PolicySet::from_str(src).unwrap_or_else(|e| panic!("{e}"));
        PolicyTraits::of(&set)
    }

    #[test]
    fn history_readers_are_found_conservatively() {
        for reads in [
            "permit(principal, action, resource) when { context.history.recent_denies > 1 };",
            "permit(principal, action, resource) when { context has history };",
            "permit(principal, action, resource) when { context[\"history\"].recent_denies > 1 };",
            "forbid(principal, action, resource) when { context.risk.score > 1 || \
             (context has history && context.history.recent_amount_total > 5) };",
            "permit(principal, action, resource) when { context == {} };",
        ] {
            assert!(traits(reads).reads_history, "{reads}");
        }
        for not in [
            "permit(principal, action, resource) when { context.risk.band == \"history\" };",
            "@history(\"x\") permit(principal, action, resource) when { context.request.method == \"GET\" };",
            "permit(principal, action, resource) when { principal has history };",
            "permit(principal, action, resource);",
        ] {
            assert!(!traits(not).reads_history, "{not}");
        }
    }

    #[test]
    fn step_up_forbids_are_indexed_with_their_challenge() {
        let t = traits(
            "@step_up(\"email_otp\") forbid(principal, action, resource) when { context.risk.score > 1 };\n\
             @step_up forbid(principal, action, resource) when { context.risk.score > 2 };\n\
             @step_up permit(principal, action, resource);\n\
             forbid(principal, action, resource) when { context.risk.score > 3 };",
        );
        assert_eq!(
            t.step_up.get("policy0"),
            Some(&Some("email_otp".to_owned()))
        );
        assert_eq!(t.step_up.get("policy1"), Some(&None));
        assert_eq!(t.step_up.len(), 2, "a permit is not a step-up requirement");
        assert_eq!(t.waived.as_ref().map(|w| w.policies().count()), Some(2));
    }
}
