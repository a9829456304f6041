//! The system leader's duties, run by whichever node leads the system group, every
//! `membership_interval_ms`:
//!
//! - **system group membership**: every ring member that is not gone follows the system
//!   group (as a learner, so it learns the ring); up to 5 (3 below 5 eligible members) of
//!   the joining/active members vote. Removed members leave the group; dead members stay
//!   learners, so a node that comes back learns it was replaced and deletes its replicas.
//! - **joins finish**: a `joining` member becomes `active` once every shard placement gives it
//!   has it as a voter;
//! - **decommissions finish**: a `decommissioning` member becomes `removed` once no shard
//!   group counts it (and, if reachable, it reports no replicas left);
//! - **dead nodes**: a member neither this leader's status polls nor gossip (through any
//!   peer) heard from for `dead_node_timeout_ms` is declared `dead` — one at a time, never below RF token owners — so its replicas are
//!   re-created elsewhere. Only answers with this cluster's id count (a member back with
//!   an empty data directory is declared dead like an unreachable one).
//! - **leader balance** (`balance_leaders`): once no ring change is pending and every shard
//!   is settled, one shard leadership per pass moves from the node leading most to a voter
//!   leading fewest (`transfer.rs`), until every active node leads within one of every other.
//!
//! While nothing is pending, passes space out (`pacing.rs`).
//!
//! Every decision is a ring change with the epoch it was decided on: if the ring moved
//! meanwhile the change is rejected and decided again next time.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use openraft::{BasicNode, ChangeMembers, ServerState};
use ringkv_proto::v1;
use ringkv_ring::{MemberState, Ring, ShardId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::NodeError;
use crate::gossip_agent::LivenessView;
use crate::node::Node;
use crate::pacing::QuietPacer;
use crate::peers::Peer;
use crate::raft::types::{ClusterConfig, Command, NodeId, RingChange, RingChangeKind};
use crate::transfer::{next_leader_move, LedShard};

/// How long the leader balancer rests after a failed move.
const BALANCE_REST: Duration = Duration::from_secs(10);

/// Most status polls in flight at once.
const MAX_POLLS: usize = 16;

/// What the shard leaders reported about one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardView {
    pub leader: NodeId,
    pub term: u64,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub joint: bool,
}

/// Each shard's view from the replica claiming leadership with the highest term.
pub fn shard_views(statuses: &[v1::NodeStatusResponse]) -> HashMap<u32, ShardView> {
    let mut views: HashMap<u32, ShardView> = HashMap::new();
    for status in statuses {
        for replica in &status.replicas {
            let Some(shard) = replica.shard_id else {
                continue;
            };
            if replica.role() != v1::ReplicaRole::Leader {
                continue;
            }
            let newer = views.get(&shard).is_none_or(|view| replica.term > view.term);
            if newer {
                views.insert(
                    shard,
                    ShardView {
                        leader: status.node_id,
                        term: replica.term,
                        voters: replica.voters.iter().copied().collect(),
                        learners: replica.learners.iter().copied().collect(),
                        joint: replica.joint,
                    },
                );
            }
        }
    }
    views
}

/// Joining members that every shard placement gives them already counts as a voter.
pub fn finished_joins(ring: &Ring, views: &HashMap<u32, ShardView>) -> Vec<NodeId> {
    ring.members()
        .filter(|member| member.state == MemberState::Joining)
        .map(|member| member.node_id)
        .filter(|&node| {
            ring.shards_of_node(node).iter().all(|shard| {
                views
                    .get(&shard.0)
                    .is_some_and(|view| view.voters.contains(&node) && !view.joint)
            })
        })
        .collect()
}

/// Decommissioning members no shard group counts any more (every shard must have reported).
pub fn finished_decommissions(
    ring: &Ring,
    views: &HashMap<u32, ShardView>,
    replicas_held: &HashMap<NodeId, usize>,
) -> Vec<NodeId> {
    if (0..ring.shard_count()).any(|shard| !views.contains_key(&shard)) {
        return Vec::new();
    }
    ring.members()
        .filter(|member| member.state == MemberState::Decommissioning)
        .map(|member| member.node_id)
        .filter(|node| {
            views
                .values()
                .all(|view| !view.voters.contains(node) && !view.learners.contains(node))
                && replicas_held.get(node).copied().unwrap_or(0) == 0
        })
        .collect()
}

