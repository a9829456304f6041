//! Serializable read validation: whether anything a transaction read on this shard changed
//! between its start and its commit timestamp (FoundationDB's resolver check and
//! CockroachDB's read refresh, per shard).
//!
//! Run at the commit timestamp `C`, fenced like a snapshot read at `C` (`Node::txn_validate`
//! raises the shard's `max_read_ts` to `C` and waits for the writes below it), so every
//! write at or below `C` is either applied or still a lock here:
//!
//! - a key read, or any key of a range scanned, with a version committed or deleted in
//!   `(start_ts, C]` is a conflict (the transaction's reads are no longer what it would read
//!   at `C`);
//! - a lock of another transaction that started before `C` may still commit at or below `C`:
//!   it is reported, to be resolved through its primary and validated again;
//! - when the history no longer reaches `start_ts`, whether a key changed is not known.
//!
//! A write that is not yet a lock when this runs fetches its commit timestamp after `C` was
//! fetched (transactions take theirs after their locks are in place; plain writes register
//! above the raised `max_read_ts`), so it commits above `C` and cannot invalidate the reads.

use super::layout::{data_bounds, lock_bounds, user_key};
use super::{mvcc, txn, GroupState};
use crate::raft::decode;
use crate::raft::txn::{Lock, TxnConflict};
use crate::storage::{StorageError, TreeRef};

/// Most conflicts one validation reports (one is enough to abort; locks are resolved a few
/// at a time).
pub const MAX_CONFLICTS: usize = 64;

/// What a serializable transaction read on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadSet {
    /// Keys read (each of this shard).
    pub keys: Vec<Vec<u8>>,
    /// Ranges scanned, `[start, end)` (`None` end: no upper bound); this shard's keys in
    /// each count.
    pub ranges: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl GroupState {
    /// The conflicts of transaction `start_ts`'s reads at commit timestamp `commit_ts` (see
    /// the module docs; no fence or leadership check: the caller does that). Empty: the
    /// reads still hold. Iterates on a blocking thread.
    pub async fn validate_reads(
        &self,
        start_ts: u64,
        commit_ts: u64,
        reads: ReadSet,
    ) -> Result<Vec<TxnConflict>, StorageError> {
        let check_locks = self.may_have_locks();
        let validation = Validation {
            start_ts,
            commit_ts,
            check_locks,
        };
        let found = self
            .with_history(move |tree, history| Ok(Ok(validation.run(tree, history, &reads)?)))
            .await?;
        Ok(found.unwrap_or_default())
    }
}

pub(super) struct Validation {
    pub(super) start_ts: u64,
    pub(super) commit_ts: u64,
    pub(super) check_locks: bool,
}

impl Validation {
    pub(super) fn run(
        &self,
        tree: &TreeRef,
        history: &mvcc::History,
        reads: &ReadSet,
    ) -> Result<Vec<TxnConflict>, StorageError> {
        let mut conflicts = Vec::new();
        for key in &reads.keys {
            if conflicts.len() >= MAX_CONFLICTS {
                return Ok(conflicts);
            }
            if self.check_locks {
                if let Some(held) = txn::lock(tree, key)? {
                    if self.foreign(&held) {
                        conflicts.push(locked(key, held));
                        continue;
                    }
                }
            }
            let head = mvcc::head(tree, key)?;
            self.check_key(history, key, head.as_ref(), &mut conflicts);
        }
        for (start, end) in &reads.ranges {
            if conflicts.len() >= MAX_CONFLICTS {
                return Ok(conflicts);
            }
            self.check_range(tree, history, start, end.as_deref(), &mut conflicts)?;
        }
        Ok(conflicts)
    }

    /// A lock that may commit at or below the commit timestamp (not the transaction's own).
    fn foreign(&self, held: &Lock) -> bool {
        held.start_ts != self.start_ts && held.start_ts < self.commit_ts
    }

    fn check_key(
        &self,
        history: &mvcc::History,
        key: &[u8],
        head: Option<&mvcc::Head>,
        conflicts: &mut Vec<TxnConflict>,
    ) {
        match history.changed_between(key, head, self.start_ts, self.commit_ts) {
            Ok(None) => {}
            Ok(Some(commit_ts)) => conflicts.push(TxnConflict::ReadChanged {
                key: key.to_vec(),
                commit_ts,
            }),
            Err(below) => conflicts.push(TxnConflict::TooOld {
                key: key.to_vec(),
                floor: below.floor,
            }),
        }
    }

