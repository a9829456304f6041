//! The read and write paths of shard groups: which group serves a request, proposals
//! (through the leader-transfer write gate), ReadIndex for linearizable reads, batched
//! writes, local reads, and delete-range entries.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ringkv_ring::Ring;

use super::Node;
use crate::error::NodeError;
use crate::group::Group;
use crate::proposal;
use crate::raft::state_machine::mvcc::BelowFloor;
use crate::raft::state_machine::{CountResult, ScanOptions, ScanPage};
use crate::raft::types::{
    Command, CommandResult, DeleteRangeCommand, DeleteRangeResult, GroupId, TimedDeleteRange, Versioned,
    WriteCommand, WriteOp, WriteOpResult,
};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// The shard group for a request, after checking the shard exists and is hosted here.
    pub fn shard_group(&self, shard: u32) -> Result<(Arc<Ring>, Arc<Group>), NodeError> {
        let ring = self.ring().ok_or(NodeError::NotInitialized)?;
        if shard >= ring.shard_count() {
            return Err(NodeError::UnknownShard {
                shard,
                shards: ring.shard_count(),
            });
        }
        // A node that left the ring (decommissioned or declared dead) serves nothing, not
        // even stale reads: its replicas may be arbitrarily old.
        if ring
            .member(self.node_id())
            .is_some_and(|member| member.state.is_gone())
        {
            return Err(NodeError::ShardNotHosted(shard));
        }
        let group = self
            .group(GroupId::Shard(shard))
            .ok_or(NodeError::ShardNotHosted(shard))?;
        Ok((ring, group))
    }

    /// Proposes `command` to `group` and waits until it is committed and applied.
    pub async fn propose(&self, group: &Group, command: Command) -> Result<CommandResult, NodeError> {
        let timeout_ms = self.config().write_timeout_ms;
        group.hibernation.touch();
        // A leader transfer holds the gate while the target catches up and campaigns.
        let gate = group.leadership.gate();
        let _open = gate.read().await;
        proposal::propose(&group.raft, group.id, self.node_id(), command, timeout_ms).await
    }

    /// Waits until a read on `group` at this moment would be linearizable (ReadIndex, one
    /// round shared by the reads that arrived before it started).
    pub async fn ensure_linearizable(&self, group: &Group) -> Result<(), NodeError> {
        // The round runs its own heartbeats, asleep or not; a read restarts the quiet period
        // so a read-only group keeps its heartbeats (and fast failover).
        group.hibernation.touch();
        group.reads.confirm().await
    }

    /// Waits until this replica is known to lead `group` in `term` now: at once while the
    /// last lease check still proves it, else after a check (`ReadBatcher::confirm_leading`).
    pub async fn confirm_leading(&self, group: &Group, term: u64) -> Result<(), NodeError> {
        group.hibernation.touch();
        group.reads.confirm_leading(term).await
    }

    /// Applies `ops` on a shard, atomically and in order (batched with concurrent writes
    /// into one Raft entry).
    pub async fn write(
        &self,
        group: &Group,
        request_id: [u8; 16],
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteOpResult>, NodeError> {
        let batcher = group.batcher.as_ref().ok_or_else(|| {
            NodeError::InvalidArgument(format!("{} does not take key-value writes", group.id))
        })?;
        group.hibernation.touch();
        batcher
            .write(WriteCommand {
                request_id,
                // Stamped by the batcher as the leader proposes it (`dedup_clock.rs`).
                issued_at_ms: 0,
                ops,
            })
            .await
    }

    /// Reads the first of `keys` whose keys and values fit in `max_bytes` (at least one)
    /// from the local state of `group`, all at one point between entries, with each value's
    /// expiry (oracle time; values expired at [`Node::expiry_clock`] are absent).
    pub async fn read_local(
        &self,
        group: &Group,
        keys: &[Vec<u8>],
        max_bytes: usize,
    ) -> Result<Vec<Option<(Versioned, Option<u64>)>>, NodeError> {
        let now_ts = self.expiry_clock(group).await?;
        Ok(group.state.get_many_live_within(keys, max_bytes, now_ts).await?)
    }

    /// Reads the first of `keys` whose keys and values fit in `max_bytes` (at least one)
    /// from the local state of `group` with provisional values (READ UNCOMMITTED): a locked
    /// key reads as its transaction would leave it. Never waits.
    pub async fn read_uncommitted(
        &self,
        group: &Group,
        keys: &[Vec<u8>],
        max_bytes: usize,
    ) -> Result<Vec<Option<Versioned>>, NodeError> {
        let now_ts = self.expiry_clock(group).await?;
        Ok(group
            .state
            .get_many_uncommitted_live_within(keys, max_bytes, now_ts)
            .await?)
    }

    /// Reads `keys` of shard `group` as of oracle timestamp `read_ts` (a snapshot read): the
    /// leader confirms its leadership, fences writes at or below `read_ts` and waits for those
    /// still being committed (`concurrency.rs`), then reads each key's newest version at or
    /// before `read_ts` — of the first keys whose keys and values fit in `max_bytes` (at
    /// least one). A key locked by a transaction that started at or before `read_ts`
    /// refuses the read (it may commit at or below it), unless the `unsafe_ignore_locks`
    /// negative control reads past the lock.
    pub async fn read_at(
        &self,
        group: &Group,
        keys: &[Vec<u8>],
        read_ts: u64,
        max_bytes: usize,
    ) -> Result<Vec<Option<(Versioned, Option<u64>)>>, NodeError> {
        self.prepare_read_at(group, read_ts).await?;
        if !self.config().unsafe_ignore_locks {
            self.check_unlocked(group, keys, read_ts)?;
        }
        let values = group.state.get_many_at_within(keys, read_ts, max_bytes).await?;
        values.map_err(|below| too_old(read_ts, below))
    }

    /// Reads one page of a key range of shard `group` as of oracle timestamp `read_ts`,
    /// fenced as [`Node::read_at`]: with the other shards' pages at the same timestamp, one
    /// consistent snapshot of the range.
    pub async fn scan_at(
        &self,
        group: &Group,
        options: ScanOptions,
        read_ts: u64,
    ) -> Result<ScanPage, NodeError> {
        self.prepare_read_at(group, read_ts).await?;
        if !self.config().unsafe_ignore_locks {
            self.check_range_unlocked(group, &options.start, options.end.as_deref(), read_ts)?;
        }
        let page = group.state.scan_at(options, read_ts).await?;
        page.map_err(|below| too_old(read_ts, below))
    }

    /// Counts at most `limit` keys of `[start, end)` of shard `group` present as of oracle
    /// timestamp `read_ts`, fenced as [`Node::read_at`].
    pub async fn count_at(
        &self,
        group: &Group,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
        read_ts: u64,
    ) -> Result<CountResult, NodeError> {
        self.prepare_read_at(group, read_ts).await?;
        if !self.config().unsafe_ignore_locks {
            self.check_range_unlocked(group, &start, end.as_deref(), read_ts)?;
        }
        let counted = group.state.count_at(start, end, limit, read_ts).await?;
        counted.map_err(|below| too_old(read_ts, below))
    }

    /// Refuses a read of `keys` of `group` while one is locked by a transaction that started
    /// at or before `max_start_ts` (`u64::MAX` for a linearizable read of the latest values):
    /// it may commit below the read's timestamp (`KeyLocked`, retried by the router).
    pub fn check_unlocked(
        &self,
        group: &Group,
        keys: &[Vec<u8>],
        max_start_ts: u64,
    ) -> Result<(), NodeError> {
        match group.state.first_lock(keys, max_start_ts)? {
            Some(locked) => Err(NodeError::KeyLocked(locked)),
            None => Ok(()),
        }
    }

    /// [`Node::check_unlocked`] for the keys of `[start, end)` (`None` end = no upper bound).
    pub fn check_range_unlocked(
        &self,
        group: &Group,
        start: &[u8],
        end: Option<&[u8]>,
        max_start_ts: u64,
    ) -> Result<(), NodeError> {
        match group.state.first_lock_in(start, end, max_start_ts)? {
            Some(locked) => Err(NodeError::KeyLocked(locked)),
            None => Ok(()),
        }
    }

    /// Makes this leader of `group` ready to read at `read_ts`: the timestamp was handed out
    /// by the oracle, the leadership is confirmed, writes at or below it are fenced and those
    /// still being committed have applied (`concurrency.rs`).
    pub(super) async fn prepare_read_at(&self, group: &Group, read_ts: u64) -> Result<(), NodeError> {
        // A timestamp no oracle handed out yet would fence every write for good.
        let source = self.timestamp_source().ok_or(NodeError::NotInitialized)?;
        let now = source.timestamp().await?;
        if read_ts > now {
            return Err(NodeError::InvalidArgument(format!(
                "read timestamp {read_ts} is in the future (the oracle is at {now})"
            )));
        }
        self.ensure_linearizable(group).await?;
        group.concurrency.prepare_read(read_ts).await;
        // Still the leader after the wait: writes it waited for were its own.
        self.ensure_linearizable(group).await
    }

    /// Counts at most `limit` keys of `[start, end)` (`None` end = no upper bound) in the
    /// local state of `group`, at one applied state (in holds of the apply lock; an apply
    /// meanwhile ends the count early, with more).
    pub async fn count_local(
        &self,
        group: &Group,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u64,
    ) -> Result<CountResult, NodeError> {
        let now_ts = self.expiry_clock(group).await?;
        Ok(group.state.count_live(start, end, limit, now_ts).await?)
    }

    /// Deletes the first `limit` keys of `[start, end)` (`None` end = no upper bound) on a
    /// shard in one Raft entry of its own (proposed directly, not batched with writes). A
    /// retry with the same request id within the de-duplication window returns the first
    /// outcome without deleting again; another range or limit under that id is refused
    /// ([`NodeError::RequestIdReused`]).
    pub async fn delete_range(
        &self,
        group: &Group,
        request_id: [u8; 16],
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<DeleteRangeResult, NodeError> {
        if group.id == GroupId::System {
            return Err(NodeError::InvalidArgument(format!(
                "{} does not take key-value writes",
                group.id
            )));
        }
        let mut command = DeleteRangeCommand {
            request_id,
            start,
            end,
            limit,
            // Stamped as the leader proposes it (`dedup_clock.rs`).
            issued_at_ms: 0,
        };
        // Deletions are versions: they commit at an oracle timestamp, fenced like writes.
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
                command.issued_at_ms = group.dedup_clock.stamp(proposing.term);
                Command::DeleteRangeAt(TimedDeleteRange {
                    commit_ts: proposing.commit_ts,
                    command,
                })
            },
        )
        .await?;
        match outcome {
            CommandResult::DeleteRange(result) => Ok(result),
            CommandResult::RangeLocked(locked) => Err(NodeError::KeyLocked(locked)),
            CommandResult::RangeRequestIdReused(request_id) => Err(NodeError::RequestIdReused { request_id }),
            other => Err(NodeError::OutcomeUnknown(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }
}

/// The error of a read at `read_ts` below a shard's history.
fn too_old(read_ts: u64, below: BelowFloor) -> NodeError {
    NodeError::SnapshotTooOld {
        read_ts,
        floor: below.floor,
    }
}
