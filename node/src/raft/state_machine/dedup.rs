//! Request de-duplication: the first outcome of each request id, kept for a window.
//!
//! A client retries a write or a delete-range with the same request id when it does not know
//! whether the first attempt was applied; the state machine must apply it at most once and
//! answer the retry with the first outcome (invariant 5). One mechanism serves both kinds of
//! command: a [`DedupTable`] is a record per request id (`record prefix` + id → expiry and
//! outcome) plus an expiry index (`index prefix` + expiry + id) that pruning walks oldest
//! first. Writes and delete-ranges keep separate tables ([`WRITES`], [`DELETE_RANGES`]) because
//! their outcomes differ in type and the two prefixes are already on disk (see
//! [`super::layout`]).
//!
//! Records age by the clock of the entries themselves (`issued_at_ms`, the proposer's wall
//! clock), never the replica's: every replica prunes the same records at the same entry.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::layout::{
    expiry_key, request_key, split_expiry_key, RANGE_DEDUP_PREFIX, RANGE_EXPIRY_PREFIX, WRITE_DEDUP_PREFIX,
    WRITE_EXPIRY_PREFIX,
};
use crate::raft::types::{DeleteRangeResult, RequestId, WriteOpResult};
use crate::raft::{decode, encode};
use crate::storage::{prefix_bounds, Batch, StorageError, TreeRef};

/// Expired records removed per applied entry and table (bounds the work of one entry).
const MAX_PRUNE_PER_ENTRY: usize = 64;

/// The de-duplication table of writes: the per-op results of a write command.
pub(super) const WRITES: DedupTable<Vec<WriteOpResult>> =
    DedupTable::new(WRITE_DEDUP_PREFIX, WRITE_EXPIRY_PREFIX);

/// The de-duplication table of delete-ranges: the outcome of one chunk.
pub(super) const DELETE_RANGES: DedupTable<DeleteRangeResult> =
    DedupTable::new(RANGE_DEDUP_PREFIX, RANGE_EXPIRY_PREFIX);

/// The stored value of a de-duplication record. postcard encodes a struct as its fields in
/// order, so this is byte-for-byte the record both tables have always written.
#[derive(Debug, Serialize, Deserialize)]
struct DedupRecord<R> {
    expires_at_ms: u64,
    result: R,
}

/// The first outcomes (of type `R`) of request ids, under two key prefixes of the tree.
pub(super) struct DedupTable<R> {
    /// Records: this prefix + request id.
    record_prefix: u8,
    /// Expiry index: this prefix + expiry + request id.
    index_prefix: u8,
    result: PhantomData<fn() -> R>,
}

impl<R> DedupTable<R> {
    const fn new(record_prefix: u8, index_prefix: u8) -> DedupTable<R> {
        DedupTable {
            record_prefix,
            index_prefix,
            result: PhantomData,
        }
    }
}

impl<R: Serialize + DeserializeOwned> DedupTable<R> {
    /// The first outcome of `request_id`, if its record is still in `tree`.
    pub(super) fn lookup(&self, tree: &TreeRef, request_id: &RequestId) -> Result<Option<R>, StorageError> {
        match tree.get(&request_key(self.record_prefix, request_id))? {
            Some(bytes) => Ok(Some(decode::<DedupRecord<R>>(tree.name(), &bytes)?.result)),
            None => Ok(None),
        }
    }

    /// Records in `batch` the first outcome of `request_id`, issued at `issued_at_ms` and
    /// kept for `window_ms`.
    pub(super) fn record(
        &self,
        batch: &mut Batch,
        request_id: &RequestId,
        issued_at_ms: u64,
        window_ms: u64,
        result: &R,
    ) -> Result<(), StorageError> {
        let expires_at_ms = issued_at_ms.saturating_add(window_ms);
        let record = DedupRecord {
            expires_at_ms,
            result,
        };
        batch.insert(request_key(self.record_prefix, request_id), encode(&record)?);
        batch.insert(
            expiry_key(self.index_prefix, expires_at_ms, request_id),
            Vec::new(),
        );
        Ok(())
    }

    /// Removes in `batch` (at most [`MAX_PRUNE_PER_ENTRY`]) records that expired before
    /// `now_ms`, oldest first, with their index entries.
    pub(super) fn prune(&self, tree: &TreeRef, now_ms: u64, batch: &mut Batch) -> Result<(), StorageError> {
        let (start, end) = prefix_bounds(&[self.index_prefix]);
        for pair in tree.range(start, end).take(MAX_PRUNE_PER_ENTRY) {
            let (key, _) = pair?;
            let Some((expires_at_ms, request_id)) = split_expiry_key(&key) else {
                break;
            };
            if expires_at_ms >= now_ms {
                break;
            }
            if let Some(request_id) = request_id {
                batch.remove(request_key(self.record_prefix, &request_id));
            }
            batch.remove(key);
        }
        Ok(())
    }
}

