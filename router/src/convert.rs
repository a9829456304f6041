//! Protobuf ↔ placement conversions: a node's `RingInfo` into a [`ringkv_ring::Ring`], and
//! the router's one mapping of a protobuf member state to a ring [`MemberState`].

use ringkv_proto::v1::{self, RingInfo};
use ringkv_ring::ring::DEFAULT_VNODES_PER_NODE;
use ringkv_ring::{MemberState, Ring, RingConfig, RingError, RingMember};

/// Why a `RingInfo` could not be turned into a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The state is unspecified, or a value this version does not know (a newer peer).
    #[error("ring member {node_id} has unknown state {state}")]
    UnknownMemberState { node_id: u64, state: i32 },
    #[error("invalid ring: {0}")]
    Ring(#[from] RingError),
}

/// The ring state of a member state carried in `RingMember.state`; `None` when it is
/// unspecified (which is also what a value unknown to this version reads as).
pub fn member_state(state: v1::MemberState) -> Option<MemberState> {
    match state {
        v1::MemberState::Unspecified => None,
        v1::MemberState::Joining => Some(MemberState::Joining),
        v1::MemberState::Active => Some(MemberState::Active),
        v1::MemberState::Decommissioning => Some(MemberState::Decommissioning),
        v1::MemberState::Removed => Some(MemberState::Removed),
        v1::MemberState::Dead => Some(MemberState::Dead),
    }
}

/// Builds the placement ring a node reported.
///
/// A `vnodes_per_node` of 0 (the field left unset) is read as the ring crate's default.
pub fn ring_from_info(info: &RingInfo) -> Result<Ring, ConvertError> {
    let vnodes_per_node = if info.vnodes_per_node == 0 {
        DEFAULT_VNODES_PER_NODE
    } else {
        info.vnodes_per_node
    };
    let config = RingConfig {
        shards: info.shards,
        replication_factor: info.replication_factor,
        vnodes_per_node,
    };
    let mut members = Vec::with_capacity(info.members.len());
    for member in &info.members {
        let Some(state) = member_state(member.state()) else {
            return Err(ConvertError::UnknownMemberState {
                node_id: member.node_id,
                state: member.state,
            });
        };
        members.push(RingMember {
            node_id: member.node_id,
            addr: member.addr.clone(),
            state,
        });
    }
    Ok(Ring::new(config, members)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use ringkv_proto::v1::RingMember as ProtoMember;

    use super::*;

    /// A `RingInfo` with `count` active members `n1:7001`.. and the given shape.
    pub(crate) fn ring_info(count: u64, shards: u32, replication_factor: u32) -> RingInfo {
        RingInfo {
            cluster_id: "test-cluster".into(),
            shards,
            replication_factor,
            epoch: 1,
            members: (1..=count)
                .map(|node_id| ProtoMember {
                    node_id,
                    addr: format!("n{node_id}:7001"),
                    state: v1::MemberState::Active as i32,
                })
                .collect(),
            vnodes_per_node: 16,
        }
    }

    /// A well-formed RingInfo converts, keeping shards, RF and members.
    #[test]
    fn converts_a_ring() {
        let ring = match ring_from_info(&ring_info(3, 8, 3)) {
            Ok(ring) => ring,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(ring.shard_count(), 8);
        assert_eq!(ring.members().count(), 3);
        assert_eq!(ring.replicas(ringkv_ring::ShardId(0)).len(), 3);
    }

    /// Unknown states and invalid shapes are rejected, not guessed.
    #[test]
    fn rejects_bad_rings() {
        let mut unknown_state = ring_info(3, 8, 3);
        unknown_state.members[0].state = 99;
        assert!(matches!(
            ring_from_info(&unknown_state),
            Err(ConvertError::UnknownMemberState { node_id: 1, .. })
        ));
        assert!(matches!(
            ring_from_info(&ring_info(2, 8, 3)),
            Err(ConvertError::Ring(RingError::TooFewMembers { .. }))
        ));
        assert!(matches!(
            ring_from_info(&ring_info(3, 6, 3)),
            Err(ConvertError::Ring(RingError::InvalidShardCount(6)))
        ));
    }

    /// Every protobuf state but unspecified maps to the ring state of the same name.
    #[test]
    fn converts_states() {
        let states = [
            v1::MemberState::Joining,
            v1::MemberState::Active,
            v1::MemberState::Decommissioning,
            v1::MemberState::Removed,
            v1::MemberState::Dead,
        ];
        for state in states {
            assert_eq!(member_state(state).map(MemberState::as_str), Some(state.label()));
        }
        assert_eq!(member_state(v1::MemberState::Unspecified), None);
    }
}
