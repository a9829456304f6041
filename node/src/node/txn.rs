//! The node side of transactions: each command of `raft/txn.rs` proposed to a shard group as
//! an entry of its own (not batched with writes), through the leadership gate like every
//! write. Expiry is oracle time: a prewrite on the primary's shard records the transaction
//! as pending until a fresh timestamp plus its time to live, and a status check compares
//! with a fresh timestamp. No node's clock decides it.

use super::Node;
use crate::error::NodeError;
use crate::group::Group;
use crate::proposal;
use crate::raft::state_machine::ReadSet;
use crate::raft::txn::{
    LockedKey, TxnCheckStatus, TxnCommit, TxnConflict, TxnGc, TxnMutation, TxnOnePc, TxnOutcome, TxnPrewrite,
    TxnRollback,
};
use crate::raft::types::{Command, CommandResult, GroupId};

/// Bits of a timestamp below its physical part (milliseconds).
const LOGICAL_BITS: u32 = 18;

/// What a prewrite asks for (the shard and transaction come separately).
#[derive(Debug, Clone)]
pub struct Prewrite {
    pub start_ts: u64,
    pub primary: Vec<u8>,
    pub mutations: Vec<TxnMutation>,
    pub check_conflicts: bool,
    /// Non-zero on the primary key's shard: how long the transaction stays pending.
    pub ttl_ms: u64,
}

impl Node {
    /// Prewrites on shard `group` (see `TxnPrewrite`).
    pub async fn txn_prewrite(&self, group: &Group, prewrite: Prewrite) -> Result<TxnOutcome, NodeError> {
        let expires_ts = if prewrite.ttl_ms == 0 {
            None
        } else {
            let now = self.oracle_now().await?;
            Some(now.saturating_add(prewrite.ttl_ms.saturating_mul(1 << LOGICAL_BITS)))
        };
        let command = Command::TxnPrewrite(TxnPrewrite {
            start_ts: prewrite.start_ts,
            primary: prewrite.primary,
            mutations: prewrite.mutations,
            check_conflicts: prewrite.check_conflicts,
            expires_ts,
        });
        self.propose_txn(group, command).await
    }

    /// Commits the transaction's locks on `keys` of shard `group` (see `TxnCommit`).
    pub async fn txn_commit(&self, group: &Group, commit: TxnCommit) -> Result<TxnOutcome, NodeError> {
        self.propose_txn(group, Command::TxnCommit(commit)).await
    }

    /// Rolls back the transaction's locks on `keys` of shard `group` (see `TxnRollback`).
    pub async fn txn_rollback(&self, group: &Group, rollback: TxnRollback) -> Result<TxnOutcome, NodeError> {
        self.propose_txn(group, Command::TxnRollback(rollback)).await
    }

    /// The status of transaction `start_ts` on its primary key's shard `group`, rolling it
    /// back when it is pending past its expiry or unknown there.
    pub async fn txn_check_status(
        &self,
        group: &Group,
        start_ts: u64,
        primary: Vec<u8>,
    ) -> Result<TxnOutcome, NodeError> {
        if let Some(status) = group.state.final_txn_status(start_ts)? {
            return Ok(TxnOutcome::Status(status));
        }
        let now_ts = self.oracle_now().await?;
        let command = Command::TxnCheckStatus(TxnCheckStatus {
            start_ts,
            primary,
            now_ts,
        });
        self.propose_txn(group, command).await
    }

    /// Validates what serializable transaction `start_ts` read on shard `group` at its
    /// commit timestamp (see `state_machine/validate.rs`): a read on the leader, fenced at
    /// `commit_ts` as a snapshot read at it is, so every write at or below it has applied
    /// or is still a lock, and every later one commits above it. Empty: the reads hold.
    pub async fn txn_validate(
        &self,
        group: &Group,
        start_ts: u64,
        commit_ts: u64,
        reads: ReadSet,
    ) -> Result<Vec<TxnConflict>, NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take transactions",
                group.id
            )));
        }
        self.prepare_read_at(group, commit_ts).await?;
        Ok(group.state.validate_reads(start_ts, commit_ts, reads).await?)
    }

    /// A one-phase commit on shard `group` (see `TxnOnePc`): one entry at a commit timestamp
    /// fetched and fenced like a plain write's.
    pub async fn txn_one_pc(&self, group: &Group, one: TxnOnePc) -> Result<TxnOutcome, NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take transactions",
                group.id
            )));
        }
        let source = self.timestamp_source().ok_or(NodeError::NotInitialized)?;
        group.hibernation.touch();
        let gate = group.leadership.gate();
        let _open = gate.read().await;
        let result = proposal::propose_timed(
            &group.raft,
            group.id,
            self.node_id(),
            (&group.concurrency, source.as_ref()),
            self.config().write_timeout_ms,
            |proposing| {
                Command::TxnOnePc(TxnOnePc {
                    commit_ts: proposing.commit_ts,
                    ..one
                })
            },
        )
        .await?;
        match result {
            CommandResult::Txn(outcome) => Ok(outcome),
            other => Err(NodeError::OutcomeUnknown(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    /// Garbage collection on shard `group` (see `TxnGc`): an entry only when the leader
    /// holds a record to delete, so a quiet shard costs one leadership check.
    pub async fn txn_gc(&self, group: &Group, gc: TxnGc) -> Result<TxnOutcome, NodeError> {
        let now = self.oracle_now().await?;
        if gc.safe_point > now {
            return Err(NodeError::InvalidArgument(format!(
                "safe point {} is in the future (the oracle is at {now})",
                gc.safe_point
            )));
        }
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take transactions",
                group.id
            )));
        }
        self.ensure_linearizable(group).await?;
        if !group.state.has_collectable_records(gc.safe_point).await? {
            return Ok(TxnOutcome::Collected {
                safe_point: gc.safe_point,
                purged: 0,
                more: false,
            });
        }
        self.propose_txn(group, Command::TxnGc(gc)).await
    }

    /// Up to `limit` locks on shard `group` of transactions that started below `below`, read
    /// on the leader, and whether more exist.
    pub async fn txn_scan_locks(
        &self,
        group: &Group,
        below: u64,
        limit: usize,
    ) -> Result<(Vec<LockedKey>, bool), NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take transactions",
                group.id
            )));
        }
        self.ensure_linearizable(group).await?;
        Ok(group.state.locks_below(below, limit).await?)
    }

    /// A fresh timestamp of the oracle.
    async fn oracle_now(&self) -> Result<u64, NodeError> {
        let source = self.timestamp_source().ok_or(NodeError::NotInitialized)?;
        source.timestamp().await
    }

    /// Proposes a transaction command to shard `group` and waits for its outcome.
    async fn propose_txn(&self, group: &Group, command: Command) -> Result<TxnOutcome, NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take transactions",
                group.id
            )));
        }
        group.hibernation.touch();
        let gate = group.leadership.gate();
        let _open = gate.read().await;
        let result = proposal::propose(
            &group.raft,
            group.id,
            self.node_id(),
            command,
            self.config().write_timeout_ms,
        )
        .await?;
        match result {
            CommandResult::Txn(outcome) => Ok(outcome),
            other => Err(NodeError::OutcomeUnknown(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }
}
