//! The script: what the simulator answers for each action token.
//!
//! The real service computes a recommendation from SDK telemetry; the simulator instead looks the
//! action token up in a script written by the test. Every field has a default, so a script entry
//! only names what the test cares about (`tok-deny: { recommendation: DENY, risk_score: 95 }`).
//! Unknown fields are rejected, so a typo in a test script fails loudly instead of being ignored.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The whole script: action token → scripted behaviour.
pub type Script = HashMap<String, ScriptedAction>;

/// How the simulator answers `GET /risk/v1/recommendation` for one action token.
///
/// The normal answer is the documented recommendation body built from these fields. The fault
/// fields (`delay_ms`, `status`, `garbage`, `body`, `omit`) bend that answer so tests can reach
/// the client's timeout, error and validation paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptedAction {
    /// `risk_score`, sent verbatim. A JSON value rather than a number so tests can send a string,
    /// `null` or an out-of-range score and check that the client rejects it.
    pub risk_score: serde_json::Value,
    /// `recommendation.type`, sent verbatim (`ALLOW`, `TRUST`, `CHALLENGE`, `DENY`, or anything).
    pub recommendation: String,
    /// `recommendation.challenge_type` (e.g. `email_otp`); omitted when unset.
    pub challenge_type: Option<String>,
    /// `recommendation.result` (`success`, `failure`, `incomplete`); omitted when unset.
    pub result: Option<String>,
    /// `reasons`; when unset, a plausible list for the recommendation type.
    pub reasons: Option<Vec<String>>,
    /// `context.action_type` (e.g. `login`, `withdraw`).
    pub action_type: String,
    /// `context.user_id`; omitted when unset (an action reported before authentication).
    pub user_id: Option<String>,
    /// `context.claimed_user_id`; omitted when unset.
    pub claimed_user_id: Option<String>,
    /// How long ago the action was reported: `context.action_performed_at = now - age_ms`.
    pub age_ms: u64,
    /// Sleep this long before answering (to exercise client timeouts and budgets).
    pub delay_ms: u64,
    /// Answer this HTTP status with a small JSON error body instead of a recommendation.
    pub status: Option<u16>,
    /// Answer 200 with a body that is not JSON.
    pub garbage: bool,
    /// Answer 200 with exactly this JSON body instead of the generated one (`omit` still applies).
    pub body: Option<serde_json::Value>,
    /// Dotted paths to remove from the answer (`risk_score`, `context.action_id`, …), to test
    /// missing required fields.
    pub omit: Vec<String>,
    /// `threats`; when unset, a plausible list for the recommendation type.
    pub threats: Option<Vec<String>>,
    /// `transaction_data`; omitted when unset.
    pub transaction_data: Option<serde_json::Value>,
    /// `preview_rule`; omitted when unset.
    pub preview_rule: Option<serde_json::Value>,
    /// Replaces the generated `risk_signals` object when set.
    pub risk_signals: Option<serde_json::Value>,
    /// Extra or replacement `context` fields, merged over the generated ones.
    pub context: serde_json::Map<String, serde_json::Value>,
}

impl Default for ScriptedAction {
    fn default() -> Self {
        Self {
            risk_score: serde_json::Value::from(10),
            recommendation: "ALLOW".to_owned(),
            challenge_type: None,
            result: None,
            reasons: None,
            action_type: "login".to_owned(),
            user_id: None,
            claimed_user_id: None,
            age_ms: 0,
            delay_ms: 0,
            status: None,
            garbage: false,
            body: None,
            omit: Vec::new(),
            threats: None,
            transaction_data: None,
            preview_rule: None,
            risk_signals: None,
            context: serde_json::Map::new(),
        }
    }
}

/// Why a script could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The script file could not be read.
    #[error("cannot read script `{path}`")]
    Read {
        /// The file that was named.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The script is not valid JSON.
    #[error("invalid JSON script `{path}`")]
    Json {
        /// The file that was named.
        path: String,
        /// The parse failure.
        #[source]
        source: serde_json::Error,
    },
    /// The script is not valid YAML.
    #[error("invalid YAML script `{path}`")]
    Yaml {
        /// The file that was named.
        path: String,
        /// The parse failure.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A scripted `status` is not an HTTP status code.
    #[error("action token `{token}` has invalid status `{status}`")]
    Status {
        /// The script entry.
        token: String,
        /// The rejected value.
        status: u16,
    },
}

/// Loads a script file: JSON when the name ends in `.json`, YAML otherwise.
pub fn load_script(path: &Path) -> Result<Script, ScriptError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
        path: name.clone(),
        source,
    })?;
    let script: Script = if path.extension().is_some_and(|ext| ext == "json") {
        serde_json::from_str(&text).map_err(|source| ScriptError::Json { path: name, source })?
    } else {
        serde_yaml_ng::from_str(&text).map_err(|source| ScriptError::Yaml { path: name, source })?
    };
    validate(&script)?;
    Ok(script)
}

/// Checks what serde cannot: every scripted `status` is a real HTTP status code.
pub fn validate(script: &Script) -> Result<(), ScriptError> {
    for (token, action) in script {
        if let Some(status) = action.status {
            if axum::http::StatusCode::from_u16(status).is_err() {
                return Err(ScriptError::Status {
                    token: token.clone(),
                    status,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "a failed expectation is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn short_entry_takes_defaults() {
        let script: Script = serde_yaml_ng::from_str("tok-a: {}\ntok-b: { recommendation: DENY }")
            .expect("valid yaml");
        let a = &script["tok-a"];
        assert_eq!(a, &ScriptedAction::default());
        assert_eq!(a.risk_score, serde_json::json!(10));
        assert_eq!(a.recommendation, "ALLOW");
        assert_eq!(a.action_type, "login");
        assert_eq!(script["tok-b"].recommendation, "DENY");
    }

    #[test]
    fn risk_score_may_be_any_json_value() {
        let script: Script =
            serde_json::from_str(r#"{"t": {"risk_score": "high"}, "u": {"risk_score": 140.5}}"#)
                .expect("valid json");
        assert_eq!(script["t"].risk_score, serde_json::json!("high"));
        assert_eq!(script["u"].risk_score, serde_json::json!(140.5));
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = serde_yaml_ng::from_str::<Script>("t: { recomendation: DENY }");
        assert!(err.is_err());
    }

    #[test]
    fn loads_yaml_and_json_files() {
        let dir = std::env::temp_dir().join(format!("risk-sim-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let yaml = dir.join("s.yaml");
        std::fs::write(&yaml, "t:\n  user_id: alice\n  omit: [context.device_id]\n")
            .expect("write");
        let json = dir.join("s.json");
        std::fs::write(&json, r#"{"t": {"status": 503}}"#).expect("write");

        let from_yaml = load_script(&yaml).expect("yaml loads");
        assert_eq!(from_yaml["t"].user_id.as_deref(), Some("alice"));
        assert_eq!(from_yaml["t"].omit, vec!["context.device_id".to_owned()]);
        let from_json = load_script(&json).expect("json loads");
        assert_eq!(from_json["t"].status, Some(503));

        std::fs::write(&json, r#"{"t": {"status": 42}}"#).expect("write");
        assert!(matches!(
            load_script(&json),
            Err(ScriptError::Status { status: 42, .. })
        ));
        assert!(matches!(
            load_script(&dir.join("missing.yaml")),
            Err(ScriptError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
