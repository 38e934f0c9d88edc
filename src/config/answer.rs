//! `answer`: what an answer to Envoy carries besides the verdict (issue #15). Every extra
//! costs bytes on every Check, so none is sent unless the config asks for it.

use serde::Deserialize;

/// Extras of an answer. The verdict, the deny body and its `x-riskgate-decision-id`, and the
/// removal of forgeable request headers are always sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnswerConfig {
    /// Dynamic metadata for Envoy's access log (decision id, verdict, status, band,
    /// enforced, score, recommendation): for `%DYNAMIC_METADATA(envoy.filters.http.ext_authz)%`.
    pub dynamic_metadata: bool,
    /// `x-risk-band`, `x-risk-score`, `x-risk-recommendation`, `x-riskgate-principal` and
    /// `x-riskgate-decision-id` to the upstream on allow.
    pub upstream_headers: bool,
    /// `x-riskgate-decision-id` on the response to the client after an allow.
    pub response_decision_id: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = "policies: { dir: p, schema: p/s.cedarschema }\n";

    #[test]
    fn nothing_extra_unless_asked() -> Result<(), ConfigError> {
        assert_eq!(Config::from_yaml(MINIMAL)?.answer, AnswerConfig::default());
        assert_eq!(
            AnswerConfig::default(),
            AnswerConfig {
                dynamic_metadata: false,
                upstream_headers: false,
                response_decision_id: false
            }
        );
        let asked = Config::from_yaml(&format!(
            "{MINIMAL}answer: {{ dynamic_metadata: true, upstream_headers: true }}\n"
        ))?;
        assert!(asked.answer.dynamic_metadata && asked.answer.upstream_headers);
        assert!(!asked.answer.response_decision_id);
        Ok(())
    }

    #[test]
    fn unknown_or_mistyped_fields_fail_naming_them() {
        for (yaml, word) in [
            ("answer: { dynamic_metdata: true }\n", "dynamic_metdata"),
            ("answer: { upstream_headers: 3 }\n", "answer"),
        ] {
            let msg = Config::from_yaml(&format!("{MINIMAL}{yaml}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(msg.contains(word), "{yaml}: {msg}");
        }
    }
}
