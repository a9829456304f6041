//! Ring changes as a pure function of the committed configuration: the system group's
//! state machine applies [`apply`] to every `ChangeRing` entry, so every replica decides the
//! same way. A change either moves the epoch forward by one, is already in effect
//! (repeated requests are harmless), or is rejected with a reason — never half applied.

use ringkv_ring::{MemberState, Ring, RingMember};

use crate::raft::types::{ClusterConfig, RingChange, RingChangeKind, RingChangeOutcome, RingChangeRejection};

fn rejected(rejection: RingChangeRejection) -> RingChangeOutcome {
    RingChangeOutcome::Rejected(rejection)
}

/// Applies `change` to `config`.
pub fn apply(config: &ClusterConfig, change: &RingChange) -> RingChangeOutcome {
    if let Some(expected) = change.expected_epoch {
        if expected != config.epoch {
            return rejected(RingChangeRejection::StaleEpoch {
                expected,
                current: config.epoch,
            });
        }
    }
    let mut members = config.members.clone();
    let member_index = |node_id| {
        members
            .iter()
            .position(|member: &RingMember| member.node_id == node_id)
    };
    let unchanged = || RingChangeOutcome::Unchanged(config.clone());
    match &change.kind {
        RingChangeKind::AddNode { node_id, addr } => {
            if *node_id == 0 {
                return rejected(RingChangeRejection::ReservedNodeId);
            }
            if addr.is_empty() {
                return rejected(RingChangeRejection::NoAddress { node_id: *node_id });
            }
            if let Some(other) = members
                .iter()
                .find(|m| m.addr == *addr && m.node_id != *node_id && !m.state.is_gone())
            {
                return rejected(RingChangeRejection::AddressTaken {
                    addr: addr.clone(),
                    owner: other.node_id,
                });
            }
            match member_index(*node_id) {
                Some(index) => {
                    let member = &members[index];
                    if member.state.is_gone() {
                        return rejected(RingChangeRejection::IdNeverReused {
                            node_id: *node_id,
                            state: member.state,
                        });
                    }
                    if member.addr != *addr {
                        return rejected(RingChangeRejection::MemberElsewhere {
                            node_id: *node_id,
                            addr: member.addr.clone(),
                        });
                    }
                    if member.state == MemberState::Decommissioning {
                        return rejected(RingChangeRejection::BeingDecommissioned { node_id: *node_id });
                    }
                    return unchanged();
                }
                None => members.push(RingMember {
                    node_id: *node_id,
                    addr: addr.clone(),
                    state: MemberState::Joining,
                }),
            }
        }
        RingChangeKind::Decommission { node_id } => {
            let Some(index) = member_index(*node_id) else {
                return rejected(RingChangeRejection::NotMember { node_id: *node_id });
            };
            match members[index].state {
                MemberState::Joining | MemberState::Active => {
                    members[index].state = MemberState::Decommissioning
                }
                MemberState::Decommissioning | MemberState::Removed => return unchanged(),
                MemberState::Dead => {
                    return rejected(RingChangeRejection::DeclaredDead { node_id: *node_id })
                }
            }
        }
        RingChangeKind::MarkActive { node_id } => {
            let Some(index) = member_index(*node_id) else {
                return rejected(RingChangeRejection::NotMember { node_id: *node_id });
            };
            match members[index].state {
                MemberState::Joining => members[index].state = MemberState::Active,
                MemberState::Active => return unchanged(),
                state => {
                    return rejected(RingChangeRejection::WrongState {
                        node_id: *node_id,
                        state,
                        expected: MemberState::Joining,
                    })
                }
            }
        }
        RingChangeKind::MarkRemoved { node_id } => {
            let Some(index) = member_index(*node_id) else {
                return rejected(RingChangeRejection::NotMember { node_id: *node_id });
            };
            match members[index].state {
                MemberState::Decommissioning => members[index].state = MemberState::Removed,
                MemberState::Removed => return unchanged(),
                state => {
                    return rejected(RingChangeRejection::WrongState {
                        node_id: *node_id,
                        state,
                        expected: MemberState::Decommissioning,
                    })
                }
            }
        }
        RingChangeKind::MarkDead { node_id } => {
            let Some(index) = member_index(*node_id) else {
                return rejected(RingChangeRejection::NotMember { node_id: *node_id });
            };
            match members[index].state {
                MemberState::Joining | MemberState::Active | MemberState::Decommissioning => {
                    members[index].state = MemberState::Dead
                }
                MemberState::Dead => return unchanged(),
                MemberState::Removed => {
                    return rejected(RingChangeRejection::AlreadyRemoved { node_id: *node_id })
                }
            }
        }
    }
    if let Err(err) = Ring::new(config.ring, members.clone()) {
        return rejected(RingChangeRejection::InvalidRing {
            change: change.kind.to_string(),
            detail: err.to_string(),
        });
    }
    RingChangeOutcome::Applied(ClusterConfig {
        cluster_id: config.cluster_id.clone(),
        ring: config.ring,
        members,
        epoch: config.epoch + 1,
    })
}

#[cfg(test)]
mod tests {
    use ringkv_ring::RingConfig;

