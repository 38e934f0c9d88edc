//! Money amounts in ISO 4217 minor units (issue #16): the request body's amount and the
//! risk API's `transaction_data.amount` both become an `i64` of the currency's minor units
//! through one exponent table, so they compare exactly and Cedar sees a `Long`.
//!
//! JSON numbers are read without enabling serde_json's `arbitrary_precision` (it would
//! change number parsing crate-wide): an integer is taken as it is; a fraction is written
//! back as the shortest text that round-trips its `f64` (Rust's `{}`), which for any decimal
//! of at most 15 significant digits is that decimal exactly, and that text is then read
//! digit by digit. More significant digits than 15, more decimals than the currency has, a
//! sign, or more than 2^53 minor units are refused — never rounded.

use serde_json::Number;

/// Largest accepted amount in minor units (2^53): every value up to it is exact in an `f64`.
pub const MAX_MINOR: i64 = 1 << 53;

/// Most significant digits a fractional JSON number may have (an `f64` keeps 15 exactly).
const MAX_SIGNIFICANT: usize = 15;

/// Currencies without minor units.
const EXPONENT_0: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Currencies with three decimals.
const EXPONENT_3: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// Currencies with four decimals.
const EXPONENT_4: &[&str] = &["CLF", "UYW"];

/// Active ISO 4217 currencies with two decimals (funds and precious metals without minor
/// units, e.g. `XAU`, `XDR`, are unknown here and refused).
const EXPONENT_2: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DKK", "DOP",
    "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR",
    "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK",
    "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB",
    "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD",
    "USN", "UYU", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];

/// Why a JSON amount or currency cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not three ASCII letters of a known ISO 4217 currency.
    #[error("unknown currency code")]
    UnknownCurrency,
    /// Below zero (including `-0`).
    #[error("amount is negative")]
    Negative,
    /// More decimals than the currency's minor units.
    #[error("amount has more decimals than the currency allows")]
    TooPrecise,
    /// Over [`MAX_MINOR`] minor units, or more than 15 significant digits.
    #[error("amount is too large")]
    Overflow,
}

/// The currency's code (upper case) and its ISO 4217 exponent (decimals of its minor unit).
pub fn currency(code: &str) -> Result<(&'static str, u32), AmountError> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(AmountError::UnknownCurrency);
    }
    for (table, exponent) in [
        (EXPONENT_2, 2),
        (EXPONENT_0, 0),
        (EXPONENT_3, 3),
        (EXPONENT_4, 4),
    ] {
        if let Ok(i) = table.binary_search(&code) {
            return Ok((table[i], exponent));
        }
    }
    Err(AmountError::UnknownCurrency)
}

/// `n` major units as minor units of a currency with `exponent` decimals.
pub fn minor_units(n: &Number, exponent: u32) -> Result<i64, AmountError> {
    let scale = 10u64.pow(exponent);
    if let Some(whole) = n.as_u64() {
        return whole
            .checked_mul(scale)
            .and_then(|m| i64::try_from(m).ok())
            .filter(|m| *m <= MAX_MINOR)
            .ok_or(AmountError::Overflow);
    }
    if n.as_i64().is_some() {
        return Err(AmountError::Negative);
    }
    let f = n.as_f64().ok_or(AmountError::Overflow)?;
    if f.is_sign_negative() {
        return Err(AmountError::Negative);
    }
    if !f.is_finite() {
        return Err(AmountError::Overflow);
    }
    decimal_text(&format!("{f}"), exponent)
}

