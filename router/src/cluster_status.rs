//! The `ClusterStatus` merge, without IO: every ring member's `NodeStatus` answer (or why
//! there was none) and the ring's placement become node health, shard health and the
//! system group's leader.

use std::collections::{BTreeMap, HashMap};

use ringkv_proto::v1::{
    ClusterStatusResponse, NodeHealth, NodeStatusResponse, ReplicaInfo, ReplicaRole, RingMember, ShardHealth,
    ShardReplicaHealth,
};
use ringkv_ring::NodeId;

use crate::error::clip;
use crate::topology::{leader_claims, RingView};

/// One ring member and what asking it for its status gave.
#[derive(Debug, Clone)]
pub struct NodeProbe {
    pub member: RingMember,
    /// The node's status, or why it could not be had.
    pub answer: Result<NodeStatusResponse, String>,
}

/// A probe's answer, if it is usable for this cluster: the node answered as the member
/// and belongs to the ring's cluster.
fn usable<'a>(view: &RingView, probe: &'a NodeProbe) -> Result<&'a NodeStatusResponse, String> {
    let status = probe.answer.as_ref().map_err(|err| clip(err))?;
    if status.node_id != probe.member.node_id {
        return Err(format!(
            "{} answered as node {}, not {}",
            probe.member.addr, status.node_id, probe.member.node_id
        ));
    }
    if status.cluster_id != view.info.cluster_id {
        return Err(format!(
            "node reports cluster {:?}, not {:?}",
            clip(&status.cluster_id),
            view.info.cluster_id
        ));
    }
    Ok(status)
}

/// Builds the cluster status from the ring and one probe per member.
pub fn build_cluster_status(view: &RingView, probes: &[NodeProbe]) -> ClusterStatusResponse {
    let mut nodes = Vec::with_capacity(probes.len());
    // node id → usable status
    let mut answered: HashMap<NodeId, &NodeStatusResponse> = HashMap::new();
    for probe in probes {
        let member = &probe.member;
        let mut health = NodeHealth {
            node_id: member.node_id,
            addr: member.addr.clone(),
            state: member.state,
            ..NodeHealth::default()
        };
        match usable(view, probe) {
            Ok(status) => {
                let shard_replicas = status.replicas.iter().filter(|r| r.shard_id.is_some());
                health.reachable = true;
                health.replicas = count(shard_replicas.clone());
                health.leaders = count(shard_replicas.filter(|r| r.role() == ReplicaRole::Leader));
                answered.insert(member.node_id, status);
            }
            Err(error) => {
                // A node that answered for another identity or cluster was reached, but
                // says nothing about this cluster.
                health.reachable = probe.answer.is_ok();
                health.error = error;
            }
        }
        nodes.push(health);
    }
    nodes.sort_by_key(|node| node.node_id);

    let claims = leader_claims(
        answered
            .iter()
            .flat_map(|(node_id, status)| status.replicas.iter().map(move |replica| (*node_id, replica))),
    );

    // shard → (node → replica info), from the usable answers
    let mut hosted: HashMap<u32, BTreeMap<NodeId, &ReplicaInfo>> = HashMap::new();
    for (node_id, status) in &answered {
        for replica in &status.replicas {
            if let Some(shard) = replica.shard_id {
                hosted.entry(shard).or_default().insert(*node_id, replica);
            }
        }
    }

    let shards = view
        .ring
        .shards()
        .map(|shard| {
            let placement = view.ring.replicas(shard);
            let on_nodes = hosted.get(&shard.0);
            let mut replicas: Vec<ShardReplicaHealth> = placement
                .iter()
                .map(|node_id| replica_health(*node_id, answered.contains_key(node_id), on_nodes))
                .collect();
            // Replicas outside the placement (learners or leftovers during a move).
            if let Some(on_nodes) = on_nodes {
                for (node_id, replica) in on_nodes {
                    if !placement.contains(node_id) {
                        replicas.push(ShardReplicaHealth {
                            node_id: *node_id,
                            reachable: true,
                            hosted: true,
                            role: replica.role,
                            applied_index: replica.applied_index,
                        });
                    }
                }
            }
            let leader = claims.shards.get(&shard.0);
            ShardHealth {
                shard_id: shard.0,
                placement,
                leader_id: leader.map_or(0, |claim| claim.leader_id),
                term: leader.map_or(0, |claim| claim.term),
                replicas,
            }
        })
        .collect();

    ClusterStatusResponse {
        ring: Some(view.info.clone()),
        nodes,
        shards,
        system_leader_id: claims.system.map_or(0, |claim| claim.leader_id),
    }
}

