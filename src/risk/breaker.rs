//! Circuit breaker for the risk API: after `failure_threshold` consecutive outages it
//! opens and Checks fail fast (into their fail mode) instead of each waiting out the
//! budget; after `open_for` one probe is let through (half-open) and its outcome closes
//! or re-opens the breaker. Rejected tokens are not outages and never count.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out; if it never reports (it was lost), another may go after `until`.
    HalfOpen {
        until: Instant,
    },
}

/// Breaker state as a metric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Failing fast.
    Open,
    /// One probe in flight.
    HalfOpen,
}

/// A consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still a valid enum.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now. While open, false; once `open_for` has passed, the
    /// first caller becomes the half-open probe and later callers wait for its outcome.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::HalfOpen { until } if Instant::now() >= until => {
                *state = State::HalfOpen {
                    until: Instant::now() + self.open_for,
                };
                true
            }
            State::Open { .. } | State::HalfOpen { .. } => false,
        }
    }

    /// The API answered (a recommendation or a rejected token).
    pub fn on_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// The call was an outage.
    pub fn on_outage(&self) {
        let mut state = self.lock();
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: Instant::now() + self.open_for,
            },
        };
    }

    /// Current state, for metrics.
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_fails_fast() {
        let b = Breaker::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(b.try_acquire());
            b.on_outage();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire());
        b.on_outage();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
    }

    #[test]
    fn success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.on_outage();
        b.on_success();
        b.on_outage();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = Breaker::new(1, Duration::from_millis(50));
        b.on_outage();
        assert!(!b.try_acquire(), "still open");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.try_acquire(), "probe after open_for");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.try_acquire(), "only one probe");
        b.on_success();
        assert!(b.try_acquire());
    }

    #[test]
    fn failed_probe_reopens() {
        let b = Breaker::new(1, Duration::from_millis(0));
        b.on_outage();
        assert!(b.try_acquire());
        b.on_outage();
        assert_ne!(b.state(), BreakerState::Closed);
    }
}
