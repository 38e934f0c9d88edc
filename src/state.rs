//! The seam between the decision and the state that must hold across replicas: a small
//! object-safe async trait with two stores behind it — [`MemoryStore`] (per replica: one
//! replica, the demo, tests without a server) and [`RedisStore`] (shared by all replicas).
//!
//! The operations are shaped for what is kept: the use ledger of single-use tokens
//! ([`StateStore::consume_use`], atomic: two replicas consuming the same action at once →
//! exactly one wins), fixed-window budgets ([`StateStore::incr_window`]), and short-lived
//! records — negative entries, per-principal records, the shared recommendation cache —
//! ([`StateStore::get`] / [`StateStore::put`] with a TTL). Keys are typed ([`Key`]) and
//! hash-tagged so everything about one action or one principal lands in one Cluster slot.
//!
//! A shared store is wrapped by [`Guarded`]: a timeout per operation, a breaker, and the
//! configured outcome of a failure (`closed`: the error; `local`: the per-replica memory
//! store, logged once per episode). Build the store with [`build`].

mod guard;
pub mod history;
mod key;
mod memory;
pub mod principal_record;
pub mod reccache;
mod redis;

pub use guard::Guarded;
pub use history::{HistoryTotals, HistoryUpdate, HistoryWindow, MemoryHistory};
pub use key::Key;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::config::{HistoryConfig, StateConfig, StoreKind};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed, sendable future (object-safe async).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What consuming one use of an action came to. A refusal is an answer, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseOutcome {
    /// The use is counted: the request may go on.
    Allowed,
    /// The action has authorized `max_uses` requests already.
    UsedUp,
    /// The (memory) store is full of live entries: refused rather than an entry forgotten.
    Full,
}

/// State kept for a short time, shared by the replicas that use the same store.
pub trait StateStore: Send + Sync + 'static {
    /// Counts one use of an action, atomically: at most `max_uses` calls for one key get
    /// [`UseOutcome::Allowed`] while the record lives. The record lives until
    /// `keep_until_epoch_ms` (the moment the action is too old to be accepted anyway); a
    /// later call may extend, never shorten, that life. A `keep_until_epoch_ms` already
    /// past counts the use without remembering it: callers refuse such stale actions first.
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        keep_until_epoch_ms: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>>;

    /// Adds one to a fixed-window counter and returns the new count; the window starts at
    /// the first increment and lasts `window_ms`, after which the count starts again at 1.
    fn incr_window<'a>(
        &'a self,
        key: &'a Key,
        window_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The live record under `key`, if any.
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>>;

    /// Stores `value` under `key` for `ttl_ms` (replacing any record); a zero TTL stores nothing.
    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Applies `update` to `principal`'s recent history and returns the totals of the
    /// window ending at `update.at_ms`, atomically (see [`history`]). A store that keeps no
    /// history answers [`StoreError::Protocol`].
    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: HistoryWindow,
        update: HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
        let _ = (principal, window, update);
        Box::pin(std::future::ready(Err(StoreError::Protocol(
            "this store keeps no history".into(),
        ))))
    }

    /// `memory` or `redis`, for metrics and logs.
    fn kind(&self) -> &'static str;
}