/// The system group's voters wanted for `config`: current voters that are still eligible
/// (joining/active), topped up from eligible members in `ready` (caught-up learners), up to
/// 5 voters (3 below 5 eligible members); decommissioning voters keep their vote until a
/// replacement is ready. Dead and removed voters leave at once.
pub fn wanted_system_voters(
    config: &ClusterConfig,
    current: &BTreeSet<NodeId>,
    ready: &BTreeSet<NodeId>,
) -> BTreeSet<NodeId> {
    let eligible: Vec<NodeId> = config
        .members
        .iter()
        .filter(|member| member.state.owns_tokens())
        .map(|member| member.node_id)
        .collect();
    let size = match eligible.len() {
        n if n >= 5 => 5,
        n if n >= 3 => 3,
        n => n,
    };
    let mut wanted: BTreeSet<NodeId> = eligible
        .iter()
        .copied()
        .filter(|node| current.contains(node))
        .take(size)
        .collect();
    for node in eligible {
        if wanted.len() >= size {
            break;
        }
        if ready.contains(&node) {
            wanted.insert(node);
        }
    }
    // A decommissioning voter keeps its vote until a caught-up replacement exists: shrinking
    // 3 voters to 2 would leave the system group unable to lose any node.
    let leaving = config
        .members
        .iter()
        .filter(|member| member.state == MemberState::Decommissioning && current.contains(&member.node_id));
    for member in leaving {
        if wanted.len() >= size {
            break;
        }
        wanted.insert(member.node_id);
    }
    wanted
}

/// The running duties (on every node; they act while it leads the system group).
pub struct SystemDuties {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl SystemDuties {
    /// Starts the duties of `node`, which count members `liveness` (gossip) hears as alive.
    pub fn spawn(node: Node, liveness: LivenessView) -> SystemDuties {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(node, liveness, cancel.clone()));
        SystemDuties { cancel, task }
    }

    /// Stops the duties and waits for the pass in flight to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "system duties task failed");
        }
    }
}

/// Runs the system leader's duties until `cancel` fires.
async fn run(node: Node, liveness: LivenessView, cancel: CancellationToken) {
    let interval = Duration::from_millis(node.config().membership_interval_ms);
    let mut last_heard: HashMap<NodeId, Instant> = HashMap::new();
    // After a failed leader move the balancer rests, so a move that cannot work does not
    // cost an election every pass.
    let mut balance_after = Instant::now();
    let mut was_leader = false;
    let config = node.config();
    let mut pacer = QuietPacer::for_duty(config.membership_interval_ms, config.dead_node_timeout_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let leader = node.system_group().raft.metrics().borrow().state == ServerState::Leader;
        if !leader {
            was_leader = false;
            pacer.reset();
            continue;
        }
        if !pacer.should_run(node.watch_cluster().borrow().as_ref().map(|config| config.epoch)) {
            continue;
        }
        if !was_leader {
            // A new leader gives every member a full timeout before declaring it dead.
            last_heard.clear();
            was_leader = true;
        }
        let outcome = tokio::select! {
            _ = cancel.cancelled() => break,
            outcome = pass(&node, &liveness, &mut last_heard, &mut balance_after) => outcome,
        };
        let quiet = outcome.inspect_err(|err| debug!(%err, "membership pass did not finish; will retry"));
        pacer.ran(quiet.unwrap_or(false));
    }
    debug!("membership manager stopped");
}

