//! [`Decision`] → `CheckResponse`. The only place that writes Envoy's response types.
//!
//! Envoy decides on the gRPC status code, not on the oneof (STACK-NOTES §3), so code 0
//! always goes with `OkResponse` and code 7 (`PERMISSION_DENIED`) with `DeniedResponse`.
//! Deny bodies are generic: an error word and the decision id, never a reason, a policy id
//! or a score.

use crate::decision::{Decision, DenyReason, Verdict};
use crate::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use crate::pb::envoy::r#type::v3::HttpStatus;
use crate::pb::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use crate::pb::google::rpc::Status as RpcStatus;
use prost_types::value::Kind;

const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;

/// Answer settings that do not change per request.
#[derive(Debug, Clone, Default)]
pub struct AnswerSettings {
    /// `acr_values` for the RFC 9470 step-up challenge, when step-up is shown by `acr`.
    pub step_up_acr: Option<String>,
    /// The action-token header, named in the `www-authenticate` challenge of the 401 for a
    /// missing token.
    pub token_header: Option<String>,
    /// What an answer carries besides the verdict.
    pub extras: AnswerExtras,
}

/// What an answer carries besides the verdict and the stripping of forged headers. Every
/// extra costs bytes on every Check (an allow with all of them is ≈ 400 bytes more), so
/// each is sent only when the config's `answer` section asks for it: none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerExtras {
    /// Dynamic metadata for Envoy's access log (decision id, verdict, band, score…).
    pub dynamic_metadata: bool,
    /// `x-risk-*`, `x-riskgate-principal` and `x-riskgate-decision-id` to the upstream on
    /// allow.
    pub upstream_headers: bool,
    /// `x-riskgate-decision-id` on the response to the client after an allow (a deny always
    /// carries it, in its header and body).
    pub response_decision_id: bool,
}

impl AnswerExtras {
    /// Every extra (what riskgate sent before `answer` existed).
    pub fn all() -> AnswerExtras {
        AnswerExtras {
            dynamic_metadata: true,
            upstream_headers: true,
            response_decision_id: true,
        }
    }
}

impl From<crate::config::AnswerConfig> for AnswerExtras {
    fn from(c: crate::config::AnswerConfig) -> AnswerExtras {
        AnswerExtras {
            dynamic_metadata: c.dynamic_metadata,
            upstream_headers: c.upstream_headers,
            response_decision_id: c.response_decision_id,
        }
    }
}

fn header(key: &str, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn string_value(s: impl Into<String>) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// Dynamic metadata for Envoy's access log (operator-facing, never sent to the client).
fn dynamic_metadata(d: &Decision) -> prost_types::Struct {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("decision_id".to_owned(), string_value(&d.id));
    fields.insert("decision".to_owned(), string_value(d.verdict.label()));
    fields.insert(
        "status".to_owned(),
        prost_types::Value {
            kind: Some(Kind::NumberValue(f64::from(d.verdict.http_status()))),
        },
    );
    fields.insert("band".to_owned(), string_value(d.band.as_str()));
    fields.insert(
        "enforced".to_owned(),
        prost_types::Value {
            kind: Some(Kind::BoolValue(d.enforced)),
        },
    );
    if let Some(r) = &d.risk {
        fields.insert(
            "score".to_owned(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(r.score)),
            },
        );
        fields.insert("recommendation".to_owned(), string_value(r.recommendation));
    }
    prost_types::Struct { fields }
}

/// Headers the upstream gets on allow.
fn upstream_headers(d: &Decision) -> Vec<HeaderValueOption> {
    let mut headers = vec![
        header("x-risk-band", d.band.as_str()),
        header("x-riskgate-decision-id", &d.id),
        header(
            "x-riskgate-principal",
            d.principal.as_deref().unwrap_or("Anonymous"),
        ),
    ];
    match &d.risk {
        Some(r) => {
            headers.push(header("x-risk-score", format!("{}", r.score)));
            headers.push(header("x-risk-recommendation", r.recommendation));
        }
        None => headers.push(header("x-risk-recommendation", "NONE")),
    }
    headers
}

