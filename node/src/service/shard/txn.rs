//! The transaction calls of `ShardKv`: prewrite, commit, rollback and status check, each
//! checked (keys of the shard, sizes) and proposed as one entry.

use ringkv_proto::v1;

use super::{reserved, ShardKvService};
use crate::error::NodeError;
use crate::node::Prewrite;
use crate::raft::state_machine::ReadSet;
use crate::raft::txn::{
    TxnCommit, TxnConflict, TxnGc, TxnMutation, TxnOnePc, TxnOp, TxnOutcome, TxnRollback, TxnStatus,
};

/// Longest time to live a transaction may ask for (oracle milliseconds).
const MAX_TTL_MS: u64 = 60_000;

impl ShardKvService {
    /// Checks that `keys` are 1..=max_ops_per_write keys of `shard_id`.
    fn check_txn_keys<'a>(
        &self,
        shard_id: u32,
        keys: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> Result<(), NodeError> {
        let (ring, _group) = self.node.shard_group(shard_id)?;
        let max = self.node.config().max_ops_per_write;
        if keys.len() > max {
            return Err(NodeError::InvalidArgument(format!(
                "a transaction command takes at most {max} keys per shard, got {}",
                keys.len()
            )));
        }
        for key in keys {
            self.check_key(key)?;
            let actual = ring.shard_for_key(key).0;
            if actual != shard_id {
                return Err(NodeError::WrongShard {
                    requested: shard_id,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Checks and converts a transaction's mutations of shard `shard_id` (at least one).
    fn parse_mutations(
        &self,
        shard_id: u32,
        mutations: Vec<v1::TxnMutation>,
    ) -> Result<Vec<TxnMutation>, NodeError> {
        if mutations.is_empty() {
            return Err(NodeError::InvalidArgument(
                "a transaction command needs at least one mutation".to_string(),
            ));
        }
        self.check_txn_keys(shard_id, mutations.iter().map(|mutation| mutation.key.as_slice()))?;
        let max_value = self.node.config().max_value_bytes;
        let mut parsed = Vec::with_capacity(mutations.len());
        for mutation in mutations {
            let kind = v1::WriteKind::try_from(mutation.kind);
            if matches!(kind, Ok(v1::WriteKind::Put | v1::WriteKind::Append))
                && mutation.value.len() > max_value
            {
                return Err(NodeError::InvalidArgument(format!(
                    "value is {} bytes, the limit is {max_value}",
                    mutation.value.len()
                )));
            }
            let op = match kind {
                Ok(v1::WriteKind::Put) => TxnOp::Put(mutation.value),
                Ok(v1::WriteKind::Delete) => TxnOp::Delete,
                Ok(v1::WriteKind::Append) => TxnOp::Append(mutation.value),
                Err(_) => {
                    return Err(NodeError::InvalidArgument(format!(
                        "unknown mutation kind {}",
                        mutation.kind
                    )))
                }
            };
            parsed.push(TxnMutation {
                key: mutation.key,
                op,
            });
        }
        Ok(parsed)
    }

    /// Checks and converts what a serializable transaction read on shard `shard_id`. A range
    /// scanned is validated as the pieces its scan read (`reserved.rs`): a write to the
    /// reserved keyspace (a lease's record) is no conflict for a scan that left it out.
    fn parse_reads(
        &self,
        shard_id: u32,
        keys: Vec<Vec<u8>>,
        ranges: Vec<v1::TxnReadRange>,
    ) -> Result<ReadSet, NodeError> {
        if !keys.is_empty() {
            self.check_txn_keys(shard_id, keys.iter().map(Vec::as_slice))?;
        }
        let max_ranges = self.node.config().max_ops_per_write;
        if ranges.len() > max_ranges {
            return Err(NodeError::InvalidArgument(format!(
                "a transaction command takes at most {max_ranges} ranges, got {}",
                ranges.len()
            )));
        }
        let max_key_bytes = self.node.config().max_key_bytes;
        let mut parsed = Vec::with_capacity(ranges.len());
        for range in ranges {
            let end = super::limits::check_range(max_key_bytes, &range.start, range.end)?;
            parsed.extend(reserved::user_pieces(&range.start, end.as_deref()));
        }
        Ok(ReadSet { keys, ranges: parsed })
    }

    pub(super) async fn txn_one_pc(
        &self,
        request: v1::ShardTxnOnePcRequest,
    ) -> Result<v1::ShardTxnOnePcResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let mutations = self.parse_mutations(request.shard_id, request.mutations)?;
        let reads = self.parse_reads(request.shard_id, request.read_keys, request.read_ranges)?;
        let one = TxnOnePc {
            start_ts: request.start_ts,
            commit_ts: 0,
            mutations,
            check_conflicts: request.check_conflicts,
            read_keys: reads.keys,
            read_ranges: reads.ranges,
        };
        Ok(match self.node.txn_one_pc(&group, one).await? {
            TxnOutcome::Status(TxnStatus::Committed { commit_ts }) => v1::ShardTxnOnePcResponse {
                conflicts: Vec::new(),
                commit_ts,
            },
            TxnOutcome::Conflicts(conflicts) => v1::ShardTxnOnePcResponse {
                conflicts: conflicts.into_iter().map(conflict).collect(),
                commit_ts: 0,
            },
            other => {
                return Err(NodeError::OutcomeUnknown(format!(
                    "a one-phase commit answered {other:?}"
                )))
            }
        })
    }

    pub(super) async fn txn_prewrite(
        &self,
        request: v1::ShardTxnPrewriteRequest,
    ) -> Result<v1::ShardTxnPrewriteResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let mutations = self.parse_mutations(request.shard_id, request.mutations)?;
        if request.primary.is_empty() || request.primary.len() > self.node.config().max_key_bytes {
            return Err(NodeError::InvalidArgument(
                "the primary key must be a valid key".to_string(),
            ));
        }
        if request.ttl_ms > MAX_TTL_MS {
            return Err(NodeError::InvalidArgument(format!(
                "ttl_ms is at most {MAX_TTL_MS}, got {}",
                request.ttl_ms
            )));
        }
        let prewrite = Prewrite {
            start_ts: request.start_ts,
            primary: request.primary,
            mutations,
            check_conflicts: request.check_conflicts,
            ttl_ms: request.ttl_ms,
        };
        let conflicts = match self.node.txn_prewrite(&group, prewrite).await? {
            TxnOutcome::Prewritten => Vec::new(),
            TxnOutcome::Conflicts(conflicts) => conflicts.into_iter().map(conflict).collect(),
            other => {
                return Err(NodeError::OutcomeUnknown(format!(
                    "a prewrite answered {other:?}"
                )))
            }
        };
        Ok(v1::ShardTxnPrewriteResponse { conflicts })
    }

    pub(super) async fn txn_commit(
        &self,
        request: v1::ShardTxnCommitRequest,
    ) -> Result<v1::ShardTxnStatusResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        self.check_txn_keys(request.shard_id, request.keys.iter().map(Vec::as_slice))?;
        if request.commit_ts <= request.start_ts {
            return Err(NodeError::InvalidArgument(format!(
                "commit_ts {} must be above start_ts {}",
                request.commit_ts, request.start_ts
            )));
        }
        let start_ts = request.start_ts;
        let commit = TxnCommit {
            start_ts,
            commit_ts: request.commit_ts,
            keys: request.keys,
            primary: request.primary,
        };
        status_response(self.node.txn_commit(&group, commit).await?, start_ts)
    }

    pub(super) async fn txn_rollback(
        &self,
        request: v1::ShardTxnRollbackRequest,
    ) -> Result<v1::ShardTxnStatusResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        self.check_txn_keys(request.shard_id, request.keys.iter().map(Vec::as_slice))?;
        let start_ts = request.start_ts;
        let rollback = TxnRollback {
            start_ts,
            keys: request.keys,
            primary: request.primary,
        };
        status_response(self.node.txn_rollback(&group, rollback).await?, start_ts)
    }

    pub(super) async fn txn_check_status(
        &self,
        request: v1::ShardTxnCheckStatusRequest,
    ) -> Result<v1::ShardTxnStatusResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        self.check_txn_keys(request.shard_id, std::iter::once(request.primary.as_slice()))?;
        let outcome = self
            .node
            .txn_check_status(&group, request.start_ts, request.primary.clone())
            .await?;
        status_response(outcome, request.start_ts)
    }
}

