//! `routes[].body`: which JSON body fields of a route become `context.transaction`, and
//! whether the risk recommendation must describe the same transaction (issue #16). Only
//! routes with a `body` read the request body.

use super::{ConfigError, RiskMode};
use serde::Deserialize;

/// Default `max_bytes`: what the shipped Envoy configs send (`with_request_body`).
pub const DEFAULT_MAX_BYTES: usize = 8 * 1024;

/// Longest accepted JSON pointer.
const MAX_POINTER_LEN: usize = 256;

/// `routes[].body`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyConfig {
    /// Largest body read, in bytes; a larger one (or a partial one) is denied.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// JSON pointer to the amount, a JSON number in major units (`/amount`).
    pub amount: String,
    /// JSON pointer to the ISO 4217 currency code (`/currency`).
    pub currency: String,
    /// JSON pointer to the payee, a string (`/payee/account`); absent: no `payee`.
    #[serde(default)]
    pub payee: Option<String>,
    /// Whether the recommendation's `transaction_data` must match the body.
    #[serde(default)]
    pub transaction_binding: TransactionBinding,
    /// Largest accepted difference between the two amounts, in minor units.
    #[serde(default)]
    pub amount_tolerance_minor: u64,
    /// JSON pointer into `transaction_data` to the payee to compare (`/payee/account`);
    /// needed when `payee` is mapped and binding is required.
    #[serde(default)]
    pub transaction_payee: Option<String>,
}

fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}

/// `routes[].body.transaction_binding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionBinding {
    /// The recommendation must carry `transaction_data` matching the body.
    #[default]
    Required,
    /// The body is put into context only.
    Off,
}

impl BodyConfig {
    /// Checks the mapping of route `at` (`routes[3].body`): pointers, the size against
    /// `limits.max_body_bytes`, and that binding has a recommendation to bind to.
    pub fn validate(
        &self,
        at: &str,
        risk: RiskMode,
        max_body_bytes: usize,
    ) -> Result<(), ConfigError> {
        if self.max_bytes == 0 || self.max_bytes > max_body_bytes {
            return Err(ConfigError::field(
                format!("{at}.max_bytes"),
                format!("must be between 1 and `limits.max_body_bytes` ({max_body_bytes})"),
            ));
        }
        let mut pointers = vec![
            ("amount", Some(&self.amount)),
            ("currency", Some(&self.currency)),
        ];
        pointers.push(("payee", self.payee.as_ref()));
        pointers.push(("transaction_payee", self.transaction_payee.as_ref()));
        for (name, pointer) in pointers {
            if let Some(p) = pointer {
                if !p.starts_with('/') || p.len() > MAX_POINTER_LEN {
                    return Err(ConfigError::field(
                        format!("{at}.{name}"),
                        format!("`{p}` must be a JSON pointer starting with `/` (at most {MAX_POINTER_LEN} bytes)"),
                    ));
                }
            }
        }
        if self.transaction_binding == TransactionBinding::Off {
            return Ok(());
        }
        if risk != RiskMode::Required {
            return Err(ConfigError::field(
                format!("{at}.transaction_binding"),
                "`required` needs the route's `risk: required` (or set `transaction_binding: off`)",
            ));
        }
        match (&self.payee, &self.transaction_payee) {
            (Some(_), None) => Err(ConfigError::field(
                format!("{at}.transaction_payee"),
                "a mapped `payee` needs the pointer into `transaction_data` to compare it with",
            )),
            (None, Some(_)) => Err(ConfigError::field(
                format!("{at}.transaction_payee"),
                "set only with `payee`",
            )),
            (Some(_), Some(p)) if !(p == "/payee" || p.starts_with("/payee/")) => {
                Err(ConfigError::field(
                    format!("{at}.transaction_payee"),
                    format!("`{p}` must point into `transaction_data.payee` (`/payee/...`)"),
                ))
            }
            _ => Ok(()),
        }
    }
}
