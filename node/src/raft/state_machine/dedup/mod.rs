//! Request de-duplication: the first outcome of each request id, remembered by the shard.
//!
//! A client retries a write or a delete-range with the same request id when it does not know
//! whether the first attempt was applied; the state machine must apply it at most once and
//! answer the retry with the first outcome (invariant 5). One mechanism serves both kinds of
//! command: a [`DedupTable`] is a record per request id (`record prefix` + id → the command's
//! fingerprint and outcome) plus one request list per entry that recorded any (`list prefix` +
//! log index → the entry's clock and ids), which pruning walks oldest first. Writes and
//! delete-ranges keep separate tables ([`WRITES`], [`DELETE_RANGES`]) because their outcomes
//! differ in type. The number of records of each table is kept under [`COUNTS_KEY`].
//!
//! A retry is recognised by its request id *and* its fingerprint (`fingerprint.rs`): a
//! command under a remembered id with another fingerprint is a different request reusing the
//! id, which the caller refuses without applying or recording anything ([`Found::is_retry_of`]).
//! A write's record keeps what a retry is answered with, and no more: per op whether it
//! succeeded, the version written, whether the key existed and, for a failed comparison, the
//! key's version then — not its value (up to a MiB per op), which only the reply to the
//! first application carries.
//!
//! What is remembered ([`DedupPolicy`]): the last `min_records` requests of each table are
//! always remembered; older ones are forgotten once the shard's de-duplication clock has
//! moved more than the window past them; and a table never holds more than `max_records`
//! (the oldest entries' records go first). Each entry prunes a bounded amount: at most
//! [`MAX_EXPIRED_LISTS_PER_ENTRY`] lists for their age, and for the cap only as many records
//! as the entry added (plus the rest of the last list it removes).
//!
//! The shard's de-duplication clock is the highest clock its entries carried (kept with
//! the counts under [`COUNTS_KEY`]; each request list records it as of its entry). An
//! entry's clock is its leader's stamp (`dedup_clock.rs`): the clock its replica had
//! applied when its term began plus the time its *monotonic* clock measured since — never a
//! wall clock. So the shard's clock moves no faster than real time, and a leader whose
//! wall clock jumps or strobes ages no record early: a retry within the window of its first
//! attempt is recognised (as long as the cap allows), and within the last `min_records`
//! requests in any case. Every decision depends only on the entries and the tree, so every
//! replica prunes the same records at the same entry.
//!
//! Older formats are still read ("older records", while the caller's flag says the tree may
//! hold any): records written before fingerprints (`w`, `g`: listed in the same request
//! lists, pruned with them, and taken as matching any command, since nothing tells what they
//! answered) and records of the legacy layout (`r`/`x`, `q`/`y`: a record per id and an
//! expiry index keyed by wall-clock expiry, drained by their recorded expiry). No new ones
//! are made.

mod counts;
mod outcome;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::layout::{
    list_key, request_key, split_expiry_key, split_list_key, COUNTS_KEY, RANGE_DEDUP_PREFIX,
    RANGE_EXPIRY_PREFIX, RANGE_LIST_PREFIX, RANGE_RECORD_PREFIX, RANGE_UNFINGERPRINTED_PREFIX,
    WRITE_DEDUP_PREFIX, WRITE_EXPIRY_PREFIX, WRITE_LIST_PREFIX, WRITE_RECORD_PREFIX,
    WRITE_UNFINGERPRINTED_PREFIX,
};
use crate::raft::types::{DeleteRangeResult, RequestId};
use crate::raft::{decode, encode};
use crate::storage::{prefix_bounds, Batch, StorageError, TreeRef};
#[cfg(test)]
pub(super) use counts::clock_ms;
pub(super) use counts::Counts;
use outcome::recorded_ops;
pub(super) use outcome::{RecordedOp, UnfingerprintedOp};

/// Request lists pruned per entry and table for being older than the window (the cap is
/// enforced in full: an entry adds at most one list, so it removes at most as many records
/// as it added, plus the rest of the last list it removes).
const MAX_EXPIRED_LISTS_PER_ENTRY: usize = 8;

/// Legacy records removed per applied entry and table while they drain.
const MAX_LEGACY_PRUNE_PER_ENTRY: usize = 64;

/// How much a shard remembers. Every replica of a group must use the same policy (the
/// window comes from the node configuration, like every node's `dedup_window_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupPolicy {
    /// Records older than this by the shard's de-duplication clock (its leaders' monotonic
    /// clocks, see the module docs) may be forgotten…
    pub window_ms: u64,
    /// …but the last this many of each table never are, whatever the clocks say…
    pub min_records: u64,
    /// …and a table never holds more than this many.
    pub max_records: u64,
}

impl DedupPolicy {
    /// Requests of each table always remembered.
    pub const MIN_RECORDS: u64 = 16_384;
    /// Most records of each table.
    pub const MAX_RECORDS: u64 = 262_144;