impl ShardKvService {
    pub(super) async fn txn_validate(
        &self,
        request: v1::ShardTxnValidateRequest,
    ) -> Result<v1::ShardTxnValidateResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        if request.keys.is_empty() && request.ranges.is_empty() {
            return Err(NodeError::InvalidArgument(
                "a validation needs at least one key or range".to_string(),
            ));
        }
        if request.commit_ts <= request.start_ts {
            return Err(NodeError::InvalidArgument(format!(
                "commit_ts {} must be above start_ts {}",
                request.commit_ts, request.start_ts
            )));
        }
        let reads = self.parse_reads(request.shard_id, request.keys, request.ranges)?;
        let conflicts = self
            .node
            .txn_validate(&group, request.start_ts, request.commit_ts, reads)
            .await?;
        Ok(v1::ShardTxnValidateResponse {
            conflicts: conflicts.into_iter().map(conflict).collect(),
        })
    }
}

/// Most locks one `TxnScanLocks` returns.
const MAX_SCAN_LOCKS: u32 = 10_000;
/// Most records one `TxnGc` deletes (one Raft entry).
const MAX_PURGE: u32 = 10_000;

impl ShardKvService {
    pub(super) async fn txn_gc(
        &self,
        request: v1::ShardTxnGcRequest,
    ) -> Result<v1::ShardTxnGcResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        if !(1..=MAX_PURGE).contains(&request.purge_limit) {
            return Err(NodeError::InvalidArgument(format!(
                "purge_limit must be 1..={MAX_PURGE}, got {}",
                request.purge_limit
            )));
        }
        let gc = TxnGc {
            safe_point: request.safe_point,
            purge_limit: request.purge_limit,
        };
        match self.node.txn_gc(&group, gc).await? {
            TxnOutcome::Collected {
                safe_point,
                purged,
                more,
            } => Ok(v1::ShardTxnGcResponse {
                safe_point,
                purged,
                more,
            }),
            other => Err(NodeError::OutcomeUnknown(format!(
                "a garbage collection answered {other:?}"
            ))),
        }
    }

    pub(super) async fn txn_scan_locks(
        &self,
        request: v1::ShardTxnScanLocksRequest,
    ) -> Result<v1::ShardTxnScanLocksResponse, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        if !(1..=MAX_SCAN_LOCKS).contains(&request.limit) {
            return Err(NodeError::InvalidArgument(format!(
                "limit must be 1..={MAX_SCAN_LOCKS}, got {}",
                request.limit
            )));
        }
        let (locks, more) = self
            .node
            .txn_scan_locks(&group, request.below, request.limit as usize)
            .await?;
        let locks = locks
            .into_iter()
            .map(|locked| {
                conflict(TxnConflict::Locked {
                    key: locked.key,
                    start_ts: locked.start_ts,
                    primary: locked.primary,
                })
            })
            .collect();
        Ok(v1::ShardTxnScanLocksResponse { locks, more })
    }
}

