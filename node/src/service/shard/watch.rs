//! `ShardKv.Watch`: a watch of one shard's range, served by its leader (the changes come
//! from `raft/state_machine/watches.rs`).
//!
//! One task per stream sends a message of at most [`MESSAGE_BYTES`] of changes once the
//! transport took the previous one (a one-message channel), so what a stream holds is its
//! watch's queue (bounded by the node's watch buffer) and one message. The task ends the
//! stream with UNAVAILABLE when the replica stops leading (checked every
//! [`PROGRESS_INTERVAL`]), is deleted or its state is replaced by a snapshot — the router
//! watches again at the new leader from the last progress —, and with RESOURCE_EXHAUSTED
//! when the reader fell a whole watch buffer behind. Between changes it sends progress
//! every [`PROGRESS_INTERVAL`] while the shard's resolved timestamp moves. A watch whose
//! range is not inside the reserved keyspace (`reserved.rs`) leaves reserved keys' changes
//! out of its messages (a watch of everything never sees lease records), here rather than
//! in the router so every caller gets the same stream.

use std::sync::Arc;
use std::time::Duration;

use ringkv_proto::v1;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::limits::check_range;
use super::{reserved, ShardKvService};
use crate::error::NodeError;
use crate::group::Group;
use crate::proposal;
use crate::raft::state_machine::{Change, ChangeKind, Watch, WatchEnd, WatchRange};
use crate::raft::types::NodeId;
use crate::service::status;

/// The stream of one watch.
pub type WatchStream = ReceiverStream<Result<v1::ShardWatchResponse, Status>>;

/// Most bytes of changes in one message (one change at least, whatever its size).
const MESSAGE_BYTES: usize = 256 << 10;
/// How often an idle watch checks its leadership and sends progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

impl ShardKvService {
    pub(super) async fn watch(&self, request: v1::ShardWatchRequest) -> Result<WatchStream, NodeError> {
        let (_ring, group) = self.node.shard_group(request.shard_id)?;
        let end = check_range(self.node.config().max_key_bytes, &request.start, request.end)?;
        let node_id = self.node.node_id();
        let shard_id = request.shard_id;
        check_leader(&group, node_id)?;
        let leave_out_reserved = reserved::watch_leaves_out_reserved(&request.start, end.as_deref());
        let range = WatchRange {
            start: request.start,
            end,
        };
        let after_ts = (request.after_ts != 0).then_some(request.after_ts);
        let watch = group
            .state
            .watch(range, after_ts, request.keys_only)
            .await
            .map_err(|end| watch_error(&group, end))?;
        let (tx, rx) = mpsc::channel(1);
        // Owned by its stream: it ends when the reader goes, the replica stops leading or
        // is deleted (its cancel token), or the watch ends.
        tokio::spawn(async move {
            let stream = WatchStreamOf {
                shard_id,
                node_id,
                leave_out_reserved,
            };
            if let Err(err) = serve(&group, stream, watch, &tx).await {
                let _ = tx.send(Err(status(err, false))).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

fn check_leader(group: &Group, node_id: NodeId) -> Result<(), NodeError> {
    if proposal::is_leader(&group.raft, node_id) {
        return Ok(());
    }
    Err(NodeError::NotLeader {
        group: group.id,
        leader: proposal::leader_hint(&group.raft),
        proposed: false,
    })
}

fn watch_error(group: &Group, end: WatchEnd) -> NodeError {
    match end {
        WatchEnd::Overflowed { .. } | WatchEnd::TooMany { .. } => NodeError::Overloaded(end.to_string()),
        WatchEnd::Compacted { after_ts, floor } => NodeError::WatchCompacted { after_ts, floor },
        WatchEnd::Reset => NodeError::WatchInterrupted(format!("{}: {end}", group.id)),
        WatchEnd::Storage(err) => NodeError::Storage(err),
    }
}

/// The wire form of a change of shard `shard_id`.
fn event(shard_id: u32, change: Change) -> v1::WatchEvent {
    let kind = match change.kind {
        ChangeKind::Put => v1::WatchEventType::Put,
        ChangeKind::Delete => v1::WatchEventType::Delete,
    };
    v1::WatchEvent {
        r#type: kind as i32,
        key: change.key,
        value: change.value,
        version: change.version,
        commit_ts: change.commit_ts,
        shard_id,
    }
}

/// Who serves a watch stream, and what it leaves out.
#[derive(Clone, Copy)]
struct WatchStreamOf {
    shard_id: u32,
    node_id: NodeId,
    /// Leave out the changes of reserved keys (a range not inside the reserved keyspace).
    leave_out_reserved: bool,
}

/// Sends the watch's pages until it ends; `Ok` when the reader went away.
async fn serve(
    group: &Arc<Group>,
    stream: WatchStreamOf,
    mut watch: Watch,
    tx: &mpsc::Sender<Result<v1::ShardWatchResponse, Status>>,
) -> Result<(), NodeError> {
    let WatchStreamOf {
        shard_id,
        node_id,
        leave_out_reserved,
    } = stream;
    let mut last_progress = 0;
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gone = || NodeError::WatchInterrupted(format!("{} left this node", group.id));
    loop {
        let page = group
            .state
            .watch_next(&mut watch, MESSAGE_BYTES)
            .await
            .map_err(|end| watch_error(group, end))?;
        let progress = page.progress.filter(|progress| *progress > last_progress);
        let changes: Vec<Change> = page
            .changes
            .into_iter()
            .filter(|change| !(leave_out_reserved && reserved::is_reserved(&change.key)))
            .collect();
        if !changes.is_empty() || progress.is_some() {
            last_progress = progress.unwrap_or(last_progress);
            let message = v1::ShardWatchResponse {
                events: changes
                    .into_iter()
                    .map(|change| event(shard_id, change))
                    .collect(),
                progress_ts: progress.unwrap_or(0),
            };
            // A reader that takes nothing while the watch's queue overflows is told at once.
            tokio::select! {
                sent = tx.send(Ok(message)) => if sent.is_err() { return Ok(()) },
                () = group.cancel.cancelled() => return Err(gone()),
                () = wait_for_end(&watch) => {}
            }
        }
        if page.more {
            continue;
        }
        tokio::select! {
            () = watch.changed() => {}
            _ = tick.tick() => check_leader(group, node_id)?,
            () = group.cancel.cancelled() => return Err(gone()),
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Returns once the watch ended (its next page then says why).
async fn wait_for_end(watch: &Watch) {
    while !watch.ended() {
        watch.changed().await;
    }
}
