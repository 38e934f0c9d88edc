//! `riskgate check --input FILE`: a CheckRequest as Envoy sends it (the proto3 JSON of
//! `envoy.service.auth.v3.CheckRequest`, e.g. copied from a debug log), turned into the
//! request the core decides on by the same code `serve` uses ([`crate::authz::extract`]),
//! so the query is stripped, the host normalised and the client address taken alike.
//!
//! Only the fields riskgate reads are taken (others are ignored); both proto3 JSON
//! spellings (`metadataContext` and `metadata_context`) are accepted:
//!
//! * `attributes.request.http`: `id`, `method`, `path`, `host`, `headers`, `body`
//! * `attributes.source`: `address.socketAddress.address`, `principal`
//! * `attributes.metadataContext.filterMetadata` (the `jwt_authn` payload lives here)

use crate::authz::extract::{self, EdgeRules, ExtractError};
use crate::config::Config;
use crate::pb::envoy::config::core::v3::{address, Address, Metadata, SocketAddress};
use crate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use crate::request::AccessRequest;
use prost_types::value::Kind;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Why a `--input` file is not a CheckRequest riskgate can decide on.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A field riskgate reads has the wrong JSON type.
    #[error("`{0}` has the wrong type")]
    Shape(&'static str),
    /// The request would be refused before any decision stage (or has no http request).
    #[error("the check request is refused before any decision: {0}")]
    Extract(#[from] ExtractError),
}

/// Parses `text` (a CheckRequest in proto3 JSON) into the request `serve` would decide on,
/// under the config's limits and `client_address.xff_trusted_hops`.
pub fn access_request(config: &Config, text: &str) -> Result<AccessRequest, InputError> {
    let check = parse(text)?;
    Ok(extract::access_request_within(
        &check,
        None,
        &edge_rules(config),
    )?)
}

/// Parses `text` (a CheckRequest in proto3 JSON) into the CheckRequest, unconverted, so
/// `riskgate check` can lay its flags over it ([`super::check_request`]).
pub fn parse(text: &str) -> Result<CheckRequest, InputError> {
    let json: Value = serde_json::from_str(text)?;
    check_request(&json)
}

/// What `serve` enforces at the edge under `config`: its limits, the single action-token
/// header and `client_address.xff_trusted_hops`.
pub fn edge_rules(config: &Config) -> EdgeRules {
    EdgeRules {
        limits: config.limits.clone(),
        single: vec![crate::decide::DecideSettings::from_config(config).token_header],
        xff_trusted_hops: config.client_address.xff_trusted_hops,
    }
}

/// `did you mean GET?` when `method` is a standard method in the wrong case: routes match
/// methods case-sensitively, as HTTP defines them, so `get` finds no route.
pub fn method_hint(method: &str) -> Option<String> {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    let upper = method.to_ascii_uppercase();
    (upper != method && STANDARD.contains(&upper.as_str()))
        .then(|| format!("methods are case-sensitive: did you mean {upper}?"))
}

fn check_request(json: &Value) -> Result<CheckRequest, InputError> {
    let attrs = get(json, "attributes", "attributes");
    let http = attrs
        .and_then(|a| get(a, "request", "request"))
        .and_then(|r| get(r, "http", "http"));
    let http = match http {
        Some(h) => Some(http_request(h)?),
        None => None,
    };
    let source = attrs.and_then(|a| get(a, "source", "source"));
    let peer = match source {
        Some(s) => Some(attribute_context::Peer {
            address: string(
                s.pointer("/address/socketAddress/address"),
                "source.address",
            )?
            .or(string(
                s.pointer("/address/socket_address/address"),
                "source.address",
            )?)
            .map(|a| Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: a,
                    ..SocketAddress::default()
                })),
            }),
            principal: string(get(s, "principal", "principal"), "source.principal")?
                .unwrap_or_default(),
            ..attribute_context::Peer::default()
        }),
        None => None,
    };
    let metadata = attrs
        .and_then(|a| get(a, "metadataContext", "metadata_context"))
        .and_then(|m| get(m, "filterMetadata", "filter_metadata"));
    let metadata_context = match metadata {
        Some(Value::Object(namespaces)) => Some(Metadata {
            filter_metadata: namespaces
                .iter()
                .map(|(ns, v)| match v {
                    Value::Object(fields) => Ok((ns.clone(), to_struct(fields))),
                    _ => Err(InputError::Shape("metadataContext.filterMetadata")),
                })
                .collect::<Result<_, _>>()?,
            ..Metadata::default()
        }),
        Some(_) => return Err(InputError::Shape("metadataContext.filterMetadata")),
        None => None,
    };
    Ok(CheckRequest {
        attributes: Some(AttributeContext {
            source: peer,
            request: Some(attribute_context::Request {
                http,
                ..attribute_context::Request::default()
            }),
            metadata_context,
            ..AttributeContext::default()
        }),
    })
}

