//! Transactions in a shard's state: locks (`k` records) and transaction records (`t`), and
//! how the commands of `raft/txn.rs` change them.
//!
//! - **Prewrite** locks every key it names, or none: a key locked by another transaction, or
//!   (when conflicts are checked) written after the transaction's start, refuses the whole
//!   prewrite. Conflicts are judged by the key's head and, for a key without one (deleted),
//!   by the history in memory; a start below the shard's floor cannot be judged and is
//!   refused too. On the primary key's shard the record is created pending.
//! - **Commit** turns the transaction's locks into heads committed at exactly the commit
//!   timestamp — not lifted above the shard's high-water mark as plain writes are (their
//!   timestamps rise with the log; a transaction's must be the same on every shard). A lock
//!   kept every other write off its key since before the commit timestamp was taken, so no
//!   version of the key is newer. On the primary's shard the record turns committed first:
//!   that entry is the transaction's commit point; a rolled-back record refuses the commit.
//! - **Rollback** removes the locks; on the primary's shard it records the rollback first,
//!   unless the transaction committed, which then stands and nothing is removed.
//! - **Check status** answers the record, rolling back a transaction pending past its expiry
//!   (oracle time, never a clock of this node), or one never prewritten here once
//!   [`MISSING_RECORD_GRACE_MS`] passed since its start. Until then a missing record answers
//!   pending: the coordinator prewrites every shard at once, so a reader may meet a secondary
//!   lock before the primary's prewrite has landed, and must not kill a live transaction.
//!
//! - **Garbage collection** (`TxnGc`, see `raft/txn.rs`) deletes the records of finished
//!   transactions below the safe point the collector names and raises the shard's safe point
//!   (prewrites that started below it are refused from then on). A commit, rollback or status
//!   check of a transaction below the safe point without a record answers "forgotten": its
//!   outcome is no longer known here (never "rolled back", which could contradict a commit
//!   whose record was collected; a lock resolver rolls such a lock back itself).
//!
//! Every command is idempotent: a lock of the transaction already present, a commit or
//! rollback of locks already gone, a record already in the requested state change nothing.

use super::apply::EntryVersions;
use super::layout::{
    lock_bounds, lock_key, txn_record_key, LOCK_PREFIX, TXN_RECORD_PREFIX, TXN_SAFE_POINT_KEY,
};
use super::mvcc;
use super::GroupState;
use crate::raft::txn::{
    Lock, LockedKey, TxnCheckStatus, TxnCommit, TxnConflict, TxnGc, TxnOp, TxnOutcome, TxnPrewrite,
    TxnRollback, TxnStatus,
};
use crate::raft::types::Command;
use crate::raft::{decode, encode};
use crate::storage::{Batch, StorageError, TreeRef};
use std::sync::atomic::Ordering;

/// How long after its start (oracle time) a transaction whose record the primary's shard
/// does not hold still counts as pending: its primary prewrite may be on its way. Twice the
/// router's lock time to live; a transaction is refused as too old after about the history
/// window (10 s by default) anyway.
pub const MISSING_RECORD_GRACE_MS: u64 = 10_000;

/// `key`'s lock, if it has one.
pub(super) fn lock(tree: &TreeRef, key: &[u8]) -> Result<Option<Lock>, StorageError> {
    tree.get(&lock_key(key))?
        .map(|bytes| decode(tree.name(), &bytes))
        .transpose()
}

/// The first key of `[start, end)` (`None` end = no upper bound) locked by a transaction
/// that started at or before `max_start_ts`.
pub(super) fn first_lock_in(
    tree: &TreeRef,
    start: &[u8],
    end: Option<&[u8]>,
    max_start_ts: u64,
) -> Result<Option<LockedKey>, StorageError> {
    let Some((lower, upper)) = lock_bounds(start, end) else {
        return Ok(None);
    };
    for pair in tree.range(lower, upper) {
        let (key, bytes) = pair?;
        let held: Lock = decode(tree.name(), &bytes)?;
        if held.start_ts <= max_start_ts {
            return Ok(Some(held.of(key.get(1..).unwrap_or_default())));
        }
    }
    Ok(None)
}

/// Whether `tree` holds any lock (one seek).
pub(super) fn holds_locks(tree: &TreeRef) -> Result<bool, StorageError> {
    let (start, end) = crate::storage::prefix_bounds(&[LOCK_PREFIX]);
    Ok(tree.range(start, end).next().transpose()?.is_some())
}

/// The record of transaction `start_ts`, if this shard holds one.
pub(super) fn record(tree: &TreeRef, start_ts: u64) -> Result<Option<TxnStatus>, StorageError> {
    tree.get(&txn_record_key(start_ts))?
        .map(|bytes| decode(tree.name(), &bytes))
        .transpose()
}

/// The shard's transaction safe point (0: none yet).
pub(super) fn safe_point(tree: &TreeRef) -> Result<u64, StorageError> {
    match tree.get(TXN_SAFE_POINT_KEY)? {
        Some(bytes) => match bytes.first_chunk::<8>() {
            Some(bytes) => Ok(u64::from_be_bytes(*bytes)),
            None => Err(StorageError::Corrupt {
                tree: tree.name().to_string(),
                detail: "transaction safe point shorter than 8 bytes".to_string(),
            }),
        },
        None => Ok(0),
    }
}

