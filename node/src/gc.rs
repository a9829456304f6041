//! MVCC garbage collection, driven by each shard's leader: every `gc_interval_ms`, for each
//! shard this node leads that keeps history, one pass of `Command::CollectGarbage` chunks
//! (at most `GC_CHUNK_RECORDS` history records each) below the safe point
//! `now − gc_life_time_ms` (`now` from the timestamp oracle, so no node's clock decides).
//! Through Raft, every replica drops the same versions, and snapshots carry the safe point.
//!
//! A snapshot read below a shard's safe point is refused (the versions it needs may be
//! gone); transactions will keep their snapshots above it.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::concurrency::TimestampSource;
use crate::error::NodeError;
use crate::group::Group;
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
    // Where each shard's walk stopped (a pass covers at most MAX_CHUNKS_PER_PASS chunks).
    let mut cursors: HashMap<GroupId, Vec<u8>> = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(source) = node.timestamp_source() else {
            continue;
        };
        for group in node.groups() {
            if cancel.is_cancelled() {
                return;
            }
            if !matches!(group.id, GroupId::Shard(_)) || !is_leader(&group.raft, node.node_id()) {
                cursors.remove(&group.id);
                continue;
            }
            let cursor = cursors.remove(&group.id);
            match collect(&node, &group, source.as_ref(), cursor, &cancel).await {
                Ok(Some(resume)) => {
                    cursors.insert(group.id, resume);
                }
                Ok(None) => {}
                Err(err) => debug!(group = %group.id, %err, "garbage collection of the shard stopped"),
            }
        }
        cursors.retain(|id, _| node.group(*id).is_some());
    }
}

/// Up to MAX_CHUNKS_PER_PASS chunks of one shard from `cursor`; where to go on next pass.
async fn collect(
    node: &Node,
    group: &Group,
    source: &dyn TimestampSource,
    cursor: Option<Vec<u8>>,
    cancel: &CancellationToken,
) -> Result<Option<Vec<u8>>, NodeError> {
    if !group.state.has_history()? {
        return Ok(None);
    }
    let now = source.timestamp().await?;
    let physical = (now >> LOGICAL_BITS).saturating_sub(node.config().gc_life_time_ms);
    let safe_point = physical << LOGICAL_BITS;
    let mut after = cursor;
    let (mut versions, mut tombstones) = (0, 0);
    for _ in 0..MAX_CHUNKS_PER_PASS {
        if cancel.is_cancelled() {
            return Ok(after);
        }
        let command = Command::CollectGarbage(GcCommand {
            safe_point,
            after: after.take(),
            limit: GC_CHUNK_RECORDS,
        });
        let CommandResult::Gc(outcome) = node.propose(group, command).await? else {
            return Ok(None);
        };
        versions += outcome.versions_dropped;
        tombstones += outcome.tombstones_dropped;
        match outcome.resume_after {
            Some(resume) => after = Some(resume),
            None => break,
        }
    }
    debug!(group = %group.id, safe_point, versions, tombstones, "garbage collected");
    Ok(after)
}
