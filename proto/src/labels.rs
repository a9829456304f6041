//! The names ringkv shows for its protobuf enums (kvctl tables and JSON, logs, the keys of
//! `RebalanceStatusResponse.members_by_state`): the one place where roles and member states
//! become text. Code that decides anything compares the enums, never these strings.
//!
//! The names are the ones the fields carried as strings before they became enums, so
//! kvctl's output did not change.

use crate::v1::{MemberState, ReplicaRole, ShardReplicaHealth};

impl ReplicaRole {
    /// `leader`, `follower`, `candidate`, `learner`, `shutdown`; `unspecified` for a role
    /// this version does not know.
    pub fn label(self) -> &'static str {
        match self {
            ReplicaRole::Unspecified => "unspecified",
            ReplicaRole::Leader => "leader",
            ReplicaRole::Follower => "follower",
            ReplicaRole::Candidate => "candidate",
            ReplicaRole::Learner => "learner",
            ReplicaRole::Shutdown => "shutdown",
        }
    }
}

impl MemberState {
    /// `joining`, `active`, `decommissioning`, `removed`, `dead`; `unspecified` for a state
    /// this version does not know.
    pub fn label(self) -> &'static str {
        match self {
            MemberState::Unspecified => "unspecified",
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Decommissioning => "decommissioning",
            MemberState::Removed => "removed",
            MemberState::Dead => "dead",
        }
    }
}

/// Shown for a placement replica on a reachable node that does not host it.
pub const ROLE_MISSING: &str = "missing";
/// Shown for a replica on a node that could not be asked.
pub const ROLE_UNKNOWN: &str = "unknown";

impl ShardReplicaHealth {
    /// The replica's role as shown: its role's label when the node hosts it,
    /// [`ROLE_MISSING`] when the node answered without it, [`ROLE_UNKNOWN`] when the node
    /// could not be asked.
    pub fn role_label(&self) -> &'static str {
        match (self.hosted, self.reachable) {
            (true, _) => self.role().label(),
            (false, true) => ROLE_MISSING,
            (false, false) => ROLE_UNKNOWN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels are the strings the fields carried before they were enums.
    #[test]
    fn labels_are_the_old_strings() {
        let roles = [
            (ReplicaRole::Leader, "leader"),
            (ReplicaRole::Follower, "follower"),
            (ReplicaRole::Candidate, "candidate"),
            (ReplicaRole::Learner, "learner"),
            (ReplicaRole::Shutdown, "shutdown"),
        ];
        for (role, label) in roles {
            assert_eq!(role.label(), label);
        }
        let states = [
            (MemberState::Joining, "joining"),
            (MemberState::Active, "active"),
            (MemberState::Decommissioning, "decommissioning"),
            (MemberState::Removed, "removed"),
            (MemberState::Dead, "dead"),
        ];
        for (state, label) in states {
            assert_eq!(state.label(), label);
        }
    }

    /// A value from a newer peer reads as unspecified instead of failing.
    #[test]
    fn unknown_values_read_as_unspecified() {
        let health = ShardReplicaHealth {
            node_id: 1,
            reachable: true,
            hosted: true,
            role: 99,
            applied_index: 0,
        };
        assert_eq!(health.role(), ReplicaRole::Unspecified);
        assert_eq!(health.role_label(), "unspecified");
        let member = crate::v1::RingMember {
            node_id: 1,
            addr: String::new(),
            state: -3,
        };
        assert_eq!(member.state(), MemberState::Unspecified);
    }

    /// A replica that is not hosted shows why.
    #[test]
    fn unhosted_replicas_show_missing_or_unknown() {
        let mut health = ShardReplicaHealth {
            node_id: 1,
            reachable: true,
            hosted: false,
            role: ReplicaRole::Leader as i32,
            applied_index: 0,
        };
        assert_eq!(health.role_label(), ROLE_MISSING);
        health.reachable = false;
        assert_eq!(health.role_label(), ROLE_UNKNOWN);
        health.hosted = true;
        assert_eq!(health.role_label(), "leader");
    }
}
