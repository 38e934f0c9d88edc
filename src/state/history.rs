//! A principal's recent history in the state store: time-bucketed counters of denies,
//! step-up answers and amounts moved per currency over a sliding window (`history:`).
//!
//! One operation, [`StateStore::history`](super::StateStore::history), applies one
//! [`HistoryUpdate`] to the bucket of its instant and returns the window's totals, atomically:
//! a reservation (a positive amount) and the read of the total it is compared with are one
//! step, so parallel withdrawals each see the others' reservations. A negative amount (the
//! release of a reservation) only ever lowers a bucket that still holds at least that
//! much, so a release after the bucket expired changes nothing.
//!
//! The window is `buckets` slices of `window_ms / buckets`; the totals cover the slice of
//! the instant and the `buckets - 1` before it. On Redis each slice is one hash per
//! principal with a TTL of one window plus one slice, so keys expire by themselves; in
//! memory ([`MemoryHistory`]) each principal is one small entry of a bounded cache.

use super::StoreError;
use moka::future::Cache;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The window the totals cover and how it is sliced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryWindow {
    /// Length of the window (ms, positive).
    pub window_ms: u64,
    /// Slices of the window (at least 1).
    pub buckets: u32,
}

impl HistoryWindow {
    /// Length of one slice in ms (at least 1).
    pub fn bucket_ms(&self) -> i64 {
        let ms = self.window_ms / u64::from(self.buckets.max(1));
        i64::try_from(ms.max(1)).unwrap_or(i64::MAX)
    }

    /// The slice `at_ms` falls in.
    pub fn bucket_of(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.bucket_ms())
    }

    /// How long a slice's record must live to be counted by every window that covers it.
    pub fn ttl_ms(&self) -> u64 {
        self.window_ms
            .saturating_add(u64::try_from(self.bucket_ms()).unwrap_or(0))
    }

    /// Whether slice `bucket` is in the window that ends with slice `now_bucket`.
    fn covers(&self, now_bucket: i64, bucket: i64) -> bool {
        bucket <= now_bucket && bucket > now_bucket.saturating_sub(i64::from(self.buckets.max(1)))
    }
}

/// One change to a principal's history, and the instant whose window is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryUpdate<'a> {
    /// Epoch ms: the change lands in this instant's slice; the totals are of its window.
    pub at_ms: i64,
    /// The currency of `amount` and of the returned amount total (`None`: no amount).
    pub currency: Option<&'a str>,
    /// Minor units added (a reservation) or, negative, released.
    pub amount: i64,
    /// Denies added.
    pub denies: i64,
    /// Step-up answers added.
    pub challenges: i64,
}

impl HistoryUpdate<'_> {
    /// Only reads the window ending at `at_ms`.
    pub fn read(at_ms: i64) -> HistoryUpdate<'static> {
        HistoryUpdate {
            at_ms,
            currency: None,
            amount: 0,
            denies: 0,
            challenges: 0,
        }
    }
}

/// A principal's totals over the window, after the update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryTotals {
    /// Denies in the window.
    pub denies: i64,
    /// Step-up answers in the window.
    pub challenges: i64,
    /// Minor units of the update's currency in the window (0 without a currency).
    pub amount: i64,
}

/// The record name of one slice under the principal's hash tag.
pub(super) fn bucket_field(bucket: i64) -> String {
    format!("h:{bucket}")
}

/// The hash field of a currency's amount in a slice.
pub(super) fn amount_field(currency: &str) -> String {
    format!("a:{currency}")
}

/// Applies `update` to the slice of its instant and sums the window, on Redis: `KEYS` are
/// the window's slices, the slice of the instant first; `ARGV[1]` the amount field (`''`:
/// none), `ARGV[2]` the amount, `ARGV[3]` denies, `ARGV[4]` challenges, `ARGV[5]` the TTL
/// (ms). A negative amount lowers the field only when it holds at least that much.
/// Returns each slice's `d`, `c` and amount field, in `KEYS` order (summed by the caller
/// in 64-bit integers, not Lua's floats).
pub(super) const REDIS_SCRIPT: &str = r"
local k = KEYS[1]
local field = ARGV[1]
local amount = tonumber(ARGV[2])
local wrote = false
if field ~= '' and amount > 0 then
  redis.call('HINCRBY', k, field, amount)
  wrote = true
elseif field ~= '' and amount < 0 then
  local held = tonumber(redis.call('HGET', k, field) or '0')
  if held >= -amount then redis.call('HINCRBY', k, field, amount) end
