//! Part of the facts stage, on routes with `routes[].body`: the JSON request body Envoy
//! sent with the Check (`with_request_body`) becomes `context.transaction` — amount in
//! ISO 4217 minor units, currency, optional payee (issue #16). Routes without a mapping
//! never look at the body.
//!
//! Fail closed, one rule each: the body must be `application/json`, not content-encoded,
//! whole (Envoy's `x-envoy-auth-partial-body: true` means it was cut), within the route's
//! `max_bytes`, strict JSON (no key twice), and every mapped field present with its type;
//! the amount not negative, not more precise than its currency, not over 2^53 minor units
//! ([`crate::money`]). Anything else denies the request with its cause logged.

pub mod strict_json;

use crate::config::BodyConfig;
use crate::decision::{DenyReason, Limit};
use crate::money;
use crate::policy::Transaction;
use crate::request::AccessRequest;
use crate::routes::Route;
use serde_json::Value;

/// Longest payee accepted, in bytes.
pub const MAX_PAYEE_LEN: usize = 256;

/// Why a mapped route's body cannot become a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// `content-type` is not `application/json` (parameters such as `charset` allowed).
    #[error("body is not declared as application/json")]
    ContentType,
    /// `content-encoding` other than `identity`.
    #[error("body is content-encoded")]
    ContentEncoding,
    /// Envoy cut the body at its `max_request_bytes`.
    #[error("body was sent partially")]
    Partial,
    /// Over the route's `max_bytes`.
    #[error("body is over the route's max_bytes")]
    TooLarge,
    /// No body at all.
    #[error("body is missing")]
    Missing,
    /// Not strict JSON.
    #[error("{0}")]
    Json(#[from] strict_json::StrictJsonError),
    /// A mapped field is absent or not of its type.
    #[error("body field `{0}` is missing or mistyped")]
    Field(&'static str),
    /// The amount or currency is not acceptable.
    #[error("body amount: {0}")]
    Amount(#[from] money::AmountError),
}

impl BodyError {
    /// The deny answer: a cut or oversized body is `body_too_large`, the rest a malformed
    /// request (403 either way, the body generic).
    pub fn deny_reason(self) -> DenyReason {
        match self {
            BodyError::Partial | BodyError::TooLarge => {
                DenyReason::RequestTooLarge(Limit::BodyBytes)
            }
            BodyError::ContentType => DenyReason::Malformed("body content type"),
            BodyError::ContentEncoding => DenyReason::Malformed("body content encoding"),
            BodyError::Missing => DenyReason::Malformed("body missing"),
            BodyError::Json(_) => DenyReason::Malformed("body not json"),
            BodyError::Field(_) => DenyReason::Malformed("body field"),
            BodyError::Amount(_) => DenyReason::Malformed("body amount"),
        }
    }
}

/// `context.transaction` of `req` on `route`: `None` when the route maps no body fields,
/// else the transaction or the deny (with its cause logged, at most once a second).
pub fn transaction(route: &Route, req: &AccessRequest) -> Result<Option<Transaction>, DenyReason> {
    let Some(rules) = &route.body else {
        return Ok(None);
    };
    read(rules, req).map(Some).map_err(|e| {
        static REFUSED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::per(1_000);
        if let Some(suppressed) = REFUSED.admit() {
            tracing::warn!(route = %route.name, cause = %e, suppressed, "request body refused");
        }
        e.deny_reason()
    })
}

/// The transaction `req`'s body describes under `rules`.
pub fn read(rules: &BodyConfig, req: &AccessRequest) -> Result<Transaction, BodyError> {
    let media_type = req
        .header("content-type")
        .map(|v| v.split(';').next().unwrap_or("").trim());
    if !media_type.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        return Err(BodyError::ContentType);
    }
    if req
        .header("content-encoding")
        .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(BodyError::ContentEncoding);
    }
    if req
        .header("x-envoy-auth-partial-body")
        .is_some_and(|p| !p.trim().eq_ignore_ascii_case("false"))
    {
        return Err(BodyError::Partial);
    }
    let body = req.body.as_deref().unwrap_or_default();
    if body.len() > rules.max_bytes {
        return Err(BodyError::TooLarge);
    }
    if body.is_empty() {
        return Err(BodyError::Missing);
    }
    let json = strict_json::parse(body)?;
    let Some(Value::Number(amount)) = json.pointer(&rules.amount) else {
        return Err(BodyError::Field("amount"));
    };
    let Some(Value::String(currency)) = json.pointer(&rules.currency) else {
        return Err(BodyError::Field("currency"));
    };
    let (amount_minor, currency) = money::amount(amount, currency)?;
    let payee = match &rules.payee {
        None => None,
        Some(pointer) => match json.pointer(pointer) {
            Some(Value::String(p)) if !p.is_empty() && p.len() <= MAX_PAYEE_LEN => Some(p.clone()),
            _ => return Err(BodyError::Field("payee")),
        },
    };
    Ok(Transaction {
        amount_minor,
        currency: currency.to_owned(),
        payee,
    })
}

#[cfg(test)]
mod tests;
