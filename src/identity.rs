//! Who is asking: the principal, from verified identity only.
//!
//! Sources, in order: the `jwt_authn` payload Envoy put in `metadata_context` (it verified
//! the JWT), then a header the config names as proxy-written (Istio's
//! `outputPayloadToHeader`). Anything else — a client-sent `x-user-id`, an unconfigured
//! header — is ignored, and the caller is `Anonymous`.

use crate::config::{IdentityConfig, TrustedHeaderFormat};
use crate::request::AccessRequest;
use base64::Engine as _;
use serde_json::{Map, Value};

/// The caller as far as riskgate can verify.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// A verified user, with the verified claims.
    User {
        /// Cedar principal id: the configured claim, qualified as `issuer|subject` when
        /// several issuers are configured (so two identity providers' `u1` never meet).
        id: String,
        /// The configured claim as issued: the application's user id, which the risk API's
        /// `context.user_id` is compared with.
        subject: String,
        /// All verified claims (attributes and step-up are read from here).
        claims: Map<String, Value>,
    },
    /// No verified identity.
    Anonymous,
}

impl Principal {
    /// The application's user id (the unqualified subject), if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::User { subject, .. } => Some(subject),
            Principal::Anonymous => None,
        }
    }

    /// Label for logs and the `x-riskgate-principal` header.
    pub fn label(&self) -> String {
        match self {
            Principal::User { id, .. } => format!("User::{id:?}"),
            Principal::Anonymous => "Anonymous".to_owned(),
        }
    }
}

/// A verified identity source that is present but unusable. The request is denied:
/// falling back to anonymous could hide a misconfigured proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The payload has no usable principal claim.
    #[error("verified payload has no string claim `{0}`")]
    MissingClaim(String),
    /// The trusted header is not base64url JSON.
    #[error("trusted identity header `{0}` is not a base64url JSON object")]
    BadHeader(String),
    /// `identity.issuers` is set and the payload's `iss` is not one of them (or missing).
    #[error("issuer is not one of `identity.issuers`")]
    UnknownIssuer,
}

/// Establishes the principal for one request.
pub fn principal(config: &IdentityConfig, req: &AccessRequest) -> Result<Principal, IdentityError> {
    if let Some(src) = &config.jwt_metadata {
        let payload = req
            .metadata
            .get(&src.namespace)
            .and_then(|ns| ns.get(&src.key))
            .and_then(Value::as_object);
        if let Some(claims) = payload {
            return user_from_claims(config, claims.clone());
        }
    }
    if let Some(h) = &config.trusted_header {
        if let Some(value) = req.header(&h.name.to_ascii_lowercase()) {
            return match h.format {
                TrustedHeaderFormat::Plain if !value.trim().is_empty() => Ok(Principal::User {
                    id: value.trim().to_owned(),
                    subject: value.trim().to_owned(),
                    claims: Map::new(),
                }),
                TrustedHeaderFormat::Plain => {
                    Err(IdentityError::MissingClaim(config.claim.clone()))
                }
                TrustedHeaderFormat::JwtPayload => {
                    let claims = decode_payload(value)
                        .ok_or_else(|| IdentityError::BadHeader(h.name.clone()))?;
                    user_from_claims(config, claims)
                }
            };
        }
    }
    Ok(Principal::Anonymous)
}

fn user_from_claims(
    config: &IdentityConfig,
    claims: Map<String, Value>,
) -> Result<Principal, IdentityError> {
    let subject = match claims.get(&config.claim).and_then(Value::as_str) {
        Some(sub) if !sub.is_empty() => sub.to_owned(),
        _ => return Err(IdentityError::MissingClaim(config.claim.clone())),
    };
    if config.issuers.is_empty() {
        return Ok(Principal::User {
            id: subject.clone(),
            subject,
            claims,
        });
    }
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .filter(|iss| config.issuers.iter().any(|known| known == iss))
        .ok_or(IdentityError::UnknownIssuer)?;
    let id = if config.issuers.len() > 1 {
        format!("{issuer}|{subject}")
    } else {
        subject.clone()
    };
    Ok(Principal::User {
        id,
        subject,
        claims,
    })
}