async fn pass(
    node: &Node,
    liveness: &LivenessView,
    last_heard: &mut HashMap<NodeId, Instant>,
    balance_after: &mut Instant,
) -> Result<bool, NodeError> {
    // Ok(true): quiet — every member answered, every shard settled, leaders balanced.
    let Some(config) = node.watch_cluster().borrow().clone() else {
        return Ok(false);
    };
    let ring = Ring::new(config.ring, config.members.clone())
        .map_err(|err| NodeError::InvalidArgument(format!("committed ring is invalid: {err}")))?;
    reconcile_system_group(node, &config).await?;

    let now = Instant::now();
    let statuses = poll_members(node, &config).await;
    for status in &statuses {
        last_heard.insert(status.node_id, now);
    }
    // Gossip hears members through any peer, not only from this leader: a member is dead
    // only if neither a direct poll nor gossip heard it within the timeout.
    for (node_id, member) in liveness.get() {
        if let Some(ago) = member.last_heard {
            let heard = now.checked_sub(ago).unwrap_or(now);
            let entry = last_heard.entry(node_id).or_insert(heard);
            *entry = (*entry).max(heard);
        }
    }
    last_heard.retain(|id, _| config.members.iter().any(|m| m.node_id == *id));
    let views = shard_views(&statuses);
    let held: HashMap<NodeId, usize> = statuses
        .iter()
        .map(|status| {
            let shards = status.replicas.iter().filter(|r| r.shard_id.is_some()).count();
            (status.node_id, shards)
        })
        .collect();

    let mut changes: Vec<RingChangeKind> = Vec::new();
    for node_id in finished_joins(&ring, &views) {
        changes.push(RingChangeKind::MarkActive { node_id });
    }
    for node_id in finished_decommissions(&ring, &views, &held) {
        changes.push(RingChangeKind::MarkRemoved { node_id });
    }
    let dead_after = node.config().dead_node_timeout_ms;
    if dead_after > 0 {
        let timeout = Duration::from_millis(dead_after);
        let dead = config.members.iter().find(|member| {
            !member.state.is_gone()
                && member.node_id != node.node_id()
                && now.duration_since(*last_heard.entry(member.node_id).or_insert(now)) > timeout
        });
        if let Some(dead) = dead {
            warn!(node_id = dead.node_id, addr = %dead.addr, timeout_ms = dead_after, "declaring unreachable node dead");
            changes.push(RingChangeKind::MarkDead {
                node_id: dead.node_id,
            });
        }
    }
    // One change per pass, decided on this epoch: the next pass sees its effect.
    if let Some(kind) = changes.into_iter().next() {
        info!(change = %kind, epoch = config.epoch, "ring change");
        let command = Command::ChangeRing(RingChange {
            expected_epoch: Some(config.epoch),
            kind,
        });
        node.propose(&node.system_group(), command).await?;
        return Ok(false);
    }
    let everyone_answered = config
        .members
        .iter()
        .filter(|member| !member.state.is_gone())
        .all(|member| statuses.iter().any(|status| status.node_id == member.node_id));
    let settled = views.len() == ring.shard_count() as usize && unsettled_shards(&ring, &views).is_empty();
    let mut balanced = true;
    if node.config().balance_leaders && Instant::now() >= *balance_after && settled {
        match balance_leaders(node, &config, &ring, &views, &statuses).await {
            Ok(moved) => balanced = !moved,
            Err(err) => {
                warn!(%err, "leader move failed; the balancer rests for {BALANCE_REST:?}");
                *balance_after = Instant::now() + BALANCE_REST;
                balanced = false;
            }
        }
    }
    Ok(everyone_answered && settled && balanced)
}

/// Moves one shard leadership toward an even spread over the active members that answered;
/// false when none needed to move.
async fn balance_leaders(
    node: &Node,
    config: &ClusterConfig,
    ring: &Ring,
    views: &HashMap<u32, ShardView>,
    statuses: &[v1::NodeStatusResponse],
) -> Result<bool, NodeError> {
    let active: Vec<NodeId> = ring
        .members()
        .filter(|member| member.state == MemberState::Active)
        .map(|member| member.node_id)
        .filter(|id| statuses.iter().any(|status| status.node_id == *id))
        .collect();
    let shards = views
        .iter()
        .map(|(shard, view)| {
            (
                *shard,
                LedShard {
                    leader: view.leader,
                    voters: view.voters.iter().copied().collect(),
                },
            )
        })
        .collect();
    let Some(step) = next_leader_move(&shards, &active) else {
        return Ok(false);
    };
    info!(
        shard = step.shard,
        from = step.from,
        to = step.to,
        "moving a shard leadership to balance leaders"
    );
    if step.from == node.node_id() {
        node.transfer_leader(step.shard, step.to).await?;
        return Ok(true);
    }
    let addr = config
        .members
        .iter()
        .find(|member| member.node_id == step.from)
        .map(|member| member.addr.clone())
        .ok_or(NodeError::Peer {
            node: step.from,
            detail: "no address in the ring".to_string(),
        })?;
    let leader = Peer {
        node: step.from,
        addr: &addr,
    };
    node.transfer_leader_at(leader, step.shard, step.to).await?;
    Ok(true)
}

