//! JSON that refuses duplicate object keys. `serde_json::Value` silently keeps the last of
//! two equal keys, so `{"amount": 120, "amount": 12000}` could show one amount to riskgate
//! and another to an upstream parser that keeps the first: here it is not JSON at all.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a body is not strict JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON (syntax, trailing data, nesting deeper than serde_json's limit, non-UTF-8).
    #[error("body is not json")]
    Syntax,
    /// An object names one key twice.
    #[error("body repeats a json object key")]
    DuplicateKey,
}

const DUPLICATE: &str = "duplicate json object key";

/// Parses `bytes` as one JSON value with no object key given twice.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            StrictJsonError::DuplicateKey
        } else {
            StrictJsonError::Syntax
        }
    })?;
    de.end().map_err(|_| StrictJsonError::Syntax)?;
    Ok(value)
}

/// Seed and visitor building a [`Value`], failing on a repeated key.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let value = map.next_value_seed(Strict)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json_parses_as_serde_json_would() {
        let text = r#"{"amount": 120.5, "n": -3, "big": 18446744073709551615,
                       "payee": {"account": "DE89", "tags": [true, null, "x"]}}"#;
        assert_eq!(
            parse(text.as_bytes()),
            Ok(serde_json::from_str::<Value>(text).unwrap_or_default())
        );
        assert_eq!(parse(b"[]"), Ok(json!([])));
    }

    #[test]
    fn a_repeated_key_anywhere_is_refused() {
        for text in [
            r#"{"amount": 120, "amount": 12000}"#,
            r#"{"payee": {"account": "a", "account": "b"}}"#,
            r#"[{"x": 1}, {"y": 1, "y": 2}]"#,
            r#"{"a\u006d": 1, "am": 2}"#,
        ] {
            assert_eq!(
                parse(text.as_bytes()),
                Err(StrictJsonError::DuplicateKey),
                "{text}"
            );
        }
    }

    #[test]
    fn what_is_not_json_is_refused() {
        for text in ["", "{", "{} {}", "{\"a\": 1,}", "nul", "{\"a\": NaN}"] {
            assert_eq!(
                parse(text.as_bytes()),
                Err(StrictJsonError::Syntax),
                "{text:?}"
            );
        }
        assert_eq!(parse(b"{\"a\": \"\xff\"}"), Err(StrictJsonError::Syntax));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(deep.as_bytes()), Err(StrictJsonError::Syntax));
    }
}
