//! Plain writes and delete-ranges: what a `Write`/`WriteAt` or `DeleteRange`/`DeleteRangeAt`
//! entry does to the shard (called by `apply.rs`, whose batch and versions they fill).
//!
//! Each command is de-duplicated by its request id and fingerprint (`dedup/`,
//! `fingerprint.rs`, invariant 5): a retry gets the first outcome, a different command
//! reusing a remembered id is refused and applies nothing, a command met by a transaction's
//! lock applies nothing either (neither records anything). A first-seen write applies its ops
//! in order with compare-and-set on versions; a first-seen delete-range deletes the first
//! `limit` keys of its range. A failed comparison reports the key's current version and,
//! from the first application only, its value, within the entry's [`CurrentValueBudget`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::apply::EntryVersions;
use super::dedup::{EntryRecords, Found, RecordedOp};
use super::layout::{data_bounds, user_key};
use super::{expiry, fingerprint, mvcc, txn, GroupState};
use crate::raft::types::{
    CommandResult, Current, CurrentValueBudget, DeleteRangeCommand, DeleteRangeResult, LockedKey, RequestId,
    WriteCommand, WriteOpResult, WriteOutcome,
};
use crate::storage::{Batch, StorageError, TreeRef};

impl GroupState {
    /// Applies the writes of one entry. Writes in one entry see each other's effects. A
    /// request id seen earlier (in this entry or still remembered) returns its first outcome
    /// when the write is a retry (the same fingerprint), and is refused, applying and
    /// recording nothing, when it is a different write reusing the id. The first application
    /// carries its failed comparisons' current values within the entry's
    /// [`CurrentValueBudget`]; a retry carries their versions only.
    pub(super) fn apply_writes(
        &self,
        tree: &TreeRef,
        log_index: u64,
        writes: &[WriteCommand],
        batch: &mut Batch,
        versions: &mut EntryVersions,
    ) -> Result<CommandResult, StorageError> {
        let mut seen: HashMap<RequestId, Found<Vec<RecordedOp>>> = HashMap::new();
        let mut records = self.entry_records();
        let mut budget = CurrentValueBudget::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for write in writes {
            records.observe_clock(write.issued_at_ms);
            let fingerprint = fingerprint::of_write(write);
            let earlier = match seen.get(&write.request_id) {
                Some(found) => Some(found.clone()),
                None => records.lookup_write(tree, &write.request_id)?,
            };
            if let Some(found) = earlier {
                outcomes.push(match found.is_retry_of(&fingerprint) {
                    true => WriteOutcome::Applied(found.result.iter().map(RecordedOp::answer).collect()),
                    false => WriteOutcome::RequestIdReused(write.request_id),
                });
                continue;
            }
            // A transaction's lock keeps every other write off its key.
            let locked = match self.may_have_locks() {
                true => first_lock(tree, write)?,
                false => None,
            };
            if let Some(locked) = locked {
                outcomes.push(WriteOutcome::Locked(locked));
                continue;
            }
            let mut results = apply_write(tree, log_index, write, batch, versions)?;
            budget.spend(&mut results);
            let recorded: Vec<RecordedOp> = results.iter().map(RecordedOp::of).collect();
            records.record_write(
                &write.request_id,
                fingerprint,
                write.issued_at_ms,
                recorded.clone(),
            );
            seen.insert(write.request_id, Found::new(fingerprint, recorded));
            outcomes.push(WriteOutcome::Applied(results));
        }
        self.finish_records(tree, batch, records, log_index)?;
        Ok(CommandResult::Write(outcomes))
    }

    /// The de-duplication records of the entry about to be applied, after the previous
    /// entry's counts and clock.
    fn entry_records(&self) -> EntryRecords {
        let older = self.legacy_dedup.load(Ordering::SeqCst);
        EntryRecords::new(self.dedup, *self.dedup_counts(), older)
    }

