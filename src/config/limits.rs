//! riskgate's own bounds on one Check, so a caller of the gRPC port (or a proxy configured
//! with huge limits) cannot make riskgate parse, hash and route arbitrarily large requests.
//! Envoy's defaults (100 headers, 60 KiB of headers) fit well under them.

use super::ConfigError;
use serde::Deserialize;

/// Maxima for one CheckRequest. Over a limit the request is denied with 403
/// (`request_too_large_*`); the gRPC message size is enforced by the server itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most request headers (pseudo-headers included, each `header_map` entry counted).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Most bytes of header names plus values, all headers together.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest request target (path and query).
    #[serde(default = "default_max_path_bytes")]
    pub max_path_bytes: usize,
    /// Largest request body in the Check (`with_request_body`).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest gRPC message the server decodes (larger: `RESOURCE_EXHAUSTED`, and Envoy
    /// answers its `status_on_error`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_headers: default_max_headers(),
            max_header_bytes: default_max_header_bytes(),
            max_path_bytes: default_max_path_bytes(),
            max_body_bytes: default_max_body_bytes(),
            max_message_bytes: default_max_message_bytes(),
        }
    }
}

fn default_max_headers() -> usize {
    256
}

fn default_max_header_bytes() -> usize {
    128 * 1024
}

fn default_max_path_bytes() -> usize {
    16 * 1024
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}

impl LimitsConfig {
    /// Every limit must admit something, and a message must be able to carry the rest.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("limits.max_headers", self.max_headers),
            ("limits.max_header_bytes", self.max_header_bytes),
            ("limits.max_path_bytes", self.max_path_bytes),
            ("limits.max_body_bytes", self.max_body_bytes),
            ("limits.max_message_bytes", self.max_message_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::field(field, "must be greater than 0"));
            }
        }
        if self.max_message_bytes < 64 * 1024 {
            return Err(ConfigError::field(
                "limits.max_message_bytes",
                "must be at least 65536 (a Check with ordinary headers must fit)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_admit_envoys_defaults_and_zero_is_refused() {
        let l = LimitsConfig::default();
        assert!(l.validate().is_ok());
        // Envoy: max_request_headers_count 100, max_request_headers_kb 60
        assert!(l.max_headers > 100 && l.max_header_bytes > 60 * 1024);
        let zero = LimitsConfig {
            max_path_bytes: 0,
            ..LimitsConfig::default()
        };
        let msg = zero
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("limits.max_path_bytes"), "{msg}");
    }
}
