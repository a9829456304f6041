//! Errors of the node layer. Mapped to gRPC statuses in one place: `service::status`.

use crate::raft::types::{GroupId, LockedKey, NodeId, RequestId, RingChangeRejection};
use crate::storage::StorageError;

/// A per-request failure. Fatal conditions (disk errors) are reported as `Storage`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unknown shard {shard}: the cluster has {shards} shards (0..{shards})")]
    UnknownShard { shard: u32, shards: u32 },
    #[error("shard {0} is not hosted on this node")]
    ShardNotHosted(u32),
    #[error("key belongs to shard {actual}, not shard {requested}")]
    WrongShard { requested: u32, actual: u32 },
    /// Not the leader of the group. `proposed` is true when the request had already been
    /// proposed when leadership was lost (its outcome is then unknown).
    #[error("not the leader of {group}{}", leader_hint(.leader))]
    NotLeader {
        group: GroupId,
        leader: Option<(NodeId, String)>,
        proposed: bool,
    },
    #[error("{group} has no quorum: {detail}")]
    NoQuorum { group: GroupId, detail: String },
    #[error("this node is not part of an initialised cluster yet (run `kvctl cluster init`)")]
    NotInitialized,
    #[error(
        "cluster id mismatch: this node belongs to cluster {ours}, the request came from cluster {theirs}"
    )]
    ClusterMismatch { ours: String, theirs: String },
    #[error("cluster already initialised differently: {0}")]
    AlreadyInitialized(String),
    /// Init found a member that would make it take effect on some nodes only, or mint a
    /// cluster beside an existing one; nothing was recorded anywhere.
    #[error("init refused, nothing was changed: {0}")]
    InitRefused(String),
    #[error("timed out after {timeout_ms} ms waiting for {what}")]
    Timeout {
        what: String,
        timeout_ms: u64,
        proposed: bool,
    },
    #[error("write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A node-to-node request reached a node other than the one it was meant for (an
    /// address reused by another node, or a wrong address given to init).
    #[error("request for node {meant_for} reached node {reached}: an address reused by another node, or a wrong address")]
    WrongNode { meant_for: NodeId, reached: NodeId },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("ring change refused: {0}")]
    RingChangeRejected(#[from] RingChangeRejection),
    /// `AddNode` for a member whose node answers without the cluster's id: it came back
    /// with an empty data directory (or another cluster's), so it has no log or vote and
    /// may not be a voter under its old id (issue 14, defect 8).
    #[error(
        "node {node_id} is a member but answers {}: add it under a new node id",
        lost_data_answer(.answered_cluster)
    )]
    MemberLostData {
        node_id: NodeId,
        answered_cluster: Option<String>,
    },
    #[error("campaign refused: {0}")]
    CampaignRefused(#[from] CampaignRefusal),
    /// The caller's user lacks the permission (issue 15; see `ringkv-authz`).
    #[error("permission denied: {0}")]
    PermissionDenied(#[from] ringkv_authz::Denied),
    /// A change of the permission table refused; nothing changed.
    #[error("permission change refused: {0}")]
    AuthRejected(#[from] ringkv_authz::AuthRejection),
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error("peer {node} failed: {detail}")]
    Peer { node: NodeId, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft group stopped: {0}")]
    Fatal(String),
    /// A bounded queue is full; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A snapshot read older than the versions the shard keeps (see
    /// `raft/state_machine/mvcc.rs`).
    #[error(
        "snapshot too old: read timestamp {read_ts} is below {floor}, the oldest this shard's version \
         history reaches (versions are kept for --mvcc-window-ms, across a clean restart but not a \
         crash or a snapshot install); read at a newer timestamp"
    )]
    SnapshotTooOld { read_ts: u64, floor: u64 },
    /// A transaction below the shard's transaction safe point has no record: it was
    /// garbage-collected, and its outcome is no longer known.
    #[error(
        "transaction {start_ts} started below the transaction safe point {safe_point}: its record \
         was garbage-collected and its outcome is no longer known here (every lock it left was \
         resolved before; read its keys to see what it wrote)"
    )]
    TxnForgotten { start_ts: u64, safe_point: u64 },
    /// A write (or delete-range) met a key locked by a transaction being committed or
    /// rolled back; it was not applied. Retry once the transaction is over.
    #[error(
        "key {} is locked by transaction {}, which is committing or rolling back; retry",
        String::from_utf8_lossy(&.0.key),
        .0.start_ts
    )]
    KeyLocked(LockedKey),
    /// A write or delete-range under a request id the shard remembers for a different
    /// request (another fingerprint): not applied. A retry must repeat its request exactly;
    /// a new request needs a new id.
    #[error(
        "request id {} was already used for a different request on this shard: nothing was \
         applied (a retry must repeat its request exactly; a new request needs a new request id)",
        hex(.request_id)
    )]
    RequestIdReused { request_id: RequestId },
    /// A watch from a timestamp older than the shard's history (see
    /// `raft/state_machine/watches.rs`).
    #[error(
        "watch from timestamp {after_ts}: the shard's history before {floor} is gone (compacted: \
         versions are kept for --mvcc-window-ms, across a clean restart but not a crash); resume from {floor} \
         or later (changes in between are lost)"
    )]
    WatchCompacted { after_ts: u64, floor: u64 },
    /// A watch ended by the replica (its state replaced by a snapshot, its leadership or
    /// its replica gone): watch again from the last progress.
    #[error("watch interrupted: {0}")]
    WatchInterrupted(String),
}

