//! The plain request the decision core works on. Built from Envoy's `CheckRequest` at the
//! edge (`authz::extract`), so the core never sees Envoy, tonic or prost types.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// One HTTP request as Envoy saw it.
#[derive(Debug, Clone, Default)]
pub struct AccessRequest {
    /// HTTP method, as sent (upper case for standard methods).
    pub method: String,
    /// Path without the query string, exactly as received (not decoded, not normalised).
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Host from `:authority`, lower-cased, without port.
    pub host: String,
    /// Request headers, keys lower-case.
    pub headers: HashMap<String, String>,
    /// The client's address — the one definition, read by Cedar's `context.request.ip` and
    /// by anything keyed by client: the Check's `source.address`, or the trusted
    /// `x-forwarded-for` entry under `client_address.xff_trusted_hops`
    /// ([`crate::config::ClientAddressConfig`]).
    pub source_ip: Option<IpAddr>,
    /// The request's `x-request-id` (what the proxy's access log and the upstream carry),
    /// falling back to Envoy's stream id ([`crate::authz::request_id`]).
    pub request_id: Option<String>,
    /// Time left before Envoy gives up on the Check (from `grpc-timeout`).
    pub deadline: Option<Duration>,
    /// `metadata_context.filter_metadata`, by namespace, as JSON.
    pub metadata: HashMap<String, Map<String, Value>>,
    /// Peer certificate subject/URI when the downstream used mTLS.
    pub tls_peer: Option<String>,
    /// The request body Envoy sent with the Check (`with_request_body`), if any; read only
    /// on routes that map body fields into `context.transaction`.
    pub body: Option<Vec<u8>>,
}

impl AccessRequest {
    /// A request header by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A minimal request for tests and the offline `check` command.
    pub fn new(method: &str, path: &str) -> AccessRequest {
        AccessRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            ..AccessRequest::default()
        }
    }
}
