//! Reads of a group's local state: point reads (`get`, `get_many`), range scans and counts.
//!
//! Every read holds the apply lock for reading, so it sees one point between applied entries
//! (invariant 6) and never a tree being switched by a snapshot install. Range reads iterate
//! on a blocking thread: a page or a count can touch many records. None of these check
//! consistency (leadership, ReadIndex); their callers do.

use std::ops::ControlFlow;
use std::sync::{Arc, PoisonError};

use super::layout::{all_data_bounds, data_bounds, user_key};
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
    /// Stop once the returned keys and values hold at least this many bytes; the first
    /// entry is always returned, whatever its size.
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
    /// Whether the range holds at least one more key past the last entry (in scan order).
    pub more: bool,
}

/// The outcome of counting the keys of a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountResult {
    /// Keys counted.
    pub count: u64,
    /// Whether the limit stopped the count with keys left after `last_key`.
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
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        keys.iter()
            .map(|key| Ok(mvcc::head(&tree, key)?.map(mvcc::Head::versioned)))
            .collect()
    }

    /// Reads `keys` as of `read_ts`: the newest version of each committed at or before it
    /// (no consistency check or fence: callers do that). `Err` when the shard's history no
    /// longer reaches back to `read_ts` (see `mvcc.rs`).
    pub async fn get_many_at(
        &self,
        keys: &[Vec<u8>],
        read_ts: u64,
    ) -> Result<Result<Vec<Option<Versioned>>, mvcc::BelowFloor>, StorageError> {
        let _guard = self.apply_lock.read().await;
        let tree = self.tree();
        let heads = keys
            .iter()
            .map(|key| mvcc::head(&tree, key))
            .collect::<Result<Vec<_>, StorageError>>()?;
        let history = self.history();
        Ok(keys
            .iter()
            .zip(heads)
            .map(|(key, head)| history.read(key, head, read_ts))
            .collect())
    }

    /// The oldest timestamp reads of this replica can be served at, and how many replaced
    /// versions it holds in memory.
    pub fn history_span(&self) -> (u64, usize) {
        let history = self.history();
        (history.floor(), history.len())
    }

    /// Reads one page of a range from the local state at one point between applied entries
    /// (no consistency check: callers do that). Iterates on a blocking thread.
    pub async fn scan(&self, options: ScanOptions) -> Result<ScanPage, StorageError> {
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            scan_tree(&tree, &options)
        })
        .await
        .map_err(join_error)?
    }

    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound) in the
    /// local state at one point between applied entries (no consistency check: callers do
    /// that). Iterates on a blocking thread.
    pub async fn count(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, StorageError> {
        let guard = self.apply_lock.clone().read_owned().await;
        let tree = self.tree();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            count_tree(&tree, &start, end.as_deref(), limit)
        })
        .await
        .map_err(join_error)?
    }

    /// Reads one page of a range as of `read_ts`: each key's newest version committed at or
    /// before it, keys deleted since included, keys created since left out (no consistency
    /// check or fence: callers do that). `Err` when the shard's history does not reach back
    /// to `read_ts`. Iterates on a blocking thread.
    pub async fn scan_at(
        &self,
        options: ScanOptions,
        read_ts: u64,
    ) -> Result<Result<ScanPage, mvcc::BelowFloor>, StorageError> {
        self.with_history(move |tree, history| scan_tree_at(tree, history, &options, read_ts))
            .await
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
        self.with_history(move |tree, history| {
            count_tree_at(tree, history, &start, end.as_deref(), limit, read_ts)
        })
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

/// One page of the range of `options` from `tree` (the caller holds the apply lock).
fn scan_tree(tree: &TreeRef, options: &ScanOptions) -> Result<ScanPage, StorageError> {
    let mut page = ScanPage::default();
    let Some((start, end)) = data_bounds(&options.start, options.end.as_deref()) else {
        return Ok(page);
    };
    let pairs = if options.reverse {
        tree.range_rev(start, end)
    } else {
        tree.range(start, end)
    };
    let mut bytes = 0usize;
    for pair in pairs {
        let (key, value) = pair?;
        // Reading one pair past the page is what tells whether more remain.
        let budget_spent = !page.entries.is_empty() && bytes >= options.max_bytes;
        if page.entries.len() >= options.limit || budget_spent {
            page.more = true;
            break;
        }
        let key = user_key(tree.name(), &key)?;
        let versioned = if options.keys_only {
            Versioned {
                version: mvcc::decode_version(tree.name(), &value)?,
                value: Vec::new(),
            }
        } else {
            mvcc::decode_head(tree.name(), &value)?.versioned()
        };
        bytes = bytes.saturating_add(key.len() + versioned.value.len());
        page.entries.push((key, versioned));
    }
    Ok(page)
}

/// Counts at most `limit` keys of `[start, end)` in `tree` (the caller holds the apply lock).
fn count_tree(
    tree: &TreeRef,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u64,
) -> Result<CountResult, StorageError> {
    let mut result = CountResult::default();
    let Some((start, end)) = data_bounds(start, end) else {
        return Ok(result);
    };
    let mut last: Option<Vec<u8>> = None;
    for pair in tree.range(start, end) {
        let (key, _) = pair?;
        if result.count >= limit {
            result.more = true;
            result.last_key = match last {
                Some(last) => Some(user_key(tree.name(), &last)?),
                None => None,
            };
            break;
        }
        result.count += 1;
        last = Some(key);
    }
    Ok(result)
}

/// Calls `visit` with every key of `[start, end)` present as of `read_ts` and its version
/// then, in key order (descending when `reverse`), until it breaks. The candidates are the
/// heads of the range merged with the keys of the history (the caller holds the apply lock,
/// so both stay at one point between entries).
fn for_each_at(
    tree: &TreeRef,
    history: &mvcc::History,
    (start, end): (&[u8], Option<&[u8]>),
    reverse: bool,
    read_ts: u64,
    mut visit: impl FnMut(Vec<u8>, Versioned) -> ControlFlow<()>,
) -> Result<Result<(), mvcc::BelowFloor>, StorageError> {
    if read_ts < history.floor() {
        // A key deleted after `read_ts` may have left no trace: nothing is certain.
        return Ok(Err(mvcc::BelowFloor {
            floor: history.floor(),
        }));
    }
    let Some((lower, upper)) = data_bounds(start, end) else {
        return Ok(Ok(()));
    };
    let mut heads = if reverse {
        tree.range_rev(lower, upper)
    } else {
        tree.range(lower, upper)
    };
    let mut next_head = || -> Result<Option<(Vec<u8>, mvcc::Head)>, StorageError> {
        match heads.next() {
            Some(pair) => {
                let (key, bytes) = pair?;
                Ok(Some((
                    user_key(tree.name(), &key)?,
                    mvcc::decode_head(tree.name(), &bytes)?,
                )))
            }
            None => Ok(None),
        }
    };
    let old_keys = history.keys_in(start, end);
    let mut old: Box<dyn Iterator<Item = &[u8]>> = if reverse {
        Box::new(old_keys.rev())
    } else {
        Box::new(old_keys)
    };
    let mut head = next_head()?;
    let mut old_key = old.next();
    loop {
        // The next candidate in scan order: a head, a key of the history, or both.
        let head_first = match (&head, old_key) {
            (None, None) => return Ok(Ok(())),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some((key, _)), Some(old)) if key.as_slice() == old => None,
            (Some((key, _)), Some(old)) => Some((key.as_slice() < old) != reverse),
        };
        let (key, current) = match head_first {
            Some(false) => {
                let key = old_key.map(<[u8]>::to_vec).unwrap_or_default();
                old_key = old.next();
                (key, None)
            }
            both_or_head => {
                if both_or_head.is_none() {
                    old_key = old.next();
                }
                match head.take() {
                    Some((key, current)) => {
                        head = next_head()?;
                        (key, Some(current))
                    }
                    None => return Ok(Ok(())),
                }
            }
        };
        match history.read(&key, current, read_ts) {
            Ok(Some(versioned)) => {
                if visit(key, versioned).is_break() {
                    return Ok(Ok(()));
                }
            }
            Ok(None) => {}
            Err(below) => return Ok(Err(below)),
        }
    }
}