/// Every member's status (this node's own without an RPC), unreachable ones left out.
async fn poll_members(node: &Node, config: &ClusterConfig) -> Vec<v1::NodeStatusResponse> {
    let targets: Vec<(NodeId, String)> = config
        .members
        .iter()
        .filter(|member| member.state != MemberState::Removed)
        .map(|member| (member.node_id, member.addr.clone()))
        .collect();
    stream::iter(targets)
        .map(|(node_id, addr)| async move {
            if node_id == node.node_id() {
                return Some(node.status());
            }
            let peer = Peer {
                node: node_id,
                addr: &addr,
            };
            match node.peers().status(peer).await {
                Ok(status) if status.node_id == node_id && status.cluster_id != config.cluster_id => {
                    warn!(node_id, %addr, "a member answers without this cluster's id (data lost?): not alive");
                    None
                }
                Ok(status) if status.node_id == node_id => Some(status),
                Ok(status) => {
                    warn!(expected = node_id, found = status.node_id, %addr, "a different node answers at a member's address");
                    None
                }
                Err(err) => {
                    debug!(node_id, %addr, %err, "member status poll failed");
                    None
                }
            }
        })
        .buffer_unordered(MAX_POLLS)
        .filter_map(|status| async move { status })
        .collect()
        .await
}

/// Moves the system group's membership toward the ring: members follow it as learners,
/// up to 5 of them vote.
async fn reconcile_system_group(node: &Node, config: &ClusterConfig) -> Result<(), NodeError> {
    let system = node.system_group();
    let (voters, learners, replication, last_index) = {
        let metrics = system.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        (
            membership.voter_ids().collect::<BTreeSet<_>>(),
            membership.learner_ids().collect::<BTreeSet<_>>(),
            metrics.replication.clone().unwrap_or_default(),
            metrics.last_log_index.unwrap_or(0),
        )
    };
    for member in &config.members {
        let follows = voters.contains(&member.node_id) || learners.contains(&member.node_id);
        if !follows && member.state != MemberState::Removed {
            info!(node_id = member.node_id, addr = %member.addr, "adding system group learner");
            system
                .raft
                .add_learner(member.node_id, BasicNode::new(member.addr.clone()), false)
                .await
                .map_err(|err| NodeError::NoQuorum {
                    group: system.id,
                    detail: err.to_string(),
                })?;
        }
    }
    let ready: BTreeSet<NodeId> = replication
        .iter()
        .filter(|(_, matched)| matched.is_some_and(|matched| matched.index + 16 >= last_index))
        .map(|(id, _)| *id)
        .collect();
    let wanted = wanted_system_voters(config, &voters, &ready);
    if !wanted.is_empty() && wanted != voters {
        info!(from = ?voters, to = ?wanted, "changing system group voters");
        system
            .raft
            .change_membership(wanted, true)
            .await
            .map_err(|err| NodeError::NoQuorum {
                group: system.id,
                detail: err.to_string(),
            })?;
    }
    let removed: BTreeSet<NodeId> = config
        .members
        .iter()
        .filter(|member| member.state == MemberState::Removed && learners.contains(&member.node_id))
        .map(|member| member.node_id)
        .collect();
    if !removed.is_empty() {
        info!(nodes = ?removed, "removing decommissioned nodes from the system group");
        system
            .raft
            .change_membership(ChangeMembers::RemoveNodes(removed), true)
            .await
            .map_err(|err| NodeError::NoQuorum {
                group: system.id,
                detail: err.to_string(),
            })?;
    }
    Ok(())
}

