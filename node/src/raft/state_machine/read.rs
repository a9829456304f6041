//! Reads of a group's local state: point reads (`get`, `get_many`), range scans and counts.
//!
//! A point read holds the apply lock for reading, so it sees one point between applied
//! entries (invariant 6) and never a tree being switched by a snapshot install; a read of
//! many keys stops at a byte budget (`get_many_within`). Range reads run in holds of bounded
//! work on blocking threads, each answer at one applied state (`holds.rs`), so a long scan or
//! count never stalls applies. None of these check consistency (leadership, ReadIndex);
//! their callers do.

use std::sync::{Arc, PoisonError};

use super::holds::AppliedState;
use super::layout::all_data_bounds;
use super::range::{Count, LatestScan, ScanAt};
use super::{join_error, mvcc, txn, GroupState};
use crate::raft::txn::LockedKey;
use crate::raft::types::Versioned;
use crate::storage::{StorageError, TreeRef};

/// What a scan reads: a key range, a direction and a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// First key of the range (inclusive; empty = the first key).
    pub start: Vec<u8>,
    /// End of the range (exclusive); `None` = no upper bound.
    pub end: Option<Vec<u8>>,
    /// Most entries returned (0 returns none).
    pub limit: usize,
    /// The returned keys and values stay within this many bytes: the page stops before the
    /// entry that would pass it. The first entry is always returned, whatever its size.
    pub max_bytes: usize,
    /// Descending key order: start from the greatest key of the range.
    pub reverse: bool,
    /// Return versions without values.
    pub keys_only: bool,
}

/// One page of a scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys with their versions and values (empty values when keys only), in scan order.
    pub entries: Vec<(Vec<u8>, Versioned)>,
    /// Each entry's expiry (oracle time; `None`: never), in the order of `entries` (what a
    /// backup keeps of a key's TTL). A provisional value of a transaction has none.
    pub expiries: Vec<Option<u64>>,
    /// Whether the range may hold more keys past `last_key` (in scan order): the limit, the
    /// byte budget or an apply ended the page.
    pub more: bool,
    /// Set when `more`: the last key the scan looked at (the last entry's, or a later key
    /// the read could not see); the rest of the range lies after it.
    pub last_key: Option<Vec<u8>>,
}

/// The outcome of counting the keys of a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountResult {
    /// Keys counted.
    pub count: u64,
    /// Whether the limit (or an apply, for the latest keys) stopped the count with keys
    /// left after `last_key`.
    pub more: bool,
    /// The last key counted; set only when `more`.
    pub last_key: Option<Vec<u8>>,
}

