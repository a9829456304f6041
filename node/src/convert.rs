//! Domain → protobuf conversions of the node's enums: the one place where an openraft
//! [`ServerState`] becomes a [`v1::ReplicaRole`] and a ring [`MemberState`] a
//! [`v1::MemberState`]. Both matches are exhaustive, so a new variant on either side does
//! not compile until it is mapped here.

use openraft::ServerState;
use ringkv_proto::v1;
use ringkv_ring::MemberState;

/// The role a replica reports in `ReplicaInfo.role`.
pub fn replica_role(state: ServerState) -> v1::ReplicaRole {
    match state {
        ServerState::Leader => v1::ReplicaRole::Leader,
        ServerState::Follower => v1::ReplicaRole::Follower,
        ServerState::Candidate => v1::ReplicaRole::Candidate,
        ServerState::Learner => v1::ReplicaRole::Learner,
        ServerState::Shutdown => v1::ReplicaRole::Shutdown,
    }
}

/// A ring member's state as reported in `RingMember.state`.
pub fn member_state(state: MemberState) -> v1::MemberState {
    match state {
        MemberState::Joining => v1::MemberState::Joining,
        MemberState::Active => v1::MemberState::Active,
        MemberState::Decommissioning => v1::MemberState::Decommissioning,
        MemberState::Removed => v1::MemberState::Removed,
        MemberState::Dead => v1::MemberState::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state keeps its name across the conversion (the names kvctl shows).
    #[test]
    fn names_survive_the_conversion() {
        let states = [
            MemberState::Joining,
            MemberState::Active,
            MemberState::Decommissioning,
            MemberState::Removed,
            MemberState::Dead,
        ];
        for state in states {
            assert_eq!(member_state(state).label(), state.as_str());
        }
        assert_eq!(replica_role(ServerState::Leader).label(), "leader");
        assert_eq!(replica_role(ServerState::Learner).label(), "learner");
    }
}