/// The wire form of a transaction's status.
fn status_message(status: TxnStatus) -> v1::ShardTxnStatusResponse {
    match status {
        TxnStatus::Pending { expires_ts } => v1::ShardTxnStatusResponse {
            state: v1::TxnState::Pending as i32,
            commit_ts: 0,
            expires_ts,
        },
        TxnStatus::Committed { commit_ts } => v1::ShardTxnStatusResponse {
            state: v1::TxnState::Committed as i32,
            commit_ts,
            expires_ts: 0,
        },
        TxnStatus::RolledBack => v1::ShardTxnStatusResponse {
            state: v1::TxnState::RolledBack as i32,
            commit_ts: 0,
            expires_ts: 0,
        },
    }
}

fn status_response(outcome: TxnOutcome, start_ts: u64) -> Result<v1::ShardTxnStatusResponse, NodeError> {
    match outcome {
        TxnOutcome::Status(status) => Ok(status_message(status)),
        TxnOutcome::Forgotten { safe_point } => Err(NodeError::TxnForgotten { start_ts, safe_point }),
        other => Err(NodeError::OutcomeUnknown(format!(
            "a commit, rollback or status check answered {other:?}"
        ))),
    }
}

/// The wire form of a prewrite conflict.
fn conflict(conflict: TxnConflict) -> v1::TxnConflict {
    let mut message = v1::TxnConflict::default();
    match conflict {
        TxnConflict::Locked {
            key,
            start_ts,
            primary,
        } => {
            message.set_kind(v1::txn_conflict::Kind::Locked);
            message.key = key;
            message.start_ts = start_ts;
            message.primary = primary;
        }
        TxnConflict::WriteConflict { key, commit_ts } => {
            message.set_kind(v1::txn_conflict::Kind::WriteConflict);
            message.key = key;
            message.commit_ts = commit_ts;
        }
        TxnConflict::TooOld { key, floor } => {
            message.set_kind(v1::txn_conflict::Kind::TooOld);
            message.key = key;
            message.commit_ts = floor;
        }
        TxnConflict::ReadChanged { key, commit_ts } => {
            message.set_kind(v1::txn_conflict::Kind::ReadChanged);
            message.key = key;
            message.commit_ts = commit_ts;
        }
        TxnConflict::Finished(status) => {
            message.set_kind(v1::txn_conflict::Kind::Finished);
            let status = status_message(status);
            message.state = status.state;
            message.commit_ts = status.commit_ts;
        }
    }
    message
}
