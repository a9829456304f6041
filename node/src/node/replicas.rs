//! Operations on this node's replicas that replica moves and the leader balance need:
//! handing a shard's leadership to another voter (`transfer.rs` does the protocol), and
//! deleting a replica a committed membership left out.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use ringkv_proto::v1;
use tracing::{info, warn};

use super::Node;
use crate::error::NodeError;
use crate::peers::Peer;
use crate::proposal;
use crate::raft::log_store;
use crate::raft::types::{GroupId, NodeId, Vote};
use crate::transfer::{self, CampaignOrder, TransferContext};

impl Node {
    /// Hands the leadership of `shard` (led by this node) to voter `target`; returns the new
    /// term. See `transfer.rs`. Refused while a replica move of the shard runs here.
    pub async fn transfer_leader(&self, shard: u32, target: NodeId) -> Result<u64, NodeError> {
        if !self.claim_shard(shard) {
            return Err(NodeError::NoQuorum {
                group: GroupId::Shard(shard),
                detail: "a replica move of the shard is running; transfer its leadership later".to_string(),
            });
        }
        let outcome = self.transfer_claimed(shard, target).await;
        self.release_shard(shard);
        outcome
    }

    /// [`Node::transfer_leader`] for a caller that already claimed the shard.
    pub async fn transfer_claimed(&self, shard: u32, target: NodeId) -> Result<u64, NodeError> {
        let group = self
            .group(GroupId::Shard(shard))
            .ok_or(NodeError::ShardNotHosted(shard))?;
        if !proposal::is_leader(&group.raft, self.node_id()) {
            return Err(NodeError::NotLeader {
                group: group.id,
                leader: proposal::leader_hint(&group.raft),
                proposed: false,
            });
        }
        // The transfer waits on replication metrics and the target's lease: heartbeats on.
        group.hibernation.touch();
        let config = self.config();
        let ctx = TransferContext {
            group: group.id,
            raft: &group.raft,
            leadership: &group.leadership,
            node_id: self.node_id(),
            lease: Duration::from_millis(config.election_timeout_max_ms),
            timeout: Duration::from_millis(config.write_timeout_ms),
        };
        let cluster_id = self.cluster_id().unwrap_or_default();
        let from_node = self.node_id();
        let peers = self.peers().clone();
        transfer::transfer(ctx, target, |order: CampaignOrder| async move {
            let request = v1::CampaignRequest {
                cluster_id,
                shard_id: shard,
                to_node: target,
                from_node,
                term: order.term,
                last_log_index: order.last_log_index,
            };
            let peer = Peer {
                node: target,
                addr: &order.addr,
            };
            peers.campaign(peer, request).await
        })
        .await
    }

    /// Asks `leader` (the node leading `shard`) to hand the shard's leadership to `target`.
    pub async fn transfer_leader_at(
        &self,
        leader: Peer<'_>,
        shard: u32,
        target: NodeId,
    ) -> Result<v1::TransferLeaderResponse, NodeError> {
        let config = self.config();
        // A transfer may wait out the old leader's lease, drain writes and wait for the
        // election: bounded by both timeouts.
        let bound = Duration::from_millis(config.election_timeout_max_ms * 3 + config.write_timeout_ms * 2);
        self.peers().transfer_leader(leader, shard, target, bound).await
    }

    /// Deletes the local replica of `group_id`: unregisters and stops the group, marks it
    /// never to be initialised here, then drops its trees and snapshots.
    pub async fn retire_group(&self, group_id: GroupId) -> Result<(), NodeError> {
        let group = self
            .inner
            .groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&group_id);
        let Some(group) = group else {
            return Ok(());
        };
        if let Err(err) = group.raft.shutdown().await {
            warn!(group = %group_id, %err, "raft group did not shut down cleanly");
        }
        group.cancel.cancel();
        // openraft's state-machine worker may still hold a queued apply or snapshot install:
        // from here on they fail instead of recreating the trees deleted below.
        group.state.retire().await;
        // Dropping the trees and syncing sled blocks for hundreds of milliseconds with a
        // shard of data: on a worker, it stalled every group of the node with it (answers
        // to AppendEntries timed out, and writes waited ~250–480 ms during moves). Freeing
        // a tree's pages also competes with every other tree's writes in sled, so the
        // node deletes one replica at a time (a move often retires several at once). The
        // lock is taken on the blocking thread, so a caller that stops waiting cannot let
        // a second deletion start beside one still running.
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = inner.deleting.lock().unwrap_or_else(PoisonError::into_inner);
            inner.deps.destroy(group_id)
        })
        .await
        .map_err(|err| NodeError::Fatal(format!("deleting the replica of {group_id} failed: {err}")))??;
        self.counters().replicas_deleted.fetch_add(1, Ordering::Relaxed);
        info!(group = %group_id, "deleted replica");
        Ok(())
    }

    /// The highest vote a replica of `group_id` on this node has saved: its log's, or a
    /// deleted predecessor's (whose promises a re-created replica keeps). Answers a leader's
    /// leadership confirmation without passing through the group's Raft core (issue 14,
    /// defect 7: the core may be waiting on a slow log flush).
    pub fn promised_vote(&self, group_id: GroupId) -> Result<Option<Vote>, NodeError> {
        let saved = log_store::saved_vote(&self.inner.deps.wal, group_id)?;
        let deleted = self.inner.deps.tombstone(group_id)?.vote;
        Ok(match (saved, deleted) {
            (Some(saved), Some(deleted)) => Some(if deleted > saved { deleted } else { saved }),
            (saved, deleted) => saved.or(deleted),
        })
    }

    /// What a deleted replica of `group_id` here had promised (see `log_store::Tombstone`):
    /// a vote request it forbids is refused.
    pub fn group_tombstone(&self, group_id: GroupId) -> Result<crate::raft::log_store::Tombstone, NodeError> {
        self.inner.deps.tombstone(group_id)
    }
}
