//! Lifecycle settings: how policy changes are picked up, and how the process stops.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Hot reload of policies, schema, entities and routes.
///
/// The watcher polls: it hashes the content of every input file (through symlinks, so a
/// Kubernetes ConfigMap's atomic `..data` swap is seen as the content change it is) and
/// reloads when the hash changes. `SIGHUP` reloads at once whatever the interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Poll interval; `0` turns polling off (`SIGHUP` still reloads).
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            poll_ms: default_poll_ms(),
        }
    }
}

impl ReloadConfig {
    /// The poll interval, `None` when polling is off.
    pub fn poll(&self) -> Option<Duration> {
        (self.poll_ms > 0).then(|| Duration::from_millis(self.poll_ms))
    }
}

/// Graceful shutdown on `SIGTERM`: first `drain_ms` still serving while readiness and gRPC
/// health say NOT_SERVING (so load balancers and Envoy stop sending), then no new
/// connections and up to `grace_ms` for in-flight Checks. The process exits within
/// `drain_ms + grace_ms` (keep that under Kubernetes' `terminationGracePeriodSeconds`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Time still serving after `SIGTERM`, reported not ready.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// Most time then given to in-flight Checks before exiting anyway.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_ms: default_drain_ms(),
            grace_ms: default_grace_ms(),
        }
    }
}

impl ShutdownConfig {
    /// The drain period.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// Field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grace_ms == 0 {
            return Err(ConfigError::field(
                "shutdown.grace_ms",
                "must be positive (in-flight Checks need time to finish)",
            ));
        }
        Ok(())
    }
}

fn default_poll_ms() -> u64 {
    1_000
}
fn default_drain_ms() -> u64 {
    5_000
}
fn default_grace_ms() -> u64 {
    20_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_poll_turns_polling_off() {
        assert_eq!(ReloadConfig { poll_ms: 0 }.poll(), None);
        assert_eq!(
            ReloadConfig::default().poll(),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn zero_grace_is_rejected() {
        let msg = ShutdownConfig {
            drain_ms: 0,
            grace_ms: 0,
        }
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(msg.contains("shutdown.grace_ms"), "{msg}");
    }
}