    /// The production policy with the configured window.
    pub fn with_window(window_ms: u64) -> DedupPolicy {
        DedupPolicy {
            window_ms,
            min_records: Self::MIN_RECORDS,
            max_records: Self::MAX_RECORDS,
        }
    }
}

/// The de-duplication table of writes: the per-op outcomes of a write command.
pub(super) const WRITES: DedupTable<Vec<RecordedOp>, Vec<UnfingerprintedOp>> = DedupTable::new(
    Prefixes {
        record: WRITE_RECORD_PREFIX,
        unfingerprinted: WRITE_UNFINGERPRINTED_PREFIX,
        list: WRITE_LIST_PREFIX,
        legacy_record: WRITE_DEDUP_PREFIX,
        legacy_index: WRITE_EXPIRY_PREFIX,
    },
    recorded_ops,
);

/// The de-duplication table of delete-ranges: the outcome of one chunk.
pub(super) const DELETE_RANGES: DedupTable<DeleteRangeResult, DeleteRangeResult> = DedupTable::new(
    Prefixes {
        record: RANGE_RECORD_PREFIX,
        unfingerprinted: RANGE_UNFINGERPRINTED_PREFIX,
        list: RANGE_LIST_PREFIX,
        legacy_record: RANGE_DEDUP_PREFIX,
        legacy_index: RANGE_EXPIRY_PREFIX,
    },
    std::convert::identity,
);

/// A record: the command's fingerprint and its first outcome (`S`).
#[derive(Debug, Serialize, Deserialize)]
struct Record<S> {
    fingerprint: Fingerprint,
    result: S,
}

/// A record found for a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found<S> {
    /// `None`: a record of an older format, made before fingerprints.
    fingerprint: Option<Fingerprint>,
    /// The first outcome.
    pub(super) result: S,
}

impl<S> Found<S> {
    /// A record just made (by an earlier command of the entry being applied).
    pub(super) fn new(fingerprint: Fingerprint, result: S) -> Found<S> {
        Found {
            fingerprint: Some(fingerprint),
            result,
        }
    }

    /// Whether a command with `fingerprint` is a retry of the recorded one. A record made
    /// before fingerprints cannot tell, and is taken as the command's own, as it always was.
    pub(super) fn is_retry_of(&self, fingerprint: &Fingerprint) -> bool {
        self.fingerprint.is_none_or(|recorded| recorded == *fingerprint)
    }
}

/// The request list of one entry: the shard's de-duplication clock once the entry was
/// applied (lists written before that clock existed hold the entry's own clock, the latest
/// `issued_at_ms` of its commands: the same encoding) and the ids it recorded.
#[derive(Debug, Serialize, Deserialize)]
struct RequestList {
    clock_ms: u64,
    ids: Vec<RequestId>,
}

/// A legacy record: postcard encodes a struct as its fields in order.
#[derive(Debug, Deserialize)]
struct LegacyRecord<R> {
    #[allow(dead_code)]
    expires_at_ms: u64,
    result: R,
}

/// The key prefixes of a table.
struct Prefixes {
    /// Records: this prefix + request id.
    record: u8,
    /// Records made before fingerprints: this prefix + request id.
    unfingerprinted: u8,
    /// Request lists: this prefix + log index (big-endian, so lists sort oldest first).
    list: u8,
    /// Legacy records: this prefix + request id.
    legacy_record: u8,
    /// Legacy expiry index: this prefix + expiry + request id.
    legacy_index: u8,
}

/// The first outcomes (stored as `S`; as `O` in records of older formats) of request ids,
/// under their key prefixes of the tree.
pub(super) struct DedupTable<S, O> {
    prefixes: Prefixes,
    /// Reads an outcome of the older formats as the current one.
    upgrade: fn(O) -> S,
    result: PhantomData<fn() -> (S, O)>,
}

impl<S, O> DedupTable<S, O> {
    const fn new(prefixes: Prefixes, upgrade: fn(O) -> S) -> DedupTable<S, O> {
        DedupTable {
            prefixes,
            upgrade,
            result: PhantomData,
        }
    }
}

impl<S: Serialize + DeserializeOwned, O: DeserializeOwned> DedupTable<S, O> {
    /// The record of `request_id`, if it is still in `tree`. `older`: the tree may still
    /// hold records of older formats (see [`EntryRecords::finish`]).
    pub(super) fn lookup(
        &self,
        tree: &TreeRef,
        request_id: &RequestId,
        older: bool,
    ) -> Result<Option<Found<S>>, StorageError> {
        if let Some(bytes) = tree.get(&request_key(self.prefixes.record, request_id))? {
            let record: Record<S> = decode(tree.name(), &bytes)?;
            return Ok(Some(Found::new(record.fingerprint, record.result)));
        }
        if !older {
            return Ok(None);
        }
        let unfingerprinted = match tree.get(&request_key(self.prefixes.unfingerprinted, request_id))? {
            Some(bytes) => Some(decode::<O>(tree.name(), &bytes)?),
            None => match tree.get(&request_key(self.prefixes.legacy_record, request_id))? {
                Some(bytes) => Some(decode::<LegacyRecord<O>>(tree.name(), &bytes)?.result),
                None => None,
            },
        };
        Ok(unfingerprinted.map(|result| Found {
            fingerprint: None,
            result: (self.upgrade)(result),
        }))
    }