/// A plain decimal `digits[.digits]` (what `{}` writes for a finite non-negative `f64`).
fn decimal_text(text: &str, exponent: u32) -> Result<i64, AmountError> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(AmountError::Overflow);
    }
    let frac = frac.trim_end_matches('0');
    let significant = int.trim_start_matches('0').len()
        + if int.trim_start_matches('0').is_empty() {
            frac.trim_start_matches('0').len()
        } else {
            frac.len()
        };
    if significant > MAX_SIGNIFICANT {
        return Err(AmountError::Overflow);
    }
    let exponent = usize::try_from(exponent).map_err(|_| AmountError::Overflow)?;
    if frac.len() > exponent {
        return Err(AmountError::TooPrecise);
    }
    let mut minor: i64 = 0;
    let padding = std::iter::repeat_n(b'0', exponent - frac.len());
    for digit in int.bytes().chain(frac.bytes()).chain(padding) {
        minor = minor
            .checked_mul(10)
            .and_then(|m| m.checked_add(i64::from(digit - b'0')))
            .ok_or(AmountError::Overflow)?;
    }
    if minor > MAX_MINOR {
        return Err(AmountError::Overflow);
    }
    Ok(minor)
}

/// A JSON amount with its currency code: `(minor units, upper-case code)`.
pub fn amount(n: &Number, code: &str) -> Result<(i64, &'static str), AmountError> {
    let (code, exponent) = currency(code)?;
    Ok((minor_units(n, exponent)?, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str) -> Number {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn minor(text: &str, code: &str) -> Result<i64, AmountError> {
        amount(&num(text), code).map(|(m, _)| m)
    }

    #[test]
    fn tables_are_sorted_and_disjoint() {
        let mut all = Vec::new();
        for table in [EXPONENT_0, EXPONENT_2, EXPONENT_3, EXPONENT_4] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
            all.extend_from_slice(table);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[test]
    fn amounts_follow_the_currency_exponent() {
        assert_eq!(minor("12000", "USD"), Ok(1_200_000));
        assert_eq!(minor("120.5", "USD"), Ok(12_050));
        assert_eq!(minor("120.50", "USD"), Ok(12_050));
        assert_eq!(minor("0.01", "EUR"), Ok(1));
        assert_eq!(minor("1e3", "USD"), Ok(100_000));
        assert_eq!(minor("5000", "JPY"), Ok(5000));
        assert_eq!(minor("5000.0", "JPY"), Ok(5000));
        assert_eq!(minor("5000.5", "JPY"), Err(AmountError::TooPrecise));
        assert_eq!(minor("1.234", "KWD"), Ok(1234));
        assert_eq!(minor("1.2345", "KWD"), Err(AmountError::TooPrecise));
        assert_eq!(minor("0.1", "USD"), Ok(10));
        assert_eq!(minor("0.001", "USD"), Err(AmountError::TooPrecise));
        assert_eq!(minor("0", "USD"), Ok(0));
    }

    #[test]
    fn signs_overflow_and_codes_are_refused() {
        assert_eq!(minor("-1", "USD"), Err(AmountError::Negative));
        assert_eq!(minor("-0.0", "USD"), Err(AmountError::Negative));
        assert_eq!(minor("-0.5", "USD"), Err(AmountError::Negative));
        assert_eq!(
            minor("18446744073709551615", "USD"),
            Err(AmountError::Overflow)
        );
        assert_eq!(minor("1e300", "USD"), Err(AmountError::Overflow));
        assert_eq!(
            minor("90071992547409.93", "USD"),
            Err(AmountError::Overflow)
        );
        assert_eq!(minor("90071992547409", "USD"), Ok(9_007_199_254_740_900));
        assert_eq!(minor("90071992547410", "USD"), Err(AmountError::Overflow));
        assert_eq!(minor("9007199254740992", "JPY"), Ok(MAX_MINOR));
        assert_eq!(minor("9007199254740993", "JPY"), Err(AmountError::Overflow));
        for code in ["usd", "US", "USDX", "XAU", "ZZZ", "", "ÜSD"] {
            assert_eq!(
                minor("1", code),
                Err(AmountError::UnknownCurrency),
                "{code}"
            );
        }
    }

    #[test]
    fn fifteen_significant_digits_are_exact() {
        assert_eq!(minor("1234567890123.45", "USD"), Ok(123_456_789_012_345));
        assert_eq!(
            minor("0.000000000000001", "USD"),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(
            minor("12345678901234.56", "USD"),
            Err(AmountError::Overflow)
        );
    }
}
