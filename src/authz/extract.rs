//! `CheckRequest` → [`AccessRequest`]. The only place that reads Envoy's request types.

use super::client_ip::{self, ClientIpError};
use crate::config::LimitsConfig;
use crate::decision::Limit;
use crate::pb::envoy::config::core::v3::address;
use crate::pb::envoy::service::auth::v3::{attribute_context, CheckRequest};
use crate::request::AccessRequest;
use prost_types::value::Kind;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Why a CheckRequest cannot be turned into a request to decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// No `attributes.request.http`.
    #[error("check request has no http request attributes")]
    NoHttp,
    /// Empty method.
    #[error("check request has no method")]
    NoMethod,
    /// Empty path.
    #[error("check request has no path")]
    NoPath,
    /// Over one of riskgate's own limits.
    #[error("check request exceeds a limit: {0:?}")]
    TooLarge(Limit),
    /// A header that must come once came several times (names compared case-insensitively).
    #[error("check request repeats a single-valued header")]
    Repeated,
    /// No trustworthy client address (`client_address.xff_trusted_hops`).
    #[error("check request has no trustworthy client address: {0}")]
    ClientAddress(#[source] ClientIpError),
}

/// What the edge enforces before a Check is converted: riskgate's own limits, and headers
/// that must come at most once (the action token).
#[derive(Debug, Clone, Default)]
pub struct EdgeRules {
    /// Size limits.
    pub limits: LimitsConfig,
    /// Lower-case names that may appear only once.
    pub single: Vec<String>,
    /// `client_address.xff_trusted_hops`: which address is the client's.
    pub xff_trusted_hops: u32,
}

/// Converts the CheckRequest. `deadline` is the remaining gRPC deadline, if Envoy sent one.
pub fn access_request(
    check: &CheckRequest,
    deadline: Option<Duration>,
) -> Result<AccessRequest, ExtractError> {
    convert(check, deadline, 0)
}

/// Like [`access_request`], after checking `rules` (cheap checks first, before anything is
/// copied): over a limit → [`ExtractError::TooLarge`], a repeated single header →
/// [`ExtractError::Repeated`].
pub fn access_request_within(
    check: &CheckRequest,
    deadline: Option<Duration>,
    rules: &EdgeRules,
) -> Result<AccessRequest, ExtractError> {
    let http = http_of(check)?;
    within(http, rules)?;
    convert(check, deadline, rules.xff_trusted_hops)
}

fn http_of(check: &CheckRequest) -> Result<&attribute_context::HttpRequest, ExtractError> {
    check
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or(ExtractError::NoHttp)
}

fn within(http: &attribute_context::HttpRequest, rules: &EdgeRules) -> Result<(), ExtractError> {
    let limits = &rules.limits;
    let raw = http.header_map.as_ref().map_or(&[][..], |m| &m.headers[..]);
    if http.headers.len() + raw.len() > limits.max_headers {
        return Err(ExtractError::TooLarge(Limit::HeaderCount));
    }
    if http.path.len() > limits.max_path_bytes {
        return Err(ExtractError::TooLarge(Limit::PathBytes));
    }
    let header_bytes: usize = http
        .headers
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .chain(
            raw.iter()
                .map(|h| h.key.len() + h.value.len() + h.raw_value.len()),
        )
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(ExtractError::TooLarge(Limit::HeaderBytes));
    }
    if http.body.len() + http.raw_body.len() > limits.max_body_bytes {
        return Err(ExtractError::TooLarge(Limit::BodyBytes));
    }
    for name in &rules.single {
        let copies = http
            .headers
            .keys()
            .chain(raw.iter().map(|h| &h.key))
            .filter(|k| k.eq_ignore_ascii_case(name))
            .count();
        if copies > 1 {
            return Err(ExtractError::Repeated);
        }
    }
    Ok(())
}

