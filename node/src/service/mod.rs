//! The node's gRPC services and the one place node errors become gRPC statuses.
//!
//! - [`shard`]: `ShardKv` — shard-addressed reads and writes from routers.
//! - [`raft`]: `Raft` — the multi-raft transport, cluster join, system proposals.
//! - [`admin`]: `Admin` — cluster bootstrap and node status.

pub mod admin;
pub mod raft;
pub mod shard;

use ringkv_proto::{LEADER_ADDR_METADATA, LEADER_ID_METADATA, OUTCOME_UNKNOWN_METADATA, REJECTED_METADATA};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::NodeError;

/// Maps a node error to a gRPC status. For writes (`is_write`), marks errors that prove
/// the write was not applied (`x-ringkv-rejected`) and those whose outcome is unknown.
pub fn status(err: NodeError, is_write: bool) -> Status {
    let code = match &err {
        NodeError::InvalidArgument(_)
        | NodeError::UnknownShard { .. }
        | NodeError::Malformed { .. }
        | NodeError::RingChangeRejected(_) => Code::InvalidArgument,
        NodeError::ShardNotHosted(_) => Code::NotFound,
        NodeError::WrongShard { .. }
        | NodeError::ClusterMismatch { .. }
        | NodeError::AlreadyInitialized(_)
        | NodeError::WrongNode { .. }
        | NodeError::CampaignRefused(_) => Code::FailedPrecondition,
        NodeError::NotLeader { .. }
        | NodeError::NoQuorum { .. }
        | NodeError::NotInitialized
        | NodeError::OutcomeUnknown(_)
        | NodeError::Peer { .. }
        | NodeError::Fatal(_) => Code::Unavailable,
        NodeError::Timeout { .. } => Code::DeadlineExceeded,
        NodeError::Storage(_) | NodeError::Encode { .. } => Code::Internal,
    };
    let mut status = Status::new(code, err.to_string());
    if let NodeError::NotLeader {
        leader: Some((leader_id, leader_addr)),
        ..
    } = &err
    {
        if let Ok(value) = MetadataValue::try_from(leader_id.to_string()) {
            status.metadata_mut().insert(LEADER_ID_METADATA, value);
        }
        if let Ok(value) = MetadataValue::try_from(leader_addr.as_str()) {
            status.metadata_mut().insert(LEADER_ADDR_METADATA, value);
        }
    }
    if is_write {
        if err.write_rejected() {
            status
                .metadata_mut()
                .insert(REJECTED_METADATA, MetadataValue::from_static("1"));
        } else {
            status
                .metadata_mut()
                .insert(OUTCOME_UNKNOWN_METADATA, MetadataValue::from_static("1"));
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::GroupId;

    /// A not-leader error carries the leader hint; a pre-proposal rejection is marked as
    /// not applied, a post-proposal one as outcome unknown.
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
            rejected
                .metadata()
                .get(LEADER_ADDR_METADATA)
                .and_then(|v| v.to_str().ok()),
            Some("127.0.0.1:7002")
        );
        assert!(rejected.metadata().get(REJECTED_METADATA).is_some());
        let unknown = status(
            NodeError::NotLeader {
                group: GroupId::Shard(3),
                leader: None,
                proposed: true,
            },
            true,
        );
        assert!(unknown.metadata().get(REJECTED_METADATA).is_none());
        assert!(unknown.metadata().get(OUTCOME_UNKNOWN_METADATA).is_some());
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
