//! The seam between the decision and the risk API: a one-method trait, so tests can put a
//! fake in and the decision core never sees reqwest.

use super::recommendation::Recommendation;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future (object-safe async).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that can fetch the recommendation for one action token.
pub trait RiskSource: Send + Sync + 'static {
    /// Fetches the recommendation. Timeouts are applied by the caller.
    fn fetch<'a>(
        &'a self,
        action_token: &'a str,
    ) -> BoxFuture<'a, Result<Recommendation, FetchError>>;
}

/// Why no recommendation could be had. Split in three families: outages (the API's fault,
/// handled by the fail mode and counted by the breaker), rejections (the client's token is
/// bad: always denied, never a fail mode) and back-pressure (too many calls at once, or the
/// API's own 429: a 503 + `retry-after`, never a fail mode, never counted by the breaker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The budget ran out.
    #[error("risk api timed out")]
    Timeout,
    /// TCP/TLS connection failed.
    #[error("risk api unreachable: {0}")]
    Connect(String),
    /// 5xx.
    #[error("risk api answered status {0}")]
    Unavailable(u16),
    /// 429: the API throttles us. Not an outage — counting it would let a flood of bogus
    /// tokens open the breaker for everyone — so it is answered 503 + `retry-after`.
    #[error("risk api is throttling calls")]
    Throttled {
        /// The API's `Retry-After` in seconds, bounded, when it sent one.
        retry_after_s: Option<u32>,
    },
    /// `risk.max_concurrent_calls` calls are already out: this one is not made.
    #[error("too many risk api calls in flight")]
    Busy,
    /// 401 even after a fresh OAuth token: our credentials are wrong.
    #[error("risk api refused our credentials")]
    Unauthorized,
    /// No OAuth token could be obtained.
    #[error("no oauth token: {0}")]
    NoToken(String),
    /// The body is not a valid recommendation, or too large.
    #[error("risk api answered garbage: {0}")]
    Garbage(String),
    /// The breaker is open: failing fast.
    #[error("circuit breaker open")]
    BreakerOpen,
    /// 4xx other than 401/429: the action token is missing, malformed or unknown.
    #[error("risk api rejected the action token (status {0})")]
    Rejected(u16),
    /// The Check's own deadline left no time to wait for the API. Not the API's fault:
    /// the shared fetch goes on for the cache, the breaker counts nothing, and the Check
    /// is answered 503 whatever the fail mode (a client cannot buy a fail-open answer by
    /// sending a short deadline).
    #[error("the check's deadline left no time for the risk api")]
    CallerDeadline,
    /// The fetch task ended without an answer (the runtime is shutting down).
    #[error("risk api call did not finish")]
    Aborted,
}

impl FetchError {
    /// Whether this is an outage (fail mode applies) rather than a rejected token, a short
    /// deadline or back-pressure.
    pub fn is_outage(&self) -> bool {
        !matches!(
            self,
            FetchError::Rejected(_)
                | FetchError::CallerDeadline
                | FetchError::Throttled { .. }
                | FetchError::Busy
        )
    }

    /// Bounded label for metrics and audit.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Connect(_) => "connect",
            FetchError::Unavailable(_) => "status_5xx",
            FetchError::Throttled { .. } => "throttled",
            FetchError::Busy => "busy",
            FetchError::Unauthorized => "unauthorized",
            FetchError::NoToken(_) => "no_oauth_token",
            FetchError::Garbage(_) => "garbage",
            FetchError::BreakerOpen => "breaker_open",
            FetchError::Rejected(_) => "rejected",
            FetchError::CallerDeadline => "check_deadline",
            FetchError::Aborted => "aborted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_short_deadlines_and_back_pressure_are_not_outages() {
        assert!(!FetchError::Rejected(400).is_outage());
        assert!(!FetchError::CallerDeadline.is_outage());
        assert!(!FetchError::Throttled {
            retry_after_s: None
        }
        .is_outage());
        assert!(!FetchError::Busy.is_outage());
        for e in [
            FetchError::Timeout,
            FetchError::Connect("x".into()),
            FetchError::Unavailable(503),
            FetchError::Unauthorized,
            FetchError::Garbage("x".into()),
            FetchError::BreakerOpen,
            FetchError::Aborted,
        ] {
            assert!(e.is_outage(), "{e}");
        }
    }
}
