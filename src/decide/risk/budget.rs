//! API budgets (issue 13 item 2): every Check whose token is in neither cache costs one
//! risk-API call before Cedar runs, with no login needed — so each source gets a budget of
//! calls per window, and what the API and the concurrency cap push back with is answered
//! here, never by a fail mode.
//!
//! - **Per-source budget** (`risk.call_budget`): at most `calls` API calls per fixed,
//!   clock-aligned `window` for one source — the principal when authenticated, else the
//!   client address ([`source_ip`](crate::request::AccessRequest::source_ip); an IPv6
//!   address by its `/64`, which one subscriber usually holds whole). Counted in the [state store](crate::state), so shared
//!   by the replicas of one Redis and per replica with `store: memory`. Only a Check that
//!   would call is charged (a cached recommendation or a cached rejection costs nothing);
//!   over budget → 429 + `retry-after` (the rest of the window), without calling.
//! - **A store that cannot count** (`state.on_failure: closed`, or a full memory store): the
//!   Check may not spend an unbudgeted call → 503 + `retry-after`. With `on_failure: local`
//!   the [guarded store](crate::state::Guarded) counts in this replica's memory instead.
//! - **Back-pressure** — `risk.max_concurrent_calls` calls already out
//!   ([`FetchError::Busy`](crate::risk::FetchError::Busy)) or the API's own 429
//!   ([`FetchError::Throttled`](crate::risk::FetchError::Throttled)) → 503 +
//!   `retry-after` whatever the fail mode; the breaker never hears of either.

use crate::clock::now_ms;
use crate::decision::DenyReason;
use crate::identity::Principal;
use crate::log_limit::LogLimit;
use crate::risk::Assessor;
use crate::state::{Key, StateStore};
use std::net::IpAddr;
use std::sync::Arc;

/// `risk.call_budget` as the decision reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudgetSettings {
    /// Calls per window and source; 0 turns the budget off.
    pub calls: u32,
    /// Window length in milliseconds (validated at least 1 s when `calls > 0`).
    pub window_ms: u64,
}

/// The per-source call budget over a state store.
pub struct CallBudget {
    settings: CallBudgetSettings,
    /// `retry-after` when the store cannot count.
    retry_after_s: u32,
    store: Arc<dyn StateStore>,
}

impl std::fmt::Debug for CallBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallBudget")
            .field("settings", &self.settings)
            .field("store", &self.store.kind())
            .finish()
    }
}

impl CallBudget {
    /// A budget counted in `store`; `retry_after_s` is sent when the store cannot count.
    pub fn new(
        settings: CallBudgetSettings,
        retry_after_s: u32,
        store: Arc<dyn StateStore>,
    ) -> CallBudget {
        CallBudget {
            settings,
            retry_after_s,
            store,
        }
    }

    /// Charges one API call to the request's source if assessing `token` would call the
    /// API: `Ok` to go on, or the 429 (over budget) / 503 (store cannot count) answer.
    pub async fn charge_if_calling(
        &self,
        assessor: Option<&Assessor>,
        token: &str,
        principal: &Principal,
        client: Option<IpAddr>,
    ) -> Result<(), DenyReason> {
        match assessor {
            Some(a) if self.settings.calls > 0 && a.needs_call(token) => {
                self.charge(principal, client).await
            }
            _ => Ok(()),
        }
    }

    /// Charges one call to the source, now.
    async fn charge(
        &self,
        principal: &Principal,
        client: Option<IpAddr>,
    ) -> Result<(), DenyReason> {
        let window_ms = self.settings.window_ms.max(1);
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let (key, source) = source_key(principal, client, now / window_ms);
        match self.store.incr_window(&key, window_ms).await {
            Ok(spent) if spent <= u64::from(self.settings.calls) => Ok(()),
            Ok(_) => {
                static OVER: LogLimit = LogLimit::per(1_000);
                if let Some(suppressed) = OVER.admit() {
                    tracing::info!(
                        source,
                        suppressed,
                        "risk api call budget spent: answered 429"
                    );
                }
                Err(DenyReason::RiskBudgetExceeded {
                    retry_after_s: seconds_left(now, window_ms),
                })
            }
            Err(e) => {
                static DOWN: LogLimit = LogLimit::per(1_000);
                if let Some(suppressed) = DOWN.admit() {
                    tracing::warn!(error = %e, store = self.store.kind(), suppressed,
                        "state store cannot count the risk api call budget: answered 503");
                }
                Err(DenyReason::StateUnavailable {
                    retry_after_s: self.retry_after_s,
                })
            }
        }
    }
}

/// The budget record of the request's source in window number `window`, and the source
/// kind for logs (`principal` or `address`; never the value).
fn source_key(principal: &Principal, client: Option<IpAddr>, window: u64) -> (Key, &'static str) {
    let field = format!("risk_calls:{window}");
    match (principal, client) {
        (Principal::User { id, .. }, _) => (Key::principal(id, &field), "principal"),
        (Principal::Anonymous, Some(ip)) => {
            (Key::client_address(&address_bucket(ip), &field), "address")
        }
        // No address (a direct gRPC caller sending none): all such Checks share one budget.
        (Principal::Anonymous, None) => (Key::client_address("unknown", &field), "address"),
    }
}