    use super::*;

    fn config(nodes: u64) -> ClusterConfig {
        ClusterConfig {
            cluster_id: "c".to_string(),
            ring: RingConfig {
                shards: 8,
                replication_factor: 3,
                vnodes_per_node: 16,
            },
            members: (1..=nodes)
                .map(|node_id| RingMember {
                    node_id,
                    addr: format!("n{node_id}:1"),
                    state: MemberState::Active,
                })
                .collect(),
            epoch: 1,
        }
    }

    fn change(expected_epoch: Option<u64>, kind: RingChangeKind) -> RingChange {
        RingChange { expected_epoch, kind }
    }

    fn applied(outcome: RingChangeOutcome) -> ClusterConfig {
        match outcome {
            RingChangeOutcome::Applied(config) => config,
            other => panic!("expected applied, got {other:?}"),
        }
    }

    fn rejection(outcome: RingChangeOutcome) -> RingChangeRejection {
        match outcome {
            RingChangeOutcome::Rejected(rejection) => rejection,
            other => panic!("expected rejected, got {other:?}"),
        }
    }

    /// A node's whole life: joining → active → decommissioning → removed, one epoch per step;
    /// repeating a step changes nothing.
    #[test]
    fn lifecycle_bumps_epoch_once_per_step() {
        let add = RingChangeKind::AddNode {
            node_id: 4,
            addr: "n4:1".to_string(),
        };
        let joined = applied(apply(&config(3), &change(Some(1), add.clone())));
        assert_eq!(joined.epoch, 2);
        assert_eq!(joined.members[3].state, MemberState::Joining);
        assert!(matches!(
            apply(&joined, &change(None, add)),
            RingChangeOutcome::Unchanged(ref same) if same.epoch == 2
        ));
        let active = applied(apply(
            &joined,
            &change(None, RingChangeKind::MarkActive { node_id: 4 }),
        ));
        assert_eq!(active.members[3].state, MemberState::Active);
        let leaving = applied(apply(
            &active,
            &change(Some(3), RingChangeKind::Decommission { node_id: 4 }),
        ));
        assert_eq!(leaving.members[3].state, MemberState::Decommissioning);
        let removed = applied(apply(
            &leaving,
            &change(None, RingChangeKind::MarkRemoved { node_id: 4 }),
        ));
        assert_eq!(
            (removed.epoch, removed.members[3].state),
            (5, MemberState::Removed)
        );
        let reuse = rejection(apply(
            &removed,
            &change(
                None,
                RingChangeKind::AddNode {
                    node_id: 4,
                    addr: "n4:1".to_string(),
                },
            ),
        ));
        assert_eq!(
            reuse,
            RingChangeRejection::IdNeverReused {
                node_id: 4,
                state: MemberState::Removed
            }
        );
    }

    /// Stale epochs, unknown nodes, taken addresses and going below RF owners are refused.
    #[test]
    fn rejects_what_would_be_wrong() {
        let three = config(3);
        let stale = rejection(apply(
            &three,
            &change(Some(7), RingChangeKind::MarkActive { node_id: 1 }),
        ));
        assert_eq!(
            stale,
            RingChangeRejection::StaleEpoch {
                expected: 7,
                current: 1
            }
        );
        let unknown = rejection(apply(
            &three,
            &change(None, RingChangeKind::Decommission { node_id: 9 }),
        ));
        assert_eq!(unknown, RingChangeRejection::NotMember { node_id: 9 });
        let taken = rejection(apply(
            &three,
            &change(
                None,
                RingChangeKind::AddNode {
                    node_id: 5,
                    addr: "n2:1".to_string(),
                },
            ),
        ));
        assert_eq!(
            taken,
            RingChangeRejection::AddressTaken {
                addr: "n2:1".to_string(),
                owner: 2
            }
        );
        let below_rf = rejection(apply(
            &three,
            &change(None, RingChangeKind::Decommission { node_id: 1 }),
        ));
        assert!(
            matches!(below_rf, RingChangeRejection::InvalidRing { .. }),
            "{below_rf:?}"
        );
        let dead_below_rf = rejection(apply(
            &three,
            &change(None, RingChangeKind::MarkDead { node_id: 2 }),
        ));
        assert!(
            matches!(dead_below_rf, RingChangeRejection::InvalidRing { .. }),
            "{dead_below_rf:?}"
        );
        let four = applied(apply(
            &three,
            &change(
                None,
                RingChangeKind::AddNode {
                    node_id: 4,
                    addr: "n4:1".to_string(),
                },
            ),
        ));
        let dead = applied(apply(
            &four,
            &change(None, RingChangeKind::MarkDead { node_id: 2 }),
        ));
        assert_eq!(dead.members[1].state, MemberState::Dead);
        let not_leaving = rejection(apply(
            &dead,
            &change(None, RingChangeKind::MarkRemoved { node_id: 1 }),
        ));
        assert_eq!(
            not_leaving,
            RingChangeRejection::WrongState {
                node_id: 1,
                state: MemberState::Active,
                expected: MemberState::Decommissioning
            }
        );
    }
}