fn replica_health(
    node_id: NodeId,
    reachable: bool,
    on_nodes: Option<&BTreeMap<NodeId, &ReplicaInfo>>,
) -> ShardReplicaHealth {
    let replica = on_nodes.and_then(|nodes| nodes.get(&node_id));
    ShardReplicaHealth {
        node_id,
        reachable,
        hosted: replica.is_some(),
        role: replica.map_or(ReplicaRole::Unspecified as i32, |replica| replica.role),
        applied_index: replica.map_or(0, |replica| replica.applied_index),
    }
}

fn count<'a>(replicas: impl Iterator<Item = &'a ReplicaInfo>) -> u32 {
    u32::try_from(replicas.count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use ringkv_ring::ShardId;

    use super::*;
    use crate::convert::ring_from_info;
    use crate::convert::tests::ring_info;

    fn view() -> RingView {
        let info = ring_info(3, 4, 2);
        match ring_from_info(&info) {
            Ok(ring) => RingView { ring, info },
            Err(err) => panic!("{err}"),
        }
    }

    fn status_for(view: &RingView, node_id: NodeId, leader_term: u64) -> NodeStatusResponse {
        let replicas = view
            .ring
            .shards_of_node(node_id)
            .into_iter()
            .map(|shard: ShardId| ReplicaInfo {
                shard_id: Some(shard.0),
                role: if view.ring.replicas(shard)[0] == node_id {
                    ReplicaRole::Leader as i32
                } else {
                    ReplicaRole::Follower as i32
                },
                term: leader_term,
                leader_id: view.ring.replicas(shard)[0],
                applied_index: 10 + node_id,
                ..ReplicaInfo::default()
            })
            .chain(std::iter::once(ReplicaInfo {
                shard_id: None,
                role: if node_id == 2 {
                    ReplicaRole::Leader as i32
                } else {
                    ReplicaRole::Follower as i32
                },
                term: 1,
                leader_id: 2,
                ..ReplicaInfo::default()
            }))
            .collect();
        NodeStatusResponse {
            node_id,
            addr: format!("n{node_id}:7001"),
            cluster_id: view.info.cluster_id.clone(),
            ring: Some(view.info.clone()),
            replicas,
            version: String::new(),
            moves: None,
            reads: None,
            tso: None,
            gossip: None,
            ..NodeStatusResponse::default()
        }
    }

    /// All nodes answering: every shard has its placement, its leader and healthy replicas.
    #[test]
    fn merges_healthy_cluster() {
        let view = view();
        let probes: Vec<NodeProbe> = view
            .info
            .members
            .iter()
            .map(|member| NodeProbe {
                member: member.clone(),
                answer: Ok(status_for(&view, member.node_id, 3)),
            })
            .collect();
        let status = build_cluster_status(&view, &probes);
        assert_eq!(status.nodes.len(), 3);
        assert!(status
            .nodes
            .iter()
            .all(|node| node.reachable && node.error.is_empty()));
        assert_eq!(status.system_leader_id, 2);
        assert_eq!(status.shards.len(), 4);
        for shard in &status.shards {
            assert_eq!(shard.placement.len(), 2);
            assert_eq!(shard.leader_id, shard.placement[0]);
            assert_eq!(shard.term, 3);
            assert!(shard.replicas.iter().all(|r| r.reachable && r.applied_index > 10));
        }
        let leaders: u32 = status.nodes.iter().map(|node| node.leaders).sum();
        assert_eq!(leaders, 4);
        let replicas: u32 = status.nodes.iter().map(|node| node.replicas).sum();
        assert_eq!(replicas, 8);
    }

    /// Unreachable and misidentified nodes are reported, and their replicas marked so.
    #[test]
    fn reports_unreachable_and_wrong_nodes() {
        let view = view();
        let members = &view.info.members;
        let probes = vec![
            NodeProbe {
                member: members[0].clone(),
                answer: Err("connection refused".into()),
            },
            NodeProbe {
                member: members[1].clone(),
                answer: Ok(status_for(&view, 3, 1)),
            },
            NodeProbe {
                member: members[2].clone(),
                answer: Ok(NodeStatusResponse {
                    replicas: vec![],
                    ..status_for(&view, 3, 1)
                }),
            },
        ];
        let status = build_cluster_status(&view, &probes);
        assert!(!status.nodes[0].reachable);
        assert_eq!(status.nodes[0].error, "connection refused");
        assert!(status.nodes[1].reachable);
        assert!(status.nodes[1].error.contains("answered as node 3"));
        assert!(status.nodes[2].reachable && status.nodes[2].error.is_empty());
        for shard in &status.shards {
            for replica in &shard.replicas {
                match replica.node_id {
                    1 | 2 => {
                        assert!(!replica.reachable && !replica.hosted);
                        assert_eq!(replica.role_label(), "unknown");
                    }
                    _ => {
                        assert!(replica.reachable && !replica.hosted);
                        assert_eq!(replica.role_label(), "missing");
                    }
                }
            }
            assert_eq!(shard.leader_id, 0);
        }
    }
}