impl GroupState {
    /// Reads `key` from the local state (no consistency check: callers do that).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StorageError> {
        let mut values = self.get_many(std::slice::from_ref(&key.to_vec())).await?;
        Ok(values.pop().flatten())
    }

    /// Reads `keys` from the local state at one point between applied entries.
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Versioned>>, StorageError> {
        self.get_many_within(keys, usize::MAX).await
    }

    /// Reads the first of `keys` whose keys and values fit in `max_bytes` (at least one),
    /// at one point between applied entries: the values of a prefix of `keys`.
    pub async fn get_many_within(
        &self,
        keys: &[Vec<u8>],
        max_bytes: usize,
    ) -> Result<Vec<Option<Versioned>>, StorageError> {
        let values = self.get_many_live_within(keys, max_bytes, None).await?;
        Ok(values
            .into_iter()
            .map(|value| value.map(|(versioned, _)| versioned))
            .collect())
    }

    /// [`GroupState::get_many_within`] of the values not expired at oracle timestamp
    /// `now_ts` (`None`: none counts as expired), with their expiry (`None`: never).
    pub async fn get_many_live_within(
        &self,
        keys: &[Vec<u8>],
        max_bytes: usize,
        now_ts: Option<u64>,
    ) -> Result<Vec<Option<(Versioned, Option<u64>)>>, StorageError> {
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        // One per key read (`read_within` may read one key more than it answers).
        let mut expiries = Vec::with_capacity(keys.len());
        let values = read_within(keys, max_bytes, |key| {
            let head = mvcc::head(&tree, key)?;
            let live = head.filter(|head| now_ts.is_none_or(|now_ts| head.live_at(now_ts)));
            expiries.push(live.as_ref().and_then(|head| head.expires_at));
            Ok::<_, StorageError>(live.map(mvcc::Head::versioned))
        })?;
        Ok(values
            .into_iter()
            .zip(expiries)
            .map(|(value, expires_at)| value.map(|value| (value, expires_at)))
            .collect())
    }

    /// Reads `keys` as of `read_ts`: the newest version of each committed at or before it
    /// (no consistency check or fence: callers do that). `Err` when the shard's history no
    /// longer reaches back to `read_ts` (see `mvcc.rs`).
    pub async fn get_many_at(
        &self,
        keys: &[Vec<u8>],
        read_ts: u64,
    ) -> Result<Result<Vec<Option<Versioned>>, mvcc::BelowFloor>, StorageError> {
        let values = self.get_many_at_within(keys, read_ts, usize::MAX).await?;
        Ok(values.map(|values| {
            values
                .into_iter()
                .map(|value| value.map(|(versioned, _)| versioned))
                .collect()
        }))
    }

    /// [`GroupState::get_many_at`] of the first of `keys` whose keys and values fit in
    /// `max_bytes` (at least one).
    pub async fn get_many_at_within(
        &self,
        keys: &[Vec<u8>],
        read_ts: u64,
        max_bytes: usize,
    ) -> Result<Result<Vec<Option<(Versioned, Option<u64>)>>, mvcc::BelowFloor>, StorageError> {
        /// Why a read of one key stops the whole read.
        enum Stop {
            Storage(StorageError),
            Below(mvcc::BelowFloor),
        }
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        let history = self.history();
        let mut expiries = Vec::with_capacity(keys.len());
        let values = read_within(keys, max_bytes, |key| {
            let head = mvcc::head(&tree, key).map_err(Stop::Storage)?;
            let read = history.read(key, head, read_ts).map_err(Stop::Below)?;
            expiries.push(read.as_ref().and_then(|(_, expires_at)| *expires_at));
            Ok(read.map(|(versioned, _)| versioned))
        });
        match values {
            Ok(values) => Ok(Ok(values
                .into_iter()
                .zip(expiries)
                .map(|(value, expires_at)| value.map(|value| (value, expires_at)))
                .collect())),
            Err(Stop::Below(below)) => Ok(Err(below)),
            Err(Stop::Storage(err)) => Err(err),
        }
    }

    /// The oldest timestamp reads of this replica can be served at, and how many replaced
    /// versions it holds in memory.
    pub fn history_span(&self) -> (u64, usize) {
        let history = self.history();
        (history.floor(), history.len())
    }

    /// Reads one page of a range from the local state at one applied state (no consistency
    /// check: callers do that), in holds of the apply lock (`holds.rs`).
    pub async fn scan(&self, options: ScanOptions) -> Result<ScanPage, StorageError> {
        self.scan_live(options, None).await
    }

    /// [`GroupState::scan`] of the values not expired at oracle timestamp `now_ts`
    /// (`None`: none counts as expired).
    pub async fn scan_live(
        &self,
        options: ScanOptions,
        now_ts: Option<u64>,
    ) -> Result<ScanPage, StorageError> {
        self.scan_live_sharing(options, now_ts, &mut AppliedState::new())
            .await
    }

    /// [`GroupState::scan_live`] as one of the reads of an answer at `applied` (see
    /// [`AppliedState`]): ends before reading anything when an entry applied since the
    /// answer's first read.
    pub async fn scan_live_sharing(
        &self,
        options: ScanOptions,
        now_ts: Option<u64>,
        applied: &mut AppliedState,
    ) -> Result<ScanPage, StorageError> {
        let scan = LatestScan::new(&options).expiring_at(now_ts);
        latest(self.read_in_holds_sharing(scan, applied).await?)
    }

    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound) in the
    /// local state at one applied state (no consistency check: callers do that), in holds of
    /// the apply lock (`holds.rs`).
    pub async fn count(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, StorageError> {
        self.count_live(start, end, limit, None).await
    }

    /// [`GroupState::count`] of the values not expired at oracle timestamp `now_ts`
    /// (`None`: none counts as expired).
    pub async fn count_live(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
        now_ts: Option<u64>,
    ) -> Result<CountResult, StorageError> {
        self.count_live_sharing(start, end, limit, now_ts, &mut AppliedState::new())
            .await
    }

    /// [`GroupState::count_live`] as one of the reads of an answer at `applied` (see
    /// [`AppliedState`]): ends before counting anything when an entry applied since the
    /// answer's first read.
    pub async fn count_live_sharing(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
        now_ts: Option<u64>,
        applied: &mut AppliedState,
    ) -> Result<CountResult, StorageError> {
        let count = Count::new(start, end, limit, None).expiring_at(now_ts);
        latest(self.read_in_holds_sharing(count, applied).await?)
    }

    /// Reads one page of a range as of `read_ts`: each key's newest version committed at or
    /// before it, keys deleted since included, keys created since left out (no consistency
    /// check or fence: callers do that). `Err` when the shard's history does not reach back
    /// to `read_ts`. Reads in holds of the apply lock.
    pub async fn scan_at(
        &self,
        options: ScanOptions,
        read_ts: u64,
    ) -> Result<Result<ScanPage, mvcc::BelowFloor>, StorageError> {
        self.read_in_holds(ScanAt::new(&options, read_ts)).await
    }

    /// Counts at most `limit` keys of `[start, end)` present as of `read_ts` (see
    /// [`GroupState::scan_at`]).
    pub async fn count_at(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
        read_ts: u64,
    ) -> Result<Result<CountResult, mvcc::BelowFloor>, StorageError> {
        self.read_in_holds(Count::new(start, end, limit, Some(read_ts)))
            .await
    }

    /// Runs `read` on a blocking thread with the tree and the history, under the apply lock
    /// (applies wait: the history and the heads stay at one point between entries).
    pub(super) async fn with_history<T: Send + 'static>(
        &self,
        read: impl FnOnce(&TreeRef, &mvcc::History) -> Result<Result<T, mvcc::BelowFloor>, StorageError>
            + Send
            + 'static,
    ) -> Result<Result<T, mvcc::BelowFloor>, StorageError> {
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        let history = Arc::clone(&self.history);
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let history = history.lock().unwrap_or_else(PoisonError::into_inner);
            read(&tree, &history)
        })
        .await
        .map_err(join_error)?
    }

    /// The first of `keys` locked by a transaction that started at or before
    /// `max_start_ts`, with that start. A read must not answer for such a key until the
    /// transaction is over: it may commit at or below the read's timestamp. Check before
    /// reading: a lock taken after the check belongs to a transaction that commits after it.
    pub fn first_lock(&self, keys: &[Vec<u8>], max_start_ts: u64) -> Result<Option<LockedKey>, StorageError> {
        if !self.may_have_locks() {
            return Ok(None);
        }
        let tree = self.tree();
        for key in keys {
            if let Some(held) = txn::lock(&tree, key)? {
                if held.start_ts <= max_start_ts {
                    return Ok(Some(held.of(key)));
                }
            }
        }
        Ok(None)
    }

    /// The first key of `[start, end)` (`None` end = no upper bound) locked by a transaction
    /// that started at or before `max_start_ts` (see [`GroupState::first_lock`]).
    pub fn first_lock_in(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        max_start_ts: u64,
    ) -> Result<Option<LockedKey>, StorageError> {
        if !self.may_have_locks() {
            return Ok(None);
        }
        txn::first_lock_in(&self.tree(), start, end, max_start_ts)
    }

    /// The number of stored keys (`d` records); for tests and tools.
    pub fn data_len(&self) -> Result<usize, StorageError> {
        let (start, end) = all_data_bounds();
        let mut count = 0;
        for pair in self.tree().range(start, end) {
            pair?;
            count += 1;
        }
        Ok(count)
    }
}

