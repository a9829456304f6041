//! The key counts `Admin.NodeStatus` reports when asked (`count_keys`, for `kvctl endpoint
//! status`): each shard replica's keys in its local state, counted like `kvctl count` counts
//! a range (`Node::count_local`: in holds of the apply lock, expired keys left out), so the
//! counts agree with gets. A node keeps no running count of its keys, so this walks them:
//! bounded per replica by [`MAX_STATUS_KEYS_PER_REPLICA`] and by [`MAX_COUNT_CALLS_PER_REPLICA`].

use ringkv_proto::v1;

use super::Node;
use crate::error::NodeError;
use crate::group::Group;
use crate::raft::types::GroupId;

/// Most keys a status counts per replica; a replica holding more reports this many, marked
/// partial. About ten seconds of counting on this hardware: what a status call may cost.
pub const MAX_STATUS_KEYS_PER_REPLICA: u64 = 10_000_000;

/// Most local counts one replica's count is made of. An apply between two holds ends a
/// count early (it stays at one applied state, `holds.rs`) and the next one resumes after
/// the last key counted; a replica written to without pause could otherwise keep a status
/// counting. A count ends after at least one hold of 1,024 records, so this covers the
/// [`MAX_STATUS_KEYS_PER_REPLICA`] even when every hold is cut short.
pub const MAX_COUNT_CALLS_PER_REPLICA: usize = 20_000;

/// A replica's key count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaKeyCount {
    pub keys: u64,
    /// The count stopped at a bound: `keys` is a lower bound.
    pub partial: bool,
}

impl Node {
    /// Counts the keys of shard replica `group` not expired now (at most `limit`), in local
    /// counts of bounded holds resumed after each other.
    pub async fn count_replica_keys(&self, group: &Group, limit: u64) -> Result<ReplicaKeyCount, NodeError> {
        let mut keys = 0u64;
        let mut start = Vec::new();
        for _ in 0..MAX_COUNT_CALLS_PER_REPLICA {
            let counted = self.count_local(group, start.clone(), None, limit - keys).await?;
            keys += counted.count;
            if !counted.more {
                return Ok(ReplicaKeyCount { keys, partial: false });
            }
            if keys >= limit {
                return Ok(ReplicaKeyCount { keys, partial: true });
            }
            // Cut short by an apply: resume after the last key counted (or from the same
            // start when none was, which the call bound ends).
            if let Some(mut last_key) = counted.last_key {
                last_key.push(0);
                start = last_key;
            }
        }
        Ok(ReplicaKeyCount { keys, partial: true })
    }

    /// Fills in the key counts of the shard replicas of `replicas` (a status of this node),
    /// one replica after another, each bounded by `MAX_STATUS_KEYS_PER_REPLICA`. A replica
    /// gone since the status was taken keeps 0 and is marked partial.
    pub async fn count_status_keys(&self, replicas: &mut [v1::ReplicaInfo]) -> Result<(), NodeError> {
        for replica in replicas {
            let Some(shard) = replica.shard_id else {
                continue;
            };
            let Some(group) = self.group(GroupId::Shard(shard)) else {
                replica.key_count_partial = true;
                continue;
            };
            let counted = self
                .count_replica_keys(&group, MAX_STATUS_KEYS_PER_REPLICA)
                .await?;
            replica.key_count = counted.keys;
            replica.key_count_partial = counted.partial;
        }
        Ok(())
    }
}
