//! Whether the risk API's client secret can be read — what readiness and the
//! `riskgate_risk_credentials_ok` gauge report.
//!
//! A replica that has never read its secret cannot obtain a token, so it stays not ready
//! until the first successful read (one warning, not one per retry). A replica that has
//! read it once and then loses the file — a Kubernetes Secret swap briefly removes it —
//! keeps the last good secret and stays ready: the loss is logged once and shows in the
//! gauge, instead of taking every replica out of rotation at the same moment.

use std::sync::atomic::{AtomicU8, Ordering};

const UNREAD: u8 = 0;
const OK: u8 = 1;
/// Unreadable, never read before: not ready.
const MISSING: u8 = 2;
/// Unreadable now, read before: the last good secret is in use.
const LOST: u8 = 3;

/// The client secret's state, shared by the token manager (writer), `/readyz` and the
/// metrics (readers).
#[derive(Debug, Default)]
pub struct CredentialStatus {
    state: AtomicU8,
}

/// What a read changed, for the one log line per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// First successful read.
    FirstRead,
    /// Readable again after failures.
    Recovered,
    /// Unreadable, never read: not ready.
    Missing,
    /// Unreadable after a good read: the last good secret stays in use.
    Lost,
}

impl CredentialStatus {
    /// Whether the secret has been read at least once (readiness).
    pub fn ever_read(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), OK | LOST)
    }

    /// Whether the last read succeeded (the gauge).
    pub fn ok(&self) -> bool {
        self.state.load(Ordering::Acquire) == OK
    }

    /// Records a read; returns the change, if the state changed.
    pub fn record(&self, readable: bool) -> Option<Change> {
        let mut change = None;
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                let (new, c) = match (old, readable) {
                    (UNREAD, true) => (OK, Some(Change::FirstRead)),
                    (MISSING | LOST, true) => (OK, Some(Change::Recovered)),
                    (UNREAD, false) => (MISSING, Some(Change::Missing)),
                    (OK, false) => (LOST, Some(Change::Lost)),
                    (same, _) => (same, None),
                };
                change = c;
                c.map(|_| new)
            });
        change
    }

    /// Records a read and logs the change, if any (never the secret itself).
    pub fn observe(&self, result: Result<(), &dyn std::fmt::Display>) {
        let error = result.err().map(ToString::to_string);
        match self.record(error.is_none()) {
            Some(Change::FirstRead) => tracing::debug!("risk api client secret read"),
            Some(Change::Recovered) => {
                tracing::info!("risk api client secret readable again");
            }
            Some(Change::Missing) => tracing::warn!(
                error = error.as_deref().unwrap_or_default(),
                "risk api client secret unreadable: not ready until it can be read"
            ),
            Some(Change::Lost) => tracing::warn!(
                error = error.as_deref().unwrap_or_default(),
                "risk api client secret unreadable: keeping the last good secret, still ready"
            ),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_read_is_not_ready_and_changes_once() {
        let s = CredentialStatus::default();
        assert!(!s.ever_read());
        assert_eq!(s.record(false), Some(Change::Missing));
        assert_eq!(s.record(false), None, "a repeated failure is no change");
        assert!(!s.ever_read() && !s.ok());
        assert_eq!(s.record(true), Some(Change::Recovered));
        assert!(s.ever_read() && s.ok());
    }

    #[test]
    fn a_lost_secret_after_a_good_read_stays_ready() {
        let s = CredentialStatus::default();
        assert_eq!(s.record(true), Some(Change::FirstRead));
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), Some(Change::Lost));
        assert_eq!(s.record(false), None);
        assert!(s.ever_read());
        assert!(!s.ok());
        assert_eq!(s.record(true), Some(Change::Recovered));
    }
}
