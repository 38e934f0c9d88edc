//! Wall-clock time in epoch milliseconds: the unit the risk API, JWT `auth_time`/`exp`
//! and the audit log all speak. One function so every stage reads the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Current time in epoch milliseconds (0 if the clock is before 1970, which only a broken
/// host reports; every check that uses it then fails closed on age).
#[allow(
    clippy::disallowed_methods,
    reason = "the one place that reads the wall clock (clippy.toml)"
)]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
