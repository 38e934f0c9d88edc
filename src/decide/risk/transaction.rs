//! Transaction binding (issue #16): on a route with `routes[].body` and
//! `transaction_binding: required`, the recommendation must describe the transaction the
//! request body asks for — a risk assessment of a 120 USD withdrawal must not authorize a
//! 12,000 USD one. Amounts are compared in ISO 4217 minor units (within the route's
//! `amount_tolerance_minor`), currencies exactly, the payee through the route's
//! `transaction_payee` pointer into `transaction_data`.

use super::{BindingViolation, RiskOutcome};
use crate::config::{BodyConfig, TransactionBinding};
use crate::policy::Transaction;
use crate::risk::recommendation::TransactionData;
use crate::routes::Route;

/// Checks the assessed recommendation against the body's transaction. Nothing to check on
/// routes without binding, or when a fail mode stood in for the risk API (the fail mode is
/// the outage rule; `closed` already denied).
pub fn check(
    route: &Route,
    body: Option<&Transaction>,
    risk: &RiskOutcome,
) -> Result<(), BindingViolation> {
    let Some(rules) = &route.body else {
        return Ok(());
    };
    if rules.transaction_binding == TransactionBinding::Off || risk.outage {
        return Ok(());
    }
    let reported = risk
        .assessment
        .as_ref()
        .and_then(|a| a.recommendation.transaction.as_ref());
    match (body, reported) {
        (Some(body), Some(reported)) => matches(rules, body, reported),
        _ => Err(BindingViolation::TransactionMissing),
    }
}

/// Whether the reported transaction is the body's.
pub fn matches(
    rules: &BodyConfig,
    body: &Transaction,
    reported: &TransactionData,
) -> Result<(), BindingViolation> {
    let within = body.amount_minor.abs_diff(reported.amount_minor) <= rules.amount_tolerance_minor;
    let same_currency = *body.currency == *reported.currency;
    let same_payee = match (&body.payee, &rules.transaction_payee) {
        (Some(payee), Some(pointer)) => reported.payee_at(pointer) == Some(payee.as_str()),
        (None, _) => true,
        // validation refuses a mapped payee without its pointer: never compared, never equal
        (Some(_), None) => false,
    };
    if within && same_currency && same_payee {
        Ok(())
    } else {
        Err(BindingViolation::TransactionMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(tolerance: u64) -> BodyConfig {
        BodyConfig {
            max_bytes: 8192,
            amount: "/amount".into(),
            currency: "/currency".into(),
            payee: Some("/payee/account".into()),
            transaction_binding: TransactionBinding::Required,
            amount_tolerance_minor: tolerance,
            transaction_payee: Some("/payee/account".into()),
        }
    }

    fn body(amount_minor: i64, currency: &str, payee: &str) -> Transaction {
        Transaction {
            amount_minor,
            currency: currency.into(),
            payee: Some(payee.into()),
        }
    }

    fn reported(amount_minor: i64, currency: &str, payee: &str) -> TransactionData {
        TransactionData {
            amount_minor,
            currency: currency.into(),
            payee: Box::from([(Box::from("/payee/account"), Box::from(payee))]),
        }
    }

    #[test]
    fn the_assessed_transaction_binds() {
        assert_eq!(
            matches(
                &rules(0),
                &body(12_000, "USD", "DE89"),
                &reported(12_000, "USD", "DE89")
            ),
            Ok(())
        );
    }

    #[test]
    fn another_amount_currency_or_payee_is_refused() {
        let mismatch = Err(BindingViolation::TransactionMismatch);
        let r = reported(12_000, "USD", "DE89");
        assert_eq!(
            matches(&rules(0), &body(1_200_000, "USD", "DE89"), &r),
            mismatch
        );
        assert_eq!(
            matches(&rules(0), &body(12_001, "USD", "DE89"), &r),
            mismatch
        );
        assert_eq!(
            matches(&rules(0), &body(12_000, "EUR", "DE89"), &r),
            mismatch
        );
        assert_eq!(
            matches(&rules(0), &body(12_000, "USD", "GB29"), &r),
            mismatch
        );
        let mut other_pointer = rules(0);
        other_pointer.transaction_payee = Some("/payee/name".into());
        assert_eq!(
            matches(&other_pointer, &body(12_000, "USD", "DE89"), &r),
            mismatch
        );
    }

    #[test]
    fn the_tolerance_is_in_minor_units_both_ways() {
        let r = reported(12_000, "USD", "DE89");
        for amount in [11_995, 12_005] {
            assert_eq!(matches(&rules(5), &body(amount, "USD", "DE89"), &r), Ok(()));
        }
        for amount in [11_994, 12_006] {
            assert_eq!(
                matches(&rules(5), &body(amount, "USD", "DE89"), &r),
                Err(BindingViolation::TransactionMismatch)
            );
        }
    }
}
