//! The openraft type configuration and the commands replicated through every group.

use std::fmt;

use openraft::BasicNode;
use ringkv_ring::{MemberState, RingConfig, RingMember};
use serde::{Deserialize, Serialize};

pub use super::expiry::{ExpiringWrites, Expiry, TimedPurge, TtlCommand};
pub use super::txn::{
    LockedKey, TxnCheckStatus, TxnCommit, TxnGc, TxnOnePc, TxnOutcome, TxnPrewrite, TxnRollback,
};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Types shared by the system group and every shard group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// Which Raft group a message, tree or snapshot belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupId {
    /// The system group: cluster id, shard count, replication factor and the ring.
    System,
    /// The Raft group replicating one shard.
    Shard(u32),
}

impl GroupId {
    /// Stable name used for trees, snapshot directories and logs.
    pub fn name(self) -> String {
        match self {
            GroupId::System => "sys".to_string(),
            GroupId::Shard(shard) => format!("shard-{shard}"),
        }
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupId::System => write!(f, "system"),
            GroupId::Shard(shard) => write!(f, "shard {shard}"),
        }
    }
}

/// A command in the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Shard groups: writes batched into one entry, applied atomically and in order, each
    /// de-duplicated by its request id. (The batcher never puts two writes touching the
    /// same key in one entry, so versions — the entry's index — stay unique per key.)
    Write(Vec<WriteCommand>),
    /// System group: record the cluster configuration (once; later ring changes bump the epoch).
    SetCluster(ClusterConfig),
    /// Shard groups: delete up to `limit` keys of a range in one entry, de-duplicated by its
    /// request id. (postcard encodes the variant index: new variants go at the end.)
    DeleteRange(DeleteRangeCommand),
    /// System group: change the ring (add a node, start a decommission, record a node as
    /// active, removed or dead). Applied only if the epoch is still `expected_epoch`, so a
    /// change decided on a stale view is rejected, not misapplied.
    ChangeRing(RingChange),
    /// System group: raise the timestamp oracle's persisted bound to at least this many
    /// milliseconds (never lowers it). The oracle's leader hands out only timestamps whose
    /// physical part is below the committed bound, so a later leader starts above every
    /// timestamp an earlier one handed out (see `tso/`). A bound above
    /// [`TSO_MAX_PHYSICAL_MS`] is applied as that maximum.
    TsoAdvance(u64),
    /// Shard groups: like [`Command::Write`], committed at `commit_ts` (a timestamp of the
    /// oracle; if the shard already applied one at or above it, just above that instead:
    /// see `state_machine/mvcc.rs`).
    WriteAt(TimedWrites),
    /// Shard groups: a delete-range committed at `commit_ts` (as [`Command::WriteAt`]).
    DeleteRangeAt(TimedDeleteRange),
    /// Shard groups: lock keys with a transaction's writes (see `raft/txn.rs`).
    TxnPrewrite(TxnPrewrite),
    /// Shard groups: commit a transaction's locks at its commit timestamp.
    TxnCommit(TxnCommit),
    /// Shard groups: remove a transaction's locks.
    TxnRollback(TxnRollback),
    /// Shard groups: what became of a transaction, rolling back one past its expiry.
    TxnCheckStatus(TxnCheckStatus),
    /// Shard groups: raise the transaction safe point and delete records below it.
    TxnGc(TxnGc),
    /// Shard groups: a single-shard transaction committed in one entry.
    TxnOnePc(TxnOnePc),
    /// System group: change the permission table (roles, users, enabled; see
    /// `ringkv-authz`), applied by every node with [`ringkv_authz::AuthTable::apply`].
    Auth(ringkv_authz::AuthChange),
    /// Shard groups: writes whose ops carry expiries, or the removal of expired keys
    /// (issue 16; see `raft/expiry.rs`).
    Ttl(TtlCommand),
}

impl Command {
    /// The entry of `timed`: a [`Command::WriteAt`], or a [`TtlCommand::WriteAt`] when an
    /// op carries an expiry (which [`Command::WriteAt`] does not encode).
    pub fn write_at(timed: TimedWrites) -> Command {
        let expiring = timed
            .writes
            .iter()
            .any(|write| write.ops.iter().any(|op| op.expiry != Expiry::Never));
        match expiring {
            true => Command::Ttl(TtlCommand::WriteAt(ExpiringWrites(timed))),
            false => Command::WriteAt(timed),
        }
    }
}