fn http_request(h: &Value) -> Result<attribute_context::HttpRequest, InputError> {
    let text = |name: &'static str| string(get(h, name, name), name).map(Option::unwrap_or_default);
    let headers: HashMap<String, String> = match get(h, "headers", "headers") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(InputError::Shape("request.http.headers")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(InputError::Shape("request.http.headers")),
        None => HashMap::new(),
    };
    Ok(attribute_context::HttpRequest {
        id: text("id")?,
        method: text("method")?,
        path: text("path")?,
        host: text("host")?,
        body: text("body")?,
        headers,
        ..attribute_context::HttpRequest::default()
    })
}

fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn string(v: Option<&Value>, name: &'static str) -> Result<Option<String>, InputError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(InputError::Shape(name)),
    }
}

fn to_struct(fields: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(fields) => Kind::StructValue(to_struct(fields)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::default()
    }

    #[test]
    fn the_query_is_stripped_and_the_host_normalised_like_serve() -> Result<(), InputError> {
        let req = access_request(
            &config(),
            r#"{"attributes":{"request":{"http":{"method":"GET",
                "path":"/accounts/a1/balance?x=1","host":"Bank.Example:443",
                "headers":{"X-Request-Id":"r1"}}}}}"#,
        )?;
        assert_eq!(req.path, "/accounts/a1/balance");
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert_eq!(req.host, "bank.example");
        assert_eq!(req.header("x-request-id"), Some("r1"));
        Ok(())
    }

    #[test]
    fn jwt_metadata_and_source_address_are_read_in_either_spelling() -> Result<(), InputError> {
        let req = access_request(
            &config(),
            r#"{"attributes":{"source":{"address":{"socket_address":{"address":"10.0.0.7"}}},
                "request":{"http":{"method":"GET","path":"/"}},
                "metadata_context":{"filterMetadata":{"envoy.filters.http.jwt_authn":
                    {"jwt_payload":{"sub":"u1","amr":["mfa"],"auth_time":12}}}}}}"#,
        )?;
        assert_eq!(
            req.source_ip.map(|ip| ip.to_string()).as_deref(),
            Some("10.0.0.7")
        );
        let payload = &req.metadata["envoy.filters.http.jwt_authn"]["jwt_payload"];
        assert_eq!(payload["sub"], "u1");
        assert_eq!(payload["amr"][0], "mfa");
        assert_eq!(payload["auth_time"], 12);
        Ok(())
    }

    #[test]
    fn broken_inputs_are_errors_naming_the_field() {
        let err = |text: &str| match access_request(&config(), text) {
            Ok(req) => panic!("accepted as {req:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err("nope").starts_with("not JSON"));
        assert!(err(r#"{"attributes":{}}"#).contains("no http request"));
        assert!(err(r#"{"attributes":{"request":{"http":{"method":7}}}}"#).contains("`method`"));
    }

    #[test]
    fn lower_case_standard_methods_get_a_hint() {
        assert_eq!(
            method_hint("get").as_deref(),
            Some("methods are case-sensitive: did you mean GET?")
        );
        assert_eq!(method_hint("GET"), None);
        assert_eq!(method_hint("frobnicate"), None);
    }
}