/// Up to `limit` keys of records that a collection at `safe_point` deletes — transactions
/// that started below it and rolled back, or committed below it (a pending one, or one
/// committed at or above it, stays) — and whether more exist.
pub(super) fn collectable_below(
    tree: &TreeRef,
    safe_point: u64,
    limit: usize,
) -> Result<(Vec<Vec<u8>>, bool), StorageError> {
    let start = std::ops::Bound::Included(vec![TXN_RECORD_PREFIX]);
    let end = std::ops::Bound::Excluded(txn_record_key(safe_point));
    let mut keys = Vec::new();
    for pair in tree.range(start, end) {
        let (key, bytes) = pair?;
        let collectable = match decode(tree.name(), &bytes)? {
            TxnStatus::RolledBack => true,
            TxnStatus::Committed { commit_ts } => commit_ts < safe_point,
            TxnStatus::Pending { .. } => false,
        };
        if collectable {
            if keys.len() >= limit {
                return Ok((keys, true));
            }
            keys.push(key);
        }
    }
    Ok((keys, false))
}

/// The value `op` leaves on a key whose head is `head` when it commits (`None`: absent).
pub(super) fn committed_value(op: TxnOp, head: Option<&mvcc::Head>) -> Option<Vec<u8>> {
    match op {
        TxnOp::Put(value) => Some(value),
        TxnOp::Delete => None,
        TxnOp::Append(suffix) => {
            let mut value = head.map(|head| head.value.clone()).unwrap_or_default();
            value.extend_from_slice(&suffix);
            Some(value)
        }
    }
}

/// Whether a transaction may write a key.
pub(super) enum KeyCheck {
    Free,
    /// Locked by the transaction itself (a retried prewrite).
    OwnLock,
    Conflict(TxnConflict),
}

/// Whether transaction `start_ts` may write `key`: not while another transaction locks it,
/// and (with `check_conflicts`: first committer wins) not once it was written after
/// `start_ts` — judged by the head, or for a key without one (deleted) by the history, which
/// must reach back to `start_ts`.
pub(super) fn check_write(
    tree: &TreeRef,
    history: &mvcc::History,
    key: &[u8],
    start_ts: u64,
    check_conflicts: bool,
) -> Result<KeyCheck, StorageError> {
    match lock(tree, key)? {
        Some(held) if held.start_ts == start_ts => return Ok(KeyCheck::OwnLock),
        Some(held) => {
            return Ok(KeyCheck::Conflict(TxnConflict::Locked {
                key: key.to_vec(),
                start_ts: held.start_ts,
                primary: held.primary,
            }))
        }
        None => {}
    }
    if !check_conflicts {
        return Ok(KeyCheck::Free);
    }
    let changed = match mvcc::head(tree, key)? {
        Some(head) => Ok((head.commit_ts > start_ts).then_some(head.commit_ts)),
        None => history.superseded_after(key, start_ts),
    };
    Ok(match changed {
        Ok(None) => KeyCheck::Free,
        Ok(Some(commit_ts)) => KeyCheck::Conflict(TxnConflict::WriteConflict {
            key: key.to_vec(),
            commit_ts,
        }),
        Err(below) => KeyCheck::Conflict(TxnConflict::TooOld {
            key: key.to_vec(),
            floor: below.floor,
        }),
    })
}

/// Without a record: `Forgotten` when the transaction started below the safe point (its
/// record may have been collected), else `None` (it was never prewritten here).
fn forgotten(tree: &TreeRef, start_ts: u64) -> Result<Option<TxnOutcome>, StorageError> {
    let safe_point = safe_point(tree)?;
    Ok((start_ts < safe_point).then_some(TxnOutcome::Forgotten { safe_point }))
}

pub(super) fn set_record(batch: &mut Batch, start_ts: u64, status: TxnStatus) -> Result<(), StorageError> {
    batch.insert(txn_record_key(start_ts), encode(&status)?);
    Ok(())
}

impl GroupState {
    /// Whether the state may hold locks: when false, no key is locked (the lock lookups of
    /// plain reads and writes are skipped).
    pub(super) fn may_have_locks(&self) -> bool {
        self.may_have_locks.load(Ordering::SeqCst)
    }

    /// After a commit, rollback or status check is written: whether any lock is left.
    pub(super) fn recount_locks(&self, tree: &TreeRef) -> Result<(), StorageError> {
        self.may_have_locks.store(holds_locks(tree)?, Ordering::SeqCst);
        Ok(())
    }

    /// Applies a transaction command; the versions it committed, if any.
    pub(super) fn apply_txn(
        &self,
        tree: &TreeRef,
        log_index: u64,
        command: &Command,
        batch: &mut Batch,
    ) -> Result<(TxnOutcome, Option<EntryVersions>), StorageError> {
        Ok(match command {
            Command::TxnPrewrite(prewrite) => (self.apply_prewrite(tree, prewrite, batch)?, None),
            Command::TxnCommit(commit) => self.apply_commit(tree, log_index, commit, batch)?,
            Command::TxnRollback(rollback) => (self.apply_rollback(tree, rollback, batch)?, None),
            Command::TxnCheckStatus(check) => (self.apply_check_status(tree, check, batch)?, None),
            Command::TxnGc(gc) => (self.apply_gc(tree, gc, batch)?, None),
            Command::TxnOnePc(one) => self.apply_one_pc(tree, log_index, one, batch)?,
            other => {
                return Err(StorageError::Corrupt {
                    tree: tree.name().to_string(),
                    detail: format!("{other} is not a transaction command"),
                })
            }
        })
    }