/// A [`Command::DeleteRangeAt`]: the delete-range and its commit timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedDeleteRange {
    pub commit_ts: u64,
    pub command: DeleteRangeCommand,
}

/// The writes of a [`Command::WriteAt`] entry and their commit timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedWrites {
    pub commit_ts: u64,
    pub writes: Vec<WriteCommand>,
}

/// The largest physical part (milliseconds) a timestamp can hold: 46 bits, about the year
/// 4199. A clock beyond it is a clock fault; bounds and timestamps stop there.
pub const TSO_MAX_PHYSICAL_MS: u64 = (1 << 46) - 1;

/// A change of ring membership, proposed to the system group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingChange {
    /// The epoch the change was decided on; `None` applies it to whatever epoch is current.
    pub expected_epoch: Option<u64>,
    pub kind: RingChangeKind,
}

/// What a [`RingChange`] does. (postcard encodes the variant index: new variants go at
/// the end.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingChangeKind {
    /// A new node joins: it owns tokens at once (state `joining`), so placement starts
    /// moving replicas to it.
    AddNode { node_id: NodeId, addr: String },
    /// Start moving every replica away from a node (state `decommissioning`).
    Decommission { node_id: NodeId },
    /// A joining node holds every replica placement gives it (state `active`).
    MarkActive { node_id: NodeId },
    /// A decommissioning node holds no replica any more (state `removed`).
    MarkRemoved { node_id: NodeId },
    /// A node unreachable for longer than the dead-node timeout (state `dead`): its
    /// replicas are re-created elsewhere.
    MarkDead { node_id: NodeId },
}

impl fmt::Display for RingChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingChangeKind::AddNode { node_id, addr } => write!(f, "add node {node_id} at {addr}"),
            RingChangeKind::Decommission { node_id } => write!(f, "decommission node {node_id}"),
            RingChangeKind::MarkActive { node_id } => write!(f, "mark node {node_id} active"),
            RingChangeKind::MarkRemoved { node_id } => write!(f, "mark node {node_id} removed"),
            RingChangeKind::MarkDead { node_id } => write!(f, "mark node {node_id} dead"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write(writes) => write!(f, "write({} writes)", writes.len()),
            Command::SetCluster(config) => write!(f, "set-cluster({})", config.cluster_id),
            Command::DeleteRange(range) => write!(f, "delete-range(limit {})", range.limit),
            Command::ChangeRing(change) => write!(f, "change-ring({})", change.kind),
            Command::TsoAdvance(limit_ms) => write!(f, "tso-advance({limit_ms} ms)"),
            Command::Auth(change) => write!(f, "auth({change:?})"),
            Command::Ttl(TtlCommand::WriteAt(ExpiringWrites(timed))) => write!(
                f,
                "write({} writes with expiries at {})",
                timed.writes.len(),
                timed.commit_ts
            ),
            Command::Ttl(TtlCommand::Purge(purge)) => {
                write!(f, "purge-expired(up to {} at {})", purge.limit, purge.commit_ts)
            }
            Command::WriteAt(timed) => {
                write!(f, "write({} writes at {})", timed.writes.len(), timed.commit_ts)
            }
            Command::DeleteRangeAt(timed) => write!(
                f,
                "delete-range(limit {} at {})",
                timed.command.limit, timed.commit_ts
            ),
            Command::TxnPrewrite(prewrite) => write!(
                f,
                "txn-prewrite({} keys of {})",
                prewrite.mutations.len(),
                prewrite.start_ts
            ),
            Command::TxnCommit(commit) => write!(
                f,
                "txn-commit({} keys of {} at {})",
                commit.keys.len(),
                commit.start_ts,
                commit.commit_ts
            ),
            Command::TxnRollback(rollback) => write!(
                f,
                "txn-rollback({} keys of {})",
                rollback.keys.len(),
                rollback.start_ts
            ),
            Command::TxnCheckStatus(check) => write!(f, "txn-check-status({})", check.start_ts),
            Command::TxnGc(gc) => write!(f, "txn-gc(below {}, up to {})", gc.safe_point, gc.purge_limit),
            Command::TxnOnePc(one) => write!(
                f,
                "txn-1pc({} keys of {} at {})",
                one.mutations.len(),
                one.start_ts,
                one.commit_ts
            ),
        }
    }
}

