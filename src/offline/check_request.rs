//! The request `riskgate check` decides: a CheckRequest built from `--method/--path/--host`
//! or read from `--input`, with `--header`, `--ip`, `--source-principal` and `--body` laid
//! over it, then converted by the same code `serve` uses ([`crate::authz::extract`]) — so
//! header names are lower-cased, `limits` apply and typed `context` headers are read alike.
//!
//! A bad flag value is a [`FlagError`] naming the flag (the command then exits 1, never 2,
//! which means "not allowed").

use super::check_input::{self, InputError};
use crate::config::Config;
use crate::pb::envoy::config::core::v3::{address, Address, SocketAddress};
use crate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use crate::request::AccessRequest;
use std::net::IpAddr;
use std::path::PathBuf;

/// The request-shaping flags of `riskgate check`, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct RequestFlags {
    /// `--header 'name: value'`, in order (a name given twice is joined with `,`, as Envoy
    /// joins a repeated header).
    pub headers: Vec<String>,
    /// `--ip`: the client address (`context.request.ip`).
    pub ip: Option<String>,
    /// `--source-principal`: the Check's `attributes.source.principal`.
    pub source_principal: Option<String>,
    /// `--body`: JSON text, or `@FILE` holding it.
    pub body: Option<String>,
}

/// A request-shaping flag whose value cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// `--header` without `:` or with a name that is not an HTTP token.
    #[error("--header `{0}` is not `name: value` with a header name before the colon")]
    Header(String),
    /// `--ip` is not an IPv4 or IPv6 address.
    #[error("--ip `{0}` is not an ip address")]
    Ip(String),
    /// `--body @FILE` cannot be read.
    #[error("--body: cannot read `{path}`: {source}")]
    BodyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--body` is not JSON.
    #[error("--body is not JSON: {0}")]
    BodyJson(#[source] serde_json::Error),
}

/// The flags, checked: what is laid over the base CheckRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Lower-case header name and value, repeated names already joined.
    pub headers: Vec<(String, String)>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The peer principal.
    pub source_principal: Option<String>,
    /// The JSON body text.
    pub body: Option<String>,
}

impl RequestFlags {
    /// Checks every flag, naming the first bad one.
    pub fn parse(&self) -> Result<Overrides, FlagError> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for raw in &self.headers {
            let (name, value) = header(raw)?;
            match headers.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(&value);
                }
                None => headers.push((name, value)),
            }
        }
        let ip = match &self.ip {
            Some(s) => Some(
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| FlagError::Ip(s.clone()))?,
            ),
            None => None,
        };
        let body = match &self.body {
            Some(arg) => Some(body(arg)?),
            None => None,
        };
        if body.is_some() && !headers.iter().any(|(n, _)| n == "content-type") {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Ok(Overrides {
            headers,
            ip,
            source_principal: self.source_principal.clone(),
            body,
        })
    }
}

/// `name: value` → (lower-case name, value without surrounding whitespace).
fn header(raw: &str) -> Result<(String, String), FlagError> {
    let bad = || FlagError::Header(raw.to_owned());
    let (name, value) = raw.split_once(':').ok_or_else(bad)?;
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(bad());
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

/// The body text of `--body`: the argument itself, or the file after `@`; JSON either way.
fn body(arg: &str) -> Result<String, FlagError> {
    let text = match arg.strip_prefix('@') {
        Some(file) => {
            let path = PathBuf::from(file);
            std::fs::read_to_string(&path).map_err(|source| FlagError::BodyFile { path, source })?
        }
        None => arg.to_owned(),
    };
    serde_json::from_str::<serde_json::Value>(&text).map_err(FlagError::BodyJson)?;
    Ok(text)
}

/// The base CheckRequest of `--method/--path/--host`.
pub fn from_flags(method: &str, path: &str, host: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: host.to_owned(),
                    ..attribute_context::HttpRequest::default()
                }),
                ..attribute_context::Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Lays `over` on `check` (a header replaces the base's of the same name, whatever its case)
/// and converts it as `serve` would. With `--ip` the address is the client's as given, so
/// `client_address.xff_trusted_hops` is not applied; without it a request from flags has no
/// address and one from `--input` is read under the config's hops.
pub fn access_request(
    config: &Config,
    mut check: CheckRequest,
    over: &Overrides,
    from_input: bool,
) -> Result<AccessRequest, InputError> {
    let attrs = check
        .attributes
        .get_or_insert_with(AttributeContext::default);
    if let Some(http) = attrs.request.as_mut().and_then(|r| r.http.as_mut()) {
        for (name, value) in &over.headers {
            http.headers.retain(|k, _| !k.eq_ignore_ascii_case(name));
            if let Some(map) = http.header_map.as_mut() {
                map.headers.retain(|h| !h.key.eq_ignore_ascii_case(name));
            }
            http.headers.insert(name.clone(), value.clone());
        }
        if let Some(body) = &over.body {
            http.body = body.clone();
            http.raw_body.clear();
        }
    }
    if over.ip.is_some() || over.source_principal.is_some() {
        let source = attrs
            .source
            .get_or_insert_with(attribute_context::Peer::default);
        if let Some(ip) = over.ip {
            source.address = Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.to_string(),
                    ..SocketAddress::default()
                })),
            });
        }
        if let Some(principal) = &over.source_principal {
            source.principal = principal.clone();
        }
    }
    let mut rules = check_input::edge_rules(config);
    if over.ip.is_some() || !from_input {
        rules.xff_trusted_hops = 0;
    }
    let mut req = crate::authz::extract::access_request_within(&check, None, &rules)?;
    if req.body.is_none() {
        req.body = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .and_then(|h| {
                if !h.raw_body.is_empty() {
                    Some(h.raw_body.clone())
                } else if !h.body.is_empty() {
                    Some(h.body.clone().into_bytes())
                } else {
                    None
                }
            });
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(headers: &[&str]) -> RequestFlags {
        RequestFlags {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            ..RequestFlags::default()
        }
    }

    fn decide_input(over: &Overrides) -> Result<AccessRequest, InputError> {
        access_request(
            &Config::default(),
            from_flags("POST", "/a?x=1", "Bank.Example:443"),
            over,
            false,
        )
    }

    #[test]
    fn headers_are_lower_cased_trimmed_and_repeats_joined_like_envoy() -> Result<(), FlagError> {
        let over = flags(&["X-Tenant:  acme ", "x-tenant: beta", "X-Empty:"]).parse()?;
        assert_eq!(
            over.headers,
            vec![
                ("x-tenant".to_owned(), "acme,beta".to_owned()),
                ("x-empty".to_owned(), String::new())
            ]
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = |f: RequestFlags| match f.parse() {
            Ok(o) => panic!("accepted as {o:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err(flags(&["x-tenant acme"])).starts_with("--header `x-tenant acme`"));
        assert!(err(flags(&[": acme"])).starts_with("--header"));
        assert!(err(flags(&["x tenant: acme"])).starts_with("--header"));
        let ip = RequestFlags {
            ip: Some("10.0.0.256".into()),
            ..RequestFlags::default()
        };
        assert_eq!(err(ip), "--ip `10.0.0.256` is not an ip address");
        let body = RequestFlags {
            body: Some("{amount: 1}".into()),
            ..RequestFlags::default()
        };
        assert!(err(body).starts_with("--body is not JSON"));
        let file = RequestFlags {
            body: Some("@/nonexistent/riskgate-body.json".into()),
            ..RequestFlags::default()
        };
        assert!(err(file).starts_with("--body: cannot read `/nonexistent/riskgate-body.json`"));
    }

    #[test]
    fn a_body_is_json_with_a_default_content_type_a_header_overrides() -> Result<(), FlagError> {
        let with_body = |headers: &[&str]| RequestFlags {
            body: Some(r#"{"amount": 1200000}"#.into()),
            ..flags(headers)
        };
        let over = with_body(&[]).parse()?;
        assert_eq!(over.body.as_deref(), Some(r#"{"amount": 1200000}"#));
        assert_eq!(
            over.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        let over = with_body(&["Content-Type: text/plain"]).parse()?;
        assert_eq!(
            over.headers,
            vec![("content-type".to_owned(), "text/plain".to_owned())]
        );
        Ok(())
    }

    #[test]
    fn overrides_reach_the_request_through_serves_conversion(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let over = RequestFlags {
            headers: vec!["X-Tenant: acme".into()],
            ip: Some("10.1.2.3".into()),
            source_principal: Some("spiffe://bank.example/ns/bank/sa/payments".into()),
            body: Some(r#"{"amount":1}"#.into()),
        }
        .parse()?;
        let req = decide_input(&over)?;
        assert_eq!(req.path, "/a");
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert_eq!(req.host, "bank.example");
        assert_eq!(req.header("x-tenant"), Some("acme"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.source_ip, "10.1.2.3".parse().ok());
        assert_eq!(
            req.tls_peer.as_deref(),
            Some("spiffe://bank.example/ns/bank/sa/payments")
        );
        assert_eq!(req.body.as_deref(), Some(&br#"{"amount":1}"#[..]));
        Ok(())
    }

    #[test]
    fn a_header_flag_replaces_the_inputs_header_whatever_its_case() -> Result<(), InputError> {
        let mut check = from_flags("GET", "/", "");
        if let Some(http) = check
            .attributes
            .as_mut()
            .and_then(|a| a.request.as_mut())
            .and_then(|r| r.http.as_mut())
        {
            http.headers.insert("X-Tenant".into(), "old".into());
            http.headers.insert("x-other".into(), "kept".into());
        }
        let over = Overrides {
            headers: vec![("x-tenant".into(), "new".into())],
            ..Overrides::default()
        };
        let req = access_request(&Config::default(), check, &over, true)?;
        assert_eq!(req.header("x-tenant"), Some("new"));
        assert_eq!(req.header("x-other"), Some("kept"));
        assert_eq!(req.source_ip, None);
        Ok(())
    }

    #[test]
    fn serves_limits_apply_to_flag_values() {
        let mut config = Config::default();
        config.limits.max_body_bytes = 4;
        let over = Overrides {
            body: Some(r#"{"a":1}"#.into()),
            ..Overrides::default()
        };
        let got = access_request(&config, from_flags("POST", "/", ""), &over, false);
        assert!(matches!(got, Err(InputError::Extract(_))), "{got:?}");
    }
}