fn allow(d: &Decision, extras: &AnswerExtras) -> CheckResponse {
    let set = if extras.upstream_headers {
        upstream_headers(d)
    } else {
        Vec::new()
    };
    // Names riskgate sets are overwritten, so they need no removal (and removing them
    // could race with setting them, depending on Envoy's order of application).
    let headers_to_remove = d
        .strip_headers
        .iter()
        .filter(|name| {
            !set.iter()
                .any(|h| h.header.as_ref().is_some_and(|h| h.key == **name))
        })
        .cloned()
        .collect();
    CheckResponse {
        status: Some(RpcStatus {
            code: GRPC_OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: set,
            headers_to_remove,
            // The opaque decision id lets support staff find the audit line; nothing more.
            response_headers_to_add: if extras.response_decision_id {
                vec![header("x-riskgate-decision-id", &d.id)]
            } else {
                Vec::new()
            },
            ..Default::default()
        })),
        dynamic_metadata: extras.dynamic_metadata.then(|| dynamic_metadata(d)),
    }
}

fn deny(d: &Decision, reason: &DenyReason, settings: &AnswerSettings) -> CheckResponse {
    let status = reason.http_status();
    let error = match status {
        401 => "unauthorized",
        429 => "too_many_requests",
        503 => "unavailable",
        _ => "forbidden",
    };
    let body = serde_json::json!({ "error": error, "decision_id": d.id }).to_string();
    let mut headers = vec![
        header("content-type", "application/json"),
        header("x-riskgate-decision-id", &d.id),
        header("cache-control", "no-store"),
    ];
    match reason {
        DenyReason::ActionTokenRequired => {
            headers.push(header("x-risk-challenge", "action_token"));
            // A 401 carries a challenge (RFC 9110 §15.5.2): obtain an action token and retry.
            let mut www = "ActionToken realm=\"riskgate\"".to_owned();
            if let Some(name) = &settings.token_header {
                www.push_str(&format!(", header=\"{name}\""));
            }
            headers.push(header("www-authenticate", www));
        }
        DenyReason::StepUpRequired { challenge } => {
            headers.push(header("x-risk-challenge", challenge.as_str()));
            // RFC 9470 (OAuth 2.0 Step Up Authentication Challenge).
            let mut www = "Bearer error=\"insufficient_user_authentication\"".to_owned();
            if let Some(acr) = &settings.step_up_acr {
                www.push_str(&format!(", acr_values=\"{acr}\""));
            }
            headers.push(header("www-authenticate", www));
        }
        other => {
            if let Some(retry_after_s) = other.retry_after_s() {
                headers.push(header("retry-after", retry_after_s.to_string()));
            }
        }
    }
    CheckResponse {
        status: Some(RpcStatus {
            code: GRPC_PERMISSION_DENIED,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers,
            body,
        })),
        dynamic_metadata: settings
            .extras
            .dynamic_metadata
            .then(|| dynamic_metadata(d)),
    }
}