/// Why a store operation (or building a store) failed. Messages never carry keys' source
/// values, passwords or URLs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operation ran out of its time budget (`state.timeout`).
    #[error("state store timed out")]
    Timeout,
    /// The store could not be reached or is not serving (connection refused or lost,
    /// cluster down, loading).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The breaker is open after repeated store faults: failing fast.
    #[error("state store breaker open")]
    BreakerOpen,
    /// The store answered something this client does not expect (wrong type, script error,
    /// permissions).
    #[error("state store answered unexpectedly: {0}")]
    Protocol(String),
    /// The memory store is full of live entries and cannot take a new record.
    #[error("state store full of live entries")]
    Full,
    /// A credential or certificate file could not be read.
    #[error("cannot read state store file `{path}`")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot make a store (e.g. `store: redis` without `state.redis`).
    #[error("invalid state store config `{field}`: {message}")]
    Config {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The server may evict keys; an evicted use record silently re-opens replay.
    #[error(
        "redis `maxmemory-policy` is `{policy}`, not `noeviction`: an evicted use record would re-open replay; \
         set `maxmemory-policy noeviction` on the server, or `state.redis.allow_eviction: true` to accept the risk"
    )]
    EvictionPolicy {
        /// The policy the server reported (per node, for a Cluster).
        policy: String,
    },
    /// The eviction policy could not be read (`CONFIG` disabled, as on many managed services).
    #[error(
        "cannot read redis `maxmemory-policy` ({reason}): make sure the server uses `noeviction`, \
         then set `state.redis.allow_eviction: true` to start anyway"
    )]
    EvictionUnknown {
        /// Why it could not be read.
        reason: String,
    },
}

impl StoreError {
    /// Whether the store itself is at fault (unreachable, slow, not serving): what the
    /// breaker counts and what `on_failure: local` falls back on. A full memory store, an
    /// unexpected answer or a configuration problem is not.
    pub fn is_fault(&self) -> bool {
        matches!(self, StoreError::Timeout | StoreError::Unavailable(_))
    }

    /// Bounded label for metrics and audit.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::BreakerOpen => "breaker_open",
            StoreError::Protocol(_) => "protocol",
            StoreError::Full => "full",
            StoreError::ReadFile { .. } => "read_file",
            StoreError::Config { .. } => "config",
            StoreError::EvictionPolicy { .. } => "eviction_policy",
            StoreError::EvictionUnknown { .. } => "eviction_unknown",
        }
    }
}

/// Told about store operations, so the metrics can count them without the store knowing
/// the metrics. Both methods default to doing nothing.
pub trait StateObserver: Send + Sync + 'static {
    /// One operation against the shared store finished (`outcome`: `ok` or a
    /// [`StoreError::label`]). Not called for operations the breaker refused.
    fn store_call(&self, op: &'static str, outcome: &'static str, elapsed: Duration) {
        let _ = (op, outcome, elapsed);
    }

    /// One operation was served by the per-replica fallback (`on_failure: local`).
    fn local_fallback(&self, op: &'static str) {
        let _ = op;
    }
}

/// An observer that ignores everything (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl StateObserver for NoObserver {}

/// Builds the configured store: a [`MemoryStore`] for `store: memory`; for `store: redis`
/// a connected [`RedisStore`] (after checking the eviction policy) inside [`Guarded`].
/// Fails — so start-up fails — when the store cannot be reached or may evict keys.
pub async fn build(
    config: &StateConfig,
    observer: Arc<dyn StateObserver>,
) -> Result<Arc<dyn StateStore>, StoreError> {
    build_with_history(config, &HistoryConfig::default(), observer).await
}

/// [`build`], with the memory stores' history (this one's, or the `local` fallback's)
/// bounded by `history.max_principals`.
pub async fn build_with_history(
    config: &StateConfig,
    history: &HistoryConfig,
    observer: Arc<dyn StateObserver>,
) -> Result<Arc<dyn StateStore>, StoreError> {
    match config.store {
        StoreKind::Memory => Ok(Arc::new(
            MemoryStore::new(config.max_entries).with_history(history),
        )),
        StoreKind::Redis => {
            let redis = config.redis.as_ref().ok_or_else(|| StoreError::Config {
                field: "state.redis",
                message: "required with `store: redis`".into(),
            })?;
            let timeout = config.timeout;
            let store = RedisStore::connect(redis, timeout).await?;
            store.check_eviction_policy(redis.allow_eviction).await?;
            Ok(Arc::new(
                Guarded::new(Arc::new(store), config, observer).with_local_history(history),
            ))
        }
    }
}