/// Request id of a write: 16 bytes chosen by the client or router.
pub type RequestId = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCommand {
    pub request_id: RequestId,
    /// The leader's de-duplication stamp (`dedup_clock.rs`: its monotonic clock continued
    /// from the shard's, in ms; entries written before it carry the proposer's wall clock):
    /// ages de-duplication records deterministically on every replica.
    pub issued_at_ms: u64,
    pub ops: Vec<WriteOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOp {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// `Some(value)` stores the value, `None` deletes the key.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Apply only if the key's version equals this (0 = absent; an expired key is absent).
    pub expected_version: Option<u64>,
    /// What the op does to the key's expiry. Not encoded here: a [`Command::WriteAt`]
    /// carries none, a [`TtlCommand::WriteAt`] encodes it beside the writes
    /// (`raft/expiry.rs`), so entries written before it decode unchanged.
    #[serde(skip)]
    pub expiry: Expiry,
}

/// Deletes the first `limit` keys (in key order) of `[start, end)` on a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeCommand {
    pub request_id: RequestId,
    /// First key of the range (inclusive; empty = the first key).
    #[serde(with = "serde_bytes")]
    pub start: Vec<u8>,
    /// End of the range (exclusive); `None` = no upper bound.
    #[serde(with = "serde_bytes")]
    pub end: Option<Vec<u8>>,
    /// Most keys deleted by this entry.
    pub limit: u32,
    /// The leader's de-duplication stamp, as [`WriteCommand::issued_at_ms`]: ages the
    /// de-duplication record.
    pub issued_at_ms: u64,
}

/// The outcome of a [`DeleteRangeCommand`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResult {
    /// Keys deleted.
    pub deleted: u64,
    /// The last (greatest) key deleted, if any.
    #[serde(with = "serde_bytes")]
    pub last_deleted: Option<Vec<u8>>,
    /// Whether keys remain in the range after `last_deleted` (the limit stopped the delete).
    pub more: bool,
}

/// The outcome of one [`WriteOp`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOpResult {
    pub succeeded: bool,
    /// Version of the value written by a successful put.
    pub version: u64,
    /// Whether the key existed before the op.
    pub existed: bool,
    /// On a failed comparison: the key's state then (`None`: absent).
    pub current: Option<Current>,
}

/// The state of a key that a failed comparison met.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub version: u64,
    /// The value, when the result carries it: the first application of a write carries the
    /// values of its failed comparisons within [`CurrentValueBudget`]; a retry answered
    /// from the de-duplication record carries versions only (the record keeps no values).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
}

/// How many bytes of failed comparisons' current values one entry's results, or one reply,
/// carry: in order, values are kept while they fit, and from the first that does not on
/// only versions are (so a batch of failing compare-and-sets on large values cannot make a
/// reply larger than a gRPC message may be).
#[derive(Debug)]
pub struct CurrentValueBudget {
    left_bytes: usize,
}

impl CurrentValueBudget {
    /// The budget of one entry's results and of one reply.
    pub const BYTES: usize = 4 << 20;

    pub fn new() -> CurrentValueBudget {
        CurrentValueBudget {
            left_bytes: Self::BYTES,
        }
    }

    /// Keeps the current values of `results` that fit in what is left, in order; drops
    /// the value of the first that does not and of every later one.
    pub fn spend(&mut self, results: &mut [WriteOpResult]) {
        for current in results.iter_mut().filter_map(|result| result.current.as_mut()) {
            let Some(value) = &current.value else {
                continue;
            };
            match self.left_bytes.checked_sub(value.len()) {
                Some(left_bytes) => self.left_bytes = left_bytes,
                None => {
                    self.left_bytes = 0;
                    current.value = None;
                }
            }
        }
    }
}

impl Default for CurrentValueBudget {
    fn default() -> Self {
        CurrentValueBudget::new()
    }
}

/// What became of one write of a write entry. (Results are not persisted; new variants go
/// at the end all the same.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Applied (or applied before, for a retried request id): one result per op.
    Applied(Vec<WriteOpResult>),
    /// Not applied: a key is locked by a transaction, which must commit or roll back
    /// first. Nothing is recorded, so a retry is evaluated afresh.
    Locked(LockedKey),
    /// Not applied: this request id is remembered for a different write (another
    /// fingerprint, see `state_machine/fingerprint.rs`). Nothing is recorded.
    RequestIdReused(RequestId),
}

impl WriteOutcome {
    /// The op results of an applied write; `None` when it was not applied.
    pub fn results(&self) -> Option<&[WriteOpResult]> {
        match self {
            WriteOutcome::Applied(results) => Some(results),
            WriteOutcome::Locked(_) | WriteOutcome::RequestIdReused(_) => None,
        }
    }
}

