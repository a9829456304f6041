//! The openraft type configuration and the commands replicated through every group.

use std::fmt;

use openraft::BasicNode;
use ringkv_ring::{RingConfig, RingMember};
use serde::{Deserialize, Serialize};

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
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Write(writes) => write!(f, "write({} writes)", writes.len()),
            Command::SetCluster(config) => write!(f, "set-cluster({})", config.cluster_id),
        }
    }
}

/// Request id of a write: 16 bytes chosen by the client or router.
pub type RequestId = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteCommand {
    pub request_id: RequestId,
    /// Proposer's wall clock (ms since the Unix epoch): ages de-duplication records
    /// deterministically on every replica.
    pub issued_at_ms: u64,
    pub ops: Vec<WriteOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOp {
    pub key: Vec<u8>,
    /// `Some(value)` stores the value, `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// Apply only if the key's version equals this (0 = absent).
    pub expected_version: Option<u64>,
}

/// The outcome of one [`WriteOp`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOpResult {
    pub succeeded: bool,
    /// Version of the value written by a successful put.
    pub version: u64,
    /// Whether the key existed before the op.
    pub existed: bool,
    /// On a failed comparison: the current value and version.
    pub current: Option<Versioned>,
}

/// A stored value with its version (the log index of the write that produced it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
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
    Write(Vec<Vec<WriteOpResult>>),
    /// The configuration now in force (the existing one when a different one was proposed).
    Cluster(ClusterConfig),
}
