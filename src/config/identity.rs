//! Identity configuration: where a verified principal comes from.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// How riskgate learns who the caller is. Only sources written by the proxy after
/// verification count: Envoy's `jwt_authn` metadata, or a header the config explicitly
/// names as proxy-written (Istio's `outputPayloadToHeader`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Envoy `jwt_authn` `payload_in_metadata`, read from the Check's `metadata_context`.
    pub jwt_metadata: Option<JwtMetadataSource>,
    /// A request header written by the proxy after verification. Off by default: a client
    /// could send any header, so it is only trusted when configured.
    pub trusted_header: Option<TrustedHeader>,
    /// The claim holding the principal id.
    pub claim: String,
    /// JWT claims copied onto the principal entity as attributes (the schema must declare them).
    pub claims_as_attributes: Vec<String>,
    /// How a completed step-up (MFA) shows in the claims, to satisfy a CHALLENGE.
    pub step_up: Option<StepUpConfig>,
    /// Accepted `iss` values. Empty: not checked. With several, principal ids are
    /// `issuer|subject`, so the same `sub` from two identity providers never collides.
    pub issuers: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            jwt_metadata: Some(JwtMetadataSource::default()),
            trusted_header: None,
            claim: "sub".into(),
            claims_as_attributes: Vec::new(),
            step_up: None,
            issuers: Vec::new(),
        }
    }
}

/// Location of the verified JWT payload in `metadata_context.filter_metadata`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtMetadataSource {
    /// Filter namespace, normally `envoy.filters.http.jwt_authn`.
    pub namespace: String,
    /// `payload_in_metadata` name (Istio sets it to the issuer).
    pub key: String,
}

impl Default for JwtMetadataSource {
    fn default() -> Self {
        JwtMetadataSource {
            namespace: "envoy.filters.http.jwt_authn".into(),
            key: "jwt_payload".into(),
        }
    }
}

/// A proxy-written identity header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedHeader {
    /// Header name (case-insensitive).
    pub name: String,
    /// What the header carries.
    #[serde(default)]
    pub format: TrustedHeaderFormat,
}

/// Encoding of a trusted identity header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedHeaderFormat {
    /// A base64url-encoded JWT payload (Envoy `forward_payload_header`, Istio `outputPayloadToHeader`).
    #[default]
    JwtPayload,
    /// The principal id itself.
    Plain,
}

/// A claim that proves step-up authentication.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpConfig {
    /// Claim name, e.g. `amr` or `acr`.
    pub claim: String,
    /// Value the claim must equal, or contain when it is an array.
    pub contains: String,
    /// When set, the step-up counts only if the JWT's `auth_time` (epoch seconds) is at most
    /// this old (RFC 9470 `max_age`): an MFA done hours ago does not answer today's CHALLENGE.
    /// Legacy `max_age_s`; a bare number is seconds.
    #[serde(default, alias = "max_age_s", deserialize_with = "duration::opt_secs")]
    pub max_age: Option<Duration>,
}

impl IdentityConfig {
    /// Field-level checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.claim.is_empty() {
            return Err(ConfigError::field("identity.claim", "must not be empty"));
        }
        if let Some(h) = &self.trusted_header {
            if h.name.is_empty() || h.name.contains(char::is_whitespace) {
                return Err(ConfigError::field(
                    "identity.trusted_header.name",
                    "must be a header name",
                ));
            }
        }
        if self.issuers.len() > 1
            && self
                .trusted_header
                .as_ref()
                .is_some_and(|h| h.format == TrustedHeaderFormat::Plain)
        {
            return Err(ConfigError::field(
                "identity.issuers",
                "several issuers need the issuer in the identity: a `plain` trusted header has none",
            ));
        }
        if let Some(s) = &self.step_up {
            if s.claim.is_empty() || s.contains.is_empty() {
                return Err(ConfigError::field(
                    "identity.step_up",
                    "`claim` and `contains` must not be empty",
                ));
            }
        }
        Ok(())
    }
}