/// A stored value with its version (the log index of the write that produced it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// The cluster configuration held by the system group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub cluster_id: String,
    pub ring: RingConfig,
    pub members: Vec<RingMember>,
    /// Bumped by every ring change.
    pub epoch: u64,
}

impl ClusterConfig {
    /// Whether `other` describes the same cluster shape (ignoring the cluster id and epoch).
    pub fn same_shape(&self, other: &ClusterConfig) -> bool {
        self.ring == other.ring && self.members == other.members
    }
}

/// What applying a [`Command`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries.
    #[default]
    None,
    /// One outcome per write of the entry, in order.
    Write(Vec<WriteOutcome>),
    /// The configuration now in force (the existing one when a different one was proposed).
    Cluster(ClusterConfig),
    /// The outcome of a delete-range (the first one again for a retried request id).
    DeleteRange(DeleteRangeResult),
    /// The outcome of a [`RingChange`].
    Ring(RingChangeOutcome),
    /// The timestamp oracle's bound in force after a [`Command::TsoAdvance`] (milliseconds).
    TsoLimit(u64),
    /// The outcome of a transaction command.
    Txn(TxnOutcome),
    /// A delete-range not applied: a key in its range is locked by a transaction.
    RangeLocked(LockedKey),
    /// A delete-range not applied: its request id is remembered for a different
    /// delete-range (another fingerprint). Nothing is recorded.
    RangeRequestIdReused(RequestId),
    /// The permission table after a [`Command::Auth`], or why the change was refused
    /// (nothing changed).
    Auth(Result<ringkv_authz::AuthTable, ringkv_authz::AuthRejection>),
}

/// The outcome of a [`RingChange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RingChangeOutcome {
    /// Applied: the new configuration (epoch + 1).
    Applied(ClusterConfig),
    /// Already in effect (a repeated request): the configuration, epoch unchanged.
    Unchanged(ClusterConfig),
    /// Refused; nothing changed.
    Rejected(RingChangeRejection),
}