/// The answer of a read of the latest state, which never meets the history's floor.
fn latest<T>(answer: Result<T, mvcc::BelowFloor>) -> Result<T, StorageError> {
    answer.map_err(|below| {
        StorageError::Engine(format!(
            "a read of the latest state met the history floor {}",
            below.floor
        ))
    })
}

/// Reads `keys` in order with `read` until the next key and value would take the values
/// read past `max_bytes` (the first is always read): the values of a prefix of `keys`. The
/// value that does not fit has been read, and is dropped: a byte budget bounds what a reply
/// holds, the work is bounded by the number of keys.
pub(super) fn read_within<E>(
    keys: &[Vec<u8>],
    max_bytes: usize,
    mut read: impl FnMut(&[u8]) -> Result<Option<Versioned>, E>,
) -> Result<Vec<Option<Versioned>>, E> {
    let mut values = Vec::with_capacity(keys.len());
    let mut bytes = 0usize;
    for key in keys {
        let value = read(key)?;
        let entry_bytes = key.len() + value.as_ref().map_or(0, |value| value.value.len());
        if !values.is_empty() && bytes.saturating_add(entry_bytes) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(entry_bytes);
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::test_support::{five_keys, keys, open, put, scan_options};
    use crate::raft::state_machine::StateMachine;

    /// Forward and reverse scans honour the range and the limit, report `more` exactly when
    /// a key remains, return versions, and never reach records outside the data prefix.
    #[tokio::test]
    async fn scan_forward_and_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;

        let all = state.scan(scan_options(b"", None, 10)).await.expect("scan");
        assert_eq!(keys(&all), vec![&b"a"[..], b"b", b"c", b"d", b"e"]);
        assert!(!all.more);
        assert_eq!(
            all.entries[0].1,
            Versioned {
                version: 1,
                value: b"va".to_vec()
            }
        );
        assert_eq!(all.entries[4].1.version, 5);

        let exact = state.scan(scan_options(b"", None, 5)).await.expect("scan");
        assert_eq!(exact.entries.len(), 5);
        assert!(!exact.more, "a page ending exactly at the last key has no more");
        let short = state.scan(scan_options(b"", None, 4)).await.expect("scan");
        assert_eq!(keys(&short), vec![&b"a"[..], b"b", b"c", b"d"]);
        assert!(short.more);

        let bounded = state
            .scan(scan_options(b"b", Some(b"d"), 10))
            .await
            .expect("scan");
        assert_eq!(keys(&bounded), vec![&b"b"[..], b"c"]);
        assert!(!bounded.more);
        let first = state.scan(scan_options(b"b", Some(b"d"), 1)).await.expect("scan");
        assert_eq!(keys(&first), vec![&b"b"[..]]);
        assert!(first.more);
        let between = state
            .scan(scan_options(b"bb", Some(b"cc"), 10))
            .await
            .expect("scan");
        assert_eq!(keys(&between), vec![&b"c"[..]]);
        let tail = state.scan(scan_options(b"c", None, 10)).await.expect("scan");
        assert_eq!(keys(&tail), vec![&b"c"[..], b"d", b"e"]);

        let reverse = |start: &[u8], end: Option<&[u8]>, limit| ScanOptions {
            reverse: true,
            ..scan_options(start, end, limit)
        };
        let last_two = state.scan(reverse(b"", None, 2)).await.expect("scan");
        assert_eq!(keys(&last_two), vec![&b"e"[..], b"d"]);
        assert!(last_two.more);
        let all_rev = state.scan(reverse(b"", None, 5)).await.expect("scan");
        assert_eq!(keys(&all_rev), vec![&b"e"[..], b"d", b"c", b"b", b"a"]);
        assert!(!all_rev.more);
        let bounded_rev = state.scan(reverse(b"b", Some(b"d"), 2)).await.expect("scan");
        assert_eq!(keys(&bounded_rev), vec![&b"c"[..], b"b"]);
        assert!(!bounded_rev.more, "exactly the keys of the range");
        let one_rev = state.scan(reverse(b"b", Some(b"d"), 1)).await.expect("scan");
        assert_eq!(keys(&one_rev), vec![&b"c"[..]]);
        assert!(one_rev.more);
        // Resuming before the last entry of a reverse page (end = that key) continues it.
        let rest_rev = state.scan(reverse(b"b", Some(b"c"), 10)).await.expect("scan");
        assert_eq!(keys(&rest_rev), vec![&b"b"[..]]);
        assert!(!rest_rev.more);
    }

    /// Keys made of 0xff bytes sort last among data records and are still found by an
    /// unbounded scan in both directions (the data prefix ends at `e`, not at the key space).
    #[tokio::test]
    async fn scan_unbounded_end_stays_in_the_data_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, mut sm) = five_keys(dir.path()).await;
        sm.apply(vec![put(6, &[0xff, 0xff], b"max", 6)])
            .await
            .expect("apply");
        let forward = state.scan(scan_options(b"d", None, 10)).await.expect("scan");
        assert_eq!(keys(&forward), vec![&b"d"[..], b"e", &[0xff, 0xff]]);
        assert!(!forward.more);
        let backward = state
            .scan(ScanOptions {
                reverse: true,
                ..scan_options(b"", None, 1)
            })
            .await
            .expect("scan");
        assert_eq!(keys(&backward), vec![&[0xff, 0xff][..]]);
        assert!(backward.more);
        assert_eq!(state.count(Vec::new(), None, 100).await.expect("count").count, 6);
    }

    /// The byte budget stops a page before the entry that would take its keys and values
    /// past it, always returns the first entry, and counts only the key for keys-only scans
    /// (which keep the version).
    #[tokio::test]
    async fn scan_byte_budget_and_keys_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;
        // Every entry holds 1 key byte + 2 value bytes.
        let budget = |max_bytes, keys_only| ScanOptions {
            max_bytes,
            keys_only,
            ..scan_options(b"", None, 10)
        };
        let two = state.scan(budget(6, false)).await.expect("scan");
        assert_eq!(keys(&two), vec![&b"a"[..], b"b"]);
        assert!(two.more);
        assert_eq!(
            two.last_key,
            Some(b"b".to_vec()),
            "the page resumes after its last entry"
        );
        let still_two = state.scan(budget(8, false)).await.expect("scan");
        assert_eq!(still_two.entries.len(), 2, "a third entry would pass 8 bytes");
        let three = state.scan(budget(9, false)).await.expect("scan");
        assert_eq!(three.entries.len(), 3);
        let one = state.scan(budget(1, false)).await.expect("scan");
        assert_eq!(keys(&one), vec![&b"a"[..]]);
        assert!(one.more);
        let zero = state.scan(budget(0, false)).await.expect("scan");
        assert_eq!(zero.entries.len(), 1, "at least one entry");
        let everything = state.scan(budget(15, false)).await.expect("scan");
        assert_eq!(everything.entries.len(), 5);
        assert!(!everything.more, "the budget is reached only at the last key");

        let keys_only = state.scan(budget(2, true)).await.expect("scan");
        assert_eq!(keys(&keys_only), vec![&b"a"[..], b"b"]);
        assert!(keys_only.more);
        assert_eq!(
            keys_only.entries[1].1,
            Versioned {
                version: 2,
                value: Vec::new()
            }
        );
    }

    /// A page of large values stops at its byte budget (never past it, but for a lone first
    /// entry larger than the budget) and resuming after its `last_key` reads on: every key
    /// exactly once, in order, across pages.
    #[tokio::test]
    async fn pages_of_large_values_stop_at_the_budget_and_resume() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let value = vec![7u8; 1000];
        for i in 0..7u8 {
            let key = [b'p', b'0' + i];
            sm.apply(vec![put(u64::from(i) + 1, &key, &value, i)])
                .await
                .expect("apply");
        }
        // A key of 2 bytes + a value of 1000: two entries fit in 2500 bytes, three do not.
        let max_bytes = 2500;
        for reverse in [false, true] {
            let mut seen = Vec::new();
            let mut options = ScanOptions {
                max_bytes,
                reverse,
                ..scan_options(b"p", Some(b"q"), 100)
            };
            let mut pages = 0;
            loop {
                let page = state.scan(options.clone()).await.expect("scan");
                pages += 1;
                let bytes: usize = page.entries.iter().map(|(k, v)| k.len() + v.value.len()).sum();
                assert!(bytes <= max_bytes, "a page of {bytes} bytes");
                assert!(!page.entries.is_empty());
                seen.extend(page.entries.iter().map(|(key, _)| key.clone()));
                if !page.more {
                    assert_eq!(page.last_key, None);
                    break;
                }
                let last = page
                    .last_key
                    .clone()
                    .expect("a page with more says where it stopped");
                assert_eq!(
                    Some(&last),
                    seen.last(),
                    "a page of heads stops at its last entry"
                );
                if reverse {
                    options.end = Some(last);
                } else {
                    options.start = [last.as_slice(), &[0]].concat();
                }
            }
            let mut expected: Vec<Vec<u8>> = (0..7u8).map(|i| vec![b'p', b'0' + i]).collect();
            if reverse {
                expected.reverse();
            }
            assert_eq!(seen, expected, "every key once, in order (reverse: {reverse})");
            assert_eq!(pages, 4, "2 + 2 + 2 + 1 entries");
        }
        // A value larger than the whole budget is still answered, alone.
        let lone = state
            .scan(ScanOptions {
                max_bytes: 10,
                ..scan_options(b"p", Some(b"q"), 100)
            })
            .await
            .expect("scan");
        assert_eq!(keys(&lone), vec![&b"p0"[..]]);
        assert!(lone.more);
    }

    /// A read of many keys stops before the key whose value would take it past its byte
    /// budget: the values of a prefix of the keys, at least one.
    #[tokio::test]
    async fn reads_of_many_keys_stop_at_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;
        let all: Vec<Vec<u8>> = [&b"a"[..], b"b", b"zz", b"c"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        // a, b, c hold 1 key byte + 2 value bytes; zz is absent (2 key bytes).
        let values = state.get_many_within(&all, 8).await.expect("read");
        assert_eq!(values.len(), 3, "3 + 3 + 2 bytes fit in 8");
        assert_eq!(values[2], None);
        let two = state.get_many_within(&all, 7).await.expect("read");
        assert_eq!(two.len(), 2);
        let one = state.get_many_within(&all, 0).await.expect("read");
        assert_eq!(one.len(), 1, "the first key is always answered");
        assert_eq!(state.get_many(&all).await.expect("read").len(), 4);
        let floor = state.history_span().0;
        let at = state
            .get_many_at_within(&all, floor.max(5), 7)
            .await
            .expect("read")
            .expect("above the floor");
        assert_eq!(at.len(), 2);
        let uncommitted = state.get_many_uncommitted_within(&all, 3).await.expect("read");
        assert_eq!(uncommitted.len(), 1);
    }

    /// Empty and inverted ranges, ranges holding no key, and limit 0 return no entries.
    #[tokio::test]
    async fn scan_empty_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, empty) = open(&dir.path().join("empty"));
        let page = empty.scan(scan_options(b"", None, 10)).await.expect("scan");
        assert_eq!(page, ScanPage::default());
        assert_eq!(
            empty.count(Vec::new(), None, 10).await.expect("count"),
            CountResult::default()
        );

        let (_engine, state, _sm) = five_keys(&dir.path().join("full")).await;
        for (start, end) in [
            (&b"c"[..], Some(&b"c"[..])),
            (b"d", Some(b"b")),
            (b"x", None),
            (b"b", Some(b"")),
        ] {
            for reverse in [false, true] {
                let options = ScanOptions {
                    reverse,
                    ..scan_options(start, end, 10)
                };
                let page = state.scan(options).await.expect("scan");
                assert_eq!(page, ScanPage::default(), "range {start:?}..{end:?}");
            }
            let count = state
                .count(start.to_vec(), end.map(<[u8]>::to_vec), 10)
                .await
                .expect("count");
            assert_eq!(count, CountResult::default());
        }
        let none = state.scan(scan_options(b"", None, 0)).await.expect("scan");
        assert!(none.entries.is_empty());
        assert!(none.more);
    }

    /// Counts stop at the limit with `more` and the last key counted, and resume after it.
    #[tokio::test]
    async fn count_with_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, _sm) = five_keys(dir.path()).await;
        let all = state.count(Vec::new(), None, 100).await.expect("count");
        assert_eq!(
            all,
            CountResult {
                count: 5,
                more: false,
                last_key: None
            }
        );
        let exact = state.count(Vec::new(), None, 5).await.expect("count");
        assert_eq!(
            exact,
            CountResult {
                count: 5,
                more: false,
                last_key: None
            }
        );
        let partial = state.count(Vec::new(), None, 3).await.expect("count");
        assert_eq!(
            partial,
            CountResult {
                count: 3,
                more: true,
                last_key: Some(b"c".to_vec()),
            }
        );
        let mut resume = b"c".to_vec();
        resume.push(0);
        let rest = state.count(resume, None, 3).await.expect("count");
        assert_eq!(
            rest,
            CountResult {
                count: 2,
                more: false,
                last_key: None
            }
        );
        let bounded = state
            .count(b"b".to_vec(), Some(b"e".to_vec()), 100)
            .await
            .expect("count");
        assert_eq!(bounded.count, 3);
        let bounded_partial = state
            .count(b"b".to_vec(), Some(b"e".to_vec()), 2)
            .await
            .expect("count");
        assert_eq!(bounded_partial.last_key, Some(b"c".to_vec()));
        assert!(bounded_partial.more);
    }

    /// One entry of a generated history: at `commit_ts`, put (`Some`) or delete each key.
    type Step = Vec<(u8, Option<u8>)>;

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<(u64, Step)>> {
        use proptest::prelude::*;
        let op = (0u8..6, proptest::option::of(any::<u8>()));
        proptest::collection::vec((1u64..4, proptest::collection::vec(op, 1..4)), 1..12)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// A scan or count at a timestamp finds exactly the keys a point read at that
        /// timestamp finds, in order, with the same versions and values, within the limit:
        /// the merge of heads and history leaves nothing out and adds nothing.
        #[test]
        fn ranges_at_a_timestamp_agree_with_point_reads(
            steps in steps(),
            read_step in 0u64..40,
            bounds in (0u8..7, 0u8..7),
            reverse in proptest::bool::ANY,
            limit in 0usize..7,
        ) {
            use crate::raft::types::{TimedWrites, WriteOp};
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let dir = tempfile::tempdir().expect("tempdir");
                let (_engine, state) = open(dir.path());
                let mut sm = crate::raft::state_machine::StateMachine::new(state.clone());
                let key = |k: u8| vec![b'k', b'0' + k];
                let mut commit_ts = 0;
                for (index, (step, ops)) in (1u64..).zip(&steps) {
                    commit_ts += step;
                    let ops: Vec<WriteOp> = ops
                        .iter()
                        .map(|(k, value)| WriteOp {
                            key: key(*k),
                            value: value.map(|v| vec![v]),
                            expected_version: None,
                            expiry: Default::default(),
                        })
                        .collect();
                    let entry = crate::raft::types::Entry {
                        log_id: crate::raft::state_machine::test_support::log_id(2, index),
                        payload: openraft::EntryPayload::Normal(crate::raft::types::Command::WriteAt(TimedWrites {
                            commit_ts,
                            writes: vec![crate::raft::types::WriteCommand {
                                request_id: [index as u8; 16],
                                issued_at_ms: 1_000,
                                ops,
                            }],
                        })),
                    };
                    sm.apply(vec![entry]).await.expect("apply");
                }
                let read_ts = read_step.min(commit_ts + 1);
                let (start, end) = (key(bounds.0.min(bounds.1)), key(bounds.0.max(bounds.1)));
                let end = (bounds.0.max(bounds.1) < 6).then_some(end);
                let universe: Vec<Vec<u8>> = (0..6).map(key).collect();
                let points = state.get_many_at(&universe, read_ts).await.expect("read").expect("above the floor");
                let mut expected: Vec<(Vec<u8>, Versioned)> = universe
                    .into_iter()
                    .zip(points)
                    .filter(|(k, _)| *k >= start && end.as_ref().is_none_or(|end| k < end))
                    .filter_map(|(k, value)| value.map(|value| (k, value)))
                    .collect();
                if reverse {
                    expected.reverse();
                }
                let options = ScanOptions {
                    start: start.clone(),
                    end: end.clone(),
                    limit,
                    max_bytes: usize::MAX,
                    reverse,
                    keys_only: false,
                };
                let page = state.scan_at(options, read_ts).await.expect("scan").expect("above the floor");
                assert_eq!(page.more, expected.len() > limit);
                expected.truncate(limit);
                assert_eq!(page.entries, expected.clone());
                let counted = state
                    .count_at(start, end, limit as u64, read_ts)
                    .await
                    .expect("count")
                    .expect("above the floor");
                assert_eq!(counted.count as usize, expected.len());
                assert_eq!(counted.more, page.more);
                if counted.more && !reverse {
                    assert_eq!(counted.last_key, expected.last().map(|(k, _)| k.clone()));
                }
            });
        }
    }

    /// Below the floor (after a reopen, history is gone) a range at a timestamp is refused.
    #[tokio::test]
    async fn ranges_below_the_floor_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_engine, _state, _sm) = five_keys(dir.path()).await;
        }
        let (_engine, state) = open(dir.path());
        let floor = state.history_span().0;
        let below = state
            .scan_at(scan_options(b"", None, 10), floor.saturating_sub(1))
            .await
            .expect("scan");
        assert_eq!(below, Err(mvcc::BelowFloor { floor }));
        let at_floor = state
            .scan_at(scan_options(b"", None, 10), floor)
            .await
            .expect("scan");
        assert_eq!(at_floor.map(|page| page.entries.len()), Ok(5));
    }
}
