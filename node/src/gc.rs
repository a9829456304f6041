//! MVCC garbage collection, driven by each shard's leader: every `gc_interval_ms`, for each
//! shard this node leads that keeps history, one pass of `Command::CollectGarbage` chunks
//! (at most `GC_CHUNK_RECORDS` history records each) below the safe point
//! `now − gc_life_time_ms` (`now` from the timestamp oracle, so no node's clock decides).
//! Through Raft, every replica drops the same versions, and snapshots carry the safe point.
//!
//! A snapshot read below a shard's safe point is refused (the versions it needs may be
//! gone); transactions will keep their snapshots above it.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::node::Node;
use crate::proposal::is_leader;
use crate::raft::types::{Command, CommandResult, GcCommand, GroupId};

/// Most history records one chunk examines (one Raft entry).
const GC_CHUNK_RECORDS: u32 = 1024;
/// Most chunks one shard gets per pass (the next pass goes on where this one stopped).
const MAX_CHUNKS_PER_PASS: usize = 64;
/// Bits of a timestamp's logical counter (see `tso/window.rs`).
const LOGICAL_BITS: u32 = 18;

/// The garbage-collection task of a node.
pub struct GarbageCollector {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl GarbageCollector {
    pub fn spawn(node: Node) -> GarbageCollector {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(node, cancel.clone()));
        GarbageCollector { cancel, task }
    }

    /// Stops the task and waits for the chunk in flight to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "garbage collection task failed");
        }
    }
}

async fn run(node: Node, cancel: CancellationToken) {
    let interval = Duration::from_millis(node.config().gc_interval_ms);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(err) = pass(&node, &cancel).await {
            debug!(%err, "garbage collection pass stopped");
        }
    }
}

/// One pass over the shards this node leads.
async fn pass(node: &Node, cancel: &CancellationToken) -> Result<(), crate::error::NodeError> {
    let Some(source) = node.timestamp_source() else {
        return Ok(());
    };
    let life_ms = node.config().gc_life_time_ms;
    for group in node.groups() {
        if cancel.is_cancelled() {
            return Ok(());
        }
        if !matches!(group.id, GroupId::Shard(_)) || !is_leader(&group.raft, node.node_id()) {
            continue;
        }
        if !group.state.has_history()? {
            continue;
        }
        let now = source.timestamp().await?;
        let physical = (now >> LOGICAL_BITS).saturating_sub(life_ms);
        let safe_point = physical << LOGICAL_BITS;
        let mut after: Option<Vec<u8>> = None;
        let (mut versions, mut tombstones) = (0, 0);
        for _ in 0..MAX_CHUNKS_PER_PASS {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let command = Command::CollectGarbage(GcCommand {
                safe_point,
                after: after.take(),
                limit: GC_CHUNK_RECORDS,
            });
            let CommandResult::Gc(outcome) = node.propose(&group, command).await? else {
                break;
            };
            versions += outcome.versions_dropped;
            tombstones += outcome.tombstones_dropped;
            match outcome.resume_after {
                Some(resume) => after = Some(resume),
                None => break,
            }
        }
        debug!(group = %group.id, safe_point, versions, tombstones, "garbage collected");
    }
    Ok(())
}