/// Lowercase hex of a request id.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn lost_data_answer(answered_cluster: &Option<String>) -> String {
    match answered_cluster {
        None => "without the cluster's id (its data directory was lost)".to_string(),
        Some(other) => format!("as a node of cluster {other}, not of this cluster"),
    }
}

fn leader_hint(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!(": the leader is node {id} at {addr}"),
        None => ": no leader is known yet".to_string(),
    }
}

impl NodeError {
    /// A copy for each waiter of a batched write (storage errors keep their message).
    pub fn duplicate(&self) -> NodeError {
        match self {
            NodeError::InvalidArgument(msg) => NodeError::InvalidArgument(msg.clone()),
            NodeError::UnknownShard { shard, shards } => NodeError::UnknownShard {
                shard: *shard,
                shards: *shards,
            },
            NodeError::ShardNotHosted(shard) => NodeError::ShardNotHosted(*shard),
            NodeError::WrongShard { requested, actual } => NodeError::WrongShard {
                requested: *requested,
                actual: *actual,
            },
            NodeError::NotLeader {
                group,
                leader,
                proposed,
            } => NodeError::NotLeader {
                group: *group,
                leader: leader.clone(),
                proposed: *proposed,
            },
            NodeError::NoQuorum { group, detail } => NodeError::NoQuorum {
                group: *group,
                detail: detail.clone(),
            },
            NodeError::NotInitialized => NodeError::NotInitialized,
            NodeError::ClusterMismatch { ours, theirs } => NodeError::ClusterMismatch {
                ours: ours.clone(),
                theirs: theirs.clone(),
            },
            NodeError::AlreadyInitialized(msg) => NodeError::AlreadyInitialized(msg.clone()),
            NodeError::InitRefused(msg) => NodeError::InitRefused(msg.clone()),
            NodeError::Timeout {
                what,
                timeout_ms,
                proposed,
            } => NodeError::Timeout {
                what: what.clone(),
                timeout_ms: *timeout_ms,
                proposed: *proposed,
            },
            NodeError::OutcomeUnknown(msg) => NodeError::OutcomeUnknown(msg.clone()),
            NodeError::WrongNode { meant_for, reached } => NodeError::WrongNode {
                meant_for: *meant_for,
                reached: *reached,
            },
            NodeError::Malformed { what, detail } => NodeError::Malformed {
                what,
                detail: detail.clone(),
            },
            NodeError::RingChangeRejected(rejection) => NodeError::RingChangeRejected(rejection.clone()),
            NodeError::MemberLostData {
                node_id,
                answered_cluster,
            } => NodeError::MemberLostData {
                node_id: *node_id,
                answered_cluster: answered_cluster.clone(),
            },
            NodeError::CampaignRefused(refusal) => NodeError::CampaignRefused(refusal.clone()),
            NodeError::PermissionDenied(denied) => NodeError::PermissionDenied(denied.clone()),
            NodeError::AuthRejected(rejection) => NodeError::AuthRejected(rejection.clone()),
            NodeError::SnapshotTooOld { read_ts, floor } => NodeError::SnapshotTooOld {
                read_ts: *read_ts,
                floor: *floor,
            },
            NodeError::KeyLocked(locked) => NodeError::KeyLocked(locked.clone()),
            NodeError::RequestIdReused { request_id } => NodeError::RequestIdReused {
                request_id: *request_id,
            },
            NodeError::TxnForgotten { start_ts, safe_point } => NodeError::TxnForgotten {
                start_ts: *start_ts,
                safe_point: *safe_point,
            },
            NodeError::WatchCompacted { after_ts, floor } => NodeError::WatchCompacted {
                after_ts: *after_ts,
                floor: *floor,
            },
            NodeError::WatchInterrupted(msg) => NodeError::WatchInterrupted(msg.clone()),
            NodeError::Encode { what, detail } => NodeError::Encode {
                what,
                detail: detail.clone(),
            },
            NodeError::Peer { node, detail } => NodeError::Peer {
                node: *node,
                detail: detail.clone(),
            },
            NodeError::Storage(err) => NodeError::Fatal(format!("storage failed: {err}")),
            NodeError::Fatal(msg) => NodeError::Fatal(msg.clone()),
            NodeError::Overloaded(msg) => NodeError::Overloaded(msg.clone()),
        }
    }

