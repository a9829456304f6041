//! Proposing commands to a group and waiting for their outcome; write batching.
//!
//! [`propose`] checks leadership first (so a rejection is definite), then waits for the
//! entry to commit and apply. [`WriteBatcher`] turns concurrent writes to one shard into
//! one Raft entry: openraft 0.9 appends (and fsyncs) each proposal separately, so without
//! batching a shard's write rate is bounded by one fsync per write. A retry of a write that
//! is still queued or being committed joins it instead of proposing it again (`pending`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::concurrency::{ConcurrencyManager, TimestampSlot, TimestampSource};
use crate::dedup_clock::DedupClock;
use crate::error::NodeError;
use crate::raft::state_machine::write_fingerprint;
use crate::raft::types::{
    Command, CommandResult, GroupId, NodeId, Raft, RequestId, TimedWrites, WriteCommand, WriteOpResult,
    WriteOutcome,
};
use pending::{Admission, PendingWrites, Reply};
use resolving::Resolving;

mod pending;
mod resolving;

/// The known leader of a group with its address.
pub fn leader_hint(raft: &Raft) -> Option<(NodeId, String)> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    let leader = metrics.current_leader?;
    let addr = metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|node| node.addr.clone())?;
    Some((leader, addr))
}

/// The leader (with its address) that an openraft "forward to leader" answer names.
pub fn forwarded_leader(forward: ForwardToLeader<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    match (forward.leader_id, forward.leader_node) {
        (Some(id), Some(node)) => Some((id, node.addr)),
        _ => None,
    }
}

/// Whether `node_id` currently leads the group.
pub fn is_leader(raft: &Raft, node_id: NodeId) -> bool {
    let metrics = raft.metrics();
    let metrics = metrics.borrow();
    metrics.state == ServerState::Leader && metrics.current_leader == Some(node_id)
}

/// Proposes `command` and waits until it is committed and applied (or `timeout_ms`).
pub async fn propose(
    raft: &Raft,
    group: GroupId,
    node_id: NodeId,
    command: Command,
    timeout_ms: u64,
) -> Result<CommandResult, NodeError> {
    if !is_leader(raft, node_id) {
        return Err(NodeError::NotLeader {
            group,
            leader: leader_hint(raft),
            proposed: false,
        });
    }
    let write = tokio::time::timeout(Duration::from_millis(timeout_ms), raft.client_write(command));
    match write.await {
        Err(_elapsed) => Err(NodeError::Timeout {
            what: format!("{group} to commit the write"),
            timeout_ms,
            proposed: true,
        }),
        Ok(Ok(response)) => Ok(response.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
            Err(NodeError::NotLeader {
                group,
                leader: forwarded_leader(forward),
                proposed: true,
            })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(err)))) => {
            Err(NodeError::OutcomeUnknown(err.to_string()))
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(NodeError::Fatal(fatal.to_string())),
    }
}

/// What a leader knows as it makes the entry it proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposing {
    /// The entry's commit timestamp, fresh from the oracle.
    pub commit_ts: u64,
    /// The term this replica leads and proposes in (unchanged since before the fetch):
    /// what write entries' de-duplication stamps are anchored to (`dedup_clock.rs`).
    pub term: u64,
}

