//! Checks of the `listen:` connection limits (issue 14 item 1): each must be positive, and
//! an HTTP/2 PING must be answered before the next one is due.

use super::{ConfigError, Listen};

impl Listen {
    /// Field checks of the connection limits; a bad value names its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("listen.max_connections", self.max_connections == 0),
            (
                "listen.max_concurrent_streams",
                self.max_concurrent_streams == 0,
            ),
            (
                "listen.http2_keepalive_interval",
                self.http2_keepalive_interval.is_zero(),
            ),
            (
                "listen.http2_keepalive_timeout",
                self.http2_keepalive_timeout.is_zero(),
            ),
            ("listen.idle_timeout", self.idle_timeout.is_zero()),
            (
                "listen.header_read_timeout",
                self.header_read_timeout.is_zero(),
            ),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::field(*field, "must be positive"));
        }
        if self.http2_keepalive_timeout >= self.http2_keepalive_interval {
            return Err(ConfigError::field(
                "listen.http2_keepalive_timeout",
                "must be shorter than `listen.http2_keepalive_interval`",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_are_valid_and_zero_is_refused_by_name() {
        assert!(Listen::default().validate().is_ok());
        let zero = Listen {
            idle_timeout: Duration::ZERO,
            ..Listen::default()
        };
        let err = zero.validate().map_err(|e| e.to_string());
        assert!(
            matches!(&err, Err(m) if m.contains("listen.idle_timeout")),
            "{err:?}"
        );
        let late_pong = Listen {
            http2_keepalive_interval: Duration::from_secs(5),
            http2_keepalive_timeout: Duration::from_secs(5),
            ..Listen::default()
        };
        assert!(late_pong.validate().is_err());
    }

    #[test]
    fn durations_parse_typed() -> Result<(), serde_yaml_ng::Error> {
        let l: Listen = serde_yaml_ng::from_str("idle_timeout: 2m\nheader_read_timeout: 250ms\n")?;
        assert_eq!(l.idle_timeout, Duration::from_secs(120));
        assert_eq!(l.header_read_timeout, Duration::from_millis(250));
        Ok(())
    }
}
