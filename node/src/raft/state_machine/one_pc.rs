//! One-phase commit: a transaction whose writes (and, under serializable, reads) all fall
//! on one shard commits in one entry, with no lock and no second round (`TxnOnePc`).
//!
//! The entry carries a commit timestamp fetched and fenced like a plain write's
//! (`proposal::propose_timed`: above every snapshot read served, in log order), lifted above
//! the shard's highest if need be, as write entries are. Applying it checks every written key
//! as a prewrite does (no lock of another transaction; under repeatable read and serializable
//! nothing committed since the start), validates a serializable transaction's reads over
//! `(start, commit]` — exact, since every write at or below the commit timestamp is applied or
//! still a lock, and later ones commit above it — and then writes every key at the commit
//! timestamp, recording the transaction `Committed` so that a retried entry answers the same.
//! Any conflict writes nothing.

use super::apply::EntryVersions;
use super::txn::{check_write, committed_value, record, safe_point, set_record, KeyCheck};
use super::validate::{ReadSet, Validation};
use super::GroupState;
use crate::raft::txn::{TxnConflict, TxnOnePc, TxnOutcome, TxnStatus};
use crate::storage::{Batch, StorageError, TreeRef};

impl GroupState {
    /// Applies a one-phase commit (see the module docs). Returns the outcome and, when it
    /// committed, the entry's versions.
    pub(super) fn apply_one_pc(
        &self,
        tree: &TreeRef,
        log_index: u64,
        one: &TxnOnePc,
        batch: &mut Batch,
    ) -> Result<(TxnOutcome, Option<EntryVersions>), StorageError> {
        let start_ts = one.start_ts;
        match record(tree, start_ts)? {
            Some(TxnStatus::Committed { commit_ts }) => {
                return Ok((TxnOutcome::Status(TxnStatus::Committed { commit_ts }), None));
            }
            Some(finished) => {
                return Ok((TxnOutcome::Conflicts(vec![TxnConflict::Finished(finished)]), None))
            }
            None => {}
        }
        let safe_point = safe_point(tree)?;
        if start_ts < safe_point {
            let key = one.mutations.first().map(|mutation| mutation.key.clone());
            let too_old = TxnConflict::TooOld {
                key: key.unwrap_or_default(),
                floor: safe_point,
            };
            return Ok((TxnOutcome::Conflicts(vec![too_old]), None));
        }
        let mut versions = self.entry_versions(one.commit_ts);
        let commit_ts = versions.commit_ts;
        let history = self.history();
        let mut conflicts = Vec::new();
        for mutation in &one.mutations {
            match check_write(tree, &history, &mutation.key, start_ts, one.check_conflicts)? {
                KeyCheck::Free => {}
                // No transaction locks a key under one-phase commit, this one neither.
                KeyCheck::OwnLock => conflicts.push(TxnConflict::Finished(TxnStatus::RolledBack)),
                KeyCheck::Conflict(conflict) => conflicts.push(conflict),
            }
        }
        if conflicts.is_empty() && !(one.read_keys.is_empty() && one.read_ranges.is_empty()) {
            let validation = Validation {
                start_ts,
                commit_ts,
                check_locks: self.may_have_locks(),
            };
            let reads = ReadSet {
                keys: one.read_keys.clone(),
                ranges: one.read_ranges.clone(),
            };
            conflicts = validation.run(tree, &history, &reads)?;
        }
        drop(history);
        if !conflicts.is_empty() {
            return Ok((TxnOutcome::Conflicts(conflicts), None));
        }
        for mutation in &one.mutations {
            let head = versions.head(tree, &mutation.key)?;
            // An expired value is absent to the commit (an append starts from empty).
            let live = head.as_ref().filter(|head| head.live_at(commit_ts));
            let value = committed_value(mutation.op.clone(), live);
            versions.set(batch, &mutation.key, head, log_index, value.as_deref());
        }
        set_record(batch, start_ts, TxnStatus::Committed { commit_ts })?;
        Ok((
            TxnOutcome::Status(TxnStatus::Committed { commit_ts }),
            Some(versions),
        ))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;

    use super::*;
    use crate::raft::state_machine::test_support::{open, put};
    use crate::raft::state_machine::StateMachine;
    use crate::raft::txn::{TxnMutation, TxnOp, TxnPrewrite};
    use crate::raft::types::Command;

    async fn apply(sm: &mut StateMachine, index: u64, command: Command) -> TxnOutcome {
        crate::raft::state_machine::test_support::apply_txn(sm, index, command).await
    }

    fn one_pc(start_ts: u64, commit_ts: u64, key: &[u8], read_keys: &[&[u8]]) -> Command {
        Command::TxnOnePc(TxnOnePc {
            start_ts,
            commit_ts,
            mutations: vec![TxnMutation {
                key: key.to_vec(),
                op: TxnOp::Append(b"+".to_vec()),
            }],
            check_conflicts: true,
            read_keys: read_keys.iter().map(|key| key.to_vec()).collect(),
            read_ranges: Vec::new(),
        })
    }

    /// One entry commits at its timestamp (an append on the committed value) and a retry
    /// answers the first outcome; a key written since the start, a read key written since,
    /// or a lock of another transaction refuses it and nothing is written.
    #[tokio::test]
    async fn commits_in_one_entry_or_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_engine, state) = open(dir.path());
        let mut sm = StateMachine::new(state.clone());
        sm.apply(vec![put(1, b"a", b"x", 1), put(2, b"r", b"y", 2)])
            .await
            .expect("put");
        let start = 1 << 30;
        let committed = TxnOutcome::Status(TxnStatus::Committed {
            commit_ts: start + 10,
        });
        assert_eq!(
            apply(&mut sm, 3, one_pc(start, start + 10, b"a", &[b"r"])).await,
            committed
        );
        assert_eq!(
            state.get(b"a").await.expect("get").map(|v| v.value),
            Some(b"x+".to_vec())
        );
        assert_eq!(
            apply(&mut sm, 4, one_pc(start, start + 20, b"a", &[b"r"])).await,
            committed,
            "a retry answers the first outcome"
        );
        assert_eq!(
            state.get(b"a").await.expect("get").map(|v| v.value),
            Some(b"x+".to_vec())
        );
        // Started before that commit: first committer wins.
        assert!(matches!(
            apply(&mut sm, 5, one_pc(start + 5, start + 30, b"a", &[])).await,
            TxnOutcome::Conflicts(conflicts) if matches!(conflicts[..], [TxnConflict::WriteConflict { .. }])
        ));
        // A read key written since the start: serializable refuses.
        assert!(matches!(
            apply(&mut sm, 6, one_pc(start + 5, start + 40, b"b", &[b"a"])).await,
            TxnOutcome::Conflicts(conflicts) if matches!(conflicts[..], [TxnConflict::ReadChanged { .. }])
        ));
        // A lock of another transaction.
        let prewrite = Command::TxnPrewrite(TxnPrewrite {
            start_ts: start + 50,
            primary: b"c".to_vec(),
            mutations: vec![TxnMutation {
                key: b"c".to_vec(),
                op: TxnOp::Delete,
            }],
            check_conflicts: true,
            expires_ts: None,
        });
        assert_eq!(apply(&mut sm, 7, prewrite).await, TxnOutcome::Prewritten);
        assert!(matches!(
            apply(&mut sm, 8, one_pc(start + 60, start + 70, b"c", &[])).await,
            TxnOutcome::Conflicts(conflicts) if matches!(conflicts[..], [TxnConflict::Locked { .. }])
        ));
        assert_eq!(state.get(b"b").await.expect("get"), None);
        assert_eq!(state.get(b"c").await.expect("get"), None);
    }
}
