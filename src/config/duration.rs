//! Durations in the config: `250ms`, `5s`, `2m` (also `1m30s`, `0.5s`, `1h`), or a bare
//! number in the field's legacy unit, so `budget: 250` still means 250 ms and
//! `retry_after: 5` still means 5 s. Every duration field keeps its old `*_ms` / `*_s` name
//! as a serde alias ([`RENAMED`]); giving both spellings of one field is an error.
//!
//! The text form is parsed exactly (no floating point), so `0.27s` is 270 ms, not a hair
//! under. The proxy-config reader ([`super::proxy`]) uses the same parser.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// Duration fields renamed from their unit-suffixed spelling: (typed name, legacy name).
/// Used to explain the error when both spellings of one field are given.
pub(crate) const RENAMED: &[(&str, &str)] = &[
    ("budget", "budget_ms"),
    ("deadline_reserve", "deadline_reserve_ms"),
    ("max_age", "max_age_ms"),
    ("clock_skew", "clock_skew_ms"),
    ("retry_after", "retry_after_s"),
    ("ttl", "ttl_ms"),
    ("open", "open_ms"),
    ("min_interval", "min_interval_ms"),
    ("retry", "retry_ms"),
    ("timeout", "timeout_ms"),
    ("connect_timeout", "connect_timeout_ms"),
    ("poll", "poll_ms"),
    ("drain", "drain_ms"),
    ("grace", "grace_ms"),
    ("reload_poll", "reload_poll_ms"),
    ("max_age", "max_age_s"),
];

/// The duration a text such as `250ms`, `1m30s` or `0.25s` spells; `None` for anything
/// else, a bare number included (it has no unit).
pub fn parse_text(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.checked_add(scaled(num, nanos_per_unit)?)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `num` (decimal, optional fraction) times `unit` nanoseconds, truncated to whole ns.
fn scaled(num: &str, unit: u128) -> Option<u128> {
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |d: &str| d.is_empty() || d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) || frac.len() > 18 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    int.checked_mul(unit)?
        .checked_add(frac_value.checked_mul(unit)? / scale)
}

/// Unit of a bare number: the field's legacy unit.
#[derive(Clone, Copy)]
enum Bare {
    Millis,
    Secs,
}

impl Bare {
    fn of(self, n: u64) -> Duration {
        match self {
            Bare::Millis => Duration::from_millis(n),
            Bare::Secs => Duration::from_secs(n),
        }
    }
}

struct DurationVisitor(Bare);

const EXPECTED: &str = "expected a number with ms, s or m (e.g. `250ms`, `5s`, `2m`)";

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as `250ms`, `5s` or `2m`")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        Ok(self.0.of(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        u64::try_from(n)
            .map(|n| self.0.of(n))
            .map_err(|_| E::custom(format!("invalid duration `{n}`: {EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
        Err(E::custom(format!("invalid duration `{n}`: {EXPECTED}")))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        let t = s.trim();
        let bare = (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok().map(|n| self.0.of(n)))
            .flatten();
        bare.or_else(|| parse_text(t))
            .ok_or_else(|| E::custom(format!("invalid duration `{s}`: {EXPECTED}")))
    }
}

/// A duration whose bare numbers are milliseconds (the `*_ms` fields).
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Bare::Millis))
}

/// A duration whose bare numbers are seconds (the `*_s` fields).
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Bare::Secs))
}

