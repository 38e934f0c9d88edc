//! Unit tests of the body mapping: one per fail-closed rule.

use super::*;
use crate::config::TransactionBinding;
use crate::money::AmountError;

fn rules() -> BodyConfig {
    BodyConfig {
        max_bytes: 256,
        amount: "/amount".into(),
        currency: "/currency".into(),
        payee: Some("/payee/account".into()),
        transaction_binding: TransactionBinding::Required,
        amount_tolerance_minor: 0,
        transaction_payee: Some("/payee/account".into()),
    }
}

fn req(headers: &[(&str, &str)], body: &str) -> AccessRequest {
    let mut r = AccessRequest::new("POST", "/accounts/a1/withdraw");
    r.headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    r.body = Some(body.as_bytes().to_vec());
    r
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn body(text: &str) -> Result<Transaction, BodyError> {
    read(&rules(), &req(&[JSON], text))
}

#[test]
fn a_well_formed_body_becomes_the_transaction() {
    let t = body(r#"{"amount": 12000, "currency": "USD", "payee": {"account": "DE89"}}"#);
    assert_eq!(
        t,
        Ok(Transaction {
            amount_minor: 1_200_000,
            currency: "USD".into(),
            payee: Some("DE89".into()),
        })
    );
    let charset = req(
        &[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("content-encoding", "identity"),
        ],
        r#"{"amount": 1.5, "currency": "KWD", "payee": {"account": "x"}}"#,
    );
    assert_eq!(read(&rules(), &charset).map(|t| t.amount_minor), Ok(1500));
    let mut unmapped = rules();
    unmapped.payee = None;
    assert_eq!(
        read(
            &unmapped,
            &req(&[JSON], r#"{"amount": 5, "currency": "JPY"}"#)
        ),
        Ok(Transaction {
            amount_minor: 5,
            currency: "JPY".into(),
            payee: None
        })
    );
}

#[test]
fn headers_must_declare_a_plain_whole_json_body() {
    let ok = r#"{"amount": 1, "currency": "USD", "payee": {"account": "x"}}"#;
    assert_eq!(read(&rules(), &req(&[], ok)), Err(BodyError::ContentType));
    for ct in [
        "text/plain",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
    ] {
        assert_eq!(
            read(&rules(), &req(&[("content-type", ct)], ok)),
            Err(BodyError::ContentType),
            "{ct}"
        );
    }
    assert_eq!(
        read(&rules(), &req(&[JSON, ("content-encoding", "gzip")], ok)),
        Err(BodyError::ContentEncoding)
    );
    assert_eq!(
        read(
            &rules(),
            &req(&[JSON, ("x-envoy-auth-partial-body", "true")], ok)
        ),
        Err(BodyError::Partial)
    );
    assert!(read(
        &rules(),
        &req(&[JSON, ("x-envoy-auth-partial-body", "false")], ok)
    )
    .is_ok());
}

#[test]
fn size_and_presence_are_checked() {
    let pad = " ".repeat(256);
    let big = format!(r#"{{"amount": 1, "currency": "USD", "payee": {{"account": "x"}}}}{pad}"#);
    assert_eq!(body(&big), Err(BodyError::TooLarge));
    assert_eq!(body(""), Err(BodyError::Missing));
    let mut none = req(&[JSON], "");
    none.body = None;
    assert_eq!(read(&rules(), &none), Err(BodyError::Missing));
}

#[test]
fn json_and_fields_fail_closed() {
    use strict_json::StrictJsonError::{DuplicateKey, Syntax};
    assert_eq!(body("amount=1"), Err(BodyError::Json(Syntax)));
    assert_eq!(
        body(r#"{"amount": 120, "amount": 12000, "currency": "USD", "payee": {"account": "x"}}"#),
        Err(BodyError::Json(DuplicateKey))
    );
    for (text, field) in [
        (
            r#"{"currency": "USD", "payee": {"account": "x"}}"#,
            "amount",
        ),
        (
            r#"{"amount": "12000", "currency": "USD", "payee": {"account": "x"}}"#,
            "amount",
        ),
        (r#"{"amount": 1, "payee": {"account": "x"}}"#, "currency"),
        (
            r#"{"amount": 1, "currency": 840, "payee": {"account": "x"}}"#,
            "currency",
        ),
        (r#"{"amount": 1, "currency": "USD"}"#, "payee"),
        (
            r#"{"amount": 1, "currency": "USD", "payee": {"account": 7}}"#,
            "payee",
        ),
        (
            r#"{"amount": 1, "currency": "USD", "payee": {"account": ""}}"#,
            "payee",
        ),
        (r#"[1, 2]"#, "amount"),
    ] {
        assert_eq!(body(text), Err(BodyError::Field(field)), "{text}");
    }
}

#[test]
fn amounts_fail_closed() {
    for (text, why) in [
        (
            r#"{"amount": -5, "currency": "USD", "payee": {"account": "x"}}"#,
            AmountError::Negative,
        ),
        (
            r#"{"amount": 1.001, "currency": "USD", "payee": {"account": "x"}}"#,
            AmountError::TooPrecise,
        ),
        (
            r#"{"amount": 1.5, "currency": "JPY", "payee": {"account": "x"}}"#,
            AmountError::TooPrecise,
        ),
        (
            r#"{"amount": 1e20, "currency": "USD", "payee": {"account": "x"}}"#,
            AmountError::Overflow,
        ),
        (
            r#"{"amount": 99999999999999999999, "currency": "USD", "payee": {"account": "x"}}"#,
            AmountError::Overflow,
        ),
        (
            r#"{"amount": 1, "currency": "usd", "payee": {"account": "x"}}"#,
            AmountError::UnknownCurrency,
        ),
        (
            r#"{"amount": 1, "currency": "XYZ", "payee": {"account": "x"}}"#,
            AmountError::UnknownCurrency,
        ),
    ] {
        assert_eq!(body(text), Err(BodyError::Amount(why)), "{text}");
    }
}

#[test]
fn causes_map_to_generic_answers() {
    assert_eq!(BodyError::Partial.deny_reason().label(), "body_too_large");
    assert_eq!(BodyError::TooLarge.deny_reason().label(), "body_too_large");
    for e in [
        BodyError::ContentType,
        BodyError::Missing,
        BodyError::Field("amount"),
    ] {
        assert_eq!(e.deny_reason().label(), "malformed_request");
        assert_eq!(e.deny_reason().http_status(), 403);
    }
}