    /// Records in `batch` the fingerprint and first outcome of `request_id` (the entry's
    /// request list, written by [`EntryRecords::finish`], makes it prunable).
    fn record(
        &self,
        batch: &mut Batch,
        request_id: &RequestId,
        fingerprint: Fingerprint,
        result: &S,
    ) -> Result<(), StorageError> {
        let record = Record { fingerprint, result };
        batch.insert(request_key(self.prefixes.record, request_id), encode(&record)?);
        Ok(())
    }
}

impl<S, O> DedupTable<S, O> {
    /// Writes the request list of the entry at `log_index` and prunes old lists with their
    /// records (`older`: and the records of the older format their ids may name), by the
    /// shard's clock `clock_ms` after the entry; returns the table's new record count.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        tree: &TreeRef,
        batch: &mut Batch,
        policy: &DedupPolicy,
        log_index: u64,
        clock_ms: u64,
        recorded: Vec<RequestId>,
        count: u64,
        older: bool,
    ) -> Result<u64, StorageError> {
        let mut count = count + recorded.len() as u64;
        if !recorded.is_empty() {
            let list = RequestList {
                clock_ms,
                ids: recorded,
            };
            batch.insert(list_key(self.prefixes.list, log_index), encode(&list)?);
        }
        if count <= policy.min_records {
            return Ok(count);
        }
        let (start, end) = prefix_bounds(&[self.prefixes.list]);
        let mut expired_lists = 0;
        for pair in tree.range(start, end) {
            let (key, value) = pair?;
            if split_list_key(&key).is_none_or(|index| index >= log_index) {
                break;
            }
            let list: RequestList = decode(tree.name(), &value)?;
            let left = count.saturating_sub(list.ids.len() as u64);
            let over_cap = count > policy.max_records;
            let expired = left >= policy.min_records
                && list.clock_ms.saturating_add(policy.window_ms) < clock_ms
                && expired_lists < MAX_EXPIRED_LISTS_PER_ENTRY;
            if !over_cap && !expired {
                break;
            }
            if !over_cap {
                expired_lists += 1;
            }
            for id in &list.ids {
                batch.remove(request_key(self.prefixes.record, id));
                if older {
                    batch.remove(request_key(self.prefixes.unfingerprinted, id));
                }
            }
            batch.remove(key);
            count = left;
        }
        Ok(count)
    }

    /// Removes in `batch` (at most [`MAX_LEGACY_PRUNE_PER_ENTRY`]) legacy records that
    /// expired before `clock_ms` (their expiry was the proposer's wall clock plus the
    /// window; the shard's clock continues from its entries' clocks), oldest first. Returns
    /// whether any record of an older format (legacy, or made before fingerprints) may be
    /// left.
    fn prune_older(&self, tree: &TreeRef, clock_ms: u64, batch: &mut Batch) -> Result<bool, StorageError> {
        // Records made before fingerprints go with their request lists: any still there?
        // (One removed by this batch still counts, until the next entry looks again.)
        let (start, end) = prefix_bounds(&[self.prefixes.unfingerprinted]);
        let unfingerprinted_left = tree.range(start, end).next().transpose()?.is_some();
        let (start, end) = prefix_bounds(&[self.prefixes.legacy_index]);
        for (pruned, pair) in tree.range(start, end).enumerate() {
            let (key, _) = pair?;
            let Some((expires_at_ms, request_id)) = split_expiry_key(&key) else {
                return Ok(true);
            };
            if expires_at_ms >= clock_ms || pruned == MAX_LEGACY_PRUNE_PER_ENTRY {
                return Ok(true);
            }
            if let Some(request_id) = request_id {
                batch.remove(request_key(self.prefixes.legacy_record, &request_id));
            }
            batch.remove(key);
        }
        Ok(unfingerprinted_left)
    }
}

/// The de-duplication records one entry makes: collected while the entry is applied, then
/// listed and pruned by [`EntryRecords::finish`].
#[derive(Default)]
pub(super) struct EntryRecords {
    writes: Vec<RequestId>,
    delete_ranges: Vec<RequestId>,
    /// The latest `issued_at_ms` of the entry's commands: the entry's clock.
    entry_clock_ms: u64,
}

/// What [`EntryRecords::finish`] leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Finished {
    /// Whether the tree may still hold records of older formats.
    pub(super) older_left: bool,
    /// The record counts and the shard's de-duplication clock after the entry.
    pub(super) counts: Counts,
}

impl EntryRecords {
    /// Records in `batch` the fingerprint and outcome of a write first seen in this entry.
    pub(super) fn record_write(
        &mut self,
        batch: &mut Batch,
        request_id: &RequestId,
        fingerprint: Fingerprint,
        issued_at_ms: u64,
        results: &Vec<RecordedOp>,
    ) -> Result<(), StorageError> {
        WRITES.record(batch, request_id, fingerprint, results)?;
        self.writes.push(*request_id);
        self.entry_clock_ms = self.entry_clock_ms.max(issued_at_ms);
        Ok(())
    }