/// Why a ring change is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RingChangeRejection {
    #[error("the cluster is not initialised")]
    NotInitialized,
    /// Decided on an older ring (the system leader's changes carry the epoch they were
    /// decided on).
    #[error("the ring changed meanwhile (epoch {expected} is now {current}); look again and retry")]
    StaleEpoch { expected: u64, current: u64 },
    #[error("node id 0 is reserved")]
    ReservedNodeId,
    #[error("node {node_id} has no address")]
    NoAddress { node_id: NodeId },
    #[error("address {addr} already belongs to node {owner}")]
    AddressTaken { addr: String, owner: NodeId },
    #[error("node {node_id} was {} from the ring; a node id is never reused — start the node with a new id and an empty data directory", .state.as_str())]
    IdNeverReused { node_id: NodeId, state: MemberState },
    #[error("node {node_id} is already a member at {addr}")]
    MemberElsewhere { node_id: NodeId, addr: String },
    #[error("node {node_id} is being decommissioned")]
    BeingDecommissioned { node_id: NodeId },
    #[error("node {node_id} is not a ring member")]
    NotMember { node_id: NodeId },
    #[error("node {node_id} was declared dead; its replicas were already re-created elsewhere")]
    DeclaredDead { node_id: NodeId },
    /// A state transition from the wrong state (e.g. marking active a node that is not joining).
    #[error("node {node_id} is {}, not {}", .state.as_str(), .expected.as_str())]
    WrongState {
        node_id: NodeId,
        state: MemberState,
        expected: MemberState,
    },
    #[error("node {node_id} was already removed")]
    AlreadyRemoved { node_id: NodeId },
    /// The resulting ring would be invalid (e.g. fewer token owners than the replication
    /// factor).
    #[error("{change}: {detail}")]
    InvalidRing { change: String, detail: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// postcard encodes the variant index: persisted log entries and results stay readable
    /// only while existing variants keep their positions.
    #[test]
    fn variant_indexes_are_stable() {
        let encode = |command: &Command| postcard::to_allocvec(command).expect("encode");
        assert_eq!(encode(&Command::Write(Vec::new())), vec![0, 0]);
        let delete_range = Command::DeleteRange(DeleteRangeCommand {
            request_id: [0; 16],
            start: Vec::new(),
            end: None,
            limit: 1,
            issued_at_ms: 0,
        });
        assert_eq!(encode(&delete_range).first(), Some(&2));
        assert_eq!(encode(&Command::TsoAdvance(300)), vec![4, 172, 2]);
        let write_at = Command::WriteAt(TimedWrites {
            commit_ts: 1,
            writes: Vec::new(),
        });
        assert_eq!(encode(&write_at), vec![5, 1, 0]);
        if let Command::DeleteRange(command) = delete_range {
            let timed = Command::DeleteRangeAt(TimedDeleteRange {
                commit_ts: 1,
                command,
            });
            assert_eq!(encode(&timed).first(), Some(&6));
        }
        let result = |result: &CommandResult| postcard::to_allocvec(result).expect("encode");
        assert_eq!(result(&CommandResult::None), vec![0]);
        assert_eq!(result(&CommandResult::Write(Vec::new())), vec![1, 0]);
        assert_eq!(
            result(&CommandResult::DeleteRange(DeleteRangeResult::default())).first(),
            Some(&3)
        );
        assert_eq!(result(&CommandResult::TsoLimit(1)), vec![5, 1]);
        let check = Command::TxnCheckStatus(TxnCheckStatus {
            start_ts: 1,
            primary: vec![7],
            now_ts: 2,
        });
        assert_eq!(encode(&check), vec![10, 1, 1, 7, 2]);
        assert_eq!(result(&CommandResult::Txn(TxnOutcome::Prewritten)), vec![6, 0]);
        // The permission table's change and result (issue 15) came after every other.
        assert_eq!(
            encode(&Command::Auth(ringkv_authz::AuthChange::Enable)),
            vec![13, 8]
        );
        assert_eq!(
            result(&CommandResult::Auth(Ok(ringkv_authz::AuthTable::default()))),
            vec![9, 0, 0, 0, 0, 0, 0, 0]
        );
        // Passwords and tokens (issue 15) came after the first nine changes: entries of
        // those nine decode as before.
        assert_eq!(
            encode(&Command::Auth(ringkv_authz::AuthChange::SetTokenTtl {
                ttl_ms: 1
            })),
            vec![13, 12, 1]
        );
    }

    /// Byte strings are encoded as one slice (`serde_bytes`) but produce the bytes serde's
    /// element-by-element `Vec<u8>` did: entries in existing logs, snapshots and
    /// de-duplication records decode unchanged, and old and new nodes understand each other.
    #[test]
    fn byte_strings_keep_their_encoding() {
        #[derive(Serialize)]
        struct PlainOp {
            key: Vec<u8>,
            value: Option<Vec<u8>>,
            expected_version: Option<u64>,
        }
        #[derive(Serialize)]
        struct PlainRange {
            request_id: RequestId,
            start: Vec<u8>,
            end: Option<Vec<u8>>,
            limit: u32,
            issued_at_ms: u64,
        }
        #[derive(Serialize)]
        struct PlainVersioned {
            version: u64,
            value: Vec<u8>,
        }
        let value: Vec<u8> = (0..=255).collect();
        let op = WriteOp {
            key: b"key".to_vec(),
            value: Some(value.clone()),
            expected_version: Some(7),
            expiry: Default::default(),
        };
        let plain = PlainOp {
            key: b"key".to_vec(),
            value: Some(value.clone()),
            expected_version: Some(7),
        };
        let encoded = postcard::to_allocvec(&op).expect("encode");
        assert_eq!(encoded, postcard::to_allocvec(&plain).expect("encode"));
        assert_eq!(postcard::from_bytes::<WriteOp>(&encoded).expect("decode"), op);
        let range = DeleteRangeCommand {
            request_id: [3; 16],
            start: b"a".to_vec(),
            end: Some(b"z".to_vec()),
            limit: 9,
            issued_at_ms: 12,
        };
        let plain_range = PlainRange {
            request_id: [3; 16],
            start: b"a".to_vec(),
            end: Some(b"z".to_vec()),
            limit: 9,
            issued_at_ms: 12,
        };
        assert_eq!(
            postcard::to_allocvec(&range).expect("encode"),
            postcard::to_allocvec(&plain_range).expect("encode")
        );
        let versioned = Versioned {
            version: 5,
            value: value.clone(),
        };
        let plain_versioned = PlainVersioned { version: 5, value };
        assert_eq!(
            postcard::to_allocvec(&versioned).expect("encode"),
            postcard::to_allocvec(&plain_versioned).expect("encode")
        );
    }
}
