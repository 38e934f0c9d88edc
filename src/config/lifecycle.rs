//! Lifecycle settings: how policy changes are picked up, and how the process stops.

use super::{duration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

/// Hot reload of policies, schema, entities and routes.
///
/// The watcher polls: it hashes the content of every input file (through symlinks, so a
/// Kubernetes ConfigMap's atomic `..data` swap is seen as the content change it is) and
/// reloads when the hash changes. `SIGHUP` reloads at once whatever the interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Poll interval; `0` turns polling off (`SIGHUP` still reloads). Legacy `poll_ms`.
    #[serde(alias = "poll_ms", deserialize_with = "duration::millis")]
    pub poll: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            poll: Duration::from_secs(1),
        }
    }
}

impl ReloadConfig {
    /// The poll interval, `None` when polling is off.
    pub fn poll(&self) -> Option<Duration> {
        (!self.poll.is_zero()).then_some(self.poll)
    }
}

/// Graceful shutdown on `SIGTERM`: first `drain` still serving while readiness and gRPC
/// health say NOT_SERVING (so load balancers and Envoy stop sending), then no new
/// connections and up to `grace` for in-flight Checks. The process exits within
/// `drain + grace` (keep that under Kubernetes' `terminationGracePeriodSeconds`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time still serving after `SIGTERM`, reported not ready (legacy `drain_ms`).
    #[serde(alias = "drain_ms", deserialize_with = "duration::millis")]
    pub drain: Duration,
    /// Most time then given to in-flight Checks before exiting anyway (legacy `grace_ms`).
    #[serde(alias = "grace_ms", deserialize_with = "duration::millis")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain: Duration::from_secs(5),
            grace: Duration::from_secs(20),
        }
    }
}

impl ShutdownConfig {
    /// The drain period.
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace.is_zero() {
            return Err(ConfigError::field(
                "shutdown.grace",
                "must be positive (in-flight Checks need time to finish)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_poll_turns_polling_off() {
        let off = ReloadConfig {
            poll: Duration::ZERO,
        };
        assert_eq!(off.poll(), None);
        assert_eq!(
            ReloadConfig::default().poll(),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn zero_grace_is_rejected() {
        let msg = ShutdownConfig {
            drain: Duration::ZERO,
            grace: Duration::ZERO,
        }
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(msg.contains("shutdown.grace"), "{msg}");
    }
}