/// Decodes a base64url (padded or not) JSON object, as Envoy and Istio forward JWT payloads.
fn decode_payload(value: &str) -> Option<Map<String, Value>> {
    let trimmed = value.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether the verified claims show a completed step-up (e.g. `amr` contains `mfa`).
pub fn step_up_done(config: &IdentityConfig, principal: &Principal, clock_skew_ms: u64) -> bool {
    let (Some(step_up), Principal::User { claims, .. }) = (&config.step_up, principal) else {
        return false;
    };
    let shown = match claims.get(&step_up.claim) {
        Some(Value::String(s)) => *s == step_up.contains,
        Some(Value::Array(items)) => items
            .iter()
            .any(|v| v.as_str() == Some(step_up.contains.as_str())),
        _ => false,
    };
    let now_s = crate::clock::now_ms() / 1000;
    let skew_s = i64::try_from(clock_skew_ms / 1000).unwrap_or(i64::MAX);
    let auth_time = claims.get("auth_time").and_then(Value::as_i64);
    // an authentication dated in the future would meet any max_age forever
    let from_the_future = auth_time.is_some_and(|at| at.saturating_sub(now_s) > skew_s);
    let recent = match step_up.max_age {
        None => true,
        Some(max_age) => auth_time.is_some_and(|at| {
            now_s.saturating_sub(at) <= i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
        }),
    };
    shown && recent && !from_the_future
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StepUpConfig, TrustedHeader};
    use serde_json::json;

    fn with_metadata(payload: Value) -> AccessRequest {
        let mut req = AccessRequest::new("GET", "/");
        let mut ns = Map::new();
        ns.insert("jwt_payload".into(), payload);
        req.metadata
            .insert("envoy.filters.http.jwt_authn".into(), ns);
        req
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn principal_from_jwt_metadata() {
        let req = with_metadata(json!({"sub": "u1", "amr": ["pwd"]}));
        let p = principal(&IdentityConfig::default(), &req);
        assert_eq!(p.as_ref().ok().and_then(Principal::user_id), Some("u1"));
    }

    #[test]
    fn metadata_without_claim_is_an_error_not_anonymous() {
        let req = with_metadata(json!({"email": "a@b"}));
        let p = principal(&IdentityConfig::default(), &req);
        assert_eq!(p, Err(IdentityError::MissingClaim("sub".into())));
    }

    #[test]
    fn no_identity_is_anonymous() {
        let req = AccessRequest::new("GET", "/");
        assert_eq!(
            principal(&IdentityConfig::default(), &req),
            Ok(Principal::Anonymous)
        );
    }

    #[test]
    fn forged_header_is_ignored_when_untrusted() {
        let mut req = AccessRequest::new("GET", "/");
        req.headers.insert("x-user-id".into(), "u2".into());
        req.headers
            .insert("x-jwt-payload".into(), b64(&json!({"sub": "u2"})));
        assert_eq!(
            principal(&IdentityConfig::default(), &req),
            Ok(Principal::Anonymous)
        );
    }

    #[test]
    fn trusted_payload_header_is_used_when_configured() {
        let config = IdentityConfig {
            trusted_header: Some(TrustedHeader {
                name: "X-JWT-Payload".into(),
                format: TrustedHeaderFormat::JwtPayload,
            }),
            ..IdentityConfig::default()
        };
        let mut req = AccessRequest::new("GET", "/");
        req.headers
            .insert("x-jwt-payload".into(), b64(&json!({"sub": "u3"})));
        let p = principal(&config, &req);
        assert_eq!(p.as_ref().ok().and_then(Principal::user_id), Some("u3"));

        req.headers.insert("x-jwt-payload".into(), "%%%".into());
        assert!(matches!(
            principal(&config, &req),
            Err(IdentityError::BadHeader(_))
        ));
    }

    #[test]
    fn metadata_wins_over_trusted_header() {
        let config = IdentityConfig {
            trusted_header: Some(TrustedHeader {
                name: "x-user-id".into(),
                format: TrustedHeaderFormat::Plain,
            }),
            ..IdentityConfig::default()
        };
        let mut req = with_metadata(json!({"sub": "u1"}));
        req.headers.insert("x-user-id".into(), "u2".into());
        let p = principal(&config, &req);
        assert_eq!(p.as_ref().ok().and_then(Principal::user_id), Some("u1"));
    }

    #[test]
    fn several_issuers_qualify_the_principal_id() {
        let config = IdentityConfig {
            issuers: vec!["https://idp-a".into(), "https://idp-b".into()],
            ..IdentityConfig::default()
        };
        let from = |iss: &str| principal(&config, &with_metadata(json!({"sub": "u1", "iss": iss})));
        let a = from("https://idp-a");
        let b = from("https://idp-b");
        assert!(
            matches!(&a, Ok(Principal::User { id, .. }) if id == "https://idp-a|u1"),
            "{a:?}"
        );
        assert!(
            matches!(&b, Ok(Principal::User { id, .. }) if id == "https://idp-b|u1"),
            "{b:?}"
        );
        // the risk API knows the application's user id, unqualified
        assert_eq!(a.as_ref().ok().and_then(Principal::user_id), Some("u1"));
        assert_eq!(from("https://evil"), Err(IdentityError::UnknownIssuer));
        let no_iss = principal(&config, &with_metadata(json!({"sub": "u1"})));
        assert_eq!(no_iss, Err(IdentityError::UnknownIssuer));
    }

    #[test]
    fn one_issuer_is_checked_but_not_prefixed() {
        let config = IdentityConfig {
            issuers: vec!["https://idp-a".into()],
            ..IdentityConfig::default()
        };
        let p = principal(
            &config,
            &with_metadata(json!({"sub": "u1", "iss": "https://idp-a"})),
        );
        assert!(
            matches!(&p, Ok(Principal::User { id, .. }) if id == "u1"),
            "{p:?}"
        );
        let other = principal(
            &config,
            &with_metadata(json!({"sub": "u1", "iss": "https://idp-b"})),
        );
        assert_eq!(other, Err(IdentityError::UnknownIssuer));
    }

    #[test]
    fn step_up_reads_string_or_array_claims() {
        let config = IdentityConfig {
            step_up: Some(StepUpConfig {
                claim: "amr".into(),
                contains: "mfa".into(),
                max_age: None,
            }),
            ..IdentityConfig::default()
        };
        let user = |amr: Value| {
            let mut claims = Map::new();
            claims.insert("amr".into(), amr);
            Principal::User {
                id: "u1".into(),
                subject: "u1".into(),
                claims,
            }
        };
        assert!(step_up_done(&config, &user(json!(["pwd", "mfa"])), 60_000));
        assert!(step_up_done(&config, &user(json!("mfa")), 60_000));
        assert!(!step_up_done(&config, &user(json!(["pwd"])), 60_000));
        assert!(!step_up_done(&config, &Principal::Anonymous, 60_000));
    }

    #[test]
    fn step_up_can_require_a_recent_auth_time() {
        let config = IdentityConfig {
            step_up: Some(StepUpConfig {
                claim: "amr".into(),
                contains: "mfa".into(),
                max_age: Some(std::time::Duration::from_secs(300)),
            }),
            ..IdentityConfig::default()
        };
        let now = crate::clock::now_ms() / 1000;
        let user = |auth_time: Option<i64>| {
            let mut claims = Map::new();
            claims.insert("amr".into(), json!(["mfa"]));
            if let Some(at) = auth_time {
                claims.insert("auth_time".into(), json!(at));
            }
            Principal::User {
                id: "u1".into(),
                subject: "u1".into(),
                claims,
            }
        };
        assert!(step_up_done(&config, &user(Some(now - 60)), 60_000));
        assert!(
            !step_up_done(&config, &user(Some(now + 3_600)), 60_000),
            "from the future"
        );
        assert!(
            !step_up_done(&config, &user(Some(now - 3_600)), 60_000),
            "too old"
        );
        assert!(!step_up_done(&config, &user(None), 60_000), "no auth_time");
    }
}