    /// Records in `batch` the fingerprint and outcome of a delete-range first seen in this
    /// entry.
    pub(super) fn record_delete_range(
        &mut self,
        batch: &mut Batch,
        request_id: &RequestId,
        fingerprint: Fingerprint,
        issued_at_ms: u64,
        result: &DeleteRangeResult,
    ) -> Result<(), StorageError> {
        DELETE_RANGES.record(batch, request_id, fingerprint, result)?;
        self.delete_ranges.push(*request_id);
        self.entry_clock_ms = self.entry_clock_ms.max(issued_at_ms);
        Ok(())
    }

    /// Advances the entry's clock (a command that recorded nothing still carries one).
    pub(super) fn observe_clock(&mut self, issued_at_ms: u64) {
        self.entry_clock_ms = self.entry_clock_ms.max(issued_at_ms);
    }

    /// Advances the shard's clock to the entry's, writes the entry's request lists, prunes
    /// what `policy` lets go and updates the counts and clock, all in `batch`. `before`: the
    /// counts and clock after the previous entry (kept in memory by the caller: the record
    /// under [`COUNTS_KEY`] may lag, see `apply.rs`). `older`: the tree may still hold
    /// records of older formats.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
        self,
        tree: &TreeRef,
        batch: &mut Batch,
        policy: &DedupPolicy,
        log_index: u64,
        older: bool,
        before: Counts,
    ) -> Result<Finished, StorageError> {
        debug_assert!(policy.min_records <= policy.max_records, "{policy:?}");
        // The highest clock any entry carried: a stamp below it (a leader that anchored
        // before it applied its predecessors' last entries) never moves the clock back.
        let clock_ms = before.clock_ms.max(self.entry_clock_ms);
        let added = (self.writes.len() as u64, self.delete_ranges.len() as u64);
        let after = Counts {
            writes: WRITES.finish(
                tree,
                batch,
                policy,
                log_index,
                clock_ms,
                self.writes,
                before.writes,
                older,
            )?,
            delete_ranges: DELETE_RANGES.finish(
                tree,
                batch,
                policy,
                log_index,
                clock_ms,
                self.delete_ranges,
                before.delete_ranges,
                older,
            )?,
            clock_ms,
        };
        debug_assert!(
            after.writes <= policy.max_records.max(added.0)
                && after.delete_ranges <= policy.max_records.max(added.1),
            "the cap holds: {before:?} + {added:?} -> {after:?}"
        );
        if after != before {
            batch.insert(COUNTS_KEY.to_vec(), encode(&after)?);
        }
        let older_left = older && {
            let writes_left = WRITES.prune_older(tree, clock_ms, batch)?;
            let ranges_left = DELETE_RANGES.prune_older(tree, clock_ms, batch)?;
            writes_left || ranges_left
        };
        Ok(Finished {
            older_left,
            counts: after,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::*;
    use crate::raft::state_machine::layout::expiry_key;
    use crate::raft::types::{Current, Versioned, WriteOpResult};
    use crate::storage::{self, EngineRef};

    fn tree(dir: &std::path::Path) -> (EngineRef, TreeRef) {
        let engine = storage::open(dir).expect("engine");
        let tree = engine.open_tree("t").expect("tree");
        (engine, tree)
    }

    fn policy(min_records: u64, max_records: u64) -> DedupPolicy {
        DedupPolicy {
            window_ms: 60_000,
            min_records,
            max_records,
        }
    }

    const FINGERPRINT: Fingerprint = [9; 16];

    fn ok() -> Vec<RecordedOp> {
        vec![RecordedOp {
            succeeded: true,
            version: 3,
            existed: false,
            current_version: None,
        }]
    }

    /// A write's outcome as records made before fingerprints encoded it.
    #[derive(Serialize)]
    struct OldOp {
        succeeded: bool,
        version: u64,
        existed: bool,
        current: Option<Versioned>,
    }

    fn old_ok() -> Vec<OldOp> {
        vec![OldOp {
            succeeded: true,
            version: 3,
            existed: false,
            current: None,
        }]
    }

    /// Applies one entry at `index` recording the writes `ids`, stamped `issued_at_ms`;
    /// returns how many write records it removed.
    fn apply_entry(
        tree: &TreeRef,
        policy: &DedupPolicy,
        index: u64,
        issued_at_ms: u64,
        ids: &[RequestId],
    ) -> usize {
        let mut batch = Batch::default();
        let mut records = EntryRecords::default();
        records.observe_clock(issued_at_ms);
        for id in ids {
            records
                .record_write(&mut batch, id, FINGERPRINT, issued_at_ms, &ok())
                .expect("record");
        }
        records
            .finish(tree, &mut batch, policy, index, false, counts(tree))
            .expect("finish");
        let removed = batch
            .ops
            .iter()
            .filter(|(key, value)| key.first() == Some(&WRITE_RECORD_PREFIX) && value.is_none())
            .count();
        tree.apply_batch(batch).expect("apply");
        removed
    }

    /// Applies one entry at `index` recording the writes `[id; 16]` of `ids`.
    fn entry(tree: &TreeRef, policy: &DedupPolicy, index: u64, issued_at_ms: u64, ids: &[u8]) {
        let ids: Vec<RequestId> = ids.iter().map(|id| [*id; 16]).collect();
        apply_entry(tree, policy, index, issued_at_ms, &ids);
    }

    /// Request id number `n`.
    fn nth_id(n: u64) -> RequestId {
        let mut id = [0; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// The write records in `tree`, counted.
    fn write_records(tree: &TreeRef) -> u64 {
        let (start, end) = prefix_bounds(&[WRITE_RECORD_PREFIX]);
        tree.range(start, end).count() as u64
    }

    /// Every pair of `tree`.
    fn dump(tree: &TreeRef) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.range(Bound::Unbounded, Bound::Unbounded)
            .collect::<Result<_, _>>()
            .expect("dump")
    }

    /// Entries 1..=`entries` at clock 1,000, entry `i` recording ids `2(i-1)` and `2(i-1)+1`.
    fn pairs_of_requests(tree: &TreeRef, policy: &DedupPolicy, entries: u8) {
        for index in 0..entries {
            entry(
                tree,
                policy,
                u64::from(index) + 1,
                1_000,
                &[index * 2, index * 2 + 1],
            );
        }
    }

    fn remembered(tree: &TreeRef, ids: impl IntoIterator<Item = u8>) -> Vec<u8> {
        ids.into_iter()
            .filter(|id| WRITES.lookup(tree, &[*id; 16], false).expect("lookup").is_some())
            .collect()
    }

    fn counts(tree: &TreeRef) -> Counts {
        Counts::read(tree).expect("counts")
    }

    /// A recorded outcome is found again by its request id, with its fingerprint, only in its
    /// own table.
    #[test]
    fn recorded_outcomes_are_found_in_their_own_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let result = DeleteRangeResult {
            deleted: 2,
            last_deleted: Some(b"b".to_vec()),
            more: true,
        };
        let mut batch = Batch::default();
        let mut records = EntryRecords::default();
        records
            .record_delete_range(&mut batch, &[1; 16], FINGERPRINT, 1_000, &result)
            .expect("record");
        records
            .finish(&tree, &mut batch, &policy(10, 20), 5, false, counts(&tree))
            .expect("finish");
        tree.apply_batch(batch).expect("apply");
        let found = DELETE_RANGES
            .lookup(&tree, &[1; 16], false)
            .expect("lookup")
            .expect("found");
        assert_eq!(found, Found::new(FINGERPRINT, result));
        assert!(found.is_retry_of(&FINGERPRINT));
        assert!(!found.is_retry_of(&[8; 16]), "another command under the id");
        assert_eq!(
            DELETE_RANGES.lookup(&tree, &[2; 16], false).expect("lookup"),
            None
        );
        assert_eq!(WRITES.lookup(&tree, &[1; 16], false).expect("lookup"), None);
        assert_eq!(
            counts(&tree),
            Counts {
                writes: 0,
                delete_ranges: 1,
                clock_ms: 1_000,
            }
        );
    }

    /// However far the entries' clock jumps, the last `min_records` requests are remembered;
    /// older ones go once the clock passes the window, whole entries at a time.
    #[test]
    fn a_clock_jump_never_forgets_the_last_min_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let policy = policy(4, 100);
        pairs_of_requests(&tree, &policy, 6);
        assert_eq!(
            remembered(&tree, 0..12),
            (0..12).collect::<Vec<_>>(),
            "within the window"
        );
        // A leader ten years ahead: everything older than the window, yet the last 4 stay.
        entry(&tree, &policy, 7, u64::MAX / 2, &[]);
        assert_eq!(remembered(&tree, 0..12), vec![8, 9, 10, 11]);
        assert_eq!(counts(&tree).writes, 4);
    }

    /// The cap holds whatever the clock: the oldest entries' records go first.
    #[test]
    fn the_cap_bounds_the_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let policy = policy(2, 6);
        pairs_of_requests(&tree, &policy, 5);
        assert_eq!(remembered(&tree, 0..10), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(counts(&tree).writes, 6);
        let lists = tree
            .range(
                Bound::Included(vec![WRITE_LIST_PREFIX]),
                Bound::Excluded(vec![WRITE_LIST_PREFIX + 1]),
            )
            .count();
        assert_eq!(lists, 3, "one list per entry left");
    }

    /// Records made before fingerprints (`w`, `g`, listed in the same request lists) are
    /// still found while older records may be left, match any command, and are pruned with
    /// their lists; once none is left, the table says so.
    #[test]
    fn records_without_fingerprints_match_and_are_pruned_with_their_lists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        // As the previous format wrote them: the outcome alone under `w`, listed under `l`.
        tree.insert(
            &request_key(WRITE_UNFINGERPRINTED_PREFIX, &[7; 16]),
            &encode(&old_ok()).expect("encode"),
        )
        .expect("insert");
        let list = RequestList {
            clock_ms: 1_000,
            ids: vec![[7; 16]],
        };
        tree.insert(&list_key(WRITE_LIST_PREFIX, 1), &encode(&list).expect("encode"))
            .expect("insert");
        // The counts as written before the clock: (writes, delete_ranges).
        tree.insert(COUNTS_KEY, &encode(&(1u64, 0u64)).expect("encode"))
            .expect("insert");
        let found = WRITES
            .lookup(&tree, &[7; 16], true)
            .expect("lookup")
            .expect("found");
        assert_eq!(found.result, ok());
        assert!(found.is_retry_of(&[1; 16]) && found.is_retry_of(&[2; 16]));
        assert_eq!(
            WRITES.lookup(&tree, &[7; 16], false).expect("lookup"),
            None,
            "not looked for once none may be left"
        );

        // Entry 2 records one more write; a cap of 1 prunes entry 1's list and its record.
        let policy = policy(0, 1);
        let mut batch = Batch::default();
        let mut records = EntryRecords::default();
        records
            .record_write(&mut batch, &[8; 16], FINGERPRINT, 1_000, &ok())
            .expect("record");
        let left = records
            .finish(&tree, &mut batch, &policy, 2, true, counts(&tree))
            .expect("finish")
            .older_left;
        tree.apply_batch(batch).expect("apply");
        assert!(left, "the record was still there when the entry looked");
        assert_eq!(WRITES.lookup(&tree, &[7; 16], true).expect("lookup"), None);
        assert_eq!(counts(&tree).writes, 1);
        let mut batch = Batch::default();
        let left = EntryRecords::default()
            .finish(&tree, &mut batch, &policy, 3, true, counts(&tree))
            .expect("finish")
            .older_left;
        assert!(!left, "none left");
    }

    /// Legacy records are still found (matching any command) and drain by their recorded
    /// expiry; new records never use the legacy prefixes.
    #[test]
    fn legacy_records_are_found_and_drain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        // As the previous layout wrote them: (expiry, result) under `r`, index under `x`.
        let legacy = (61_000u64, old_ok());
        tree.insert(
            &request_key(WRITE_DEDUP_PREFIX, &[7; 16]),
            &encode(&legacy).expect("encode"),
        )
        .expect("insert");
        tree.insert(&expiry_key(WRITE_EXPIRY_PREFIX, 61_000, &[7; 16]), &[])
            .expect("insert");
        let found = WRITES
            .lookup(&tree, &[7; 16], true)
            .expect("lookup")
            .expect("found");
        assert_eq!(found.result, ok());
        assert!(found.is_retry_of(&FINGERPRINT));

        let mut batch = Batch::default();
        let left = EntryRecords::default()
            .finish(&tree, &mut batch, &policy(4, 8), 1, true, counts(&tree))
            .expect("finish")
            .older_left;
        tree.apply_batch(batch).expect("apply");
        assert!(left, "not expired yet");
        assert!(WRITES.lookup(&tree, &[7; 16], true).expect("lookup").is_some());

        let mut batch = Batch::default();
        let mut records = EntryRecords::default();
        records.observe_clock(61_001);
        let left = records
            .finish(&tree, &mut batch, &policy(4, 8), 2, true, counts(&tree))
            .expect("finish")
            .older_left;
        tree.apply_batch(batch).expect("apply");
        assert!(!left, "drained");
        assert_eq!(WRITES.lookup(&tree, &[7; 16], true).expect("lookup"), None);
        let left: Vec<Vec<u8>> = dump(&tree).into_iter().map(|(key, _)| key).collect();
        assert_eq!(left, vec![COUNTS_KEY.to_vec()], "only the counts and clock");
        assert_eq!(clock_ms(&tree).expect("clock"), 61_001);
    }

    /// A failed comparison's record keeps the key's version, not its value; a record of the
    /// older format that kept the value answers with the version only too.
    #[test]
    fn a_failed_comparison_is_recorded_as_its_version() {
        let failed = WriteOpResult {
            succeeded: false,
            version: 0,
            existed: true,
            current: Some(Current {
                version: 5,
                value: Some(vec![1; 1 << 20]),
            }),
        };
        let recorded = RecordedOp::of(&failed);
        let bytes = encode(&Record {
            fingerprint: FINGERPRINT,
            result: vec![recorded.clone()],
        })
        .expect("encode");
        assert!(bytes.len() < 32, "{} bytes", bytes.len());
        assert_eq!(
            recorded.answer(),
            WriteOpResult {
                current: Some(Current {
                    version: 5,
                    value: None
                }),
                ..failed
            }
        );
        let old = vec![UnfingerprintedOp {
            succeeded: false,
            version: 0,
            existed: true,
            current: Some(Versioned {
                version: 5,
                value: b"v".to_vec(),
            }),
        }];
        assert_eq!(recorded_ops(old), vec![recorded]);
    }

    /// Today's lists and records, with the counts written before the clock (two fields),
    /// still decode: the shard's clock is then the newest list's, and the records are
    /// pruned once it passes the window; the counts are written with the clock from then on.
    #[test]
    fn lists_and_counts_written_before_the_clock_are_read_and_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        // As the previous build wrote them: records under `v` and `u`, lists holding their
        // entries' own clocks, counts as `(writes, delete_ranges)`.
        let record = Record {
            fingerprint: FINGERPRINT,
            result: ok(),
        };
        tree.insert(
            &request_key(WRITE_RECORD_PREFIX, &[1; 16]),
            &encode(&record).expect("encode"),
        )
        .expect("insert");
        let range_record = Record {
            fingerprint: FINGERPRINT,
            result: DeleteRangeResult::default(),
        };
        tree.insert(
            &request_key(RANGE_RECORD_PREFIX, &[2; 16]),
            &encode(&range_record).expect("encode"),
        )
        .expect("insert");
        for (prefix, index, clock_ms, id) in [
            (WRITE_LIST_PREFIX, 1, 1_000u64, 1u8),
            (RANGE_LIST_PREFIX, 2, 2_000, 2),
        ] {
            let list = (clock_ms, vec![[id; 16]]);
            tree.insert(&list_key(prefix, index), &encode(&list).expect("encode"))
                .expect("insert");
        }
        tree.insert(COUNTS_KEY, &encode(&(1u64, 1u64)).expect("encode"))
            .expect("insert");
        assert_eq!(
            counts(&tree),
            Counts {
                writes: 1,
                delete_ranges: 1,
                clock_ms: 2_000
            }
        );
        assert_eq!(clock_ms(&tree).expect("clock"), 2_000);
        assert!(WRITES.lookup(&tree, &[1; 16], false).expect("lookup").is_some());
        assert!(DELETE_RANGES
            .lookup(&tree, &[2; 16], false)
            .expect("lookup")
            .is_some());

        // An entry with no clock of its own keeps the shard's; one past the window of both
        // lists prunes them.
        let policy = policy(0, 100);
        entry(&tree, &policy, 3, 0, &[]);
        assert_eq!(counts(&tree).clock_ms, 2_000);
        assert!(WRITES.lookup(&tree, &[1; 16], false).expect("lookup").is_some());
        entry(&tree, &policy, 4, 2_000 + 60_001, &[]);
        assert_eq!(WRITES.lookup(&tree, &[1; 16], false).expect("lookup"), None);
        assert_eq!(
            DELETE_RANGES.lookup(&tree, &[2; 16], false).expect("lookup"),
            None
        );
        assert_eq!(
            counts(&tree),
            Counts {
                writes: 0,
                delete_ranges: 0,
                clock_ms: 62_001
            }
        );
        let stored = tree.get(COUNTS_KEY).expect("get").expect("counts");
        assert_eq!(
            decode::<(u64, u64, u64)>(tree.name(), &stored).expect("decode"),
            (0, 0, 62_001),
            "written with the clock"
        );
    }

    /// The shard's clock is the highest its entries carried: an entry stamped below it (a
    /// leader that anchored before applying its predecessor's last entries) is listed at
    /// the shard's clock, so its records age no faster than the entries before it.
    #[test]
    fn the_shard_clock_never_goes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let policy = policy(0, 100);
        // A retry-only entry (nothing recorded) carries 10,000; the next is stamped 5,000.
        entry(&tree, &policy, 1, 10_000, &[]);
        entry(&tree, &policy, 2, 5_000, &[2]);
        assert_eq!(counts(&tree).clock_ms, 10_000);
        // Past 5,000 + the window, not past 10,000 + the window: still remembered.
        entry(&tree, &policy, 3, 66_000, &[]);
        assert_eq!(remembered(&tree, [2]), vec![2]);
        entry(&tree, &policy, 4, 70_001, &[]);
        assert_eq!(remembered(&tree, [2]), Vec::<u8>::new());
    }

    /// Issue 14, defect 5: under sustained batched load — a thousand entries of 256 records
    /// each (31 times the cap), all within the window — a table never holds more than
    /// `max_records`, its count is the records it holds, and no entry removes more than it
    /// added plus the rest of one list. Once the clock passes the window, ageing removes at
    /// most `MAX_EXPIRED_LISTS_PER_ENTRY` lists per entry, and never the last `min_records`.
    #[test]
    fn sustained_batched_load_stays_under_the_cap() {
        const PER_ENTRY: u64 = 256;
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let policy = policy(1_024, 8_192);
        let mut next_id = 0;
        let mut batch_of = |n: u64| -> Vec<RequestId> {
            let ids = (next_id..next_id + n).map(nth_id).collect();
            next_id += n;
            ids
        };
        let entries = 1_000;
        for index in 1..=entries {
            let removed = apply_entry(&tree, &policy, index, 1_000, &batch_of(PER_ENTRY));
            let count = counts(&tree).writes;
            assert!(count <= policy.max_records, "entry {index}: {count} records");
            assert!(
                removed as u64 <= PER_ENTRY + (PER_ENTRY - 1),
                "entry {index} removed {removed}"
            );
            if index % 100 == 0 {
                assert_eq!(count, write_records(&tree), "entry {index}: the count is exact");
            }
        }
        assert_eq!(counts(&tree).writes, policy.max_records);
        assert_eq!(
            remembered_ids(&tree, (entries * PER_ENTRY - 8_192)..entries * PER_ENTRY),
            8_192
        );

        // The clock passes the window: entries of one record each age 8 lists per entry,
        // down to the last `min_records`.
        let mut index = entries;
        loop {
            index += 1;
            let removed = apply_entry(&tree, &policy, index, 1_000 + 60_001, &batch_of(1));
            // 8 lists for their age, and one for the cap (the entry's record, plus the
            // rest of that list).
            assert!(
                removed as u64 <= 8 * PER_ENTRY + PER_ENTRY,
                "entry {index} removed {removed}"
            );
            let count = counts(&tree).writes;
            assert!(count >= policy.min_records, "entry {index}: {count} records");
            if removed == 0 {
                break;
            }
        }
        let count = counts(&tree).writes;
        assert_eq!(count, write_records(&tree));
        assert!(count < policy.min_records + PER_ENTRY, "{count} records left");
        let newest = next_id;
        assert_eq!(
            remembered_ids(&tree, newest - policy.min_records..newest),
            policy.min_records,
            "the last min_records are remembered"
        );
    }

    /// How many of the request ids numbered `range` are remembered.
    fn remembered_ids(tree: &TreeRef, range: std::ops::Range<u64>) -> u64 {
        range
            .filter(|n| WRITES.lookup(tree, &nth_id(*n), false).expect("lookup").is_some())
            .count() as u64
    }

    /// One entry of a generated history: how many writes it records and how its clock moves
    /// (a jump or strobe of minutes either way, or a step).
    #[derive(Debug, Clone)]
    struct Step {
        records: u64,
        clock_delta_ms: i64,
    }

    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        use proptest::prelude::*;
        let delta = prop_oneof![
            4 => 0i64..2_000,
            1 => Just(5 * 60_000i64),
            1 => Just(-5 * 60_000i64),
        ];
        proptest::collection::vec(
            (0u64..=64, delta).prop_map(|(records, clock_delta_ms)| Step {
                records,
                clock_delta_ms,
            }),
            1..80,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the entries' sizes and clocks (jumps and strobes of five minutes): the
        /// count stays within the cap and equals the records held; no entry prunes more
        /// than the bound; a request is remembered while fewer than `min_records` were
        /// recorded after its entry; and a replica that restarted from a copy of the tree
        /// midway (a snapshot) ends with exactly the same tree (pruning depends only on
        /// the entries and the tree).
        #[test]
        fn pruning_is_bounded_and_deterministic(history in steps()) {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = storage::open(dir.path()).expect("engine");
            let replica = engine.open_tree("replica").expect("tree");
            let copied = engine.open_tree("copied").expect("tree");
            let policy = DedupPolicy { window_ms: 60_000, min_records: 32, max_records: 256 };
            let mut clock_ms: i64 = 10_000_000;
            let mut next_id = 0;
            // Request ids recorded by each entry so far, oldest first.
            let mut recorded: Vec<Vec<u64>> = Vec::new();
            for (index, step) in (1u64..).zip(&history) {
                clock_ms = (clock_ms + step.clock_delta_ms).max(0);
                let ids: Vec<u64> = (next_id..next_id + step.records).collect();
                next_id += step.records;
                let request_ids: Vec<RequestId> = ids.iter().map(|n| nth_id(*n)).collect();
                let removed = apply_entry(&replica, &policy, index, clock_ms as u64, &request_ids);
                if index as usize == history.len() / 2 {
                    for (key, value) in dump(&replica) {
                        copied.insert(&key, &value).expect("copy");
                    }
                } else if index as usize > history.len() / 2 {
                    apply_entry(&copied, &policy, index, clock_ms as u64, &request_ids);
                }
                recorded.push(ids);
                let count = counts(&replica).writes;
                proptest::prop_assert!(count <= policy.max_records);
                proptest::prop_assert_eq!(count, write_records(&replica));
                proptest::prop_assert!(removed as u64 <= 8 * 64 + step.records + 63);
                let mut newer = 0;
                for ids in recorded.iter().rev() {
                    if newer >= policy.min_records {
                        break;
                    }
                    for n in ids {
                        proptest::prop_assert!(
                            WRITES.lookup(&replica, &nth_id(*n), false).expect("lookup").is_some(),
                            "request {} forgotten with {} recorded after it", n, newer
                        );
                    }
                    newer += ids.len() as u64;
                }
            }
            if history.len() > 1 {
                proptest::prop_assert_eq!(dump(&replica), dump(&copied));
            }
        }
    }
}