/// Shards whose leader's voters differ from placement (for status and tests).
pub fn unsettled_shards(ring: &Ring, views: &HashMap<u32, ShardView>) -> Vec<u32> {
    ring.shards()
        .filter(|&ShardId(shard)| {
            let placement: BTreeSet<NodeId> = ring.replicas(ShardId(shard)).into_iter().collect();
            views
                .get(&shard)
                .is_none_or(|view| view.voters != placement || view.joint || !view.learners.is_empty())
        })
        .map(|shard| shard.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use ringkv_ring::{RingConfig, RingMember};

    use super::*;

    fn config(states: &[MemberState]) -> ClusterConfig {
        ClusterConfig {
            cluster_id: "c".into(),
            ring: RingConfig {
                shards: 8,
                replication_factor: 3,
                vnodes_per_node: 16,
            },
            members: states
                .iter()
                .enumerate()
                .map(|(i, &state)| RingMember {
                    node_id: i as u64 + 1,
                    addr: format!("n{}:1", i + 1),
                    state,
                })
                .collect(),
            epoch: 2,
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Voters stay put while eligible, are topped up from caught-up learners, and leave
    /// when decommissioning or dead.
    #[test]
    fn system_voters() {
        use MemberState::*;
        let four = config(&[Active, Active, Active, Joining]);
        assert_eq!(
            wanted_system_voters(&four, &set(&[1, 2, 3]), &set(&[4])),
            set(&[1, 2, 3])
        );
        let leaving = config(&[Active, Active, Decommissioning, Active]);
        assert_eq!(
            wanted_system_voters(&leaving, &set(&[1, 2, 3]), &set(&[4])),
            set(&[1, 2, 4])
        );
        assert_eq!(
            wanted_system_voters(&leaving, &set(&[1, 2, 3]), &set(&[])),
            set(&[1, 2, 3]),
            "no caught-up replacement yet: the leaving voter keeps its vote"
        );
        let five = config(&[Active, Active, Active, Active, Joining]);
        assert_eq!(
            wanted_system_voters(&five, &set(&[1, 2, 3]), &set(&[4, 5])),
            set(&[1, 2, 3, 4, 5])
        );
        let dead = config(&[Active, Dead, Active, Active]);
        assert_eq!(
            wanted_system_voters(&dead, &set(&[1, 2, 3]), &set(&[4])),
            set(&[1, 3, 4])
        );
    }

    fn view(voters: &[u64], learners: &[u64]) -> ShardView {
        ShardView {
            leader: voters[0],
            term: 1,
            voters: set(voters),
            learners: set(learners),
            joint: false,
        }
    }

    /// A join finishes when every shard placed on the node counts it as a voter; a
    /// decommission when no shard counts it and the node holds nothing.
    #[test]
    fn joins_and_decommissions_finish() {
        use MemberState::*;
        let cfg = config(&[Active, Active, Active, Joining]);
        let ring = Ring::new(cfg.ring, cfg.members.clone()).expect("ring");
        let settled: HashMap<u32, ShardView> = ring
            .shards()
            .map(|shard| (shard.0, view(&ring.replicas(shard), &[])))
            .collect();
        assert_eq!(finished_joins(&ring, &settled), vec![4]);
        assert!(unsettled_shards(&ring, &settled).is_empty());
        let mut partial = settled.clone();
        let shard_of_4 = ring.shards_of_node(4)[0].0;
        partial.insert(shard_of_4, view(&[1, 2, 3], &[4]));
        assert!(finished_joins(&ring, &partial).is_empty());
        assert_eq!(unsettled_shards(&ring, &partial), vec![shard_of_4]);

        let cfg = config(&[Active, Active, Active, Decommissioning]);
        let ring = Ring::new(cfg.ring, cfg.members.clone()).expect("ring");
        let moved: HashMap<u32, ShardView> = ring
            .shards()
            .map(|shard| (shard.0, view(&ring.replicas(shard), &[])))
            .collect();
        let mut held = HashMap::new();
        assert_eq!(finished_decommissions(&ring, &moved, &held), vec![4]);
        held.insert(4, 1);
        assert!(
            finished_decommissions(&ring, &moved, &held).is_empty(),
            "still holds a replica"
        );
        held.clear();
        let mut missing = moved.clone();
        missing.remove(&0);
        assert!(
            finished_decommissions(&ring, &missing, &held).is_empty(),
            "a shard unheard"
        );
    }
}