/// Removes in `batch` the records of both tables that expired before `now_ms` (the clock of
/// the entry being applied).
pub(super) fn prune_expired(tree: &TreeRef, now_ms: u64, batch: &mut Batch) -> Result<(), StorageError> {
    WRITES.prune(tree, now_ms, batch)?;
    DELETE_RANGES.prune(tree, now_ms, batch)
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::*;
    use crate::storage::{self, EngineRef};

    const WINDOW_MS: u64 = 60_000;

    fn tree(dir: &std::path::Path) -> (EngineRef, TreeRef) {
        let engine = storage::open(dir).expect("engine");
        let tree = engine.open_tree("t").expect("tree");
        (engine, tree)
    }

    fn range_result(deleted: u64) -> DeleteRangeResult {
        DeleteRangeResult {
            deleted,
            last_deleted: Some(b"b".to_vec()),
            more: true,
        }
    }

    /// Both record kinds keep the bytes they had on disk before the tables were unified
    /// (expiry 61 000 as a varint, then the outcome's fields in order).
    #[test]
    fn records_keep_their_encoding() {
        let write = DedupRecord {
            expires_at_ms: 61_000,
            result: vec![WriteOpResult {
                succeeded: true,
                version: 3,
                existed: false,
                current: None,
            }],
        };
        assert_eq!(
            encode(&write).expect("encode"),
            vec![0xc8, 0xdc, 0x03, 1, 1, 3, 0, 0]
        );
        let delete_range = DedupRecord {
            expires_at_ms: 61_000,
            result: range_result(2),
        };
        assert_eq!(
            encode(&delete_range).expect("encode"),
            vec![0xc8, 0xdc, 0x03, 2, 1, 1, b'b', 1]
        );
    }

    /// A recorded outcome is found again by its request id, only in its own table, under
    /// the table's prefixes.
    #[test]
    fn recorded_outcomes_are_found_in_their_own_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let mut batch = Batch::default();
        DELETE_RANGES
            .record(&mut batch, &[1; 16], 1_000, WINDOW_MS, &range_result(2))
            .expect("record");
        tree.apply_batch(batch).expect("apply");
        assert_eq!(
            DELETE_RANGES.lookup(&tree, &[1; 16]).expect("lookup"),
            Some(range_result(2))
        );
        assert_eq!(DELETE_RANGES.lookup(&tree, &[2; 16]).expect("lookup"), None);
        assert_eq!(WRITES.lookup(&tree, &[1; 16]).expect("lookup"), None);
        let keys: Vec<Vec<u8>> = tree
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(|pair| pair.map(|(key, _)| key))
            .collect::<Result<_, _>>()
            .expect("range");
        assert_eq!(
            keys,
            vec![
                request_key(RANGE_DEDUP_PREFIX, &[1; 16]),
                expiry_key(RANGE_EXPIRY_PREFIX, 61_000, &[1; 16]),
            ]
        );
    }

    /// Pruning removes records that expired strictly before the entry's clock, oldest first,
    /// at most [`MAX_PRUNE_PER_ENTRY`] per table and entry, and leaves the other table alone.
    #[test]
    fn prune_removes_expired_records_oldest_first_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, tree) = tree(dir.path());
        let mut batch = Batch::default();
        let records = MAX_PRUNE_PER_ENTRY as u64 + 6;
        for issued in 0..records {
            let request_id = [issued as u8; 16];
            WRITES
                .record(&mut batch, &request_id, issued, WINDOW_MS, &Vec::new())
                .expect("record");
        }
        DELETE_RANGES
            .record(&mut batch, &[0; 16], 0, WINDOW_MS, &range_result(1))
            .expect("record");
        tree.apply_batch(batch).expect("apply");

        // Only the record issued at 0 expired before 60_001 (it expires at 60_000).
        let mut batch = Batch::default();
        WRITES.prune(&tree, WINDOW_MS + 1, &mut batch).expect("prune");
        tree.apply_batch(batch).expect("apply");
        assert_eq!(WRITES.lookup(&tree, &[0; 16]).expect("lookup"), None);
        assert!(WRITES.lookup(&tree, &[1; 16]).expect("lookup").is_some());
        assert!(
            DELETE_RANGES.lookup(&tree, &[0; 16]).expect("lookup").is_some(),
            "the other table is untouched"
        );

        // Everything expired: one entry removes at most the bound, the next one the rest.
        let mut batch = Batch::default();
        prune_expired(&tree, u64::MAX, &mut batch).expect("prune");
        tree.apply_batch(batch).expect("apply");
        let left = (0..records)
            .filter(|issued| {
                WRITES
                    .lookup(&tree, &[*issued as u8; 16])
                    .expect("lookup")
                    .is_some()
            })
            .collect::<Vec<_>>();
        assert_eq!(
            left,
            (MAX_PRUNE_PER_ENTRY as u64 + 1..records).collect::<Vec<_>>()
        );
        assert_eq!(DELETE_RANGES.lookup(&tree, &[0; 16]).expect("lookup"), None);
        let mut batch = Batch::default();
        prune_expired(&tree, u64::MAX, &mut batch).expect("prune");
        tree.apply_batch(batch).expect("apply");
        assert_eq!(
            tree.range(Bound::Unbounded, Bound::Unbounded).count(),
            0,
            "records and index entries are gone"
        );
    }
}