    /// Applies a prewrite: every key locked, or nothing written and the conflicts answered.
    pub(super) fn apply_prewrite(
        &self,
        tree: &TreeRef,
        prewrite: &TxnPrewrite,
        batch: &mut Batch,
    ) -> Result<TxnOutcome, StorageError> {
        let start_ts = prewrite.start_ts;
        let existing = match prewrite.expires_ts {
            Some(_) => record(tree, start_ts)?,
            None => None,
        };
        if let Some(finished @ (TxnStatus::Committed { .. } | TxnStatus::RolledBack)) = existing {
            return Ok(TxnOutcome::Conflicts(vec![TxnConflict::Finished(finished)]));
        }
        let safe_point = safe_point(tree)?;
        if start_ts < safe_point {
            // Collected below: a lock now could outlive the record it depends on.
            let key = prewrite.mutations.first().map(|mutation| mutation.key.clone());
            return Ok(TxnOutcome::Conflicts(vec![TxnConflict::TooOld {
                key: key.unwrap_or_default(),
                floor: safe_point,
            }]));
        }
        let history = self.history();
        let mut conflicts = Vec::new();
        let mut locks = Vec::with_capacity(prewrite.mutations.len());
        for mutation in &prewrite.mutations {
            let key = &mutation.key;
            match check_write(tree, &history, key, start_ts, prewrite.check_conflicts)? {
                // Prewritten before: a retry.
                KeyCheck::OwnLock => continue,
                KeyCheck::Conflict(conflict) => {
                    conflicts.push(conflict);
                    continue;
                }
                KeyCheck::Free => {}
            }
            let lock = Lock {
                start_ts,
                primary: prewrite.primary.clone(),
                op: mutation.op.clone(),
            };
            locks.push((lock_key(key), encode(&lock)?));
        }
        if !conflicts.is_empty() {
            return Ok(TxnOutcome::Conflicts(conflicts));
        }
        // Set before the locks are written: a reader that sees it clear saw no lock.
        self.may_have_locks.store(true, Ordering::SeqCst);
        for (key, lock) in locks {
            batch.insert(key, lock);
        }
        if let (Some(expires_ts), None) = (prewrite.expires_ts, existing) {
            set_record(batch, start_ts, TxnStatus::Pending { expires_ts })?;
        }
        Ok(TxnOutcome::Prewritten)
    }

    /// Applies a commit. Returns the transaction's status and, when it commits locks here,
    /// the entry's versions (at exactly the commit timestamp).
    pub(super) fn apply_commit(
        &self,
        tree: &TreeRef,
        log_index: u64,
        commit: &TxnCommit,
        batch: &mut Batch,
    ) -> Result<(TxnOutcome, Option<EntryVersions>), StorageError> {
        let mut commit_ts = commit.commit_ts;
        if commit.primary {
            match record(tree, commit.start_ts)? {
                Some(TxnStatus::Pending { .. }) => {
                    set_record(batch, commit.start_ts, TxnStatus::Committed { commit_ts })?;
                }
                // A retry: the first commit timestamp stands; commit what is left at it.
                Some(TxnStatus::Committed { commit_ts: first }) => commit_ts = first,
                Some(TxnStatus::RolledBack) => {
                    return Ok((TxnOutcome::Status(TxnStatus::RolledBack), None));
                }
                None => {
                    if let Some(forgotten) = forgotten(tree, commit.start_ts)? {
                        return Ok((forgotten, None));
                    }
                    // Never prewritten here: it never can be now.
                    set_record(batch, commit.start_ts, TxnStatus::RolledBack)?;
                    return Ok((TxnOutcome::Status(TxnStatus::RolledBack), None));
                }
            }
        }
        let mut versions = EntryVersions::exact(commit_ts);
        for key in &commit.keys {
            let Some(held) = lock(tree, key)?.filter(|held| held.start_ts == commit.start_ts) else {
                // Committed or rolled back before.
                continue;
            };
            let head = versions.head(tree, key)?;
            // An expired value is absent to the commit (an append starts from empty).
            let value = committed_value(held.op, head.as_ref().filter(|head| head.live_at(commit_ts)));
            versions.set(batch, key, head, log_index, value.as_deref());
            batch.remove(lock_key(key));
        }
        Ok((
            TxnOutcome::Status(TxnStatus::Committed { commit_ts }),
            Some(versions),
        ))
    }

    /// Applies a rollback: the record (on the primary's shard) says rolled back unless the
    /// transaction committed, then the transaction's locks on the keys are removed.
    pub(super) fn apply_rollback(
        &self,
        tree: &TreeRef,
        rollback: &TxnRollback,
        batch: &mut Batch,
    ) -> Result<TxnOutcome, StorageError> {
        if rollback.primary {
            match record(tree, rollback.start_ts)? {
                Some(committed @ TxnStatus::Committed { .. }) => return Ok(TxnOutcome::Status(committed)),
                Some(TxnStatus::RolledBack) => {}
                Some(TxnStatus::Pending { .. }) => {
                    set_record(batch, rollback.start_ts, TxnStatus::RolledBack)?;
                }
                None => {
                    if let Some(forgotten) = forgotten(tree, rollback.start_ts)? {
                        return Ok(forgotten);
                    }
                    set_record(batch, rollback.start_ts, TxnStatus::RolledBack)?;
                }
            }
        }
        for key in &rollback.keys {
            if lock(tree, key)?.is_some_and(|held| held.start_ts == rollback.start_ts) {
                batch.remove(lock_key(key));
            }
        }
        Ok(TxnOutcome::Status(TxnStatus::RolledBack))
    }