    fn check_range(
        &self,
        tree: &TreeRef,
        history: &mvcc::History,
        start: &[u8],
        end: Option<&[u8]>,
        conflicts: &mut Vec<TxnConflict>,
    ) -> Result<(), StorageError> {
        if self.check_locks {
            if let Some((lower, upper)) = lock_bounds(start, end) {
                for pair in tree.range(lower, upper) {
                    let (key, bytes) = pair?;
                    let held: Lock = decode(tree.name(), &bytes)?;
                    if self.foreign(&held) {
                        conflicts.push(locked(key.get(1..).unwrap_or_default(), held));
                        if conflicts.len() >= MAX_CONFLICTS {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if self.start_ts < history.floor() {
            // A key created and deleted since may have left no trace.
            conflicts.push(TxnConflict::TooOld {
                key: start.to_vec(),
                floor: history.floor(),
            });
            return Ok(());
        }
        let Some((lower, upper)) = data_bounds(start, end) else {
            return Ok(());
        };
        for pair in tree.range(lower, upper) {
            let (key, bytes) = pair?;
            let key = user_key(tree.name(), &key)?;
            let head = mvcc::decode_head(tree.name(), &bytes)?;
            self.check_key(history, &key, Some(&head), conflicts);
            if conflicts.len() >= MAX_CONFLICTS {
                return Ok(());
            }
        }
        // Keys without a head now (deleted): only the history knows them.
        for key in history.keys_in(start, end) {
            if mvcc::head(tree, key)?.is_none() {
                self.check_key(history, key, None, conflicts);
                if conflicts.len() >= MAX_CONFLICTS {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn locked(key: &[u8], held: Lock) -> TxnConflict {
    TxnConflict::Locked {
        key: key.to_vec(),
        start_ts: held.start_ts,
        primary: held.primary,
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::EntryPayload;

    use super::*;
    use crate::raft::state_machine::test_support::{log_id, open, prewrite};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::types::{Command, Entry, TimedWrites, WriteCommand, WriteOp};

    /// An entry at `index` committing `writes` (`None`: delete) at `commit_ts`.
    fn write_at(index: u64, commit_ts: u64, writes: &[(&[u8], Option<&[u8]>)]) -> Entry {
        Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(Command::WriteAt(TimedWrites {
                commit_ts,
                writes: vec![WriteCommand {
                    request_id: [index as u8; 16],
                    issued_at_ms: 1_000,
                    ops: writes
                        .iter()
                        .map(|(key, value)| WriteOp {
                            key: key.to_vec(),
                            value: value.map(<[u8]>::to_vec),
                            expected_version: None,
                            expiry: Default::default(),
                        })
                        .collect(),
                }],
            })),
        }
    }

    fn keys(keys: &[&[u8]]) -> ReadSet {
        ReadSet {
            keys: keys.iter().map(|key| key.to_vec()).collect(),
            ranges: Vec::new(),
        }
    }

    fn range(start: &[u8], end: Option<&[u8]>) -> ReadSet {
        ReadSet {
            keys: Vec::new(),
            ranges: vec![(start.to_vec(), end.map(<[u8]>::to_vec))],
        }
    }

    fn changed(key: &[u8], commit_ts: u64) -> TxnConflict {
        TxnConflict::ReadChanged {
            key: key.to_vec(),
            commit_ts,
        }
    }

    /// A key read or a range scanned conflicts exactly when something in it was written or
    /// deleted in `(start, commit]`; a foreign lock that started before the commit is
    /// reported (the transaction's own, or one that started after, is not). (Starts below
    /// the history's floor: `mvcc.rs`'s model test of `changed_between`.)
    #[tokio::test]
    async fn reads_conflict_with_writes_between_start_and_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        let validate = |start_ts: u64, commit_ts: u64, reads: ReadSet| {
            let state = state.clone();
            async move {
                state
                    .validate_reads(start_ts, commit_ts, reads)
                    .await
                    .expect("validate")
            }
        };
        sm.apply(vec![write_at(1, 100, &[(b"a", Some(b"1")), (b"b", Some(b"1"))])])
            .await
            .expect("apply");
        assert_eq!(validate(50, 400, keys(&[b"a"])).await, vec![changed(b"a", 100)]);
        assert_eq!(validate(100, 400, keys(&[b"a", b"b", b"zz"])).await, vec![]);
        sm.apply(vec![write_at(2, 250, &[(b"a", Some(b"2"))])])
            .await
            .expect("apply");
        assert_eq!(
            validate(200, 400, keys(&[b"a", b"b"])).await,
            vec![changed(b"a", 250)]
        );
        assert_eq!(
            validate(250, 400, keys(&[b"a"])).await,
            vec![],
            "written at the start"
        );
        assert_eq!(
            validate(200, 249, keys(&[b"a"])).await,
            vec![],
            "written after the commit"
        );
        assert_eq!(
            validate(200, 400, range(b"a", Some(b"b"))).await,
            vec![changed(b"a", 250)]
        );
        assert_eq!(validate(200, 400, range(b"b", None)).await, vec![]);
        // A delete is a change; so is a key created in a scanned range (a phantom).
        sm.apply(vec![write_at(3, 350, &[(b"b", None), (b"c", Some(b"new"))])])
            .await
            .expect("apply");
        assert_eq!(validate(300, 400, keys(&[b"b"])).await, vec![changed(b"b", 350)]);
        assert_eq!(
            validate(300, 400, range(b"b", None)).await,
            vec![changed(b"c", 350), changed(b"b", 350)]
        );
        assert_eq!(validate(300, 400, range(b"d", None)).await, vec![]);
        // Locks: another transaction's that started before the commit, not the reader's own.
        let prewrite = prewrite(380, &[(b"d", Some(b"x"))], None);
        sm.apply(vec![Entry {
            log_id: log_id(2, 4),
            payload: EntryPayload::Normal(prewrite),
        }])
        .await
        .expect("prewrite");
        let locked_d = TxnConflict::Locked {
            key: b"d".to_vec(),
            start_ts: 380,
            primary: b"d".to_vec(),
        };
        assert_eq!(validate(360, 400, keys(&[b"d"])).await, vec![locked_d.clone()]);
        assert_eq!(validate(360, 400, range(b"c", None)).await, vec![locked_d]);
        assert_eq!(
            validate(360, 380, keys(&[b"d"])).await,
            vec![],
            "starts at the commit"
        );
        assert_eq!(validate(380, 400, keys(&[b"d"])).await, vec![], "its own lock");
    }
}
