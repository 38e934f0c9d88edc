//! The `history:` section: the per-principal window of recent outcomes that becomes
//! `context.history` (issue #16, item 5). Kept only while some loaded policy reads
//! `context.history`, and only for authenticated principals.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// Most buckets one window may be cut into (each is one store record per principal).
pub const MAX_BUCKETS: u32 = 60;

/// The `history:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// How far back `context.history` looks (bare numbers are ms). Counted in `buckets`
    /// equal slices, so an outcome leaves the window between `window - window/buckets` and
    /// `window` after it happened.
    #[serde(deserialize_with = "duration::millis")]
    pub window: Duration,
    /// Slices of the window (1 to 60): more slices expire outcomes more exactly and cost
    /// more store reads per Check on Redis (one hash per slice).
    pub buckets: u32,
    /// Most principals the memory store remembers (the least recently seen are forgotten
    /// beyond it), so memory stays bounded whatever the number of distinct users.
    pub max_principals: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: Duration::from_secs(600),
            buckets: 10,
            max_principals: 100_000,
        }
    }
}

impl HistoryConfig {
    /// Field checks: a positive window of at least one ms per bucket, 1 to 60 buckets,
    /// room for at least one principal.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(ConfigError::field(
                "history.buckets",
                format!("must be between 1 and {MAX_BUCKETS}"),
            ));
        }
        if self.window.as_millis() < u128::from(self.buckets) {
            return Err(ConfigError::field(
                "history.window",
                "must be at least one millisecond per bucket",
            ));
        }
        if self.max_principals == 0 {
            return Err(ConfigError::field(
                "history.max_principals",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// The window in ms and its slicing, as the state store takes them.
    pub fn window(&self) -> crate::state::HistoryWindow {
        crate::state::HistoryWindow {
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            buckets: self.buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<HistoryConfig, String> {
        let c: HistoryConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_and_bad_values_name_the_field() {
        let documented = HistoryConfig {
            window: Duration::from_secs(600),
            buckets: 10,
            max_principals: 100_000,
        };
        assert_eq!(parse("{}"), Ok(documented), "README's defaults");
        let c = parse("{ window: 250, buckets: 5 }").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.window, Duration::from_millis(250));
        for (yaml, field) in [
            ("{ buckets: 0 }", "history.buckets"),
            ("{ buckets: 61 }", "history.buckets"),
            ("{ window: 0 }", "history.window"),
            ("{ window: 3ms, buckets: 4 }", "history.window"),
            ("{ max_principals: 0 }", "history.max_principals"),
        ] {
            let err = parse(yaml).err().unwrap_or_default();
            assert!(err.contains(field), "{yaml}: {err}");
        }
        assert!(parse("{ windw: 1m }").is_err(), "unknown fields refused");
    }
}
