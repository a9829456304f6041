//! Domain → protobuf conversions: the one place where an openraft [`ServerState`] becomes a
//! [`v1::ReplicaRole`] and a ring [`MemberState`] a [`v1::MemberState`] (both matches are
//! exhaustive, so a new variant on either side does not compile until it is mapped here),
//! and where a write's op results become its reply ([`write_response`]).

use openraft::ServerState;
use ringkv_proto::v1;
use ringkv_ring::MemberState;

use crate::raft::types::WriteOpResult;

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

/// The reply to one write: a current state whose value the results left out (see
/// `CurrentValueBudget`) is marked `current_value_omitted`.
pub fn write_response(results: Vec<WriteOpResult>) -> v1::ShardWriteResponse {
    v1::ShardWriteResponse {
        results: results
            .into_iter()
            .map(|result| {
                let (current_found, current_value, current_version) = match result.current {
                    Some(current) => (true, current.value, current.version),
                    None => (false, None, 0),
                };
                v1::WriteOpResult {
                    succeeded: result.succeeded,
                    version: result.version,
                    existed: result.existed,
                    current_found,
                    current_value_omitted: current_found && current_value.is_none(),
                    current_value: current_value.unwrap_or_default(),
                    current_version,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Current;

    /// A failed comparison's state maps to `current_*`; one without its value is marked
    /// omitted (an empty value is not), and an absent key is not found.
    #[test]
    fn write_results_mark_omitted_values() {
        let failed = |value: Option<&[u8]>| WriteOpResult {
            existed: true,
            current: Some(Current {
                version: 4,
                value: value.map(<[u8]>::to_vec),
            }),
            ..WriteOpResult::default()
        };
        let response = write_response(vec![failed(Some(b"")), failed(None), WriteOpResult::default()]);
        let flags: Vec<(bool, u64, bool)> = response
            .results
            .iter()
            .map(|r| (r.current_found, r.current_version, r.current_value_omitted))
            .collect();
        assert_eq!(flags, vec![(true, 4, false), (true, 4, true), (false, 0, false)]);
    }

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
