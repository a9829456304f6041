//! Request de-duplication: the first outcome of each request id, remembered by the shard.
//!
//! A client retries a write or a delete-range with the same request id when it does not know
//! whether the first attempt was applied; the state machine must apply it at most once and
//! answer the retry with the first outcome (invariant 5). One mechanism serves both kinds of
//! command: a [`DedupTable`] keeps a record per request id (the command's fingerprint and
//! outcome) in a fixed set of buckets chosen by a hash of the id (`buckets.rs`, which says
//! why). Writes and delete-ranges keep separate tables ([`WRITES`], [`DELETE_RANGES`])
//! because their outcomes differ in type. Each table's count of recorded requests is kept
//! under [`COUNTS_KEY`] and numbers its records.
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
//! moved more than the window past them; and a table never remembers more than
//! `max_records`. A bucket drops what is forgotten whenever it is written, and a lookup
//! ignores what a bucket still holds but the policy let go (`buckets::Horizon`).
//!
//! The shard's de-duplication clock is the highest clock its entries carried (kept with
//! the counts under [`COUNTS_KEY`]; each record holds it as of its entry). An entry's clock
//! is its leader's stamp (`dedup_clock.rs`): the clock its replica had applied when its
//! term began plus the time its *monotonic* clock measured since — never a wall clock. So
//! the shard's clock moves no faster than real time, and a leader whose wall clock jumps or
//! strobes ages no record early: a retry within the window of its first attempt is
//! recognised (as long as the cap allows), and within the last `min_records` requests in
//! any case. Every decision depends only on the entries and the tree, so every replica
//! keeps the same records.
//!
//! Older layouts are still read and drained ("older records", while the caller's flag says
//! the tree may hold any), and no new ones are made:
//! - the previous layout: a record per request id (`v`, `u`) and a request list per entry
//!   (`l`, `h`: the entry's clock and ids), which pruning walks oldest first. Its lists go
//!   once the window has passed them and the requests recorded since in buckets make up
//!   the last `min_records`, or sooner for the cap; [`Counts`] keeps how many records it
//!   still holds;
//! - records written before fingerprints (`w`, `g`: listed in the same request lists,
//!   pruned with them, and taken as matching any command, since nothing tells what they
//!   answered);
//! - records of the legacy layout (`r`/`x`, `q`/`y`: a record per id and an expiry index
//!   keyed by wall-clock expiry, drained by their recorded expiry).

mod buckets;
mod counts;
#[cfg(test)]
mod dedup_tests;
mod older;
mod outcome;

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::fingerprint::Fingerprint;
use super::layout::{
    COUNTS_KEY, RANGE_BUCKET_PREFIX, RANGE_DEDUP_PREFIX, RANGE_EXPIRY_PREFIX, RANGE_LIST_PREFIX,
    RANGE_RECORD_PREFIX, RANGE_UNFINGERPRINTED_PREFIX, WRITE_BUCKET_PREFIX, WRITE_DEDUP_PREFIX,
    WRITE_EXPIRY_PREFIX, WRITE_LIST_PREFIX, WRITE_RECORD_PREFIX, WRITE_UNFINGERPRINTED_PREFIX,
};
use crate::raft::encode;
use crate::raft::types::{DeleteRangeResult, RequestId};
use crate::storage::{Batch, StorageError, TreeRef};
use buckets::{EntryBuckets, Horizon};
#[cfg(test)]
pub(super) use counts::clock_ms;
pub(super) use counts::Counts;
use outcome::recorded_ops;
pub(super) use outcome::{RecordedOp, UnfingerprintedOp};

/// How much a shard remembers. Every replica of a group must use the same policy (the
/// window comes from the node configuration, like every node's `dedup_window_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupPolicy {
    /// Records older than this by the shard's de-duplication clock (its leaders' monotonic
    /// clocks, see the module docs) may be forgotten…
    pub window_ms: u64,
    /// …but the last this many of each table never are, whatever the clocks say…
    pub min_records: u64,
    /// …and a table never remembers more than this many.
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
        bucket: WRITE_BUCKET_PREFIX,
        record: WRITE_RECORD_PREFIX,
        unfingerprinted: WRITE_UNFINGERPRINTED_PREFIX,
        list: WRITE_LIST_PREFIX,
        legacy_record: WRITE_DEDUP_PREFIX,
        legacy_index: WRITE_EXPIRY_PREFIX,
    },
    recorded_ops,
    |counts| counts.writes_recorded,
);

