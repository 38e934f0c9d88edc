//! `context`: request facts put into Cedar's `context` beyond method, path, host and client
//! address (issue #16): named request headers and query parameters as typed, optional
//! attributes, and the calling workload's SPIFFE identity. Nothing is added unless named
//! here, so a policy never sees an unbounded or attacker-chosen set of attributes.

use super::ConfigError;
use serde::Deserialize;

/// Most headers (and, separately, query parameters) that may be named.
pub const MAX_FIELDS: usize = 32;
/// Largest `max_len` accepted.
pub const MAX_VALUE_LEN: usize = 4096;

/// `context` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Request headers copied into `context.request.headers.<as>`.
    pub headers: Vec<ContextField>,
    /// Query parameters copied into `context.request.query.<as>`.
    pub query: Vec<ContextField>,
    /// The calling workload's identity (`context.source`).
    pub workload: WorkloadConfig,
}

/// One header or query parameter, and the Cedar attribute it becomes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextField {
    /// Header name (case-insensitive) or query parameter name (exact, after
    /// percent-decoding).
    pub name: String,
    /// The attribute name in Cedar (an identifier: letters, digits, `_`).
    #[serde(rename = "as")]
    pub attr: String,
    /// The Cedar type the value must parse as.
    #[serde(rename = "type", default)]
    pub kind: FieldType,
    /// Longest value accepted, in bytes (a longer one is a malformed request).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_max_len() -> usize {
    256
}

/// The Cedar type of a configured field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// `String`.
    #[default]
    String,
    /// `Long` (a decimal integer, optional leading `-`).
    Long,
    /// `Bool` (`true` or `false`, exactly).
    Bool,
}

/// `context.workload`: which SPIFFE trust domains' identities are put into `context.source`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Trust domains whose `spiffe://<td>/ns/<ns>/sa/<sa>` principals are parsed; empty
    /// means `context.source` is never set.
    pub trust_domains: Vec<String>,
}

impl ContextConfig {
    /// Checks names, attribute identifiers, counts and lengths, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_fields(&self.headers, "context.headers", true)?;
        validate_fields(&self.query, "context.query", false)?;
        for (i, td) in self.workload.trust_domains.iter().enumerate() {
            let ok = !td.is_empty()
                && td
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
            if !ok {
                return Err(ConfigError::field(
                    format!("context.workload.trust_domains[{i}]"),
                    format!(
                        "`{td}` must be a SPIFFE trust domain (lower-case letters, digits, `-._`)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn validate_fields(fields: &[ContextField], at: &str, header: bool) -> Result<(), ConfigError> {
    if fields.len() > MAX_FIELDS {
        return Err(ConfigError::field(
            at,
            format!("at most {MAX_FIELDS} entries, got {}", fields.len()),
        ));
    }
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut names = std::collections::HashSet::new();
    let mut attrs = std::collections::HashSet::new();
    for (i, f) in fields.iter().enumerate() {
        let name_ok = !f.name.is_empty()
            && f.name.len() <= 256
            && (!header || (f.name.bytes().all(token_char) && !f.name.starts_with(':')));
        if !name_ok {
            return Err(ConfigError::field(
                format!("{at}[{i}].name"),
                format!("`{}` is not a valid name", f.name),
            ));
        }
        let key = if header {
            f.name.to_ascii_lowercase()
        } else {
            f.name.clone()
        };
        if !names.insert(key) {
            return Err(ConfigError::field(
                format!("{at}[{i}].name"),
                format!("`{}` is listed twice", f.name),
            ));
        }
        let mut chars = f.attr.bytes();
        let ident = chars
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && chars.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ident {
            return Err(ConfigError::field(
                format!("{at}[{i}].as"),
                format!(
                    "`{}` must be a Cedar identifier (letters, digits, `_`)",
                    f.attr
                ),
            ));
        }
        if !attrs.insert(f.attr.clone()) {
            return Err(ConfigError::field(
                format!("{at}[{i}].as"),
                format!("`{}` is used twice", f.attr),
            ));
        }
        if f.max_len == 0 || f.max_len > MAX_VALUE_LEN {
            return Err(ConfigError::field(
                format!("{at}[{i}].max_len"),
                format!("must be 1..={MAX_VALUE_LEN}, got {}", f.max_len),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = "policies: { dir: p, schema: p/s.cedarschema }\n";

    fn error(yaml: &str) -> String {
        Config::from_yaml(&format!("{MINIMAL}{yaml}"))
            .and_then(|c| c.validate().map(|()| c))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_full_context_section_parses() -> Result<(), ConfigError> {
        let c = Config::from_yaml(&format!(
            "{MINIMAL}context:\n  headers: [{{ name: X-Tenant, as: tenant, max_len: 64 }}]\n  \
             query: [{{ name: page, as: page, type: long }}]\n  \
             workload: {{ trust_domains: [cluster.local] }}\n"
        ))?;
        c.validate()?;
        assert_eq!(c.context.headers[0].kind, super::FieldType::String);
        assert_eq!(c.context.query[0].max_len, 256);
        assert_eq!(c.context.workload.trust_domains, ["cluster.local"]);
        assert_eq!(
            Config::from_yaml(MINIMAL)?.context,
            super::ContextConfig::default()
        );
        Ok(())
    }

    #[test]
    fn bad_values_fail_naming_the_field() {
        for (yaml, field) in [
            (
                "context: { headers: [{ name: 'x y', as: a }] }",
                "context.headers[0].name",
            ),
            (
                "context: { headers: [{ name: x, as: 1a }] }",
                "context.headers[0].as",
            ),
            (
                "context: { query: [{ name: q, as: a, max_len: 0 }] }",
                "context.query[0].max_len",
            ),
            (
                "context: { query: [{ name: q, as: a }, { name: q, as: b }] }",
                "context.query[1].name",
            ),
            (
                "context: { query: [{ name: q, as: a, type: float }] }",
                "float",
            ),
            (
                "context: { workload: { trust_domains: ['A B'] } }",
                "trust_domains[0]",
            ),
        ] {
            let msg = error(&format!("{yaml}\n"));
            assert!(msg.contains(field), "{yaml}: {msg}");
        }
    }
}
