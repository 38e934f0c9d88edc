//! Failure as a defined outcome for a shared store: every operation gets the time budget
//! `state.timeout`; consecutive store faults open a breaker (the risk API's [`Breaker`]),
//! so a dead store costs no wait; and a fault becomes either the error (`on_failure:
//! closed`) or an answer from this replica's own memory store (`local`), logged once per
//! episode (when it starts and when it ends) and counted through the observer. Only the
//! store's own faults ([`StoreError::is_fault`]) count; an unexpected answer does not.

use super::{
    BoxFuture, HistoryTotals, HistoryUpdate, HistoryWindow, Key, MemoryStore, StateObserver,
    StateStore, StoreError, UseOutcome,
};
use crate::config::{HistoryConfig, OnFailure, StateConfig};
use crate::risk::breaker::{Breaker, BreakerState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shared store behind a timeout, a breaker and the configured failure outcome.
pub struct Guarded {
    primary: Arc<dyn StateStore>,
    fallback: Option<MemoryStore>,
    breaker: Breaker,
    timeout: Duration,
    observer: Arc<dyn StateObserver>,
    degraded: AtomicBool,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("primary", &self.primary.kind())
            .field("local_fallback", &self.fallback.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// Guards `primary` with `config`'s timeout, breaker and `on_failure`.
    pub fn new(
        primary: Arc<dyn StateStore>,
        config: &StateConfig,
        observer: Arc<dyn StateObserver>,
    ) -> Guarded {
        Guarded {
            primary,
            fallback: (config.on_failure == OnFailure::Local)
                .then(|| MemoryStore::new(config.max_entries)),
            breaker: Breaker::new(config.breaker.failure_threshold, config.breaker.open),
            timeout: config.timeout,
            observer,
            degraded: AtomicBool::new(false),
        }
    }

    /// Bounds the `local` fallback's history by `history.max_principals`.
    pub fn with_local_history(mut self, history: &HistoryConfig) -> Guarded {
        self.fallback = self.fallback.map(|m| m.with_history(history));
        self
    }

    /// The breaker's state, for metrics.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Whether operations are being served by the per-replica fallback right now.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    async fn run<'a, T>(
        &'a self,
        op: &'static str,
        primary: impl FnOnce(&'a dyn StateStore) -> BoxFuture<'a, Result<T, StoreError>>,
        local: impl FnOnce(&'a MemoryStore) -> BoxFuture<'a, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let err = if self.breaker.try_acquire() {
            let started = Instant::now();
            let result = match tokio::time::timeout(self.timeout, primary(&*self.primary)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout),
            };
            let outcome = result.as_ref().map_or_else(StoreError::label, |_| "ok");
            self.observer.store_call(op, outcome, started.elapsed());
            match result {
                Err(e) if e.is_fault() => {
                    self.breaker.on_outage();
                    e
                }
                other => {
                    self.breaker.on_success();
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!(store = self.primary.kind(), "state store answers again");
                    }
                    return other;
                }
            }
        } else {
            StoreError::BreakerOpen
        };
        let Some(fallback) = &self.fallback else {
            return Err(err);
        };
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                store = self.primary.kind(),
                error = %err,
                "state store failing: serving from this replica's memory (state.on_failure: local)"
            );
        }
        self.observer.local_fallback(op);
        local(fallback).await
    }
}

