//! The expiry purger (issue 16, TTL): one task per node that removes expired keys from the
//! shards this node leads, through Raft.
//!
//! Expired keys are invisible from their expiry on (reads and writes judge it by oracle
//! time, `raft/expiry.rs`); this only gives their space back. Every [`PURGE_INTERVAL`] the
//! task takes one oracle timestamp (only when a shard led here holds a key that expires)
//! and, for each led shard whose earliest expiry is at or below it, proposes purge entries
//! ([`Node::purge_expired`]: at most [`crate::node::PURGE_LIMIT`] keys each) while keys
//! are left, at most [`MAX_ENTRIES_PER_PASS`] per shard and pass. A purge that fails (the
//! leader moved, a timeout) is left to the next pass or the next leader: a purge entry
//! deletes whatever has expired when it applies, so repeating one is harmless.
//!
//! Shutdown: [`ExpiryPurger::shutdown`] stops the loop (a purge in flight is dropped; its
//! entry, if proposed, still applies).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::group::Group;
use crate::node::Node;
use crate::proposal;
use crate::raft::types::GroupId;

/// How often the purger looks for expired keys.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(1);
/// Most purge entries per shard and pass (the rest waits for the next pass).
pub const MAX_ENTRIES_PER_PASS: usize = 8;

/// The running purger.
pub struct ExpiryPurger {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ExpiryPurger {
    /// Starts purging the expired keys of the shards `node` leads.
    pub fn spawn(node: Node) -> ExpiryPurger {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(node, cancel.clone()));
        ExpiryPurger { cancel, task }
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "expiry purger task failed");
        }
    }
}

async fn run(node: Node, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = pass(&node) => {}
        }
    }
}

/// One pass over the shards led here.
async fn pass(node: &Node) {
    let expiring: Vec<Arc<Group>> = node
        .groups()
        .into_iter()
        .filter(|group| matches!(group.id, GroupId::Shard(_)))
        .filter(|group| proposal::is_leader(&group.raft, node.node_id()))
        .filter(|group| matches!(group.state.earliest_expiry(), Ok(Some(_))))
        .collect();
    if expiring.is_empty() {
        return;
    }
    let Some(source) = node.timestamp_source() else {
        return;
    };
    let now_ts = match source.timestamp().await {
        Ok(now_ts) => now_ts,
        Err(err) => {
            debug!(%err, "expiry purger: no timestamp; trying again next pass");
            return;
        }
    };
    for group in expiring {
        if !matches!(node.has_expired(&group, now_ts), Ok(true)) {
            continue;
        }
        for _ in 0..MAX_ENTRIES_PER_PASS {
            match node.purge_expired(&group).await {
                Ok(purged) if purged.more => {}
                Ok(_) => break,
                Err(err) => {
                    debug!(group = %group.id, %err, "expiry purge failed; trying again next pass");
                    break;
                }
            }
        }
    }
}