/// What one client address is budgeted as: an IPv4 address itself, an IPv6 address by its
/// `/64` (an IPv4-mapped one as its IPv4 address).
fn address_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// Whole seconds until the window that holds `now_ms` ends, at least 1.
fn seconds_left(now_ms: u64, window_ms: u64) -> u32 {
    let left_ms = window_ms - now_ms % window_ms;
    u32::try_from(left_ms.div_ceil(1_000).max(1)).unwrap_or(u32::MAX)
}

/// `risk.max_concurrent_calls` calls were out: 503 + `retry-after`, no fail mode.
pub fn busy(retry_after_s: u32) -> DenyReason {
    static BUSY: LogLimit = LogLimit::per(1_000);
    if let Some(suppressed) = BUSY.admit() {
        tracing::warn!(
            suppressed,
            "risk.max_concurrent_calls reached: answered 503 without calling"
        );
    }
    DenyReason::RiskApiBusy { retry_after_s }
}

/// The API answered 429: 503 with its `Retry-After` (else `default_retry_after_s`), no
/// fail mode.
pub fn throttled(api_retry_after_s: Option<u32>, default_retry_after_s: u32) -> DenyReason {
    static THROTTLED: LogLimit = LogLimit::per(1_000);
    if let Some(suppressed) = THROTTLED.admit() {
        tracing::warn!(suppressed, "risk api answered 429: answered 503");
    }
    DenyReason::RiskApiThrottled {
        retry_after_s: api_retry_after_s.unwrap_or(default_retry_after_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;
    use serde_json::Map;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn user(id: &str) -> Principal {
        Principal::User {
            id: id.into(),
            subject: id.into(),
            claims: Map::new(),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn budget(calls: u32) -> CallBudget {
        CallBudget::new(
            CallBudgetSettings {
                calls,
                window_ms: 3_600_000,
            },
            5,
            Arc::new(MemoryStore::new(100)),
        )
    }

    #[tokio::test]
    async fn a_source_gets_its_calls_then_429_until_the_window_ends() {
        let b = budget(3);
        let from = ip("192.0.2.1");
        for i in 0..3 {
            assert_eq!(
                b.charge(&Principal::Anonymous, from).await,
                Ok(()),
                "call {i}"
            );
        }
        match b.charge(&Principal::Anonymous, from).await {
            Err(DenyReason::RiskBudgetExceeded { retry_after_s }) => {
                assert!((1..=3_600).contains(&retry_after_s), "{retry_after_s}");
            }
            other => panic!("{other:?}"),
        }
        // another address, and a user at the same address, have budgets of their own
        assert_eq!(
            b.charge(&Principal::Anonymous, ip("192.0.2.2")).await,
            Ok(())
        );
        assert_eq!(b.charge(&user("u1"), from).await, Ok(()));
    }

    #[tokio::test]
    async fn a_user_is_budgeted_by_principal_wherever_they_come_from() {
        let b = budget(2);
        assert_eq!(b.charge(&user("u1"), ip("192.0.2.1")).await, Ok(()));
        assert_eq!(b.charge(&user("u1"), ip("198.51.100.7")).await, Ok(()));
        assert!(matches!(
            b.charge(&user("u1"), ip("203.0.113.9")).await,
            Err(DenyReason::RiskBudgetExceeded { .. })
        ));
        assert_eq!(b.charge(&user("u2"), ip("192.0.2.1")).await, Ok(()));
    }

    #[tokio::test]
    async fn a_store_that_cannot_count_answers_503() {
        let b = CallBudget::new(
            CallBudgetSettings {
                calls: 10,
                window_ms: 60_000,
            },
            7,
            Arc::new(MemoryStore::new(1)),
        );
        assert_eq!(b.charge(&user("u1"), None).await, Ok(()));
        // the memory store is full of live records: it cannot count a second source
        assert_eq!(
            b.charge(&user("u2"), None).await,
            Err(DenyReason::StateUnavailable { retry_after_s: 7 })
        );
    }

    #[test]
    fn ipv6_is_budgeted_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xa, 0xb, 0xc, 0xd);
        let b = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xffff, 0, 0, 1);
        let c = Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1);
        let bucket = |v6: Ipv6Addr| address_bucket(IpAddr::V6(v6));
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(bucket(v4.to_ipv6_mapped()), address_bucket(IpAddr::V4(v4)));
    }

    #[test]
    fn retry_after_is_the_rest_of_the_window_rounded_up() {
        assert_eq!(seconds_left(0, 60_000), 60);
        assert_eq!(seconds_left(59_999, 60_000), 1);
        assert_eq!(seconds_left(30_500, 60_000), 30);
        assert_eq!(seconds_left(120_000, 60_000), 60);
    }

    #[test]
    fn back_pressure_is_503_with_the_apis_retry_after_when_given() {
        assert_eq!(busy(5), DenyReason::RiskApiBusy { retry_after_s: 5 });
        assert_eq!(
            throttled(Some(2), 5),
            DenyReason::RiskApiThrottled { retry_after_s: 2 }
        );
        assert_eq!(
            throttled(None, 5),
            DenyReason::RiskApiThrottled { retry_after_s: 5 }
        );
    }
}
