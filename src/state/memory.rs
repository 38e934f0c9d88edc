//! The per-replica store: a map under a mutex, each record kept until its own deadline.
//! Records are never evicted while live — a ledger that forgot a count under pressure would
//! let a single-use token be replayed — so when full of live records it refuses (a use is
//! [`UseOutcome::Full`], a write is [`StoreError::Full`]): pressure fails closed.

use super::history::{HistoryTotals, HistoryUpdate, HistoryWindow, MemoryHistory};
use super::{BoxFuture, Key, StateStore, StoreError, UseOutcome};
use crate::clock::now_ms;
use crate::config::HistoryConfig;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// In-process state, for one replica.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    capacity: usize,
    purge_every: Duration,
    /// Principals' recent history: its own bounded cache, which forgets the least recently
    /// seen principal when full (history is advisory; the use ledger above never forgets).
    history: MemoryHistory,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<Key, Record>,
    last_purge: Option<Instant>,
}

#[derive(Debug)]
struct Record {
    value: Value,
    until_ms: i64,
}

#[derive(Debug)]
enum Value {
    Count(u64),
    Bytes(Vec<u8>),
}

impl MemoryStore {
    /// A store of at most `capacity` live records.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            purge_every: Duration::from_millis(100),
            history: history_of(&HistoryConfig::default()),
        }
    }

    /// Keeps the history of at most `history.max_principals` principals, each forgotten one
    /// window after it was last seen.
    pub fn with_history(mut self, history: &HistoryConfig) -> MemoryStore {
        self.history = history_of(history);
        self
    }

    /// The history cache, for tests and the memory benchmark.
    pub fn history_cache(&self) -> &MemoryHistory {
        &self.history
    }

    /// Scans for expired records at most once per `every` while full, so a full store under
    /// attack does not cost a scan per operation (default 100 ms).
    pub fn with_purge_interval(mut self, every: Duration) -> MemoryStore {
        self.purge_every = every;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere; the map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a new record fits, purging expired ones first when full and due.
    fn room(&self, inner: &mut Inner, now_ms: i64) -> bool {
        if inner.records.len() < self.capacity {
            return true;
        }
        let now = Instant::now();
        let due = inner
            .last_purge
            .is_none_or(|at| now.duration_since(at) >= self.purge_every);
        if due {
            inner.records.retain(|_, r| r.until_ms > now_ms);
            inner.last_purge = Some(now);
        }
        inner.records.len() < self.capacity
    }

    /// Live records (including ones expired but not yet purged), for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether the store holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn consume(&self, key: &Key, max_uses: u32, keep_until_ms: i64) -> UseOutcome {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(key).filter(|r| r.until_ms > now) {
            return match &mut r.value {
                Value::Count(n) if *n >= u64::from(max_uses) => UseOutcome::UsedUp,
                Value::Count(n) => {
                    *n += 1;
                    r.until_ms = r.until_ms.max(keep_until_ms);
                    UseOutcome::Allowed
                }
                // Not a use record: treat as used up rather than overwrite it.
                Value::Bytes(_) => UseOutcome::UsedUp,
            };
        }
        inner.records.remove(key);
        if max_uses == 0 {
            return UseOutcome::UsedUp;
        }
        if keep_until_ms <= now {
            return UseOutcome::Allowed;
        }
        if !self.room(&mut inner, now) {
            return UseOutcome::Full;
        }
        inner.records.insert(
            key.clone(),
            Record {
                value: Value::Count(1),
                until_ms: keep_until_ms,
            },
        );
        UseOutcome::Allowed
    }

    fn incr(&self, key: &Key, window_ms: u64) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(r) = inner.records.get_mut(key).filter(|r| r.until_ms > now) {
            return match &mut r.value {
                Value::Count(n) => {
                    *n += 1;
                    Ok(*n)
                }
                Value::Bytes(_) => Err(StoreError::Protocol("not a counter".into())),
            };
        }
        inner.records.remove(key);
        if !self.room(&mut inner, now) {
            return Err(StoreError::Full);
        }
        inner.records.insert(
            key.clone(),
            Record {
                value: Value::Count(1),
                until_ms: now.saturating_add(ms_i64(window_ms)),
            },
        );
        Ok(1)
    }

    fn read(&self, key: &Key) -> Option<Vec<u8>> {
        let now = now_ms();
        let inner = self.lock();
        inner
            .records
            .get(key)
            .filter(|r| r.until_ms > now)
            .map(|r| match &r.value {
                Value::Count(n) => n.to_string().into_bytes(),
                Value::Bytes(b) => b.clone(),
            })
    }

    fn write(&self, key: &Key, value: &[u8], ttl_ms: u64) -> Result<(), StoreError> {
        let now = now_ms();
        let mut inner = self.lock();
        if ttl_ms == 0 {
            inner.records.remove(key);
            return Ok(());
        }
        if !inner.records.contains_key(key) && !self.room(&mut inner, now) {
            return Err(StoreError::Full);
        }
        inner.records.insert(
            key.clone(),
            Record {
                value: Value::Bytes(value.to_vec()),
                until_ms: now.saturating_add(ms_i64(ttl_ms)),
            },
        );
        Ok(())
    }
}