    /// Applies a status check on the primary's shard: the record, after rolling back a
    /// transaction pending past its expiry, or never prewritten and older than
    /// [`MISSING_RECORD_GRACE_MS`] (its primary lock goes too).
    pub(super) fn apply_check_status(
        &self,
        tree: &TreeRef,
        check: &TxnCheckStatus,
        batch: &mut Batch,
    ) -> Result<TxnOutcome, StorageError> {
        match record(tree, check.start_ts)? {
            Some(TxnStatus::Pending { expires_ts }) if expires_ts < check.now_ts => {}
            Some(status) => return Ok(TxnOutcome::Status(status)),
            None => {
                if let Some(forgotten) = forgotten(tree, check.start_ts)? {
                    return Ok(forgotten);
                }
                let grace_ends = check
                    .start_ts
                    .saturating_add(MISSING_RECORD_GRACE_MS << mvcc::LOGICAL_BITS);
                if check.now_ts <= grace_ends {
                    return Ok(TxnOutcome::Status(TxnStatus::Pending {
                        expires_ts: grace_ends,
                    }));
                }
            }
        }
        let rollback = TxnRollback {
            start_ts: check.start_ts,
            keys: vec![check.primary.clone()],
            primary: true,
        };
        self.apply_rollback(tree, &rollback, batch)
    }
}

impl GroupState {
    /// Transaction `start_ts`'s outcome when its record here is final (committed or rolled
    /// back), read from the applied state: a final record never changes (it is only deleted,
    /// below the safe point, after every lock was resolved), so a status check that finds
    /// one needs no entry.
    pub fn final_txn_status(&self, start_ts: u64) -> Result<Option<TxnStatus>, StorageError> {
        Ok(record(&self.tree(), start_ts)?.filter(|status| !matches!(status, TxnStatus::Pending { .. })))
    }