/// The CheckResponse for a decision (allow in dry-run, whatever the verdict).
pub fn to_check_response(d: &Decision, settings: &AnswerSettings) -> CheckResponse {
    match d.answered() {
        Verdict::Allow => allow(d, &settings.extras),
        Verdict::Deny(reason) => deny(d, &reason, settings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::risk::Band;
    use crate::decision::RiskFacts;

    fn denied(resp: &CheckResponse) -> Option<&DeniedHttpResponse> {
        match &resp.http_response {
            Some(HttpResponse::DeniedResponse(d)) => Some(d),
            _ => None,
        }
    }

    fn header_value<'a>(headers: &'a [HeaderValueOption], key: &str) -> Option<&'a str> {
        headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    #[test]
    fn deny_body_is_generic() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::PolicyDeny);
        d.policies = vec!["secret-policy-id".into()];
        d.risk = Some(RiskFacts {
            score: 91.5,
            recommendation: "DENY",
            reasons: std::sync::Arc::from([std::sync::Arc::from("BEHAVIOR_BOT")]),
            action_id: "act".into(),
            action_type: "withdraw".into(),
            cache_hit: false,
        });
        let resp = to_check_response(&d, &AnswerSettings::default());
        assert_eq!(resp.status.as_ref().map(|s| s.code), Some(7));
        let denied = denied(&resp);
        assert_eq!(
            denied.and_then(|x| x.status.as_ref()).map(|s| s.code),
            Some(403)
        );
        let body = denied.map(|x| x.body.clone()).unwrap_or_default();
        assert!(body.contains(&d.id));
        for leak in [
            "secret-policy-id",
            "91.5",
            "BEHAVIOR_BOT",
            "policy_deny",
            "DENY",
        ] {
            assert!(!body.contains(leak), "{leak} leaked in {body}");
        }
    }

    #[test]
    fn missing_action_token_is_401_with_a_www_authenticate_challenge() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::ActionTokenRequired);
        let settings = AnswerSettings {
            token_header: Some("x-action-token".into()),
            ..AnswerSettings::default()
        };
        let resp = to_check_response(&d, &settings);
        let denied = denied(&resp);
        assert_eq!(
            denied.and_then(|x| x.status.as_ref()).map(|s| s.code),
            Some(401)
        );
        let headers = denied.map(|x| x.headers.as_slice()).unwrap_or_default();
        assert_eq!(
            header_value(headers, "x-risk-challenge"),
            Some("action_token")
        );
        assert_eq!(
            header_value(headers, "www-authenticate"),
            Some(r#"ActionToken realm="riskgate", header="x-action-token""#)
        );
    }

    #[test]
    fn step_up_is_401_with_challenge_headers() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::StepUpRequired {
            challenge: "email_otp".into(),
        });
        let resp = to_check_response(&d, &AnswerSettings::default());
        let denied = denied(&resp);
        assert_eq!(
            denied.and_then(|x| x.status.as_ref()).map(|s| s.code),
            Some(401)
        );
        let headers = denied.map(|x| x.headers.as_slice()).unwrap_or_default();
        assert_eq!(header_value(headers, "x-risk-challenge"), Some("email_otp"));
        assert!(header_value(headers, "www-authenticate")
            .is_some_and(|v| v.contains("insufficient_user_authentication")));
    }

    #[test]
    fn outage_closed_is_503_with_retry_after() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::RiskUnavailable { retry_after_s: 7 });
        let resp = to_check_response(&d, &AnswerSettings::default());
        let denied = denied(&resp);
        assert_eq!(
            denied.and_then(|x| x.status.as_ref()).map(|s| s.code),
            Some(503)
        );
        let headers = denied.map(|x| x.headers.as_slice()).unwrap_or_default();
        assert_eq!(header_value(headers, "retry-after"), Some("7"));
    }

    #[test]
    fn over_budget_is_429_with_retry_after() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::RiskBudgetExceeded { retry_after_s: 42 });
        let resp = to_check_response(&d, &AnswerSettings::default());
        let denied = denied(&resp);
        assert_eq!(
            denied.and_then(|x| x.status.as_ref()).map(|s| s.code),
            Some(429)
        );
        let headers = denied.map(|x| x.headers.as_slice()).unwrap_or_default();
        assert_eq!(header_value(headers, "retry-after"), Some("42"));
        assert!(denied.is_some_and(|x| x.body.contains("too_many_requests")));
    }

    #[test]
    fn allow_sets_risk_headers_and_strips_the_rest() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Allow;
        d.band = Band::Low;
        d.principal = Some("User::\"u1\"".into());
        d.strip_headers = vec!["x-risk-score".into(), "x-user-id".into()];
        d.risk = Some(RiskFacts {
            score: 12.0,
            recommendation: "ALLOW",
            reasons: std::sync::Arc::from([]),
            action_id: "a".into(),
            action_type: "withdraw".into(),
            cache_hit: false,
        });
        let resp = to_check_response(&d, &all_extras());
        assert_eq!(resp.status.as_ref().map(|s| s.code), Some(0));
        let Some(HttpResponse::OkResponse(ok)) = &resp.http_response else {
            panic!("expected ok response");
        };
        assert_eq!(header_value(&ok.headers, "x-risk-score"), Some("12"));
        assert_eq!(header_value(&ok.headers, "x-risk-band"), Some("low"));
        assert_eq!(
            header_value(&ok.headers, "x-riskgate-principal"),
            Some("User::\"u1\"")
        );
        assert_eq!(ok.headers_to_remove, vec!["x-user-id".to_string()]);
        assert_eq!(
            header_value(&ok.response_headers_to_add, "x-riskgate-decision-id"),
            Some(d.id.as_str())
        );
    }

    fn all_extras() -> AnswerSettings {
        AnswerSettings {
            extras: AnswerExtras::all(),
            ..AnswerSettings::default()
        }
    }

    /// Issue #15: an answer carries only what the config asks for; by default no extra.
    #[test]
    fn by_default_an_allow_carries_no_extra() {
        assert_eq!(
            AnswerSettings::default().extras,
            AnswerExtras::from(crate::config::AnswerConfig::default())
        );
        let mut d = Decision::new(None);
        d.verdict = Verdict::Allow;
        d.strip_headers = vec!["x-user-id".into()];
        let answer = to_check_response(&d, &AnswerSettings::default());
        assert!(answer.dynamic_metadata.is_none());
        let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else {
            panic!("expected ok response");
        };
        assert!(ok.headers.is_empty() && ok.response_headers_to_add.is_empty());
        assert_eq!(ok.headers_to_remove, vec!["x-user-id".to_string()]);
    }

    #[test]
    fn without_extras_an_allow_is_the_verdict_and_the_stripping() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Allow;
        d.band = Band::Low;
        d.principal = Some("User::\"u1\"".into());
        d.strip_headers = vec!["x-risk-band".into(), "x-user-id".into()];
        let settings = AnswerSettings {
            extras: AnswerExtras {
                dynamic_metadata: false,
                upstream_headers: false,
                response_decision_id: false,
            },
            ..AnswerSettings::default()
        };
        let full = to_check_response(&d, &all_extras());
        let bare = to_check_response(&d, &settings);
        assert!(bare.dynamic_metadata.is_none());
        let Some(HttpResponse::OkResponse(ok)) = &bare.http_response else {
            panic!("expected ok response");
        };
        assert!(ok.headers.is_empty());
        assert!(ok.response_headers_to_add.is_empty());
        // A forged header riskgate no longer overwrites is removed instead.
        assert_eq!(
            ok.headers_to_remove,
            vec!["x-risk-band".to_string(), "x-user-id".to_string()]
        );
        let size = |r: &CheckResponse| prost::Message::encoded_len(r);
        assert!(
            size(&bare) * 4 < size(&full),
            "{} vs {}",
            size(&bare),
            size(&full)
        );
    }

    #[test]
    fn dry_run_answers_ok_for_a_deny() {
        let mut d = Decision::new(None);
        d.verdict = Verdict::Deny(DenyReason::PolicyDeny);
        d.enforced = false;
        let resp = to_check_response(&d, &all_extras());
        assert_eq!(resp.status.as_ref().map(|s| s.code), Some(0));
        let meta = resp.dynamic_metadata.unwrap_or_default();
        assert_eq!(
            meta.fields.get("decision").and_then(|v| v.kind.clone()),
            Some(Kind::StringValue("policy_deny".into()))
        );
    }
}