/// An optional duration whose bare numbers are seconds (`null` = unset).
pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as `5s`, or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            secs(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// Adds to a serde "duplicate field" message which legacy spelling collided, so
/// `budget: 250ms` next to `budget_ms: 250` says what to remove.
pub(crate) fn explain_duplicate(message: &str) -> Option<String> {
    let (typed, _) = RENAMED
        .iter()
        .find(|(typed, _)| message.contains(&format!("duplicate field `{typed}`")))?;
    let legacy: Vec<String> = RENAMED
        .iter()
        .filter(|(t, _)| t == typed)
        .map(|(_, l)| format!("`{l}`"))
        .collect();
    Some(format!(
        "{message} (`{typed}` and its legacy spelling {} are both set; keep one)",
        legacy.join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_durations_in_every_spelling() {
        let cases = [
            ("250ms", 250),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1m30s", 90_000),
            ("0.25s", 250),
            ("0.27s", 270),
            (".5s", 500),
            ("1h", 3_600_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_text(text), Some(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn non_durations_are_refused() {
        for bad in ["", "soon", "10", "1..2s", ".s", "1x", "-1s", "5 x"] {
            assert_eq!(parse_text(bad), None, "{bad}");
        }
    }

    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = "policies: { dir: p, schema: p/s.cedarschema }\n";

    fn risk(fields: &str) -> Result<crate::config::RiskConfig, ConfigError> {
        let config = Config::from_yaml(&format!("{MINIMAL}risk: {{ {fields} }}\n"))?;
        Ok(config.risk_or_default())
    }

    fn error(yaml: &str) -> String {
        Config::from_yaml(&format!("{MINIMAL}{yaml}\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn config_durations_parse_in_every_spelling() -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        let cases = [
            ("budget: 250ms", ms(250)),
            ("budget: 5s", ms(5_000)),
            ("budget: 2m", ms(120_000)),
            ("budget: 0.5s", ms(500)),
            // A bare number is in the field's legacy unit: milliseconds here ...
            ("budget: 250", ms(250)),
            ("budget: \"250\"", ms(250)),
            // ... and the legacy name still works, with a number or a typed value.
            ("budget_ms: 250", ms(250)),
            ("budget_ms: 1s", ms(1_000)),
        ];
        for (yaml, want) in cases {
            assert_eq!(risk(yaml)?.budget, want, "{yaml}");
        }
        // Seconds for the `*_s` fields.
        assert_eq!(risk("retry_after: 5")?.retry_after, ms(5_000));
        assert_eq!(risk("retry_after_s: 7")?.retry_after, ms(7_000));
        assert_eq!(risk("retry_after: 2s")?.retry_after, ms(2_000));
        Ok(())
    }

    #[test]
    fn every_legacy_name_is_still_accepted() -> Result<(), ConfigError> {
        let ms = Duration::from_millis;
        let yaml = format!(
            "{MINIMAL}risk: {{ budget_ms: 1, deadline_reserve_ms: 2, max_age_ms: 3, retry_after_s: 4, \
             cache: {{ ttl_ms: 5 }}, breaker: {{ open_ms: 6 }}, \
             token_refresh: {{ min_interval_ms: 7, retry_ms: 8, timeout_ms: 9 }} }}\n\
             reload: {{ poll_ms: 10 }}\nshutdown: {{ drain_ms: 11, grace_ms: 12 }}\n\
             identity: {{ step_up: {{ claim: amr, contains: mfa, max_age_s: 13 }} }}\n\
             listen: {{ tls: {{ cert_file: c, key_file: k, reload_poll_ms: 14 }} }}\n"
        );
        let c = Config::from_yaml(&yaml)?;
        let r = c.risk_or_default();
        assert_eq!(
            [r.budget, r.deadline_reserve, r.max_age, r.retry_after],
            [ms(1), ms(2), ms(3), ms(4_000)]
        );
        assert_eq!([r.cache.ttl, r.breaker.open], [ms(5), ms(6)]);
        let t = &r.token_refresh;
        assert_eq!([t.min_interval, t.retry, t.timeout], [ms(7), ms(8), ms(9)]);
        assert_eq!(c.reload.poll, ms(10));
        assert_eq!([c.shutdown.drain, c.shutdown.grace], [ms(11), ms(12)]);
        let step_up = c.identity.step_up.as_ref().and_then(|s| s.max_age);
        assert_eq!(step_up, Some(ms(13_000)));
        let tls = c.listen.tls.as_ref().map(|t| t.reload_poll);
        assert_eq!(tls, Some(ms(14)));
        Ok(())
    }

    #[test]
    fn invalid_duration_names_the_field_and_the_value() {
        let msg = error("risk: { budget: 5x }");
        assert!(msg.contains("risk.budget"), "{msg}");
        assert!(msg.contains("invalid duration `5x`"), "{msg}");
        assert!(msg.contains("expected a number with ms, s or m"), "{msg}");
        let msg = error("shutdown: { grace_ms: -1 }");
        assert!(msg.contains("shutdown.grace"), "{msg}");
        assert!(msg.contains("invalid duration `-1`"), "{msg}");
        let msg = error("reload: { poll: 1.5 }");
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn both_spellings_of_one_field_are_refused() {
        let msg = error("risk: { budget: 250ms, budget_ms: 300 }");
        assert!(msg.contains("duplicate field `budget`"), "{msg}");
        assert!(msg.contains("`budget_ms`"), "{msg}");
        let msg = error("risk: { retry_after_s: 5, retry_after: 5s }");
        assert!(msg.contains("`retry_after_s`"), "{msg}");
    }

    #[test]
    fn every_renamed_field_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for (typed, legacy) in RENAMED {
            assert!(seen.insert(*legacy), "{legacy} twice");
            assert!(legacy.starts_with(typed), "{typed} / {legacy}");
        }
    }
}