/// Proposes `make(proposing)` at a fresh commit timestamp from `source`: the entry is
/// handed to openraft before any later timestamp of the shard is fetched, so the shard's
/// log holds its entries in timestamp order (`concurrency.rs`), and so do their
/// de-duplication stamps, made in `make`. The timestamp stays registered until
/// openraft resolves the write — committed and applied, or failed — not until the caller
/// stops waiting: a write that times out here may still commit, and a snapshot read must go
/// on waiting for it. The caller's wait holds the registration; a wait that ends first
/// (a timeout, or a caller that went away) hands it to a task that ends with openraft's
/// answer (openraft answers every pending write at the latest when the group shuts down).
pub async fn propose_timed(
    raft: &Raft,
    group: GroupId,
    node_id: NodeId,
    timestamps: (&Arc<ConcurrencyManager>, &dyn TimestampSource),
    timeout_ms: u64,
    make: impl FnOnce(Proposing) -> Command,
) -> Result<CommandResult, NodeError> {
    let not_leader = || NodeError::NotLeader {
        group,
        leader: leader_hint(raft),
        proposed: false,
    };
    // Only a leader fetches: a timestamp fetched after this replica became leader is above
    // every snapshot read an earlier leader served.
    if !is_leader(raft, node_id) {
        return Err(not_leader());
    }
    let (manager, source) = timestamps;
    let (registered, answer) = {
        let _in_order = manager.proposing().await;
        let term = raft.metrics().borrow().current_term;
        let registered = manager.write_timestamp(source).await?;
        // The term must not have moved while the timestamp was fetched: a leader of a term
        // in between may have served a snapshot read above it.
        if raft.metrics().borrow().current_term != term {
            return Err(not_leader());
        }
        let proposing = Proposing {
            commit_ts: registered.commit_ts(),
            term,
        };
        let answer = raft
            .client_write_ff(make(proposing))
            .await
            .map_err(|fatal| NodeError::Fatal(fatal.to_string()))?;
        (registered, answer)
    };
    let mut pending = Resolving::new(answer, registered);
    let resolved = match tokio::time::timeout(Duration::from_millis(timeout_ms), pending.resolved()).await {
        Err(_elapsed) => {
            return Err(NodeError::Timeout {
                what: format!("{group} to commit the write"),
                timeout_ms,
                proposed: true,
            })
        }
        Ok(resolved) => resolved,
    };
    match resolved {
        None | Some(Err(_)) => Err(NodeError::OutcomeUnknown(format!(
            "{group} stopped while the write was being committed"
        ))),
        Some(Ok(Ok(response))) => Ok(response.data),
        Some(Ok(Err(ClientWriteError::ForwardToLeader(forward)))) => Err(NodeError::NotLeader {
            group,
            leader: forwarded_leader(forward),
            proposed: true,
        }),
        Some(Ok(Err(ClientWriteError::ChangeMembershipError(err)))) => {
            Err(NodeError::OutcomeUnknown(err.to_string()))
        }
    }
}

/// Queued writes per shard (callers wait when it is full).
const QUEUE_CAPACITY: usize = 1024;
/// Most writes in one entry.
const MAX_WRITES_PER_ENTRY: usize = 256;
/// Entries of one shard being committed at once. One: while an entry commits, the next
/// one gathers every write that arrives, so per-entry costs (replication RPCs, fdatasyncs,
/// the apply's fixed records) are shared by more writes. Measured against 2 (3 nodes, 16
/// shards, 64 clients, 2 cores): 1,178 → 2,084 puts/s, p50 54 → 30 ms, and 25% more puts
/// per server CPU-second; a single client's latency is unchanged.
const MAX_INFLIGHT_ENTRIES: usize = 1;

struct PendingWrite {
    write: WriteCommand,
    reply: Reply,
}

