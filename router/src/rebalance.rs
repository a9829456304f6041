//! Ring-change plans and rebalance progress, without IO.
//!
//! - [`plan`]: which shards' replicas a ring change would move — placement is a pure
//!   function of the ring, so the router evaluates the ring as it would be after the change
//!   and compares, shard by shard. The ideal is the consistent-hashing minimum `RF·S/N`.
//! - [`rebalance_status`]: how far the shard groups are from the placement of the current
//!   ring, from the voters each shard's leader reports.

use std::collections::{BTreeSet, HashMap};

use ringkv_proto::v1::{
    plan_ring_change_request::Change, NodeStatusResponse, PlanRingChangeResponse, RebalanceStatusResponse,
    ReplicaRole, RingInfo, ShardMove, ShardRebalance,
};
use ringkv_ring::{MemberState, NodeId, Ring, RingMember, ShardId};

use crate::convert::{member_state, ring_from_info};
use crate::error::{PlanRejection, RouterError};

fn members_of(info: &RingInfo) -> Result<Vec<RingMember>, RouterError> {
    info.members
        .iter()
        .map(|member| {
            let state = member_state(member.state()).ok_or_else(|| {
                RouterError::Internal(format!(
                    "node {} has unknown state {}",
                    member.node_id, member.state
                ))
            })?;
            Ok(RingMember {
                node_id: member.node_id,
                addr: member.addr.clone(),
                state,
            })
        })
        .collect()
}

/// The replicas `change` would move under the ring `info`.
pub fn plan(info: &RingInfo, change: &Change) -> Result<PlanRingChangeResponse, RouterError> {
    let before = ring_from_info(info).map_err(|err| RouterError::Internal(err.to_string()))?;
    let mut members = members_of(info)?;
    let set_state = |members: &mut Vec<RingMember>, node_id: NodeId, state: MemberState| match members
        .iter_mut()
        .find(|member| member.node_id == node_id)
    {
        Some(member) if member.state.owns_tokens() => {
            member.state = state;
            Ok(())
        }
        Some(member) => Err(PlanRejection::OwnsNothing {
            node_id,
            state: member.state,
        }),
        None => Err(PlanRejection::NotMember { node_id }),
    };
    match change {
        Change::Add(node) => {
            if node.node_id == 0 || node.addr.is_empty() {
                return Err(PlanRejection::IncompleteNode.into());
            }
            if members.iter().any(|member| member.node_id == node.node_id) {
                return Err(PlanRejection::AlreadyMember {
                    node_id: node.node_id,
                }
                .into());
            }
            members.push(RingMember {
                node_id: node.node_id,
                addr: node.addr.clone(),
                state: MemberState::Joining,
            });
        }
        Change::Decommission(node_id) => set_state(&mut members, *node_id, MemberState::Decommissioning)?,
        Change::Dead(node_id) => set_state(&mut members, *node_id, MemberState::Dead)?,
    }
    let after =
        Ring::new(before.config(), members).map_err(|err| PlanRejection::Impossible(err.to_string()))?;
    let owners = |ring: &Ring| ring.members().filter(|m| m.state.owns_tokens()).count() as u32;
    // The side of the change with more owners: a join adds the N-th node, a removal takes
    // one of N away; either way about RF·S/N replicas must move.
    let n = owners(&before).max(owners(&after)).max(1);
    let config = before.config();
    let total = config.shards * config.replication_factor;
    let ideal = total.div_ceil(n);
    let mut moves = Vec::new();
    let mut moved = 0u32;
    for shard in before.shards() {
        let from = before.replicas(shard);
        let to = after.replicas(shard);
        let from_set: BTreeSet<NodeId> = from.iter().copied().collect();
        let added = to.iter().filter(|node| !from_set.contains(node)).count() as u32;
        if added > 0 {
            moved += added;
            moves.push(ShardMove {
                shard_id: shard.0,
                from,
                to,
            });
        }
    }
    Ok(PlanRingChangeResponse {
        epoch: info.epoch,
        moves,
        replicas_moved: moved,
        ideal_replicas_moved: ideal,
        total_replicas: total,
    })
}

/// A replica's claim to lead a shard, with the membership it reports.
#[derive(Debug, Default)]
struct LeaderClaim {
    term: u64,
    leader: NodeId,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
    joint: bool,
}