    /// Applies a garbage collection: deletes up to `purge_limit` collectable records below
    /// `gc.safe_point` (see [`collectable_below`]) and raises the safe point.
    pub(super) fn apply_gc(
        &self,
        tree: &TreeRef,
        gc: &TxnGc,
        batch: &mut Batch,
    ) -> Result<TxnOutcome, StorageError> {
        let current = safe_point(tree)?;
        let raised = current.max(gc.safe_point);
        if raised != current {
            batch.insert(TXN_SAFE_POINT_KEY.to_vec(), raised.to_be_bytes().to_vec());
        }
        let (keys, more) = collectable_below(tree, gc.safe_point, gc.purge_limit as usize)?;
        let purged = keys.len() as u64;
        for key in keys {
            batch.remove(key);
        }
        Ok(TxnOutcome::Collected {
            safe_point: raised,
            purged,
            more,
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::test_support::{log_id, open, prewrite, put};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::txn::TxnMutation;
    use crate::raft::types::{Command, CommandResult, Entry};

    async fn apply(sm: &mut StateMachine, index: u64, command: Command) -> TxnOutcome {
        crate::raft::state_machine::test_support::apply_txn(sm, index, command).await
    }

    fn commit(start_ts: u64, commit_ts: u64, keys: &[&[u8]], primary: bool) -> Command {
        Command::TxnCommit(TxnCommit {
            start_ts,
            commit_ts,
            keys: keys.iter().map(|key| key.to_vec()).collect(),
            primary,
        })
    }

    /// Read uncommitted sees what a prewritten transaction would leave (a put's value, a
    /// delete's absence, an append on the committed value) at version 0, while every other
    /// read still sees the committed values.
    #[tokio::test]
    async fn uncommitted_reads_see_provisional_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![
            put(1, b"a", b"old", 1),
            put(2, b"b", b"gone", 2),
            put(3, b"c", b"x", 3),
        ])
        .await
        .expect("put");
        let mut prewrite = prewrite(500, &[(b"a", Some(b"new")), (b"b", None)], Some(10_000));
        if let Command::TxnPrewrite(request) = &mut prewrite {
            request.mutations.push(TxnMutation {
                key: b"c".to_vec(),
                op: TxnOp::Append(b"y".to_vec()),
            });
        }
        assert_eq!(apply(&mut sm, 4, prewrite).await, TxnOutcome::Prewritten);
        let keys = [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()];
        let dirty = state.get_many_uncommitted(&keys).await.expect("read");
        let dirty: Vec<Option<(u64, Vec<u8>)>> = dirty
            .into_iter()
            .map(|v| v.map(|v| (v.version, v.value)))
            .collect();
        assert_eq!(
            dirty,
            vec![Some((0, b"new".to_vec())), None, Some((0, b"xy".to_vec())), None]
        );
        let committed = state.get_many(&keys).await.expect("read");
        let committed: Vec<Option<Vec<u8>>> = committed.into_iter().map(|v| v.map(|v| v.value)).collect();
        assert_eq!(
            committed,
            vec![
                Some(b"old".to_vec()),
                Some(b"gone".to_vec()),
                Some(b"x".to_vec()),
                None
            ]
        );
    }

    /// A read-uncommitted scan merges the locks of the range into its heads, in either
    /// direction, with the page limit counting what it shows.
    #[tokio::test]
    async fn uncommitted_scans_merge_locks_into_the_range() {
        use crate::raft::state_machine::test_support::scan_options;
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![
            put(1, b"a", b"1", 1),
            put(2, b"b", b"2", 2),
            put(3, b"c", b"3", 3),
        ])
        .await
        .expect("put");
        let mut prewrite = prewrite(500, &[(b"b", None), (b"bb", Some(b"new"))], Some(10_000));
        if let Command::TxnPrewrite(request) = &mut prewrite {
            request.mutations.push(TxnMutation {
                key: b"c".to_vec(),
                op: TxnOp::Append(b"+".to_vec()),
            });
        }
        assert_eq!(apply(&mut sm, 4, prewrite).await, TxnOutcome::Prewritten);
        let shown = |page: crate::raft::state_machine::ScanPage| -> Vec<(Vec<u8>, u64, Vec<u8>)> {
            page.entries
                .into_iter()
                .map(|(key, versioned)| (key, versioned.version, versioned.value))
                .collect()
        };
        let all = state
            .scan_uncommitted(scan_options(b"", None, 10))
            .await
            .expect("scan");
        assert_eq!(
            shown(all),
            vec![
                (b"a".to_vec(), 1, b"1".to_vec()),
                (b"bb".to_vec(), 0, b"new".to_vec()),
                (b"c".to_vec(), 0, b"3+".to_vec()),
            ]
        );
        let mut reverse = scan_options(b"", None, 2);
        reverse.reverse = true;
        let page = state.scan_uncommitted(reverse).await.expect("scan");
        assert!(page.more);
        let keys: Vec<Vec<u8>> = page.entries.into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, vec![b"c".to_vec(), b"bb".to_vec()]);
        let page = state
            .scan_uncommitted(scan_options(b"b", Some(b"c"), 10))
            .await
            .expect("scan");
        assert_eq!(
            shown(page),
            vec![(b"bb".to_vec(), 0, b"new".to_vec())],
            "b is deleted"
        );
    }

    /// A read-uncommitted scan resumed after every record (holds of one record) reads what
    /// one hold reads: heads and locks merged from the cursor on, in both directions.
    #[tokio::test]
    async fn uncommitted_scans_resume_between_holds() {
        use crate::raft::state_machine::holds::HoldBudget;
        use crate::raft::state_machine::test_support::scan_options;
        use crate::raft::state_machine::txn_read::ScanUncommitted;
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let puts: Vec<_> = (0..6u8)
            .map(|i| put(u64::from(i) + 1, &[b'a' + i], b"1", i))
            .collect();
        sm.apply(puts).await.expect("put");
        let writes: [(&[u8], Option<&[u8]>); 4] = [
            (b"b", None),
            (b"bb", Some(b"new")),
            (b"d", Some(b"x")),
            (b"z", Some(b"y")),
        ];
        assert_eq!(
            apply(&mut sm, 7, prewrite(500, &writes, Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let tiny = HoldBudget {
            records: 1,
            bytes: usize::MAX,
        };
        for reverse in [false, true] {
            for limit in [1, 2, 5, 100] {
                let options = crate::raft::state_machine::ScanOptions {
                    reverse,
                    ..scan_options(b"", None, limit)
                };
                let whole = state.scan_uncommitted(options.clone()).await.expect("scan");
                let held = state
                    .read_in_holds_with(ScanUncommitted::new(&options, true), tiny, || {
                        std::future::ready(())
                    })
                    .await
                    .expect("scan")
                    .expect("latest");
                assert_eq!(held, whole, "reverse {reverse}, limit {limit}");
            }
        }
        let all = state
            .scan_uncommitted(scan_options(b"", None, 100))
            .await
            .expect("scan");
        assert_eq!(all.entries.len(), 7, "a, bb, c, d, e, f, z: b is deleted");
    }

    /// Garbage collection deletes the records of rolled-back transactions and of those
    /// committed below the safe point, keeps pending ones and later commits; below the safe
    /// point a transaction without a record is forgotten (never reported rolled back) and a
    /// prewrite is refused.
    #[tokio::test]
    async fn collection_forgets_finished_transactions_below_the_safe_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let tree = state.tree();
        assert_eq!(
            apply(&mut sm, 1, prewrite(500, &[(b"a", Some(b"1"))], Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        assert_eq!(
            apply(&mut sm, 2, commit(500, 900, &[b"a"], true)).await,
            COMMITTED_AT_900
        );
        assert_eq!(
            apply(&mut sm, 3, prewrite(600, &[(b"b", Some(b"1"))], Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let rollback = Command::TxnRollback(TxnRollback {
            start_ts: 600,
            keys: vec![b"b".to_vec()],
            primary: true,
        });
        assert_eq!(
            apply(&mut sm, 4, rollback).await,
            TxnOutcome::Status(TxnStatus::RolledBack)
        );
        assert_eq!(
            apply(&mut sm, 5, prewrite(700, &[(b"c", Some(b"1"))], Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let gc = |safe_point: u64| {
            Command::TxnGc(TxnGc {
                safe_point,
                purge_limit: 10,
            })
        };
        assert_eq!(
            apply(&mut sm, 6, gc(800)).await,
            TxnOutcome::Collected {
                safe_point: 800,
                purged: 1,
                more: false
            },
            "the rollback goes; the commit at 900 and the pending transaction stay"
        );
        assert_eq!(record(&tree, 600).expect("record"), None);
        assert!(record(&tree, 500).expect("record").is_some());
        assert_eq!(
            apply(&mut sm, 7, gc(1_000)).await,
            TxnOutcome::Collected {
                safe_point: 1_000,
                purged: 1,
                more: false
            }
        );
        assert_eq!(record(&tree, 500).expect("record"), None);
        assert_eq!(
            record(&tree, 700).expect("record"),
            Some(TxnStatus::Pending { expires_ts: 10_000 })
        );
        assert_eq!(
            apply(&mut sm, 8, gc(800)).await,
            TxnOutcome::Collected {
                safe_point: 1_000,
                purged: 0,
                more: false
            },
            "never lowered"
        );
        let forgotten = TxnOutcome::Forgotten { safe_point: 1_000 };
        let check = |start_ts: u64, now_ts: u64| {
            Command::TxnCheckStatus(TxnCheckStatus {
                start_ts,
                primary: b"a".to_vec(),
                now_ts,
            })
        };
        assert_eq!(
            apply(&mut sm, 9, check(500, 20_000)).await,
            forgotten,
            "committed, then collected"
        );
        assert_eq!(
            apply(&mut sm, 10, commit(600, 950, &[b"b"], true)).await,
            forgotten
        );
        assert_eq!(
            record(&tree, 600).expect("record"),
            None,
            "nothing recorded for a forgotten one"
        );
        assert!(matches!(
            apply(&mut sm, 11, prewrite(650, &[(b"d", Some(b"1"))], Some(30_000))).await,
            TxnOutcome::Conflicts(conflicts) if matches!(conflicts[..], [TxnConflict::TooOld { floor: 1_000, .. }])
        ));
        // Above the safe point, an unknown transaction is still pending within its grace and
        // rolled back after it, as before.
        let grace_ends = 1_500 + (MISSING_RECORD_GRACE_MS << mvcc::LOGICAL_BITS);
        assert_eq!(
            apply(&mut sm, 12, check(1_500, grace_ends)).await,
            TxnOutcome::Status(TxnStatus::Pending {
                expires_ts: grace_ends
            })
        );
        assert_eq!(
            apply(&mut sm, 13, check(1_500, grace_ends + 1)).await,
            TxnOutcome::Status(TxnStatus::RolledBack)
        );
    }

    const COMMITTED_AT_900: TxnOutcome = TxnOutcome::Status(TxnStatus::Committed { commit_ts: 900 });

    /// Prewrite locks without changing what reads see; the primary's commit is the commit
    /// point and lands the values at exactly the commit timestamp (below the shard's
    /// high-water mark too); a retried commit keeps the first timestamp.
    #[tokio::test]
    async fn prewrite_then_commit_lands_at_the_commit_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(1, b"a", b"old", 1)]).await.expect("put");
        let writes: [(&[u8], Option<&[u8]>); 2] = [(b"a", Some(b"new")), (b"b", Some(b"fresh"))];
        assert_eq!(
            apply(&mut sm, 2, prewrite(500, &writes, Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        assert_eq!(
            apply(&mut sm, 3, prewrite(500, &writes, Some(10_000))).await,
            TxnOutcome::Prewritten,
            "a retried prewrite"
        );
        let tree = state.tree();
        assert_eq!(lock(&tree, b"a").expect("lock").map(|l| l.start_ts), Some(500));
        assert_eq!(
            record(&tree, 500).expect("record"),
            Some(TxnStatus::Pending { expires_ts: 10_000 })
        );
        assert_eq!(
            state.get(b"a").await.expect("get").map(|v| v.value),
            Some(b"old".to_vec())
        );
        assert_eq!(state.get(b"b").await.expect("get"), None);
        // Another shard's plain write raised this shard's high-water mark above 900.
        sm.apply(vec![Entry {
            log_id: log_id(2, 4),
            payload: EntryPayload::Normal(Command::WriteAt(crate::raft::types::TimedWrites {
                commit_ts: 1_000,
                writes: Vec::new(),
            })),
        }])
        .await
        .expect("write");
        assert_eq!(
            apply(&mut sm, 5, commit(500, 900, &[b"a", b"b"], true)).await,
            COMMITTED_AT_900
        );
        assert_eq!(lock(&tree, b"a").expect("lock"), None);
        let at = |ts: u64| {
            let state = state.clone();
            async move {
                let values = state
                    .get_many_at(&[b"a".to_vec(), b"b".to_vec()], ts)
                    .await
                    .expect("read")
                    .expect("within the history");
                values
                    .into_iter()
                    .map(|v| v.map(|v| (v.version, v.value)))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(at(899).await, vec![Some((1, b"old".to_vec())), None]);
        assert_eq!(
            at(900).await,
            vec![Some((5, b"new".to_vec())), Some((5, b"fresh".to_vec()))]
        );
        assert_eq!(state.history_span().0, 0);
        // A retry at another timestamp keeps the first.
        assert_eq!(
            apply(&mut sm, 6, commit(500, 950, &[b"a", b"b"], true)).await,
            COMMITTED_AT_900
        );
        assert_eq!(at(2_000).await[0], Some((5, b"new".to_vec())));
    }

    /// A commit followed by entries that write no version (a prewrite, a rollback): after a
    /// reopen or a snapshot install the shard's history floor is still the commit's
    /// timestamp, so a read below it is refused as too old instead of answered "absent" (a
    /// repeatable-read transaction once saw a bank account vanish that way).
    #[tokio::test]
    async fn the_floor_survives_entries_without_versions() {
        use openraft::RaftSnapshotBuilder;
        use std::sync::Arc;

        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let writes: [(&[u8], Option<&[u8]>); 1] = [(b"k", Some(b"first"))];
        apply(&mut sm, 1, prewrite(100, &writes, Some(10_000))).await;
        apply(&mut sm, 2, commit(100, 110, &[b"k"], true)).await;
        let writes: [(&[u8], Option<&[u8]>); 1] = [(b"k", Some(b"second"))];
        apply(&mut sm, 3, prewrite(200, &writes, Some(10_000))).await;
        apply(&mut sm, 4, commit(200, 210, &[b"k"], true)).await;
        let other: [(&[u8], Option<&[u8]>); 1] = [(b"other", Some(b"x"))];
        assert_eq!(
            apply(&mut sm, 5, prewrite(300, &other, Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let read_at = |state: Arc<GroupState>, ts: u64| async move {
            state
                .get_many_at(&[b"k".to_vec()], ts)
                .await
                .expect("read")
                .map(|values| values[0].as_ref().map(|v| v.value.clone()))
        };
        assert_eq!(read_at(state.clone(), 150).await, Ok(Some(b"first".to_vec())));
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        drop((sm, state));
        engine.flush().expect("flush");
        drop(engine);

        let (_engine, reopened) = open(dir.path());
        assert_eq!(
            read_at(reopened.clone(), 150).await,
            Err(mvcc::BelowFloor { floor: 210 }),
            "reopened"
        );
        assert_eq!(read_at(reopened, 210).await, Ok(Some(b"second".to_vec())));

        let elsewhere = tempfile::tempdir().expect("tempdir");
        let (_engine, fresh) = open(elsewhere.path());
        let mut installer = StateMachine::new(fresh.clone());
        installer
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .expect("install");
        assert_eq!(
            read_at(fresh, 150).await,
            Err(mvcc::BelowFloor { floor: 210 }),
            "installed"
        );
    }

    /// A key locked by another transaction or written after the start refuses the whole
    /// prewrite; read committed (no conflict check) takes the newer write.
    #[tokio::test]
    async fn conflicts_refuse_the_whole_prewrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![Entry {
            log_id: log_id(2, 1),
            payload: EntryPayload::Normal(Command::WriteAt(crate::raft::types::TimedWrites {
                commit_ts: 300,
                writes: vec![crate::raft::types::WriteCommand {
                    request_id: [1; 16],
                    issued_at_ms: 1_000,
                    ops: vec![crate::raft::types::WriteOp {
                        key: b"w".to_vec(),
                        value: Some(b"at 300".to_vec()),
                        expected_version: None,
                        expiry: Default::default(),
                    }],
                }],
            })),
        }])
        .await
        .expect("write");
        assert_eq!(
            apply(&mut sm, 2, prewrite(100, &[(b"l", Some(b"x"))], Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let outcome = apply(
            &mut sm,
            3,
            prewrite(
                200,
                &[(b"free", Some(b"y")), (b"l", Some(b"y")), (b"w", None)],
                None,
            ),
        )
        .await;
        assert_eq!(
            outcome,
            TxnOutcome::Conflicts(vec![
                TxnConflict::Locked {
                    key: b"l".to_vec(),
                    start_ts: 100,
                    primary: b"l".to_vec(),
                },
                TxnConflict::WriteConflict {
                    key: b"w".to_vec(),
                    commit_ts: 300,
                },
            ])
        );
        let tree = state.tree();
        assert_eq!(lock(&tree, b"free").expect("lock"), None, "nothing was written");
        // Without the conflict check (read committed), the newer write does not matter.
        let mut read_committed = prewrite(200, &[(b"w", None)], None);
        if let Command::TxnPrewrite(prewrite) = &mut read_committed {
            prewrite.check_conflicts = false;
        }
        assert_eq!(apply(&mut sm, 4, read_committed).await, TxnOutcome::Prewritten);
        // The delete commits at 400: the key is gone then, not before.
        assert_eq!(
            apply(&mut sm, 5, commit(200, 400, &[b"w"], false)).await,
            TxnOutcome::Status(TxnStatus::Committed { commit_ts: 400 })
        );
        assert_eq!(state.get(b"w").await.expect("get"), None);
        // A later transaction started before the delete conflicts with it (the history
        // knows; there is no head).
        assert_eq!(
            apply(&mut sm, 6, prewrite(350, &[(b"w", Some(b"z"))], None)).await,
            TxnOutcome::Conflicts(vec![TxnConflict::WriteConflict {
                key: b"w".to_vec(),
                commit_ts: 400,
            }])
        );
    }

    /// A rollback wins over a later commit and prewrite; a commit wins over a later
    /// rollback; a status check rolls back only past the expiry, or a transaction the
    /// primary's shard never saw.
    #[tokio::test]
    async fn the_record_decides_between_commit_and_rollback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let check = |start_ts: u64, now_ts: u64| {
            Command::TxnCheckStatus(TxnCheckStatus {
                start_ts,
                primary: b"p".to_vec(),
                now_ts,
            })
        };
        assert_eq!(
            apply(&mut sm, 1, prewrite(100, &[(b"p", Some(b"1"))], Some(5_000))).await,
            TxnOutcome::Prewritten
        );
        assert_eq!(
            apply(&mut sm, 2, check(100, 4_000)).await,
            TxnOutcome::Status(TxnStatus::Pending { expires_ts: 5_000 })
        );
        assert_eq!(
            state.final_txn_status(100).expect("read"),
            None,
            "pending is not final"
        );
        assert_eq!(
            apply(&mut sm, 3, check(100, 6_000)).await,
            TxnOutcome::Status(TxnStatus::RolledBack),
            "expired"
        );
        assert_eq!(
            state.final_txn_status(100).expect("read"),
            Some(TxnStatus::RolledBack)
        );
        let tree = state.tree();
        assert_eq!(
            lock(&tree, b"p").expect("lock"),
            None,
            "the primary lock went too"
        );
        assert_eq!(
            apply(&mut sm, 4, commit(100, 900, &[b"p"], true)).await,
            TxnOutcome::Status(TxnStatus::RolledBack),
            "a commit after the rollback is refused"
        );
        assert_eq!(state.get(b"p").await.expect("get"), None);
        assert_eq!(
            apply(&mut sm, 5, prewrite(100, &[(b"p", Some(b"1"))], Some(5_000))).await,
            TxnOutcome::Conflicts(vec![TxnConflict::Finished(TxnStatus::RolledBack)]),
            "a late prewrite is refused"
        );
        // Not prewritten (yet): pending within the grace after its start (the primary's
        // prewrite may be on its way), then rolled back for good.
        let grace_ends = 200 + (MISSING_RECORD_GRACE_MS << crate::raft::state_machine::mvcc::LOGICAL_BITS);
        assert_eq!(
            apply(&mut sm, 6, check(200, grace_ends)).await,
            TxnOutcome::Status(TxnStatus::Pending {
                expires_ts: grace_ends
            })
        );
        assert_eq!(record(&tree, 200).expect("record"), None, "nothing written");
        assert_eq!(
            apply(&mut sm, 6, check(200, grace_ends + 1)).await,
            TxnOutcome::Status(TxnStatus::RolledBack)
        );
        // Committed first: the rollback changes nothing.
        assert_eq!(
            apply(&mut sm, 7, prewrite(300, &[(b"q", Some(b"2"))], Some(5_000))).await,
            TxnOutcome::Prewritten
        );
        assert_eq!(
            apply(&mut sm, 8, commit(300, 900, &[], true)).await,
            COMMITTED_AT_900,
            "the record commits before its keys"
        );
        let rollback = Command::TxnRollback(TxnRollback {
            start_ts: 300,
            keys: vec![b"q".to_vec()],
            primary: true,
        });
        assert_eq!(apply(&mut sm, 9, rollback).await, COMMITTED_AT_900);
        assert_eq!(lock(&tree, b"q").expect("lock").map(|l| l.start_ts), Some(300));
        assert_eq!(
            apply(&mut sm, 10, commit(300, 900, &[b"q"], false)).await,
            COMMITTED_AT_900
        );
        assert_eq!(
            state.get(b"q").await.expect("get").map(|v| v.value),
            Some(b"2".to_vec())
        );
    }

    /// A plain write to a locked key, or a delete-range over one, is not applied and leaves
    /// no de-duplication record (its retry is evaluated afresh); other writes of the entry
    /// apply. After the commit, the retry applies.
    #[tokio::test]
    async fn locks_keep_plain_writes_off_their_keys() {
        use crate::raft::state_machine::test_support::{apply_delete_range, delete_range};
        use crate::raft::types::{WriteCommand, WriteOp, WriteOutcome};
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        assert_eq!(
            apply(&mut sm, 1, prewrite(100, &[(b"l", Some(b"txn"))], Some(10_000))).await,
            TxnOutcome::Prewritten
        );
        let write = |request_id: u8, key: &[u8]| WriteCommand {
            request_id: [request_id; 16],
            issued_at_ms: 1_000,
            ops: vec![WriteOp {
                key: key.to_vec(),
                value: Some(b"plain".to_vec()),
                expected_version: None,
                expiry: Default::default(),
            }],
        };
        let entry = |index: u64, writes: Vec<WriteCommand>| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::Write(writes)),
        };
        assert!(state.may_have_locks(), "a prewrite sets the flag");
        let results = sm
            .apply(vec![entry(2, vec![write(1, b"l"), write(2, b"m")])])
            .await
            .expect("apply");
        let CommandResult::Write(outcomes) = &results[0] else {
            panic!("write outcomes expected, got {results:?}")
        };
        assert_eq!(
            outcomes[0],
            WriteOutcome::Locked(LockedKey {
                key: b"l".to_vec(),
                start_ts: 100,
                primary: b"l".to_vec(),
            })
        );
        assert!(outcomes[1].results().is_some_and(|r| r[0].succeeded));
        let results = sm
            .apply(vec![delete_range(3, b"a", None, 10, 3)])
            .await
            .expect("apply");
        assert_eq!(
            results,
            vec![CommandResult::RangeLocked(LockedKey {
                key: b"l".to_vec(),
                start_ts: 100,
                primary: b"l".to_vec(),
            })]
        );
        assert_eq!(
            state.get(b"m").await.expect("get").map(|v| v.value),
            Some(b"plain".to_vec())
        );
        assert_eq!(
            apply(&mut sm, 4, commit(100, 900, &[b"l"], true)).await,
            COMMITTED_AT_900
        );
        assert!(
            !state.may_have_locks(),
            "no lock is left: lookups are skipped again"
        );
        let results = sm
            .apply(vec![entry(5, vec![write(1, b"l")])])
            .await
            .expect("apply");
        let CommandResult::Write(outcomes) = &results[0] else {
            panic!("write outcomes expected, got {results:?}")
        };
        assert!(
            outcomes[0].results().is_some_and(|r| r[0].succeeded),
            "the retry applies"
        );
        let deleted = apply_delete_range(&mut sm, delete_range(6, b"a", None, 10, 3)).await;
        assert_eq!(deleted.deleted, 2);
    }
}