    /// Writes and prunes the entry's de-duplication records and advances the shard's
    /// de-duplication clock (see [`super::dedup`]); once no record of an older layout is
    /// left, says so for the next entries.
    fn finish_records(
        &self,
        tree: &TreeRef,
        batch: &mut Batch,
        records: EntryRecords,
        log_index: u64,
    ) -> Result<(), StorageError> {
        let finished = records.finish(tree, batch, log_index)?;
        if !finished.older_left {
            self.legacy_dedup.store(false, Ordering::SeqCst);
        }
        let mut counts = self.dedup_counts();
        // Kept before the batch is written (under the apply lock): an error writing it fails
        // the group's state machine, which is opened again from the tree. A leader anchoring
        // now may take the clock: it is only ever a clock some entry of the log carried.
        *counts = finished.counts;
        self.dedup_clock_ms
            .store(finished.counts.clock_ms, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes the first `limit` keys of the command's range (in key order) in `batch`. A
    /// request id seen within the window deletes nothing: a retry (the same range and
    /// limit) returns its first outcome, a different delete-range reusing the id is refused.
    pub(super) fn apply_delete_range(
        &self,
        tree: &TreeRef,
        log_index: u64,
        command: &DeleteRangeCommand,
        batch: &mut Batch,
        versions: &mut EntryVersions,
    ) -> Result<CommandResult, StorageError> {
        let mut records = self.entry_records();
        records.observe_clock(command.issued_at_ms);
        let fingerprint = fingerprint::of_delete_range(command);
        let result = match records.lookup_delete_range(tree, &command.request_id)? {
            Some(found) if found.is_retry_of(&fingerprint) => found.result,
            // Another delete-range's id: not applied, nothing recorded.
            Some(_) => return Ok(CommandResult::RangeRequestIdReused(command.request_id)),
            None => {
                let locked = match self.may_have_locks() {
                    true => command_range_locked(tree, command)?,
                    false => None,
                };
                if let Some(locked) = locked {
                    // Not applied, nothing recorded: a retry is evaluated afresh.
                    return Ok(CommandResult::RangeLocked(locked));
                }
                let result = delete_first(tree, log_index, command, batch, versions)?;
                records.record_delete_range(
                    &command.request_id,
                    fingerprint,
                    command.issued_at_ms,
                    result.clone(),
                );
                result
            }
        };
        self.finish_records(tree, batch, records, log_index)?;
        Ok(CommandResult::DeleteRange(result))
    }
}

/// The first key of `write` locked by a transaction.
fn first_lock(tree: &TreeRef, write: &WriteCommand) -> Result<Option<LockedKey>, StorageError> {
    for op in &write.ops {
        if let Some(held) = txn::lock(tree, &op.key)? {
            return Ok(Some(held.of(&op.key)));
        }
    }
    Ok(None)
}

/// The first lock in a delete-range's range, with its transaction's start: the whole range
/// waits for it (its chunk may reach the key, and a lock may stand for a key not yet there).
fn command_range_locked(
    tree: &TreeRef,
    command: &DeleteRangeCommand,
) -> Result<Option<LockedKey>, StorageError> {
    txn::first_lock_in(tree, &command.start, command.end.as_deref(), u64::MAX)
}

/// The per-op results of a write seen for the first time; its effects go to `batch`.
fn apply_write(
    tree: &TreeRef,
    log_index: u64,
    write: &WriteCommand,
    batch: &mut Batch,
    versions: &mut EntryVersions,
) -> Result<Vec<WriteOpResult>, StorageError> {
    let mut results = Vec::with_capacity(write.ops.len());
    let commit_ts = versions.commit_ts;
    for op in &write.ops {
        let head = versions.head(tree, &op.key)?;
        // A value expired at the entry's commit timestamp is absent (`raft/expiry.rs`).
        let existed = head.as_ref().is_some_and(|head| head.live_at(commit_ts));
        let current_version = head.as_ref().filter(|_| existed).map_or(0, |head| head.version);
        if op
            .expected_version
            .is_some_and(|expected| expected != current_version)
        {
            results.push(WriteOpResult {
                succeeded: false,
                version: 0,
                existed,
                current: head.filter(|_| existed).map(|head| Current {
                    version: head.version,
                    value: Some(head.value),
                }),
            });
            continue;
        }
        if op.expiry.keeps_value() {
            results.push(expiry::change_expiry(
                batch, versions, &op.key, head, log_index, op.expiry,
            ));
            continue;
        }
        let expires_at = op.value.as_ref().and(op.expiry.instant(commit_ts));
        versions.set_expiring(batch, &op.key, head, log_index, op.value.as_deref(), expires_at);
        results.push(WriteOpResult {
            succeeded: true,
            version: if op.value.is_some() { log_index } else { 0 },
            existed,
            current: None,
        });
    }
    Ok(results)
}

/// Removes in `batch` the first `command.limit` keys of the command's range, in key order.
fn delete_first(
    tree: &TreeRef,
    log_index: u64,
    command: &DeleteRangeCommand,
    batch: &mut Batch,
    versions: &mut EntryVersions,
) -> Result<DeleteRangeResult, StorageError> {
    let mut result = DeleteRangeResult::default();
    let Some((start, end)) = data_bounds(&command.start, command.end.as_deref()) else {
        return Ok(result);
    };
    let limit = u64::from(command.limit);
    let mut last: Option<Vec<u8>> = None;
    for pair in tree.range(start, end) {
        let (key, bytes) = pair?;
        if result.deleted >= limit {
            result.more = true;
            break;
        }
        let user = user_key(tree.name(), &key)?;
        let head = mvcc::decode_head(tree.name(), &bytes)?;
        versions.set(batch, &user, Some(head), log_index, None);
        result.deleted += 1;
        last = Some(user);
    }
    result.last_deleted = last;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::layout::INTENT_KEY;
    use crate::raft::state_machine::test_support::{
        apply_delete_range, delete_range, five_keys, log_id, open, put,
    };
    use crate::raft::state_machine::StateMachine;
    use crate::raft::types::{Command, Entry, WriteOp};

    /// An entry of write commands, each `(request id, ops)`, issued at 1 000 ms.
    fn writes(index: u64, commands: Vec<(u8, Vec<WriteOp>)>) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(
                commands
                    .into_iter()
                    .map(|(request_id, ops)| WriteCommand {
                        request_id: [request_id; 16],
                        issued_at_ms: 1_000,
                        ops,
                    })
                    .collect(),
            )),
        }
    }

    fn op(key: &[u8], value: Option<&[u8]>, expected_version: Option<u64>) -> WriteOp {
        WriteOp {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            expected_version,
            expiry: Default::default(),
        }
    }

    /// The outcomes of an entry of writes.
    async fn write_outcomes(sm: &mut StateMachine, entry: Entry) -> Vec<WriteOutcome> {
        match sm.apply(vec![entry]).await.expect("apply").pop() {
            Some(CommandResult::Write(outcomes)) => outcomes,
            other => panic!("write outcomes expected, got {other:?}"),
        }
    }

    /// A request id used again for a different write (another key, a delete of the same
    /// key, another expected version; in a later entry or the same one) is refused: nothing
    /// is applied or recorded, and a true retry still gets the first outcome.
    #[tokio::test]
    async fn a_request_id_reused_for_another_write_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let first = write_outcomes(&mut sm, writes(3, vec![(1, vec![op(b"k1", Some(b"v"), None)])])).await;
        assert!(first[0].results().is_some_and(|results| results[0].succeeded));
        let reuses = [
            vec![op(b"k2", Some(b"v"), None)],
            vec![op(b"k1", None, None)],
            vec![op(b"k1", Some(b"v"), Some(3))],
            vec![op(b"k1", Some(b"v"), None), op(b"k3", Some(b"v"), None)],
        ];
        for (case, ops) in reuses.into_iter().enumerate() {
            let index = 4 + case as u64;
            let outcomes = write_outcomes(&mut sm, writes(index, vec![(1, ops)])).await;
            assert_eq!(
                outcomes,
                vec![WriteOutcome::RequestIdReused([1; 16])],
                "case {case}"
            );
        }
        for key in [&b"k2"[..], b"k3"] {
            assert_eq!(state.get(key).await.expect("get"), None, "nothing applied");
        }
        let stored = state.get(b"k1").await.expect("get").expect("not deleted");
        assert_eq!((stored.value, stored.version), (b"v".to_vec(), 3));
        let retry = write_outcomes(&mut sm, writes(8, vec![(1, vec![op(b"k1", Some(b"v"), None)])])).await;
        assert_eq!(retry, first, "nothing recorded over the first outcome");

        // Within one entry: a new id applied, then reused for another write.
        let same_entry = write_outcomes(
            &mut sm,
            writes(
                9,
                vec![
                    (2, vec![op(b"k4", Some(b"v"), None)]),
                    (2, vec![op(b"k5", Some(b"v"), None)]),
                    (2, vec![op(b"k4", Some(b"v"), None)]),
                ],
            ),
        )
        .await;
        assert_eq!(same_entry[1], WriteOutcome::RequestIdReused([2; 16]));
        assert_eq!(same_entry[2], same_entry[0], "a retry in the same entry");
        assert_eq!(state.get(b"k5").await.expect("get"), None);
    }

    /// A request id used again for a different delete-range (another range or limit) is
    /// refused and deletes nothing; the same delete-range again gets its first outcome.
    #[tokio::test]
    async fn a_request_id_reused_for_another_delete_range_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state, mut sm) = five_keys(dir.path()).await;
        let first = apply_delete_range(&mut sm, delete_range(6, b"a", Some(b"c"), 10, 20)).await;
        assert_eq!(first.deleted, 2);
        for (case, entry) in [
            delete_range(7, b"c", None, 10, 20),
            delete_range(8, b"a", None, 10, 20),
            delete_range(9, b"a", Some(b"c"), 1, 20),
        ]
        .into_iter()
        .enumerate()
        {
            let results = sm.apply(vec![entry]).await.expect("apply");
            assert_eq!(
                results,
                vec![CommandResult::RangeRequestIdReused([20; 16])],
                "case {case}"
            );
        }
        assert_eq!(state.data_len().expect("len"), 3, "c, d and e are still there");
        let retry = apply_delete_range(&mut sm, delete_range(10, b"a", Some(b"c"), 10, 20)).await;
        assert_eq!(retry, first);
    }

    /// The bytes of every record of the tree besides the data and the intent (which holds
    /// the entry's data too): de-duplication records, lists and counts.
    fn bookkeeping_bytes(tree: &TreeRef) -> usize {
        tree.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .map(|pair| pair.expect("pair"))
            .filter(|(key, _)| !key.starts_with(b"d") && key.as_slice() != INTENT_KEY)
            .map(|(key, value)| key.len() + value.len())
            .sum()
    }

    /// A compare-and-set that fails on a 1 MiB value leaves records of a few dozen bytes:
    /// the de-duplication record keeps the current version, not the value.
    #[tokio::test]
    async fn a_failed_cas_records_a_few_dozen_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let big = vec![7u8; 1 << 20];
        sm.apply(vec![put(3, b"k", &big, 1)]).await.expect("apply");
        let before = bookkeeping_bytes(&state.tree());
        let cas = writes(4, vec![(2, vec![op(b"k", Some(b"new"), Some(2))])]);
        let outcomes = write_outcomes(&mut sm, cas).await;
        let result = &outcomes[0].results().expect("applied")[0];
        assert!(!result.succeeded);
        assert_eq!(result.current.as_ref().map(|current| current.version), Some(3));
        let recorded = bookkeeping_bytes(&state.tree()) - before;
        // The record (key, fingerprint, one op's outcome) and the entry's request list.
        assert!(recorded < 100, "the failed CAS cost {recorded} bytes of records");
    }

    /// The first application of a failed CAS carries the current value; a retry, answered
    /// from the record, carries the version only.
    #[tokio::test]
    async fn a_failed_cas_carries_its_value_only_the_first_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(3, b"k", b"now", 1)]).await.expect("apply");
        let cas = |index: u64| writes(index, vec![(2, vec![op(b"k", Some(b"new"), Some(2))])]);
        let current = |outcomes: &[WriteOutcome]| outcomes[0].results().expect("applied")[0].current.clone();
        let first = write_outcomes(&mut sm, cas(4)).await;
        assert_eq!(
            current(&first),
            Some(Current {
                version: 3,
                value: Some(b"now".to_vec())
            })
        );
        let retry = write_outcomes(&mut sm, cas(5)).await;
        assert_eq!(
            current(&retry),
            Some(Current {
                version: 3,
                value: None
            })
        );
    }

    /// Failed comparisons carry their current values within the entry's budget, in order;
    /// beyond it, versions only (4 MiB: four values of 1 MiB fit, the fifth does not).
    #[tokio::test]
    async fn failed_cas_values_beyond_the_budget_are_versions_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let big = vec![7u8; CurrentValueBudget::BYTES / 4];
        let keys: Vec<Vec<u8>> = (0u8..6).map(|i| vec![b'k', i]).collect();
        let puts = keys.iter().map(|key| op(key, Some(&big), None)).collect();
        sm.apply(vec![writes(3, vec![(1, puts)])]).await.expect("apply");
        // Five failing in one write, the sixth in another write of the same entry.
        let failing = |key: &Vec<u8>| op(key, Some(b"x"), Some(1));
        let entry = writes(
            4,
            vec![
                (2, keys[..5].iter().map(failing).collect()),
                (3, vec![failing(&keys[5])]),
            ],
        );
        let outcomes = write_outcomes(&mut sm, entry).await;
        let carried: Vec<(u64, bool)> = outcomes
            .iter()
            .flat_map(|outcome| outcome.results().expect("applied"))
            .map(|result| {
                let current = result.current.as_ref().expect("a current state");
                (current.version, current.value.is_some())
            })
            .collect();
        assert_eq!(
            carried,
            vec![(3, true), (3, true), (3, true), (3, true), (3, false), (3, false)]
        );
    }
}