/// The de-duplication table of delete-ranges: the outcome of one chunk.
pub(super) const DELETE_RANGES: DedupTable<DeleteRangeResult, DeleteRangeResult> = DedupTable::new(
    Prefixes {
        bucket: RANGE_BUCKET_PREFIX,
        record: RANGE_RECORD_PREFIX,
        unfingerprinted: RANGE_UNFINGERPRINTED_PREFIX,
        list: RANGE_LIST_PREFIX,
        legacy_record: RANGE_DEDUP_PREFIX,
        legacy_index: RANGE_EXPIRY_PREFIX,
    },
    std::convert::identity,
    |counts| counts.delete_ranges_recorded,
);

/// A record found for a request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found<S> {
    /// `None`: a record of an older format, made before fingerprints.
    fingerprint: Option<Fingerprint>,
    /// The first outcome.
    pub(super) result: S,
}

impl<S> Found<S> {
    /// A record with its fingerprint.
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

/// The key prefixes of a table.
struct Prefixes {
    /// Buckets: this prefix + bucket number (`buckets.rs`).
    bucket: u8,
    /// Records of the previous layout: this prefix + request id.
    record: u8,
    /// Records made before fingerprints: this prefix + request id.
    unfingerprinted: u8,
    /// Request lists of the previous layout: this prefix + log index (big-endian, so
    /// lists sort oldest first).
    list: u8,
    /// Legacy records: this prefix + request id.
    legacy_record: u8,
    /// Legacy expiry index: this prefix + expiry + request id.
    legacy_index: u8,
}

/// The first outcomes (stored as `S`; as `O` in records made before fingerprints) of
/// request ids, under their key prefixes of the tree.
pub(super) struct DedupTable<S, O> {
    prefixes: Prefixes,
    /// Reads an outcome of the older formats as the current one.
    upgrade: fn(O) -> S,
    /// The table's count of recorded requests, of the counts.
    recorded: fn(&Counts) -> u64,
    result: PhantomData<fn() -> (S, O)>,
}

impl<S, O> DedupTable<S, O> {
    const fn new(prefixes: Prefixes, upgrade: fn(O) -> S, recorded: fn(&Counts) -> u64) -> DedupTable<S, O> {
        DedupTable {
            prefixes,
            upgrade,
            recorded,
            result: PhantomData,
        }
    }
}

impl<S: Clone + Serialize + DeserializeOwned, O: DeserializeOwned> DedupTable<S, O> {
    /// The record of `request_id` in `tree` if the table still remembers it, outside any
    /// entry (`counts`: the table's counts and the shard's clock now; `older`: the tree may
    /// still hold records of older formats).
    #[cfg(test)]
    pub(super) fn lookup(
        &self,
        tree: &TreeRef,
        request_id: &RequestId,
        older: bool,
        policy: &DedupPolicy,
        counts: Counts,
    ) -> Result<Option<Found<S>>, StorageError> {
        let horizon = self.horizon(policy, counts);
        if let Some(found) = EntryBuckets::new(self.prefixes.bucket).lookup(tree, request_id, &horizon)? {
            return Ok(Some(found));
        }
        match older {
            true => self.lookup_older(tree, request_id),
            false => Ok(None),
        }
    }
}

/// The key of the write bucket `request_id` is recorded in.
#[cfg(test)]
pub(super) fn write_bucket_key(request_id: &RequestId) -> Vec<u8> {
    buckets::bucket_key(WRITE_BUCKET_PREFIX, buckets::bucket_of(request_id)).to_vec()
}

impl<S, O> DedupTable<S, O> {
    /// What this table keeps as of `counts`.
    fn horizon(&self, policy: &DedupPolicy, counts: Counts) -> Horizon {
        Horizon {
            recorded: (self.recorded)(&counts),
            clock_ms: counts.clock_ms,
            policy: *policy,
        }
    }
}

/// The de-duplication records of one entry: looked up and collected while the entry is
/// applied, then written and pruned by [`EntryRecords::finish`].
pub(super) struct EntryRecords {
    policy: DedupPolicy,
    /// The counts and the shard's clock after the previous entry.
    before: Counts,
    /// The tree may still hold records of older layouts.
    older: bool,
    writes: EntryBuckets<Vec<RecordedOp>>,
    delete_ranges: EntryBuckets<DeleteRangeResult>,
    /// The latest `issued_at_ms` of the entry's commands: the entry's clock.
    entry_clock_ms: u64,
}

/// What [`EntryRecords::finish`] leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Finished {
    /// Whether the tree may still hold records of older layouts.
    pub(super) older_left: bool,
    /// The counts and the shard's de-duplication clock after the entry.
    pub(super) counts: Counts,
}

