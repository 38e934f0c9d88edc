//! Request facts beyond method, path and host: the typed values of configured headers and
//! query parameters, and the calling workload. How they become Cedar values, and the
//! start-up check that the schema accepts them (an off-schema context would otherwise deny
//! every request at run time, with no hint why).

use super::{uid, PolicySnapshot};
use crate::config::{ContextConfig, ContextField, FieldType};
use crate::policy::{PolicyError, PolicyProblem};
use crate::routes::Route;
use cedar_policy::{Context, RestrictedExpression};
use cedar_policy_core::ast::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// One typed value of a configured header or query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactValue {
    /// `String`.
    String(String),
    /// `Long`.
    Long(i64),
    /// `Bool`.
    Bool(bool),
}

impl FactValue {
    fn to_value(&self) -> Value {
        match self {
            FactValue::String(s) => Value::from(s.as_str()),
            FactValue::Long(n) => Value::from(*n),
            FactValue::Bool(b) => Value::from(*b),
        }
    }
}

/// The calling workload, from a SPIFFE id of a configured trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The whole SPIFFE id (`spiffe://cluster.local/ns/bank/sa/payments`).
    pub principal: String,
    /// `cluster.local`.
    pub trust_domain: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
}

/// Facts of one request beyond method, path, host and address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `context.request.headers` (`None`: no header configured, the record is left out).
    pub headers: Option<Vec<(String, FactValue)>>,
    /// `context.request.query` (`None`: no parameter configured, the record is left out).
    pub query: Option<Vec<(String, FactValue)>>,
    /// `context.source`, when the peer presented an identity of a configured trust domain.
    pub source: Option<Workload>,
    /// `context.transaction`, on routes that map JSON body fields (`None` elsewhere).
    pub transaction: Option<Transaction>,
    /// `context.history`, for authenticated principals when some policy reads it.
    pub history: Option<History>,
}

/// What the request body says the request does (issue #16): the Cedar record
/// `Transaction { amount: Long, currency: String, payee?: String }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The amount in ISO 4217 minor units of `currency` (12,000.00 USD is 1,200,000): a
    /// Cedar `Long` compares exactly, where `decimal` has four places and a smaller range.
    pub amount_minor: i64,
    /// ISO 4217 alphabetic code, upper case.
    pub currency: String,
    /// Who receives the money, when the route maps a payee.
    pub payee: Option<String>,
}

/// The principal's recent outcomes over the configured window (issue #16): the Cedar record
/// `History { recent_denies: Long, recent_challenges: Long, recent_amount_total: Long }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Denied Checks of this principal in the window.
    pub recent_denies: i64,
    /// Step-up (CHALLENGE) answers to this principal in the window.
    pub recent_challenges: i64,
    /// Minor units moved in this request's currency in the window, this request's amount
    /// included (reserved before Cedar decides, released when the request is denied).
    pub recent_amount_total: i64,
}

/// No facts: for callers that evaluate a route without a request (offline checks).
pub static NO_FACTS: RequestFacts = RequestFacts {
    headers: None,
    query: None,
    source: None,
    transaction: None,
    history: None,
};

/// `context.request.headers` / `.query`: the values present, by attribute.
pub(super) fn values_record(values: &[(String, FactValue)]) -> Value {
    Value::record(values.iter().map(|(k, v)| (k.as_str(), v.to_value())), None)
}

/// `context.source`.
pub(super) fn workload_record(w: &Workload) -> Value {
    Value::record(
        [
            ("principal", w.principal.as_str()),
            ("trust_domain", w.trust_domain.as_str()),
            ("namespace", w.namespace.as_str()),
            ("service_account", w.service_account.as_str()),
        ],
        None,
    )
}

/// `context.transaction`.
pub(super) fn transaction_record(t: &Transaction) -> Value {
    let mut pairs = vec![
        ("amount", Value::from(t.amount_minor)),
        ("currency", Value::from(t.currency.as_str())),
    ];
    if let Some(payee) = &t.payee {
        pairs.push(("payee", Value::from(payee.as_str())));
    }
    Value::record(pairs, None)
}

/// `context.history`.
pub(super) fn history_record(h: &History) -> Value {
    Value::record(
        [
            ("recent_denies", h.recent_denies),
            ("recent_challenges", h.recent_challenges),
            ("recent_amount_total", h.recent_amount_total),
        ],
        None,
    )
}

