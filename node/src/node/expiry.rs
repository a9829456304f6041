//! Expiring keys (issue 16, TTL; the rules are in `raft/expiry.rs`) on the node's read and
//! write paths: the timestamp a read of the latest values judges expiry at, and the purge
//! entries a shard leader proposes to remove expired keys.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::NodeError;
use crate::group::Group;
use crate::proposal;
use crate::raft::types::{Command, CommandResult, DeleteRangeResult, TimedPurge, TtlCommand};

use super::Node;

/// Most expired keys one purge entry deletes: one entry's worth of work, bounded like a
/// delete-range chunk.
pub const PURGE_LIMIT: u32 = 1_024;

/// What this node's purge entries did (as a shard leader), for `/metrics`: an operator
/// sees expired keys leave storage, not only vanish from reads.
#[derive(Debug, Default)]
pub struct PurgeCounters {
    /// Purge entries applied (each removes at most [`PURGE_LIMIT`] keys).
    pub entries: AtomicU64,
    /// Expired keys those entries removed from storage.
    pub keys_purged: AtomicU64,
}

impl Node {
    /// The oracle timestamp a read of `group`'s latest values judges expiry at: one taken
    /// after the read arrived, so a value whose expiry the oracle passed before is never
    /// answered. `None` (no call to the oracle) while the shard holds no key that expires.
    ///
    /// The timestamp is a read timestamp like a snapshot read's, fenced the same way
    /// (`concurrency.rs`): writes still being committed at or below it are waited for, and
    /// later ones commit above it. Without the fence an `expire` or `persist` whose commit
    /// timestamp was taken before the read's, but applied after the read found the key
    /// expired, would revive it (the jepsen ttl workload's `resurrected`: CI's smoke run
    /// caught one once the clock faults moved to shard leaders). After a wait, the
    /// leadership is confirmed again, as for a snapshot read: writes it waited for that
    /// failed here may still commit under a new leader.
    pub async fn expiry_clock(&self, group: &Group) -> Result<Option<u64>, NodeError> {
        if group.state.earliest_expiry()?.is_none() {
            return Ok(None);
        }
        let source = self.timestamp_source().ok_or(NodeError::NotInitialized)?;
        let now_ts = source.timestamp().await?;
        if group.concurrency.prepare_read(now_ts).await && !self.config().unsafe_skip_read_index {
            self.ensure_linearizable(group).await?;
        }
        Ok(Some(now_ts))
    }

    /// Whether shard `group` holds a key expired at oracle timestamp `now_ts`.
    pub fn has_expired(&self, group: &Group, now_ts: u64) -> Result<bool, NodeError> {
        Ok(group
            .state
            .earliest_expiry()?
            .is_some_and(|expires_at| expires_at <= now_ts))
    }

    /// Proposes one purge entry on shard `group` (its leader): it deletes at most
    /// [`PURGE_LIMIT`] keys expired at its commit timestamp, oldest expiry first. Safe to
    /// repeat and to run on any replica's leader after a restart: an entry finds what is
    /// expired then. Answers how many keys it deleted and whether more had expired.
    pub async fn purge_expired(&self, group: &Group) -> Result<DeleteRangeResult, NodeError> {
        let source = self.timestamp_source().ok_or(NodeError::NotInitialized)?;
        group.hibernation.touch();
        let gate = group.leadership.gate();
        let _open = gate.read().await;
        let outcome = proposal::propose_timed(
            &group.raft,
            group.id,
            self.node_id(),
            (&group.concurrency, source.as_ref()),
            self.config().write_timeout_ms,
            |proposing| {
                Command::Ttl(TtlCommand::Purge(TimedPurge {
                    commit_ts: proposing.commit_ts,
                    limit: PURGE_LIMIT,
                }))
            },
        )
        .await?;
        match outcome {
            CommandResult::DeleteRange(result) => {
                let counters = self.purge_counters();
                counters.entries.fetch_add(1, Ordering::Relaxed);
                counters.keys_purged.fetch_add(result.deleted, Ordering::Relaxed);
                Ok(result)
            }
            other => Err(NodeError::OutcomeUnknown(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }
}