impl EntryRecords {
    /// The records of an entry applied after `before` (the counts and clock after the
    /// previous entry, kept in memory by the caller: the record under [`COUNTS_KEY`] may
    /// lag, see `apply.rs`). `older`: the tree may still hold records of older layouts.
    pub(super) fn new(policy: DedupPolicy, before: Counts, older: bool) -> EntryRecords {
        EntryRecords {
            policy,
            before,
            older,
            writes: EntryBuckets::new(WRITES.prefixes.bucket),
            delete_ranges: EntryBuckets::new(DELETE_RANGES.prefixes.bucket),
            entry_clock_ms: 0,
        }
    }

    /// The record of the write `request_id` if the shard remembers it from an earlier
    /// entry (the caller remembers the entry's own).
    pub(super) fn lookup_write(
        &mut self,
        tree: &TreeRef,
        request_id: &RequestId,
    ) -> Result<Option<Found<Vec<RecordedOp>>>, StorageError> {
        let horizon = WRITES.horizon(&self.policy, self.before);
        if let Some(found) = self.writes.lookup(tree, request_id, &horizon)? {
            return Ok(Some(found));
        }
        match self.older {
            true => WRITES.lookup_older(tree, request_id),
            false => Ok(None),
        }
    }

    /// The record of the delete-range `request_id` if the shard remembers it.
    pub(super) fn lookup_delete_range(
        &mut self,
        tree: &TreeRef,
        request_id: &RequestId,
    ) -> Result<Option<Found<DeleteRangeResult>>, StorageError> {
        let horizon = DELETE_RANGES.horizon(&self.policy, self.before);
        if let Some(found) = self.delete_ranges.lookup(tree, request_id, &horizon)? {
            return Ok(Some(found));
        }
        match self.older {
            true => DELETE_RANGES.lookup_older(tree, request_id),
            false => Ok(None),
        }
    }

    /// Records the fingerprint and outcome of a write first seen in this entry.
    pub(super) fn record_write(
        &mut self,
        request_id: &RequestId,
        fingerprint: Fingerprint,
        issued_at_ms: u64,
        results: Vec<RecordedOp>,
    ) {
        self.writes.record(request_id, fingerprint, results);
        self.observe_clock(issued_at_ms);
    }

    /// Records the fingerprint and outcome of a delete-range first seen in this entry.
    pub(super) fn record_delete_range(
        &mut self,
        request_id: &RequestId,
        fingerprint: Fingerprint,
        issued_at_ms: u64,
        result: DeleteRangeResult,
    ) {
        self.delete_ranges.record(request_id, fingerprint, result);
        self.observe_clock(issued_at_ms);
    }

    /// Advances the entry's clock (a command that recorded nothing still carries one).
    pub(super) fn observe_clock(&mut self, issued_at_ms: u64) {
        self.entry_clock_ms = self.entry_clock_ms.max(issued_at_ms);
    }

    /// Advances the shard's clock to the entry's, writes the entry's records into their
    /// buckets (dropping what the policy lets go from each bucket written), drains older
    /// layouts while any is left, and updates the counts and clock, all in `batch`. The
    /// entry is at `log_index`.
    pub(super) fn finish(
        self,
        tree: &TreeRef,
        batch: &mut Batch,
        log_index: u64,
    ) -> Result<Finished, StorageError> {
        let policy = self.policy;
        let before = self.before;
        debug_assert!(policy.min_records <= policy.max_records, "{policy:?}");
        // The highest clock any entry carried: a stamp below it (a leader that anchored
        // before it applied its predecessors' last entries) never moves the clock back.
        let clock_ms = before.clock_ms.max(self.entry_clock_ms);
        let mut after = Counts {
            writes_recorded: before.writes_recorded + self.writes.len(),
            delete_ranges_recorded: before.delete_ranges_recorded + self.delete_ranges.len(),
            clock_ms,
            ..before
        };
        self.writes.finish(
            tree,
            batch,
            before.writes_recorded,
            &WRITES.horizon(&policy, after),
        )?;
        self.delete_ranges.finish(
            tree,
            batch,
            before.delete_ranges_recorded,
            &DELETE_RANGES.horizon(&policy, after),
        )?;
        let older_left = self.older && {
            after.writes = WRITES.prune_previous(
                tree,
                batch,
                &policy,
                log_index,
                clock_ms,
                before.writes,
                after.writes_recorded,
            )?;
            after.delete_ranges = DELETE_RANGES.prune_previous(
                tree,
                batch,
                &policy,
                log_index,
                clock_ms,
                before.delete_ranges,
                after.delete_ranges_recorded,
            )?;
            let writes_left = WRITES.prune_older(tree, clock_ms, batch)?;
            let ranges_left = DELETE_RANGES.prune_older(tree, clock_ms, batch)?;
            writes_left || ranges_left
        };
        if after != before {
            batch.insert(COUNTS_KEY.to_vec(), encode(&after)?);
        }
        Ok(Finished {
            older_left,
            counts: after,
        })
    }
}