impl StateStore for MemoryStore {
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        keep_until_epoch_ms: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
        let outcome = self.consume(key, max_uses, keep_until_epoch_ms);
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn incr_window<'a>(
        &'a self,
        key: &'a Key,
        window_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(std::future::ready(self.incr(key, window_ms)))
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.read(key))))
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(std::future::ready(self.write(key, value, ttl_ms)))
    }

    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: HistoryWindow,
        update: HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
        Box::pin(async move { Ok(self.history.apply(principal, window, &update).await) })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

fn history_of(config: &HistoryConfig) -> MemoryHistory {
    MemoryHistory::new(config.max_principals, config.window)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_ms(ms: i64) -> i64 {
        now_ms() + ms
    }

    async fn consume(s: &MemoryStore, id: &str, max: u32, until: i64) -> UseOutcome {
        match s.consume_use(&Key::action_use(id), max, until).await {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn counts_per_action_up_to_max_uses() {
        let s = MemoryStore::new(10);
        let t = in_ms(60_000);
        assert_eq!(consume(&s, "a", 2, t).await, UseOutcome::Allowed);
        assert_eq!(consume(&s, "a", 2, t).await, UseOutcome::Allowed);
        assert_eq!(consume(&s, "a", 2, t).await, UseOutcome::UsedUp);
        assert_eq!(consume(&s, "b", 1, t).await, UseOutcome::Allowed);
        assert_eq!(consume(&s, "c", 0, t).await, UseOutcome::UsedUp);
    }

    #[tokio::test]
    async fn a_full_store_refuses_instead_of_forgetting() {
        let s = MemoryStore::new(100);
        let t = in_ms(60_000);
        for i in 0..100 {
            assert_eq!(
                consume(&s, &format!("t{i}"), 1, t).await,
                UseOutcome::Allowed
            );
        }
        assert_eq!(consume(&s, "new", 1, t).await, UseOutcome::Full);
        let put = s.put(&Key::negative("n"), b"x", 1_000).await;
        assert!(matches!(put, Err(StoreError::Full)), "{put:?}");
        for i in 0..100 {
            assert_eq!(
                consume(&s, &format!("t{i}"), 1, t).await,
                UseOutcome::UsedUp,
                "t{i}"
            );
        }
    }

    #[tokio::test]
    async fn records_live_until_keep_until_then_make_room() {
        let s = MemoryStore::new(2).with_purge_interval(Duration::ZERO);
        let soon = in_ms(40);
        assert_eq!(consume(&s, "a", 1, soon).await, UseOutcome::Allowed);
        assert_eq!(consume(&s, "b", 1, soon).await, UseOutcome::Allowed);
        assert_eq!(consume(&s, "a", 1, soon).await, UseOutcome::UsedUp);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let later = in_ms(60_000);
        assert_eq!(consume(&s, "c", 1, later).await, UseOutcome::Allowed);
        assert_eq!(
            consume(&s, "a", 1, later).await,
            UseOutcome::Allowed,
            "expired action starts again"
        );
    }

    #[tokio::test]
    async fn windows_count_then_restart() -> Result<(), StoreError> {
        let s = MemoryStore::new(10);
        let k = Key::principal("alice", "budget:transfer");
        assert_eq!(s.incr_window(&k, 50).await?, 1);
        assert_eq!(s.incr_window(&k, 50).await?, 2);
        assert_eq!(s.get(&k).await?, Some(b"2".to_vec()));
        tokio::time::sleep(Duration::from_millis(70)).await;
        assert_eq!(s.incr_window(&k, 50).await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn records_expire_after_their_ttl() -> Result<(), StoreError> {
        let s = MemoryStore::new(10);
        let k = Key::negative("tok");
        s.put(&k, b"v1", 40).await?;
        assert_eq!(s.get(&k).await?, Some(b"v1".to_vec()));
        s.put(&k, b"v2", 40).await?;
        assert_eq!(s.get(&k).await?, Some(b"v2".to_vec()));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(s.get(&k).await?, None);
        s.put(&k, b"v3", 0).await?;
        assert_eq!(s.get(&k).await?, None, "zero ttl stores nothing");
        Ok(())
    }
}