end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', k, 'd', ARGV[3]); wrote = true end
if tonumber(ARGV[4]) > 0 then redis.call('HINCRBY', k, 'c', ARGV[4]); wrote = true end
if wrote then redis.call('PEXPIRE', k, ARGV[5]) end
local out = {}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'd', 'c', field == '' and 'd' or field)
  out[#out + 1] = v[1] or '0'
  out[#out + 1] = v[2] or '0'
  out[#out + 1] = (field ~= '' and v[3]) or '0'
end
return out
";

/// Sums the script's answer (`d`, `c`, amount per slice) with saturating 64-bit adds.
pub(super) fn sum_redis_answer(values: &[String]) -> Result<HistoryTotals, StoreError> {
    let mut totals = HistoryTotals::default();
    for triple in values.chunks(3) {
        let [d, c, a] = triple else {
            return Err(StoreError::Protocol("history answer of odd length".into()));
        };
        let n = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| StoreError::Protocol("history answer is not a number".into()))
        };
        totals.denies = totals.denies.saturating_add(n(d)?);
        totals.challenges = totals.challenges.saturating_add(n(c)?);
        totals.amount = totals.amount.saturating_add(n(a)?);
    }
    Ok(totals)
}

/// One slice of one principal's history in memory.
#[derive(Debug, Default)]
struct Slice {
    bucket: i64,
    denies: u32,
    challenges: u32,
    /// Minor units per currency (few currencies per principal: a short list, not a map).
    amounts: Vec<(Box<str>, i64)>,
}

/// One principal's live slices, oldest first (at most `buckets`).
type Slices = Vec<Slice>;

/// Principals' histories in this process: a cache bounded by principal count (least
/// recently used forgotten first) whose entries also lapse one window after their last
/// use, keyed by the first 128 bits of the principal's SHA-256 (no user data kept).
#[derive(Debug)]
pub struct MemoryHistory {
    principals: Cache<u128, Arc<Mutex<Slices>>>,
    max_principals: u64,
}

impl MemoryHistory {
    /// A history of at most `max_principals` principals, each forgotten after `idle` unused.
    pub fn new(max_principals: u64, idle: Duration) -> MemoryHistory {
        let principals = Cache::builder()
            .max_capacity(max_principals.max(1))
            .time_to_idle(idle.max(Duration::from_millis(1)))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        MemoryHistory {
            principals,
            max_principals: max_principals.max(1),
        }
    }

    /// The cap on principals.
    pub fn max_principals(&self) -> u64 {
        self.max_principals
    }

    /// Principals remembered (after pending evictions are applied).
    pub async fn principal_count(&self) -> u64 {
        self.principals.run_pending_tasks().await;
        self.principals.entry_count()
    }

    /// Applies `update` for `principal` and returns the window's totals (see the module).
    pub async fn apply(
        &self,
        principal: &str,
        window: HistoryWindow,
        update: &HistoryUpdate<'_>,
    ) -> HistoryTotals {
        let key = principal_hash(principal);
        let writes = update.amount > 0 || update.denies > 0 || update.challenges > 0;
        let slices = if writes {
            self.principals
                .get_with(key, async { Arc::new(Mutex::new(Vec::new())) })
                .await
        } else {
            match self.principals.get(&key).await {
                Some(s) => s,
                None => return HistoryTotals::default(),
            }
        };
        // A poisoned lock only means a panic elsewhere; the slices are still consistent.
        let mut slices = slices.lock().unwrap_or_else(|p| p.into_inner());
        apply_to(&mut slices, window, update)
    }
}

/// The update on one principal's slices, then their totals.
fn apply_to(
    slices: &mut Slices,
    window: HistoryWindow,
    update: &HistoryUpdate<'_>,
) -> HistoryTotals {
    let now = window.bucket_of(update.at_ms);
    slices.retain(|s| s.bucket > now.saturating_sub(i64::from(window.buckets.max(1))));
    let writes = update.amount > 0 || update.denies > 0 || update.challenges > 0;
    if writes && !slices.iter().any(|s| s.bucket == now) {
        let at = slices.partition_point(|s| s.bucket < now);
        // one slice is the common case: no spare capacity per principal
        slices.reserve_exact(1);
        slices.insert(
            at,
            Slice {
                bucket: now,
                ..Slice::default()
            },
        );
    }
    if let Some(slice) = slices.iter_mut().find(|s| s.bucket == now) {
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        slice.denies = slice.denies.saturating_add(count(update.denies));
        slice.challenges = slice.challenges.saturating_add(count(update.challenges));
        if let Some(currency) = update.currency {
            change_amount(slice, currency, update.amount);
        }
    }
    let mut totals = HistoryTotals::default();
    for s in slices.iter().filter(|s| window.covers(now, s.bucket)) {
        totals.denies = totals.denies.saturating_add(i64::from(s.denies));
        totals.challenges = totals.challenges.saturating_add(i64::from(s.challenges));
        if let Some(currency) = update.currency {
            let held = s.amounts.iter().find(|(c, _)| &**c == currency);
            totals.amount = totals.amount.saturating_add(held.map_or(0, |(_, a)| *a));
        }
    }
    totals
}

/// Adds a reservation, or takes a release off a slice that holds at least that much.
fn change_amount(slice: &mut Slice, currency: &str, amount: i64) {
    let held = slice.amounts.iter_mut().find(|(c, _)| &**c == currency);
    match held {
        Some((_, held)) if amount > 0 => *held = held.saturating_add(amount),
        Some((_, held)) if amount < 0 && *held >= amount.saturating_neg() => {
            *held = held.saturating_add(amount);
        }
        None if amount > 0 => {
            slice.amounts.reserve_exact(1);
            slice.amounts.push((currency.into(), amount));
        }
        _ => {}
    }
}

fn principal_hash(principal: &str) -> u128 {
    let digest = Sha256::digest(principal.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: HistoryWindow = HistoryWindow {
        window_ms: 1_000,
        buckets: 10,
    };

    fn update(at_ms: i64, amount: i64, denies: i64) -> HistoryUpdate<'static> {
        HistoryUpdate {
            at_ms,
            currency: Some("USD"),
            amount,
            denies,
            challenges: 0,
        }
    }

    #[tokio::test]
    async fn totals_cover_the_window_and_lapse_slice_by_slice() {
        let h = MemoryHistory::new(10, Duration::from_secs(60));
        assert_eq!(h.apply("u", W, &update(0, 100, 1)).await.amount, 100);
        assert_eq!(h.apply("u", W, &update(550, 50, 0)).await.amount, 150);
        let t = h.apply("u", W, &HistoryUpdate::read(999)).await;
        assert_eq!(
            (t.amount, t.denies),
            (0, 1),
            "read without a currency: counts, no amount"
        );
        let t = h.apply("u", W, &update(999, 0, 0)).await;
        assert_eq!((t.amount, t.denies), (150, 1));
        let t = h.apply("u", W, &update(1_000, 0, 0)).await;
        assert_eq!((t.amount, t.denies), (50, 0), "slice 0 left the window");
        assert_eq!(h.apply("u", W, &update(1_600, 0, 0)).await.amount, 0);
        assert_eq!(h.apply("other", W, &update(1_600, 0, 0)).await.amount, 0);
    }

    #[tokio::test]
    async fn a_release_never_takes_more_than_its_slice_holds() {
        let h = MemoryHistory::new(10, Duration::from_secs(60));
        h.apply("u", W, &update(0, 100, 0)).await;
        h.apply("u", W, &update(150, 30, 0)).await;
        assert_eq!(h.apply("u", W, &update(150, -30, 0)).await.amount, 100);
        assert_eq!(
            h.apply("u", W, &update(150, -30, 0)).await.amount,
            100,
            "a second release of the same slice changes nothing"
        );
        let mut eur = update(150, 10, 0);
        eur.currency = Some("EUR");
        assert_eq!(h.apply("u", W, &eur).await.amount, 10, "per currency");
    }

    #[tokio::test]
    async fn the_principal_cap_forgets_the_least_recently_seen() {
        let h = MemoryHistory::new(100, Duration::from_secs(60));
        for i in 0..1_000 {
            h.apply(&format!("u{i}"), W, &update(0, 1, 0)).await;
        }
        let n = h.principal_count().await;
        assert!(n <= 100, "{n} principals kept");
        assert_eq!(
            h.apply("u999", W, &update(0, 0, 0)).await.amount,
            1,
            "the most recent is kept"
        );
        assert_eq!(
            h.apply("u0", W, &update(0, 0, 0)).await.amount,
            0,
            "the oldest is gone"
        );
    }

    #[test]
    fn redis_answers_are_summed_in_integers() {
        let big = (i64::MAX / 2).to_string();
        let answer = ["1", "0", &big, "2", "1", &big].map(String::from);
        let totals = sum_redis_answer(&answer).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(totals.denies, 3);
        assert_eq!(totals.challenges, 1);
        assert_eq!(totals.amount, (i64::MAX / 2) * 2);
        assert!(sum_redis_answer(&["1".to_owned()]).is_err());
    }
}