/// The client address as Cedar's `ipaddr` value: Cedar's own `ip("…")` extension call,
/// evaluated here. `RestrictedExpression::new_ip` would parse the name `ip` with Cedar's
/// full parser on every call (a lexer and regex cache built each time: ≈ 47,000
/// instructions, an eighth of a whole Check); the name is parsed once here instead. An
/// IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, how a dual-stack listener reports an IPv4
/// client) is that IPv4 address: Cedar cannot parse the dotted IPv6 form (every policy
/// reading `ip` would error), and `10.0.0.0/8` must match.
pub(super) fn ip_value(ip: IpAddr) -> Result<Value, super::EvalError> {
    use cedar_policy_core::ast::{Name, RestrictedExpr};
    use cedar_policy_core::evaluator::RestrictedEvaluator;
    use cedar_policy_core::extensions::Extensions;
    static IP: std::sync::LazyLock<Option<Name>> =
        std::sync::LazyLock::new(|| "ip".parse::<Name>().ok());
    let text = ip.to_canonical().to_string();
    let call = match IP.as_ref() {
        Some(name) => RestrictedExpr::call_extension_fn(name.clone(), [RestrictedExpr::val(text)]),
        None => RestrictedExpression::new_ip(text).as_ref().clone(),
    };
    RestrictedEvaluator::new(Extensions::all_available())
        .interpret(call.as_borrowed())
        .map_err(|e| super::EvalError(e.to_string()))
}

fn sample(fields: &[ContextField]) -> Vec<(String, FactValue)> {
    fields
        .iter()
        .map(|f| {
            let v = match f.kind {
                FieldType::String => FactValue::String(String::new()),
                FieldType::Long => FactValue::Long(0),
                FieldType::Bool => FactValue::Bool(false),
            };
            (f.attr.clone(), v)
        })
        .collect()
}

impl PolicySnapshot {
    /// Checks that the schema's context of every routed action accepts the facts the
    /// config may put there: each configured header and query attribute with its type and
    /// optional, `context.source` (optional) when trust domains are configured, and
    /// `context.request.ip` as an optional `ipaddr`.
    pub fn check_context(
        &self,
        config: &ContextConfig,
        routes: &[Route],
        schema_path: &Path,
    ) -> Result<(), PolicyError> {
        let full = RequestFacts {
            headers: (!config.headers.is_empty()).then(|| sample(&config.headers)),
            query: (!config.query.is_empty()).then(|| sample(&config.query)),
            source: (!config.workload.trust_domains.is_empty()).then(|| Workload {
                principal: "spiffe://td/ns/n/sa/s".into(),
                trust_domain: "td".into(),
                namespace: "n".into(),
                service_account: "s".into(),
            }),
            transaction: None,
            history: None,
        };
        let empty = RequestFacts {
            headers: full.headers.as_ref().map(|_| Vec::new()),
            query: full.query.as_ref().map(|_| Vec::new()),
            source: None,
            transaction: None,
            history: None,
        };
        let ip = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let actions: BTreeSet<&str> = routes.iter().map(|r| r.action.as_str()).collect();
        let mut problems = Vec::new();
        for action in actions {
            let Ok(action_uid) = uid("Action", action) else {
                continue;
            };
            // A body-mapped route of this action adds `context.transaction` (with `payee`
            // when it maps one).
            let with_transaction: Vec<RequestFacts> = routes
                .iter()
                .filter(|r| r.action == action)
                .filter_map(|r| r.body.as_ref())
                .map(|b| RequestFacts {
                    transaction: Some(Transaction {
                        amount_minor: 0,
                        currency: "USD".into(),
                        payee: b.payee.as_ref().map(|_| "p".to_owned()),
                    }),
                    ..full.clone()
                })
                .collect();
            let samples = [
                (&full, ip, "every configured fact present"),
                (&empty, None, "every optional fact absent"),
            ]
            .into_iter()
            .chain(with_transaction.iter().map(|f| {
                (
                    f,
                    ip,
                    "the `context.transaction` of a route with `body` (routes[].body)",
                )
            }));
            for (facts, ip, what) in samples {
                let input = super::ContextInput::sample(ip, facts);
                let checked = input.to_cedar().and_then(|c: Context| {
                    c.validate(&self.schema, &action_uid)
                        .map_err(|e| super::EvalError(e.to_string()))
                });
                if let Err(e) = checked {
                    problems.push(PolicyProblem::new(
                        schema_path,
                        None,
                        format!(
                            "the context of action `{action}` does not fit the schema with {what} \
                             (`context.request.ip` is an optional `ipaddr`; see the `context` \
                             config section): {e}"
                        ),
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_value_is_cedars_own_ip_value() {
        use cedar_policy_core::evaluator::RestrictedEvaluator;
        use cedar_policy_core::extensions::Extensions;
        for ip in ["10.1.2.3", "0.0.0.0", "::1", "2001:db8::7"] {
            let addr: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            let cedars = RestrictedEvaluator::new(Extensions::all_available())
                .interpret(RestrictedExpression::new_ip(ip).as_ref().as_borrowed())
                .unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert_eq!(ip_value(addr).ok(), Some(cedars), "{ip}");
        }
    }
}