impl PendingWrite {
    fn bytes(&self) -> usize {
        self.write
            .ops
            .iter()
            .map(|op| op.key.len() + op.value.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// Settings of a shard's batcher.
#[derive(Debug, Clone, Copy)]
pub struct BatcherSettings {
    pub group: GroupId,
    pub node_id: NodeId,
    pub write_timeout_ms: u64,
    /// Most key+value bytes in one entry (a single larger write still goes alone).
    pub max_entry_bytes: usize,
    /// NEGATIVE CONTROL ONLY: answer success once the leader accepted the entry.
    pub unsafe_ack_before_commit: bool,
}

/// Handle to a shard's batcher task.
#[derive(Clone)]
pub struct WriteBatcher {
    tx: mpsc::Sender<PendingWrite>,
    /// The writes queued or being committed, which a retry joins.
    pending: Arc<PendingWrites>,
}

/// Where a shard's entries get their commit timestamps (see `concurrency.rs`) and their
/// de-duplication stamps (`dedup_clock.rs`).
#[derive(Clone)]
pub struct Timestamps {
    pub source: TimestampSlot,
    pub manager: Arc<ConcurrencyManager>,
    pub dedup_clock: Arc<DedupClock>,
}

impl WriteBatcher {
    /// Starts the batcher; it stops when `cancel` fires, failing what is still queued.
    /// Entries pass `gate` (shared) while proposing; a leader transfer closes it.
    pub fn spawn(
        raft: Raft,
        settings: BatcherSettings,
        timestamps: Timestamps,
        gate: Arc<tokio::sync::RwLock<()>>,
        cancel: CancellationToken,
    ) -> (
        WriteBatcher,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let batcher = WriteBatcher {
            tx,
            pending: Arc::default(),
        };
        (batcher, run(raft, settings, timestamps, gate, rx, cancel))
    }

    /// Commits `write` (in an entry with other writes) and returns its outcome. A retry
    /// (the same request id and content) of a write still queued or being committed waits
    /// for that write's outcome instead, and one of a write applied lately gets its outcome
    /// at once (`pending`).
    pub async fn write(&self, write: WriteCommand) -> Result<Vec<WriteOpResult>, NodeError> {
        let (waiter, outcome) = oneshot::channel();
        let fingerprint = write_fingerprint(&write);
        // Room first, so a write admitted as pending is queued without another wait (a
        // pending write that was never queued would never be answered).
        let room = self
            .tx
            .reserve()
            .await
            .map_err(|_| NodeError::Fatal("the shard is shutting down".to_string()))?;
        match self.pending.admit(write.request_id, fingerprint, waiter) {
            Admission::Answered(results) => return Ok(results),
            Admission::Joined => drop(room),
            Admission::Leads(reply) | Admission::Alone(reply) => room.send(PendingWrite { write, reply }),
        }
        outcome.await.map_err(|_| {
            NodeError::OutcomeUnknown("the write was dropped while the shard shut down".to_string())
        })?
    }
}

/// Keys and request ids already in the entry being built: a write touching one of them
/// waits for the next entry, so versions (entry indexes) stay unique per key.
#[derive(Default)]
struct EntryBuilder {
    writes: Vec<PendingWrite>,
    keys: HashSet<Vec<u8>>,
    request_ids: HashSet<RequestId>,
    bytes: usize,
}

impl EntryBuilder {
    fn accepts(&self, pending: &PendingWrite, max_bytes: usize) -> bool {
        if self.writes.is_empty() {
            return true;
        }
        self.writes.len() < MAX_WRITES_PER_ENTRY
            && self.bytes + pending.bytes() <= max_bytes
            && !self.request_ids.contains(&pending.write.request_id)
            && pending.write.ops.iter().all(|op| !self.keys.contains(&op.key))
    }

    fn push(&mut self, pending: PendingWrite) {
        self.bytes += pending.bytes();
        self.request_ids.insert(pending.write.request_id);
        self.keys
            .extend(pending.write.ops.iter().map(|op| op.key.clone()));
        self.writes.push(pending);
    }
}

async fn run(
    raft: Raft,
    settings: BatcherSettings,
    timestamps: Timestamps,
    gate: Arc<tokio::sync::RwLock<()>>,
    mut rx: mpsc::Receiver<PendingWrite>,
    cancel: CancellationToken,
) {
    let mut inflight = JoinSet::new();
    let mut carried: Option<PendingWrite> = None;
    loop {
        while inflight.len() >= MAX_INFLIGHT_ENTRIES {
            let _ = inflight.join_next().await;
        }
        let first = match carried.take() {
            Some(pending) => pending,
            None => tokio::select! {
                pending = rx.recv() => match pending {
                    Some(pending) => pending,
                    None => break,
                },
                _ = cancel.cancelled() => break,
            },
        };
        let mut entry = EntryBuilder::default();
        entry.push(first);
        while let Ok(pending) = rx.try_recv() {
            if entry.accepts(&pending, settings.max_entry_bytes) {
                entry.push(pending);
            } else {
                carried = Some(pending);
                break;
            }
        }
        let raft = raft.clone();
        inflight.spawn(commit_entry(
            raft,
            settings,
            timestamps.clone(),
            gate.clone(),
            entry.writes,
        ));
    }
    // In-flight entries finish (or fail) on their own; queued writes are refused.
    rx.close();
    let refuse = |pending: PendingWrite| {
        pending
            .reply
            .send(Err(NodeError::Fatal("the shard is shutting down".to_string())));
    };
    if let Some(pending) = carried {
        refuse(pending);
    }
    while let Ok(pending) = rx.try_recv() {
        refuse(pending);
    }
    while inflight.join_next().await.is_some() {}
}

async fn commit_entry(
    raft: Raft,
    settings: BatcherSettings,
    timestamps: Timestamps,
    gate: Arc<tokio::sync::RwLock<()>>,
    writes: Vec<PendingWrite>,
) {
    let _open = gate.read_owned().await;
    let (mut commands, replies): (Vec<WriteCommand>, Vec<Reply>) = writes
        .into_iter()
        .map(|pending| (pending.write, pending.reply))
        .unzip();
    let count = commands.len();
    if settings.unsafe_ack_before_commit {
        let term = raft.metrics().borrow().current_term;
        stamp(&mut commands, timestamps.dedup_clock.stamp(term));
        return ack_before_commit(&raft, settings, commands, replies).await;
    }
    let dedup_clock = timestamps.dedup_clock.clone();
    let outcome = match timestamps.source.get() {
        Some(source) => {
            propose_timed(
                &raft,
                settings.group,
                settings.node_id,
                (&timestamps.manager, source.as_ref()),
                settings.write_timeout_ms,
                |proposing| {
                    stamp(&mut commands, dedup_clock.stamp(proposing.term));
                    Command::write_at(TimedWrites {
                        commit_ts: proposing.commit_ts,
                        writes: commands,
                    })
                },
            )
            .await
        }
        // Before the oracle runs (start-up) nothing is served yet.
        None => Err(NodeError::NotInitialized),
    };
    match outcome {
        Ok(CommandResult::Write(outcomes)) if outcomes.len() == count => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                reply.send(match outcome {
                    WriteOutcome::Applied(results) => Ok(results),
                    WriteOutcome::Locked(locked) => Err(NodeError::KeyLocked(locked)),
                    WriteOutcome::RequestIdReused(request_id) => {
                        Err(NodeError::RequestIdReused { request_id })
                    }
                });
            }
        }
        Ok(other) => {
            for reply in replies {
                reply.send(Err(NodeError::OutcomeUnknown(format!(
                    "unexpected apply result {other:?}"
                ))));
            }
        }
        Err(err) => {
            for reply in replies {
                reply.send(Err(err.duplicate()));
            }
        }
    }
}

/// Stamps every write of an entry with the leader's de-duplication clock.
fn stamp(commands: &mut [WriteCommand], issued_at_ms: u64) {
    for command in commands {
        command.issued_at_ms = issued_at_ms;
    }
}

/// The unsafe negative control: acknowledge as soon as the leader accepted the entry.
async fn ack_before_commit(
    raft: &Raft,
    settings: BatcherSettings,
    commands: Vec<WriteCommand>,
    replies: Vec<Reply>,
) {
    if !is_leader(raft, settings.node_id) {
        for reply in replies {
            reply.send(Err(NodeError::NotLeader {
                group: settings.group,
                leader: leader_hint(raft),
                proposed: false,
            }));
        }
        return;
    }
    let ops_per_write: Vec<usize> = commands.iter().map(|write| write.ops.len()).collect();
    let accepted = raft.client_write_ff(Command::Write(commands)).await;
    for (reply, ops) in replies.into_iter().zip(ops_per_write) {
        let outcome = match &accepted {
            Ok(_) => Ok(vec![
                WriteOpResult {
                    succeeded: true,
                    ..WriteOpResult::default()
                };
                ops
            ]),
            Err(fatal) => Err(NodeError::Fatal(fatal.to_string())),
        };
        reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::WriteOp;

    fn put(request_id: RequestId, value: &[u8]) -> WriteCommand {
        WriteCommand {
            request_id,
            issued_at_ms: 0,
            ops: vec![WriteOp {
                key: b"k".to_vec(),
                value: Some(value.to_vec()),
                expected_version: None,
                expiry: Default::default(),
            }],
        }
    }

    /// A retry of a write that is still queued joins it (issue 14): nothing more is queued,
    /// and the retry gets the outcome of the write its abandoned first attempt queued. A
    /// write reusing the id with other content is queued as before.
    #[tokio::test]
    async fn a_retry_joins_the_pending_write() {
        let (tx, mut queue) = mpsc::channel(8);
        let batcher = WriteBatcher {
            tx,
            pending: Arc::default(),
        };
        let first = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.write(put([3; 16], b"v")).await }
        });
        let queued = tokio::time::timeout(Duration::from_secs(10), queue.recv())
            .await
            .expect("the first attempt is queued")
            .expect("the queue is open");
        // The first attempt's caller gives up (the router abandoned its gRPC call).
        first.abort();
        let retry = batcher.write(put([3; 16], b"v"));
        tokio::pin!(retry);
        assert!(futures::poll!(&mut retry).is_pending(), "the retry waits");
        assert!(
            queue.try_recv().is_err(),
            "the retry joined: nothing more is queued"
        );

        let mut reuse = Box::pin(batcher.write(put([3; 16], b"other")));
        assert!(futures::poll!(&mut reuse).is_pending());
        let reused = queue.try_recv().expect("other content under the id is queued");
        assert_eq!(reused.write.ops[0].value.as_deref(), Some(&b"other"[..]));

        let applied = WriteOpResult {
            succeeded: true,
            version: 9,
            ..WriteOpResult::default()
        };
        queued.reply.send(Ok(vec![applied.clone()]));
        let outcome = tokio::time::timeout(Duration::from_secs(10), retry)
            .await
            .expect("the retry is answered with the write it joined");
        assert_eq!(outcome.expect("applied"), vec![applied]);
        assert_eq!(batcher.pending.len(), 0, "an answered write is no longer pending");
    }
}
