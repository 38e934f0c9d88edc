//! Logs that cannot flood: at most one line per window for one kind of event, the lines in
//! between counted and reported with the next one (`suppressed = N`). The audit log still
//! gets every decision; this only keeps operator logs readable (and the disk whole) when
//! every Check hits the same outage.
//!
//! One `static` per call site, like `tracing`'s own per-callsite state: the limiter holds no
//! configuration, only two counters.

use crate::clock::now_ms;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A per-call-site log rate limiter.
#[derive(Debug)]
pub struct LogLimit {
    window_ms: i64,
    next_at_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// At most one line per `window_ms`.
    pub const fn per(window_ms: i64) -> LogLimit {
        LogLimit {
            window_ms,
            next_at_ms: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when a line may be written now, else `None`
    /// (and the event is counted as suppressed).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(now_ms())
    }

    fn admit_at(&self, now: i64) -> Option<u64> {
        let next = self.next_at_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_at_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.window_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_with_the_count_of_the_rest() {
        let limit = LogLimit::per(1_000);
        assert_eq!(limit.admit_at(10_000), Some(0));
        for t in 10_001..10_500 {
            assert_eq!(limit.admit_at(t), None);
        }
        assert_eq!(limit.admit_at(10_999), None);
        assert_eq!(limit.admit_at(11_000), Some(500));
        assert_eq!(limit.admit_at(11_001), None);
        assert_eq!(limit.admit_at(12_500), Some(1));
    }
}
