//! What an outage of the risk API turns into. Only outages reach here — a rejected or
//! malformed token, a binding failure or a Check whose own deadline was too short are the
//! client's doing and are denied whatever the fail mode.

use super::Band;
use crate::decision::DenyReason;
use crate::log_limit::LogLimit;
use crate::risk::FetchError;
use serde::Deserialize;

/// Behaviour when the risk API is unavailable (`risk.fail_mode`, or per route).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// 503 with `retry-after`.
    #[default]
    Closed,
    /// Treat as band medium: reads only.
    ReadOnly,
    /// Treat as band low, logged and counted loudly.
    Open,
}

impl FailMode {
    /// The config spelling, for the audit line and the `mode` metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailMode::Closed => "closed",
            FailMode::ReadOnly => "read_only",
            FailMode::Open => "open",
        }
    }

    /// Applies the mode to `outage`: the band the outage stands in for, or the 503. Logs
    /// at most one line per second per mode (with the count of the Checks in between);
    /// every decision is still in the audit log and the metrics.
    pub fn apply(self, outage: &FetchError, retry_after_s: u32) -> Result<Band, DenyReason> {
        static CLOSED: LogLimit = LogLimit::per(1_000);
        static READ_ONLY: LogLimit = LogLimit::per(1_000);
        static OPEN: LogLimit = LogLimit::per(1_000);
        let cause = outage.label();
        match self {
            FailMode::Closed => {
                if let Some(suppressed) = CLOSED.admit() {
                    tracing::warn!(cause, suppressed, "risk api outage: failing closed");
                }
                Err(DenyReason::RiskUnavailable { retry_after_s })
            }
            FailMode::ReadOnly => {
                if let Some(suppressed) = READ_ONLY.admit() {
                    tracing::warn!(
                        cause,
                        suppressed,
                        "risk api outage: read-only (band medium)"
                    );
                }
                Ok(Band::Medium)
            }
            FailMode::Open => {
                if let Some(suppressed) = OPEN.admit() {
                    tracing::error!(
                        cause,
                        suppressed,
                        "risk api outage: FAILING OPEN (band low)"
                    );
                }
                Ok(Band::Low)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_maps_an_outage_to_its_answer() {
        let outage = FetchError::Timeout;
        assert_eq!(
            FailMode::Closed.apply(&outage, 7),
            Err(DenyReason::RiskUnavailable { retry_after_s: 7 })
        );
        assert_eq!(FailMode::ReadOnly.apply(&outage, 7), Ok(Band::Medium));
        assert_eq!(FailMode::Open.apply(&outage, 7), Ok(Band::Low));
    }

    #[test]
    fn labels_are_the_config_spelling() {
        for (mode, yaml) in [
            (FailMode::Closed, "closed"),
            (FailMode::ReadOnly, "read_only"),
            (FailMode::Open, "open"),
        ] {
            assert_eq!(mode.label(), yaml);
            let parsed: Result<FailMode, _> = serde_yaml_ng::from_str(yaml);
            assert_eq!(parsed.ok(), Some(mode));
        }
    }
}