fn convert(
    check: &CheckRequest,
    deadline: Option<Duration>,
    xff_trusted_hops: u32,
) -> Result<AccessRequest, ExtractError> {
    let attrs = check.attributes.as_ref().ok_or(ExtractError::NoHttp)?;
    let http = http_of(check)?;
    if http.method.is_empty() {
        return Err(ExtractError::NoMethod);
    }
    if http.path.is_empty() {
        return Err(ExtractError::NoPath);
    }
    let mut headers: HashMap<String, String> = http
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    // With `encode_raw_headers: true` Envoy sends `header_map` instead.
    if let Some(map) = &http.header_map {
        for h in &map.headers {
            let value = if h.raw_value.is_empty() {
                h.value.clone()
            } else {
                String::from_utf8_lossy(&h.raw_value).into_owned()
            };
            headers
                .entry(h.key.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
    }
    // `path` is the request target: path plus query (and, rarely, fragment).
    let (path, query) = match http.path.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (http.path.clone(), None),
    };
    let host_src = if http.host.is_empty() {
        headers.get(":authority").cloned().unwrap_or_default()
    } else {
        http.host.clone()
    };
    let peer = attrs
        .source
        .as_ref()
        .and_then(|p| p.address.as_ref())
        .and_then(|a| match &a.address {
            Some(address::Address::SocketAddress(s)) => s.address.parse().ok(),
            _ => None,
        });
    let xff = headers.get("x-forwarded-for").map(String::as_str);
    let source_ip =
        client_ip::client_ip(peer, xff, xff_trusted_hops).map_err(ExtractError::ClientAddress)?;
    let metadata = attrs
        .metadata_context
        .as_ref()
        .map(|m| {
            m.filter_metadata
                .iter()
                .map(|(ns, s)| (ns.clone(), struct_to_json(s)))
                .collect()
        })
        .unwrap_or_default();
    let tls_peer = attrs
        .source
        .as_ref()
        .map(|p| p.principal.clone())
        .filter(|p| !p.is_empty());
    Ok(AccessRequest {
        method: http.method.clone(),
        path,
        query,
        host: normalize_host(&host_src),
        request_id: super::request_id::request_id(&headers, &http.id),
        headers,
        source_ip,
        deadline,
        metadata,
        tls_peer,
        // Envoy packs the bytes in `raw_body` with `pack_as_bytes: true`, else in `body`.
        body: if !http.raw_body.is_empty() {
            Some(http.raw_body.clone())
        } else if !http.body.is_empty() {
            Some(http.body.clone().into_bytes())
        } else {
            None
        },
    })
}

/// Lower-case host without port (`Bank.Example:443` → `bank.example`; `[::1]:80` → `[::1]`).
fn normalize_host(authority: &str) -> String {
    let lower = authority.trim().to_ascii_lowercase();
    if lower.starts_with('[') {
        return lower
            .split_once(']')
            .map_or(lower.clone(), |(h, _)| format!("{h}]"));
    }
    let host = match lower.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => lower.as_str(),
    };
    // `bank.example.` (fully qualified) is the same host as `bank.example`.
    host.strip_suffix('.').unwrap_or(host).to_owned()
}

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(s: &prost_types::Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            // Struct numbers are doubles; JWT claims like `exp` are integers.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// Parses a `grpc-timeout` header value (`100m`, `2S`, `5000u`, ...).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::envoy::config::core::v3::{Address, Metadata, SocketAddress};
    use crate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};

    fn check(path: &str, host: &str) -> CheckRequest {
        let http = attribute_context::HttpRequest {
            id: "req-1".into(),
            method: "GET".into(),
            path: path.into(),
            host: host.into(),
            headers: [("X-Action-Token".to_string(), "t".to_string())].into(),
            ..Default::default()
        };
        let jwt = prost_types::Struct {
            fields: [(
                "jwt_payload".to_string(),
                prost_types::Value {
                    kind: Some(Kind::StructValue(prost_types::Struct {
                        fields: [
                            (
                                "sub".to_string(),
                                prost_types::Value {
                                    kind: Some(Kind::StringValue("u1".into())),
                                },
                            ),
                            (
                                "exp".to_string(),
                                prost_types::Value {
                                    kind: Some(Kind::NumberValue(1_700_000_000.0)),
                                },
                            ),
                        ]
                        .into(),
                    })),
                },
            )]
            .into(),
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(attribute_context::Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: "10.1.2.3".into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(http),
                }),
                metadata_context: Some(Metadata {
                    filter_metadata: [("envoy.filters.http.jwt_authn".to_string(), jwt)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn extracts_the_plain_request() -> Result<(), ExtractError> {
        let req = access_request(
            &check("/accounts/a1/balance?x=1", "Bank.Example:8443"),
            None,
        )?;
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/accounts/a1/balance");
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert_eq!(req.host, "bank.example");
        assert_eq!(req.header("x-action-token"), Some("t"));
        assert_eq!(req.request_id.as_deref(), Some("req-1"));
        // The proxy's x-request-id (what its access log and the upstream see) wins.
        let mut c = check("/accounts/a1/balance", "bank.example");
        if let Some(http) = c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            let _ = http
                .headers
                .insert("x-request-id".into(), "rid-from-proxy".into());
        }
        let req = access_request(&c, None)?;
        assert_eq!(req.request_id.as_deref(), Some("rid-from-proxy"));
        assert_eq!(
            req.source_ip.map(|ip| ip.to_string()).as_deref(),
            Some("10.1.2.3")
        );
        let payload = &req.metadata["envoy.filters.http.jwt_authn"]["jwt_payload"];
        assert_eq!(payload["sub"], "u1");
        assert_eq!(payload["exp"], 1_700_000_000i64);
        Ok(())
    }

    #[test]
    fn missing_parts_are_errors_not_panics() {
        assert_eq!(
            access_request(&CheckRequest::default(), None).err(),
            Some(ExtractError::NoHttp)
        );
        let mut c = check("/", "h");
        if let Some(http) = c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.method.clear();
        }
        assert_eq!(access_request(&c, None).err(), Some(ExtractError::NoMethod));
    }

    #[test]
    fn limits_are_checked_before_conversion() {
        let rules = EdgeRules {
            limits: LimitsConfig {
                max_headers: 2,
                max_header_bytes: 40,
                max_path_bytes: 10,
                max_body_bytes: 3,
                ..LimitsConfig::default()
            },
            single: vec!["x-action-token".into()],
            xff_trusted_hops: 0,
        };
        let mut c = check("/a", "h");
        let within = |c: &CheckRequest| access_request_within(c, None, &rules).err();
        assert_eq!(within(&c), None);
        let http = match c
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            Some(http) => http,
            None => return,
        };
        http.path = "/0123456789".into();
        let path = c.clone();
        assert_eq!(
            within(&path),
            Some(ExtractError::TooLarge(Limit::PathBytes))
        );
        let set = |c: &mut CheckRequest, f: &dyn Fn(&mut attribute_context::HttpRequest)| {
            if let Some(http) = c
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
            {
                http.path = "/a".into();
                f(http);
            }
        };
        let mut body = c.clone();
        set(&mut body, &|h| h.body = "abcd".into());
        assert_eq!(
            within(&body),
            Some(ExtractError::TooLarge(Limit::BodyBytes))
        );
        let mut bytes = c.clone();
        set(&mut bytes, &|h| {
            h.headers.insert("x-long".into(), "v".repeat(40));
        });
        assert_eq!(
            within(&bytes),
            Some(ExtractError::TooLarge(Limit::HeaderBytes))
        );
        let mut count = c.clone();
        set(&mut count, &|h| {
            h.headers.insert("a".into(), "1".into());
            h.headers.insert("b".into(), "1".into());
        });
        assert_eq!(
            within(&count),
            Some(ExtractError::TooLarge(Limit::HeaderCount))
        );
        let mut twice = c.clone();
        set(&mut twice, &|h| {
            h.headers.insert("x-action-token".into(), "u".into());
        });
        assert_eq!(within(&twice), Some(ExtractError::Repeated));
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_grpc_timeout("500000u"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_grpc_timeout("abc"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("Bank.Example:443"), "bank.example");
        assert_eq!(normalize_host("bank.example"), "bank.example");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("Bank.Example.:443"), "bank.example");
        assert_eq!(normalize_host("bank.example."), "bank.example");
    }
}