/// How far the shard groups are from placement under `info`, from the nodes' statuses.
pub fn rebalance_status(
    info: &RingInfo,
    statuses: &[NodeStatusResponse],
) -> Result<RebalanceStatusResponse, RouterError> {
    let ring = ring_from_info(info).map_err(|err| RouterError::Internal(err.to_string()))?;
    let mut leaders: HashMap<u32, LeaderClaim> = HashMap::new();
    for status in statuses
        .iter()
        .filter(|status| status.cluster_id == info.cluster_id)
    {
        for replica in &status.replicas {
            let Some(shard) = replica.shard_id else {
                continue;
            };
            if replica.role() != ReplicaRole::Leader {
                continue;
            }
            if leaders.get(&shard).is_none_or(|known| replica.term > known.term) {
                leaders.insert(
                    shard,
                    LeaderClaim {
                        term: replica.term,
                        leader: status.node_id,
                        voters: replica.voters.clone(),
                        learners: replica.learners.clone(),
                        joint: replica.joint,
                    },
                );
            }
        }
    }
    let mut pending = Vec::new();
    let mut replicas_pending = 0u32;
    for shard in ring.shards() {
        let placement = ring.replicas(shard);
        let wanted: BTreeSet<NodeId> = placement.iter().copied().collect();
        let ShardId(id) = shard;
        let claim = leaders.remove(&id).unwrap_or_default();
        let settled = claim.leader != 0
            && claim.voters.iter().copied().collect::<BTreeSet<_>>() == wanted
            && claim.learners.is_empty()
            && !claim.joint;
        if settled {
            continue;
        }
        replicas_pending += placement
            .iter()
            .filter(|node| !claim.voters.contains(node))
            .count() as u32;
        pending.push(ShardRebalance {
            shard_id: id,
            placement,
            voters: claim.voters,
            learners: claim.learners,
            leader_id: claim.leader,
        });
    }
    let mut members_by_state = HashMap::new();
    for member in &info.members {
        *members_by_state
            .entry(member.state().label().to_string())
            .or_insert(0u32) += 1;
    }
    let shards_total = ring.shard_count();
    Ok(RebalanceStatusResponse {
        epoch: info.epoch,
        shards_total,
        shards_settled: shards_total - pending.len() as u32,
        replicas_pending,
        pending,
        members_by_state,
    })
}

#[cfg(test)]
mod tests {
    use ringkv_proto::v1::{MemberState as ProtoMemberState, NodeAddress, ReplicaInfo};

    use super::*;
    use crate::convert::tests::ring_info;

    /// Adding a 4th node to 3 moves about RF·S/4 replicas; decommissioning one of 4 about
    /// the same; unknown nodes and impossible changes are refused.
    #[test]
    fn plans_close_to_the_minimum() {
        let three = ring_info(3, 64, 3);
        let add = plan(
            &three,
            &Change::Add(NodeAddress {
                node_id: 4,
                addr: "n4:7001".into(),
            }),
        )
        .expect("plan");
        assert_eq!(add.total_replicas, 192);
        assert_eq!(add.ideal_replicas_moved, 48);
        assert!(
            add.replicas_moved >= 30 && add.replicas_moved <= 70,
            "{}",
            add.replicas_moved
        );
        assert!(add.moves.iter().all(|m| m.to.contains(&4)));
        assert!(matches!(
            plan(&three, &Change::Decommission(2)),
            Err(RouterError::PlanRejected(PlanRejection::Impossible(_)))
        ));
        assert!(matches!(
            plan(&three, &Change::Dead(9)),
            Err(RouterError::PlanRejected(PlanRejection::NotMember { node_id: 9 }))
        ));
        let four = ring_info(4, 64, 3);
        let leave = plan(&four, &Change::Decommission(4)).expect("plan");
        assert!(leave
            .moves
            .iter()
            .all(|m| m.from.contains(&4) && !m.to.contains(&4)));
        assert_eq!(leave.replicas_moved as usize, leave.moves.len());
    }

    /// Settled shards are counted; shards with learners, other voters or no leader pending.
    #[test]
    fn status_counts_pending_shards() {
        let info = ring_info(3, 4, 3);
        let ring = ring_from_info(&info).expect("ring");
        let leader = |shard: u32, voters: Vec<u64>, learners: Vec<u64>| ReplicaInfo {
            shard_id: Some(shard),
            role: ReplicaRole::Leader as i32,
            term: 2,
            voters,
            learners,
            ..ReplicaInfo::default()
        };
        let placement = |shard: u32| ring.replicas(ShardId(shard));
        let status = NodeStatusResponse {
            node_id: 1,
            cluster_id: info.cluster_id.clone(),
            replicas: vec![
                leader(0, placement(0), vec![]),
                leader(1, placement(1), vec![9]),
                leader(2, vec![1, 2], vec![]),
            ],
            ..NodeStatusResponse::default()
        };
        let report = rebalance_status(&info, &[status]).expect("status");
        assert_eq!(report.shards_total, 4);
        assert_eq!(report.shards_settled, 1);
        let pending: Vec<u32> = report.pending.iter().map(|p| p.shard_id).collect();
        assert_eq!(pending, vec![1, 2, 3]);
        assert_eq!(
            report.members_by_state.get(ProtoMemberState::Active.label()),
            Some(&3)
        );
    }
}