    /// Whether a write that failed with this error was definitely not applied.
    pub fn write_rejected(&self) -> bool {
        match self {
            NodeError::NotLeader { proposed, .. } | NodeError::Timeout { proposed, .. } => !proposed,
            NodeError::OutcomeUnknown(_)
            | NodeError::Storage(_)
            | NodeError::Fatal(_)
            | NodeError::Encode { .. }
            | NodeError::Peer { .. } => false,
            NodeError::InvalidArgument(_)
            | NodeError::UnknownShard { .. }
            | NodeError::ShardNotHosted(_)
            | NodeError::WrongShard { .. }
            | NodeError::NoQuorum { .. }
            | NodeError::NotInitialized
            | NodeError::ClusterMismatch { .. }
            | NodeError::AlreadyInitialized(_)
            | NodeError::InitRefused(_)
            | NodeError::WrongNode { .. }
            | NodeError::Malformed { .. }
            | NodeError::RingChangeRejected(_)
            | NodeError::MemberLostData { .. }
            | NodeError::CampaignRefused(_)
            | NodeError::PermissionDenied(_)
            | NodeError::AuthRejected(_)
            | NodeError::Overloaded(_)
            | NodeError::SnapshotTooOld { .. }
            | NodeError::TxnForgotten { .. }
            | NodeError::KeyLocked(_)
            | NodeError::RequestIdReused { .. }
            | NodeError::WatchCompacted { .. }
            | NodeError::WatchInterrupted(_) => true,
        }
    }
}

/// Why a target refuses to campaign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignRefusal {
    /// The order comes from a node that is not this replica's leader in that term.
    #[error("stale campaign request: node {from_node} at term {term}, but this replica follows {leader:?} at term {current_term}")]
    Stale {
        from_node: NodeId,
        term: u64,
        leader: Option<NodeId>,
        current_term: u64,
    },
    /// This replica has not replicated the leader's whole log yet.
    #[error("not caught up: last log index {last_log_index} < the leader's {leader_last_log_index}")]
    Behind {
        last_log_index: u64,
        leader_last_log_index: u64,
    },
}
