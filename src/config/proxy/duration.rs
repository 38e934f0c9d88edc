//! Durations as proxies write them: protobuf JSON (`1s`, `0.250s`), Go style (`500ms`,
//! `1m30s`, which Istio also accepts) or the `{ seconds, nanos }` form. Parsed exactly (no
//! floating point), so `0.27s` is 270 ms, not a hair under.

use serde_yaml_ng::Value;
use std::time::Duration;

/// The duration `value` spells, if any. A bare number has no unit and is refused.
pub fn parse_duration(value: &Value) -> Option<Duration> {
    match value {
        Value::String(s) => parse_str(s.trim()),
        Value::Mapping(m) => {
            let field = |k: &str| {
                m.get(Value::String(k.into()))
                    .map_or(Some(0), Value::as_u64)
            };
            Some(Duration::from_secs(field("seconds")?) + Duration::from_nanos(field("nanos")?))
        }
        _ => None,
    }
}

fn parse_str(s: &str) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<Duration> {
        parse_duration(&Value::String(v.into()))
    }

    #[test]
    fn durations_in_every_spelling() {
        assert_eq!(s("1s"), Some(Duration::from_secs(1)));
        assert_eq!(s("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(s("0.27s"), Some(Duration::from_millis(270)));
        assert_eq!(s(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(s("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(s("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(s("10m"), Some(Duration::from_secs(600)));
        let m: Value =
            serde_yaml_ng::from_str("{ seconds: 1, nanos: 5000000 }").unwrap_or_default();
        assert_eq!(parse_duration(&m), Some(Duration::from_millis(1005)));
    }

    #[test]
    fn non_durations_are_refused() {
        for bad in ["", "soon", "10", "1..2s", ".s", "1x", "-1s"] {
            assert_eq!(s(bad), None, "{bad}");
        }
        assert_eq!(parse_duration(&Value::Bool(true)), None);
    }
}
