//! The node's gRPC services and the one place node errors become gRPC statuses.
//!
//! - [`shard`]: `ShardKv` — shard-addressed reads and writes from routers.
//! - [`raft`]: `Raft` — the multi-raft transport, cluster join, system proposals.
//! - [`raft_pipeline`]: `Raft.Pipeline` — the frames of many groups on one stream per peer.
//! - [`admin`]: `Admin` — cluster bootstrap and node status.
//! - [`tso`]: `Tso` — timestamps from the timestamp oracle.
//! - [`inflight`]: the bound on requests in flight, around every service.
//! - [`roles`]: with TLS, which certificate roles each service accepts, around every service,
//!   and who each request acts for.
//! - [`authz`]: the permission check of `ShardKv` and `Admin` requests, and the permission
//!   table's admin calls.
//! - [`login`]: `Auth` — password logins for tokens; [`credentials`]: password hashing.

pub mod admin;
pub mod authz;
pub mod credentials;
pub mod inflight;
pub mod login;
pub mod raft;
pub mod raft_pipeline;
pub mod roles;
pub mod shard;
pub mod tso;

use ringkv_proto::{metadata, v1};
use tonic::{Code, Status};

use crate::error::NodeError;
use crate::raft::types::LockedKey;

/// Maps a node error to a gRPC status. For writes (`is_write`), marks errors that prove
/// the write was not applied (`x-ringkv-rejected`) and those whose outcome is unknown.
pub fn status(err: NodeError, is_write: bool) -> Status {
    let code = match &err {
        NodeError::InvalidArgument(_)
        | NodeError::RequestIdReused { .. }
        | NodeError::UnknownShard { .. }
        | NodeError::Malformed { .. }
        | NodeError::RingChangeRejected(_) => Code::InvalidArgument,
        NodeError::ShardNotHosted(_) => Code::NotFound,
        NodeError::WrongShard { .. }
        | NodeError::ClusterMismatch { .. }
        | NodeError::AlreadyInitialized(_)
        | NodeError::InitRefused(_)
        | NodeError::WrongNode { .. }
        | NodeError::MemberLostData { .. }
        | NodeError::CampaignRefused(_)
        | NodeError::AuthRejected(_) => Code::FailedPrecondition,
        NodeError::PermissionDenied(_) => Code::PermissionDenied,
        // Final (the router does not retry it): the caller needs a newer timestamp.
        NodeError::SnapshotTooOld { .. }
        | NodeError::TxnForgotten { .. }
        | NodeError::WatchCompacted { .. } => Code::OutOfRange,
        NodeError::NotLeader { .. }
        | NodeError::NoQuorum { .. }
        | NodeError::NotInitialized
        | NodeError::OutcomeUnknown(_)
        | NodeError::Peer { .. }
        | NodeError::Fatal(_)
        | NodeError::WatchInterrupted(_) => Code::Unavailable,
        NodeError::Timeout { .. } => Code::DeadlineExceeded,
        NodeError::Storage(_) | NodeError::Encode { .. } => Code::Internal,
        // Busy: the router retries it within the request's deadline.
        NodeError::Overloaded(_) | NodeError::KeyLocked(_) => Code::ResourceExhausted,
    };
    let mut status = match &err {
        NodeError::KeyLocked(locked) => metadata::locked(err.to_string(), &lock_info(locked)),
        // Marked, so the router returns it as it is and the client names it.
        NodeError::RequestIdReused { .. } => metadata::request_id_reused(err.to_string()),
        _ => Status::new(code, err.to_string()),
    };
    if let NodeError::NotLeader {
        leader: Some((leader_id, leader_addr)),
        ..
    } = &err
    {
        metadata::set_leader_hint(&mut status, *leader_id, Some(leader_addr));
    }
    if is_write {
        if err.write_rejected() {
            metadata::set_rejected(&mut status);
        } else {
            metadata::set_outcome_unknown(&mut status);
        }
    }
    status
}

/// The wire form of a lock met.
pub fn lock_info(locked: &LockedKey) -> v1::LockInfo {
    v1::LockInfo {
        key: locked.key.clone(),
        start_ts: locked.start_ts,
        primary: locked.primary.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::GroupId;

    /// A not-leader error carries the leader hint; a pre-proposal rejection is marked as
    /// not applied, a post-proposal one as outcome unknown; a reused request id is a marked
    /// INVALID_ARGUMENT naming the id.
    /// A member that lost its data, asked to join again, is a failed precondition (the
    /// router passes it on as it is): the cluster is fine, the node must come under a new id.
    #[test]
    fn a_member_that_lost_its_data_is_a_failed_precondition() {
        let lost = status(
            NodeError::MemberLostData {
                node_id: 3,
                answered_cluster: None,
            },
            false,
        );
        assert_eq!(lost.code(), Code::FailedPrecondition);
        assert!(
            lost.message().contains("add it under a new node id"),
            "{}",
            lost.message()
        );
    }

    #[test]
    fn not_leader_mapping() {
        let rejected = status(
            NodeError::NotLeader {
                group: GroupId::Shard(3),
                leader: Some((2, "127.0.0.1:7002".to_string())),
                proposed: false,
            },
            true,
        );
        assert_eq!(rejected.code(), Code::Unavailable);
        assert_eq!(
            metadata::leader_hint(&rejected),
            Some(metadata::LeaderHint {
                leader_id: Some(2),
                leader_addr: Some("127.0.0.1:7002".to_string()),
            })
        );
        assert!(metadata::is_rejected(&rejected));
        assert!(!metadata::is_outcome_unknown(&rejected));
        let unknown = status(
            NodeError::NotLeader {
                group: GroupId::Shard(3),
                leader: None,
                proposed: true,
            },
            true,
        );
        assert!(!metadata::is_rejected(&unknown));
        assert!(metadata::is_outcome_unknown(&unknown));
        let reused = status(
            NodeError::RequestIdReused {
                request_id: [0xab; 16],
            },
            true,
        );
        assert_eq!(reused.code(), Code::InvalidArgument);
        assert!(metadata::is_request_id_reused(&reused));
        assert!(metadata::is_rejected(&reused), "nothing was applied");
        assert!(
            reused.message().contains(&"ab".repeat(16)) && reused.message().contains("different request"),
            "{}",
            reused.message()
        );
        let bad = status(
            NodeError::UnknownShard {
                shard: 99,
                shards: 16,
            },
            false,
        );
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("99"));
    }
}