/// One page of the range of `options` as of `read_ts` (see [`for_each_at`]).
fn scan_tree_at(
    tree: &TreeRef,
    history: &mvcc::History,
    options: &ScanOptions,
    read_ts: u64,
) -> Result<Result<ScanPage, mvcc::BelowFloor>, StorageError> {
    let mut page = ScanPage::default();
    let mut bytes = 0usize;
    let range = (options.start.as_slice(), options.end.as_deref());
    let scanned = for_each_at(
        tree,
        history,
        range,
        options.reverse,
        read_ts,
        |key, mut versioned| {
            // Finding one entry past the page is what tells whether more remain.
            let budget_spent = !page.entries.is_empty() && bytes >= options.max_bytes;
            if page.entries.len() >= options.limit || budget_spent {
                page.more = true;
                return ControlFlow::Break(());
            }
            if options.keys_only {
                versioned.value = Vec::new();
            }
            bytes = bytes.saturating_add(key.len() + versioned.value.len());
            page.entries.push((key, versioned));
            ControlFlow::Continue(())
        },
    )?;
    Ok(scanned.map(|()| page))
}

/// Counts at most `limit` keys of `[start, end)` present as of `read_ts` (see
/// [`for_each_at`]).
fn count_tree_at(
    tree: &TreeRef,
    history: &mvcc::History,
    start: &[u8],
    end: Option<&[u8]>,
    limit: u64,
    read_ts: u64,
) -> Result<Result<CountResult, mvcc::BelowFloor>, StorageError> {
    let mut result = CountResult::default();
    let mut last: Option<Vec<u8>> = None;
    let counted = for_each_at(tree, history, (start, end), false, read_ts, |key, _| {
        if result.count >= limit {
            result.more = true;
            result.last_key = last.take();
            return ControlFlow::Break(());
        }
        result.count += 1;
        last = Some(key);
        ControlFlow::Continue(())
    })?;
    Ok(counted.map(|()| result))
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::test_support::{five_keys, keys, open, put, scan_options};

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

    /// The byte budget stops a page once the returned keys and values reach it, always
    /// returns the first entry, and counts only the key for keys-only scans (which keep the
    /// version).
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
        let three = state.scan(budget(7, false)).await.expect("scan");
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