impl StateStore for Guarded {
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        keep_until_epoch_ms: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
        Box::pin(self.run(
            "consume_use",
            move |p| p.consume_use(key, max_uses, keep_until_epoch_ms),
            move |m| m.consume_use(key, max_uses, keep_until_epoch_ms),
        ))
    }

    fn incr_window<'a>(
        &'a self,
        key: &'a Key,
        window_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.run(
            "incr_window",
            move |p| p.incr_window(key, window_ms),
            move |m| m.incr_window(key, window_ms),
        ))
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(self.run("get", move |p| p.get(key), move |m| m.get(key)))
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.run(
            "put",
            move |p| p.put(key, value, ttl_ms),
            move |m| m.put(key, value, ttl_ms),
        ))
    }

    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: HistoryWindow,
        update: HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
        Box::pin(self.run(
            "history",
            move |p| p.history(principal, window, update),
            move |m| m.history(principal, window, update),
        ))
    }

    fn kind(&self) -> &'static str {
        self.primary.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BreakerConfig;
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    /// A store that fails (or hangs) while `down` is set, and counts calls that reach it.
    struct Flaky {
        down: AtomicBool,
        hang: bool,
        calls: AtomicU32,
        inner: MemoryStore,
    }

    impl Flaky {
        fn new(hang: bool) -> Arc<Flaky> {
            Arc::new(Flaky {
                down: AtomicBool::new(false),
                hang,
                calls: AtomicU32::new(0),
                inner: MemoryStore::new(100),
            })
        }
    }

    impl StateStore for Flaky {
        fn consume_use<'a>(
            &'a self,
            key: &'a Key,
            max_uses: u32,
            until: i64,
        ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.down.load(Ordering::Relaxed) {
                if self.hang {
                    return Box::pin(std::future::pending());
                }
                return Box::pin(async { Err(StoreError::Unavailable("refused".into())) });
            }
            self.inner.consume_use(key, max_uses, until)
        }
        fn incr_window<'a>(&'a self, k: &'a Key, w: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
            self.inner.incr_window(k, w)
        }
        fn get<'a>(&'a self, _: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
            Box::pin(async { Err(StoreError::Protocol("WRONGTYPE".into())) })
        }
        fn put<'a>(
            &'a self,
            k: &'a Key,
            v: &'a [u8],
            t: u64,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            self.inner.put(k, v, t)
        }
        fn history<'a>(
            &'a self,
            principal: &'a str,
            window: HistoryWindow,
            update: HistoryUpdate<'a>,
        ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
            self.inner.history(principal, window, update)
        }
        fn kind(&self) -> &'static str {
            "flaky"
        }
    }

    #[derive(Default)]
    struct Seen {
        calls: Mutex<Vec<(&'static str, &'static str)>>,
        fallbacks: AtomicU32,
    }

    impl StateObserver for Seen {
        fn store_call(&self, op: &'static str, outcome: &'static str, _: Duration) {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((op, outcome));
        }
        fn local_fallback(&self, _: &'static str) {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn config(on_failure: OnFailure) -> StateConfig {
        StateConfig {
            on_failure,
            timeout: Duration::from_millis(20),
            breaker: BreakerConfig {
                failure_threshold: 2,
                open: Duration::from_secs(60),
            },
            ..StateConfig::default()
        }
    }

    fn until() -> i64 {
        crate::clock::now_ms() + 60_000
    }

    #[tokio::test]
    async fn closed_returns_the_fault_and_the_breaker_stops_calling() {
        let flaky = Flaky::new(false);
        let seen = Arc::new(Seen::default());
        let g = Guarded::new(flaky.clone(), &config(OnFailure::Closed), seen.clone());
        let k = Key::action_use("a");
        assert!(matches!(
            g.consume_use(&k, 1, until()).await,
            Ok(UseOutcome::Allowed)
        ));
        flaky.down.store(true, Ordering::Relaxed);
        for _ in 0..2 {
            let r = g.consume_use(&k, 1, until()).await;
            assert!(matches!(r, Err(StoreError::Unavailable(_))), "{r:?}");
        }
        let r = g.consume_use(&k, 1, until()).await;
        assert!(matches!(r, Err(StoreError::BreakerOpen)), "{r:?}");
        assert_eq!(
            flaky.calls.load(Ordering::Relaxed),
            3,
            "open breaker: no call"
        );
        assert_eq!(seen.fallbacks.load(Ordering::Relaxed), 0);
        assert_eq!(g.breaker_state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn a_hanging_store_times_out() {
        let flaky = Flaky::new(true);
        flaky.down.store(true, Ordering::Relaxed);
        let g = Guarded::new(
            flaky,
            &config(OnFailure::Closed),
            Arc::new(super::super::NoObserver),
        );
        let started = Instant::now();
        let r = g.consume_use(&Key::action_use("a"), 1, until()).await;
        assert!(matches!(r, Err(StoreError::Timeout)), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(1_000));
    }

    #[tokio::test]
    async fn local_serves_from_memory_and_counts_each_fallback() {
        let flaky = Flaky::new(false);
        let seen = Arc::new(Seen::default());
        let g = Guarded::new(flaky.clone(), &config(OnFailure::Local), seen.clone());
        flaky.down.store(true, Ordering::Relaxed);
        let k = Key::action_use("a");
        assert!(matches!(
            g.consume_use(&k, 1, until()).await,
            Ok(UseOutcome::Allowed)
        ));
        assert!(g.is_degraded());
        assert!(matches!(
            g.consume_use(&k, 1, until()).await,
            Ok(UseOutcome::UsedUp)
        ));
        assert!(
            matches!(g.consume_use(&k, 1, until()).await, Ok(UseOutcome::UsedUp)),
            "breaker open: still local"
        );
        assert_eq!(seen.fallbacks.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn unexpected_answers_are_not_faults() {
        let flaky = Flaky::new(false);
        let seen = Arc::new(Seen::default());
        let g = Guarded::new(flaky.clone(), &config(OnFailure::Local), seen.clone());
        let k = Key::negative("n");
        for _ in 0..5 {
            let r = g.get(&k).await;
            assert!(matches!(r, Err(StoreError::Protocol(_))), "{r:?}");
        }
        assert_eq!(g.breaker_state(), BreakerState::Closed);
        assert_eq!(seen.fallbacks.load(Ordering::Relaxed), 0);
        let calls = seen.calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(calls.first(), Some(&("get", "protocol")));
    }
}
