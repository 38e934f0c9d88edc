//! Durations as proxies write them: protobuf JSON (`1s`, `0.250s`), Go style (`500ms`,
//! `1m30s`, which Istio also accepts) or the `{ seconds, nanos }` form. Parsed exactly (no
//! floating point, the config's own parser), so `0.27s` is 270 ms, not a hair under.

use crate::config::duration::parse_text;
use serde_yaml_ng::Value;
use std::time::Duration;

/// The duration `value` spells, if any. A bare number has no unit and is refused.
pub fn parse_duration(value: &Value) -> Option<Duration> {
    match value {
        Value::String(s) => parse_text(s),
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
