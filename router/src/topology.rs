//! The router's view of the cluster: the ring (placement), node addresses and a shard →
//! leader cache, learnt from the leader claims nodes gossip, from nodes' `NodeStatus`
//! answers (the ring, and a periodic fallback poll) and from not-leader hints.
//!
//! - [`Topology`] is the pure view: merging observations, following hints, routing a shard
//!   to a node. Unit-tested without IO.
//! - [`TopologyHandle`] shares it between requests and the refresher task
//!   (`refresher.rs`), and lets requests ask for a refresh and wait for a ring.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ringkv_gossip::NodeAnnouncement;
use ringkv_proto::v1::{NodeStatusResponse, ReplicaInfo, ReplicaRole, RingInfo};
use ringkv_ring::{MemberState, NodeId, Ring, ShardId};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::convert::{member_state, ring_from_info};
use crate::error::RouterError;

/// Most node addresses remembered beyond the ring members (learnt from hints and seeds).
const MAX_EXTRA_NODE_ADDRS: usize = 1024;
/// Most nodes polled by one refresh.
const MAX_POLL_TARGETS: usize = 4096;

/// A ring as reported by a node, with the placement computed from it.
#[derive(Debug)]
pub struct RingView {
    pub ring: Ring,
    pub info: RingInfo,
}

/// Who the router believes leads a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderEntry {
    pub node_id: NodeId,
    /// Term of the claim; for a hint, the term of the entry it replaced.
    pub term: u64,
    /// Learnt from a not-leader hint rather than from a `NodeStatus` claim.
    pub from_hint: bool,
}

/// One leader claim found in `NodeStatus` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub leader_id: NodeId,
    pub term: u64,
    /// Made by the leader itself (role [`ReplicaRole::Leader`]), which wins ties.
    pub self_claim: bool,
}

/// The best leader claim per shard, and for the system group.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaderClaims {
    pub shards: HashMap<u32, Claim>,
    pub system: Option<Claim>,
}

/// What applying gossip found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GossipOutcome {
    pub leaders_changed: usize,
    /// Some node of the adopted cluster runs a newer ring (or no ring is known yet): the
    /// ring must be read from a node.
    pub ring_behind: bool,
}

/// Picks, for every group, the leader reported with the highest term.
pub fn leader_claims<'a>(reports: impl IntoIterator<Item = (NodeId, &'a ReplicaInfo)>) -> LeaderClaims {
    let mut claims = LeaderClaims::default();
    for (reporter, replica) in reports {
        let is_leader = replica.role() == ReplicaRole::Leader;
        let leader_id = if replica.leader_id != 0 {
            replica.leader_id
        } else if is_leader && reporter != 0 {
            reporter
        } else {
            continue;
        };
        let claim = Claim {
            leader_id,
            term: replica.term,
            self_claim: is_leader && leader_id == reporter,
        };
        let slot = match replica.shard_id {
            Some(shard) => claims.shards.entry(shard).or_insert(claim),
            None => claims.system.get_or_insert(claim),
        };
        if (claim.term, claim.self_claim) > (slot.term, slot.self_claim) {
            *slot = claim;
        }
    }
    claims
}

/// Chooses the ring to adopt among the rings nodes reported: the newest epoch of the
/// current cluster (or of any cluster when no node reports the current one). `None` when
/// nothing newer than `current` was reported.
pub fn choose_ring<'a>(current: Option<&RingInfo>, candidates: &[&'a RingInfo]) -> Option<&'a RingInfo> {
    let same_cluster: Vec<&RingInfo> = match current {
        Some(current) => candidates
            .iter()
            .copied()
            .filter(|info| info.cluster_id == current.cluster_id)
            .collect(),
        None => Vec::new(),
    };
    let pool: &[&RingInfo] = if same_cluster.is_empty() {
        candidates
    } else {
        &same_cluster
    };
    let mut best: Option<&RingInfo> = None;
    for info in pool {
        if best.is_none_or(|best| info.epoch > best.epoch) {
            best = Some(info);
        }
    }
    let best = best?;
    match current {
        Some(current) if current.cluster_id == best.cluster_id && best.epoch <= current.epoch => None,
        _ => Some(best),
    }
}

/// A successful `NodeStatus` poll.
#[derive(Debug, Clone)]
pub struct NodeObservation {
    /// The address that was polled.
    pub addr: String,
    pub status: NodeStatusResponse,
}

/// What one refresh changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    /// `(cluster id, epoch)` of a newly adopted ring.
    pub new_ring: Option<(String, u64)>,
    /// Why a newer ring could not be adopted.
    pub ring_error: Option<String>,
    /// Shards whose cached leader changed.
    pub leaders_changed: usize,
}

/// Where to send one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node, when known (a bare address hint has no id).
    pub node_id: Option<NodeId>,
    pub addr: String,
}

/// How to pick a node for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// The cached leader, else the placement replicas in ring order.
    Leader,
    /// Any replica, rotating from `rotation` (stale reads).
    AnyReplica { rotation: usize },
}

/// Why no node could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no ring known")]
    NoRing,
    #[error("the shard count changed from {expected} to {actual}")]
    ShardCountChanged { expected: u32, actual: u32 },
    #[error("no address known for any replica of shard {0}")]
    NoAddress(ShardId),
}

/// The router's view of the cluster.
#[derive(Debug, Default)]
pub struct Topology {
    ring: Option<Arc<RingView>>,
    /// Addresses of ring members (authoritative), then of other nodes seen.
    node_addrs: HashMap<NodeId, String>,
    leaders: HashMap<ShardId, LeaderEntry>,
}

impl Topology {
    pub fn ring(&self) -> Option<Arc<RingView>> {
        self.ring.clone()
    }

    #[cfg(test)]
    pub fn leader(&self, shard: ShardId) -> Option<LeaderEntry> {
        self.leaders.get(&shard).copied()
    }

    pub fn node_addr(&self, node_id: NodeId) -> Option<&str> {
        self.node_addrs.get(&node_id).map(String::as_str)
    }

    /// Adopts what a refresh observed: a newer ring, node addresses, leader claims.
    pub fn apply_observations(&mut self, observations: &[NodeObservation]) -> RefreshOutcome {
        let mut outcome = RefreshOutcome::default();
        let candidates: Vec<&RingInfo> = observations
            .iter()
            .filter_map(|observation| observation.status.ring.as_ref())
            .collect();
        let current = self.ring.as_ref().map(|view| &view.info);
        if let Some(chosen) = choose_ring(current, &candidates) {
            match ring_from_info(chosen) {
                Ok(ring) => {
                    outcome.new_ring = Some((chosen.cluster_id.clone(), chosen.epoch));
                    self.adopt_ring(RingView {
                        ring,
                        info: chosen.clone(),
                    });
                }
                Err(err) => outcome.ring_error = Some(err.to_string()),
            }
        }
        for observation in observations {
            let node_id = observation.status.node_id;
            if node_id != 0 && !self.is_member(node_id) {
                self.remember_addr(node_id, &observation.addr);
            }
        }
        let Some(view) = self.ring.clone() else {
            return outcome;
        };
        // Only answers from the adopted cluster say anything about its leaders.
        let claims = leader_claims(
            observations
                .iter()
                .filter(|observation| observation.status.cluster_id == view.info.cluster_id)
                .flat_map(|observation| {
                    observation
                        .status
                        .replicas
                        .iter()
                        .map(move |replica| (observation.status.node_id, replica))
                }),
        );
        for (shard, claim) in claims.shards {
            if shard >= view.ring.shard_count() {
                continue;
            }
            let entry = self.leaders.get(&ShardId(shard)).copied();
            if let Some(merged) = merge_claim(entry, claim) {
                if entry.map(|entry| entry.node_id) != Some(merged.node_id) {
                    outcome.leaders_changed += 1;
                }
                self.leaders.insert(ShardId(shard), merged);
            }
        }
        outcome
    }

    /// Adopts the leader claims nodes gossip (each node claims the shards it leads, with
    /// the term), merged like `NodeStatus` claims: a higher term wins, an equal term does not
    /// override a more recent not-leader hint. Reports from other clusters are ignored.
    pub fn apply_gossip(&mut self, reports: &[NodeAnnouncement]) -> GossipOutcome {
        let mut outcome = GossipOutcome::default();
        let Some(view) = self.ring.clone() else {
            outcome.ring_behind = !reports.is_empty();
            return outcome;
        };
        for report in reports {
            if report.node_id == 0 || report.cluster_id != view.info.cluster_id {
                continue;
            }
            if report.ring_epoch > view.info.epoch {
                outcome.ring_behind = true;
            }
            if !report.addr.is_empty() && !self.is_member(report.node_id) {
                self.remember_addr(report.node_id, &report.addr);
            }
            for lead in &report.leaders {
                if lead.shard_id >= view.ring.shard_count() {
                    continue;
                }
                let claim = Claim {
                    leader_id: report.node_id,
                    term: lead.term,
                    self_claim: true,
                };
                let shard = ShardId(lead.shard_id);
                let entry = self.leaders.get(&shard).copied();
                if let Some(merged) = merge_claim(entry, claim) {
                    if entry.map(|entry| entry.node_id) != Some(merged.node_id) {
                        outcome.leaders_changed += 1;
                    }
                    self.leaders.insert(shard, merged);
                }
            }
        }
        outcome
    }

    fn adopt_ring(&mut self, view: RingView) {
        let same_shape = self.ring.as_ref().is_some_and(|old| {
            old.info.cluster_id == view.info.cluster_id && old.ring.shard_count() == view.ring.shard_count()
        });
        if !same_shape {
            self.leaders.clear();
        }
        let members: HashSet<NodeId> = view.ring.members().map(|m| m.node_id).collect();
        // Keep a bounded number of non-member addresses (learnt from hints or seeds).
        let mut extra = 0usize;
        self.node_addrs.retain(|node_id, _| {
            if members.contains(node_id) {
                return false;
            }
            extra += 1;
            extra <= MAX_EXTRA_NODE_ADDRS
        });
        for member in view.ring.members() {
            self.node_addrs.insert(member.node_id, member.addr.clone());
        }
        self.ring = Some(Arc::new(view));
    }

    fn is_member(&self, node_id: NodeId) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|view| view.ring.member(node_id).is_some())
    }

    /// Records a non-member's address, within the bound.
    fn remember_addr(&mut self, node_id: NodeId, addr: &str) {
        let known = self.node_addrs.contains_key(&node_id);
        let members = self.ring.as_ref().map_or(0, |view| view.ring.members().count());
        if known || self.node_addrs.len() < members + MAX_EXTRA_NODE_ADDRS {
            self.node_addrs.insert(node_id, addr.to_string());
        }
    }

    /// Follows a not-leader hint: `leader_id` now leads `shard`.
    pub fn update_leader(&mut self, shard: ShardId, leader_id: NodeId, addr_hint: Option<&str>) {
        let in_range = self
            .ring
            .as_ref()
            .is_some_and(|view| shard.0 < view.ring.shard_count());
        if leader_id == 0 || !in_range {
            return;
        }
        if let Some(addr) = addr_hint {
            if !self.is_member(leader_id) {
                self.remember_addr(leader_id, addr);
            }
        }
        let term = self.leaders.get(&shard).map_or(0, |entry| entry.term);
        self.leaders.insert(
            shard,
            LeaderEntry {
                node_id: leader_id,
                term,
                from_hint: true,
            },
        );
    }

    /// Forgets `node_id` as the leader of `shard` (it failed); a newer entry is kept.
    pub fn invalidate(&mut self, shard: ShardId, node_id: NodeId) {
        if self
            .leaders
            .get(&shard)
            .is_some_and(|entry| entry.node_id == node_id)
        {
            self.leaders.remove(&shard);
        }
    }

    /// Picks the node for attempt number `attempt` (from 0) on `shard`.
    pub fn route(
        &self,
        shard: ShardId,
        shard_count: u32,
        mode: RouteMode,
        attempt: usize,
    ) -> Result<Target, RouteError> {
        let view = self.ring.as_ref().ok_or(RouteError::NoRing)?;
        if view.ring.shard_count() != shard_count {
            return Err(RouteError::ShardCountChanged {
                expected: shard_count,
                actual: view.ring.shard_count(),
            });
        }
        let replicas = view.ring.replicas(shard);
        let start = match mode {
            RouteMode::Leader => {
                if let Some(entry) = self.leaders.get(&shard) {
                    if let Some(addr) = self.node_addrs.get(&entry.node_id) {
                        return Ok(Target {
                            node_id: Some(entry.node_id),
                            addr: addr.clone(),
                        });
                    }
                }
                attempt
            }
            RouteMode::AnyReplica { rotation } => rotation.wrapping_add(attempt),
        };
        let count = replicas.len();
        (0..count)
            .map(|step| replicas[start.wrapping_add(step) % count])
            .find_map(|node_id| {
                self.node_addrs.get(&node_id).map(|addr| Target {
                    node_id: Some(node_id),
                    addr: addr.clone(),
                })
            })
            .ok_or(RouteError::NoAddress(shard))
    }

    /// The addresses one refresh polls: seeds, then ring members not removed. Bounded.
    pub fn poll_targets(&self, seeds: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        let members = self.ring.iter().flat_map(|view| {
            view.info
                .members
                .iter()
                .filter(|member| member_state(member.state()) != Some(MemberState::Removed))
                .map(|member| member.addr.clone())
        });
        seeds
            .iter()
            .cloned()
            .chain(members)
            .filter(|addr| !addr.is_empty() && seen.insert(addr.clone()))
            .take(MAX_POLL_TARGETS)
            .collect()
    }
}

/// Merges a claim from a refresh into a cached leader entry. The claim wins when it is
/// newer: a higher term, or the same term when the entry did not come from a (more recent)
/// hint. Returns the new entry, or `None` to keep the cached one.
fn merge_claim(entry: Option<LeaderEntry>, claim: Claim) -> Option<LeaderEntry> {
    let claimed = LeaderEntry {
        node_id: claim.leader_id,
        term: claim.term,
        from_hint: false,
    };
    match entry {
        None => Some(claimed),
        Some(entry) if claim.term > entry.term || (claim.term == entry.term && !entry.from_hint) => {
            Some(claimed)
        }
        Some(_) => None,
    }
}

/// Progress of the refresher, for requests waiting on it.
struct Shared {
    state: RwLock<Topology>,
    refresh_requested: Notify,
    /// Id of the last refresh pass started.
    passes_started: AtomicU64,
    /// Id of the last refresh pass finished.
    passes_done: watch::Sender<u64>,
}

/// The shared topology: cheap to clone, used by requests and by the refresher.
#[derive(Clone)]
pub struct TopologyHandle {
    shared: Arc<Shared>,
}

impl Default for TopologyHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl TopologyHandle {
    pub fn new() -> Self {
        TopologyHandle {
            shared: Arc::new(Shared {
                state: RwLock::new(Topology::default()),
                refresh_requested: Notify::new(),
                passes_started: AtomicU64::new(0),
                passes_done: watch::Sender::new(0),
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Topology> {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Topology> {
        self.shared.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current ring, if any.
    pub fn ring(&self) -> Option<Arc<RingView>> {
        self.read().ring()
    }

    /// See [`Topology::route`].
    pub fn route(
        &self,
        shard: ShardId,
        shard_count: u32,
        mode: RouteMode,
        attempt: usize,
    ) -> Result<Target, RouteError> {
        self.read().route(shard, shard_count, mode, attempt)
    }

    /// The address of a node, if known.
    pub fn node_addr(&self, node_id: NodeId) -> Option<String> {
        self.read().node_addr(node_id).map(str::to_string)
    }

    /// The cached leader of a shard.
    #[cfg(test)]
    pub fn leader(&self, shard: ShardId) -> Option<LeaderEntry> {
        self.read().leader(shard)
    }

    /// See [`Topology::update_leader`].
    pub fn update_leader(&self, shard: ShardId, leader_id: NodeId, addr_hint: Option<&str>) {
        self.write().update_leader(shard, leader_id, addr_hint);
    }

    /// See [`Topology::apply_gossip`].
    pub fn apply_gossip(&self, reports: &[NodeAnnouncement]) -> GossipOutcome {
        self.write().apply_gossip(reports)
    }

    /// See [`Topology::invalidate`].
    pub fn invalidate(&self, shard: ShardId, node_id: NodeId) {
        self.write().invalidate(shard, node_id);
    }

    /// Asks the refresher for a pass now (coalesced with other requests).
    pub fn request_refresh(&self) {
        self.shared.refresh_requested.notify_one();
    }

    /// The ring, waiting — at most until `deadline` — for a refresh that starts after this
    /// call when none is known yet.
    pub async fn wait_for_ring(&self, deadline: Instant) -> Result<Arc<RingView>, RouterError> {
        if let Some(view) = self.ring() {
            return Ok(view);
        }
        let mut done = self.shared.passes_done.subscribe();
        let wanted_pass = self.shared.passes_started.load(Ordering::SeqCst) + 1;
        self.request_refresh();
        loop {
            if let Some(view) = self.ring() {
                return Ok(view);
            }
            if *done.borrow_and_update() >= wanted_pass {
                return Err(RouterError::NoCluster);
            }
            tokio::select! {
                changed = done.changed() => {
                    if changed.is_err() {
                        return Err(RouterError::NoCluster);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Err(RouterError::NoCluster),
            }
        }
    }

    /// The addresses a refresh polls.
    pub fn poll_targets(&self, seeds: &[String]) -> Vec<String> {
        self.read().poll_targets(seeds)
    }

    /// Resolves when a refresh was requested.
    pub(crate) async fn refresh_requested(&self) {
        self.shared.refresh_requested.notified().await;
    }

    /// Marks the start of a refresh pass; returns its id.
    pub(crate) fn begin_pass(&self) -> u64 {
        self.shared.passes_started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Applies a pass's observations and wakes the requests waiting for it.
    pub(crate) fn finish_pass(&self, pass: u64, observations: &[NodeObservation]) -> RefreshOutcome {
        let outcome = self.write().apply_observations(observations);
        self.shared.passes_done.send_replace(pass);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use ringkv_gossip::{LeaderClaim, Load};
    use ringkv_proto::v1::{MemberState as ProtoMemberState, ReplicaInfo};

    use super::*;
    use crate::convert::tests::ring_info;

    fn replica(shard: Option<u32>, role: ReplicaRole, term: u64, leader_id: u64) -> ReplicaInfo {
        ReplicaInfo {
            shard_id: shard,
            role: role as i32,
            term,
            leader_id,
            ..ReplicaInfo::default()
        }
    }

    fn observation(node_id: u64, ring: Option<RingInfo>, replicas: Vec<ReplicaInfo>) -> NodeObservation {
        NodeObservation {
            addr: format!("n{node_id}:7001"),
            status: NodeStatusResponse {
                node_id,
                addr: format!("n{node_id}:7001"),
                cluster_id: "test-cluster".into(),
                ring,
                replicas,
                version: String::new(),
                moves: None,
                reads: None,
                tso: None,
                gossip: None,
                ..NodeStatusResponse::default()
            },
        }
    }

    fn topology_with_ring() -> Topology {
        let mut topology = Topology::default();
        let outcome = topology.apply_observations(&[observation(1, Some(ring_info(3, 8, 3)), vec![])]);
        assert_eq!(outcome.new_ring, Some(("test-cluster".into(), 1)));
        topology
    }

    /// The leader with the highest term wins; the leader's own claim wins a tie.
    #[test]
    fn claims_pick_highest_term() {
        let r1 = replica(Some(0), ReplicaRole::Follower, 4, 2);
        let r2 = replica(Some(0), ReplicaRole::Follower, 5, 3);
        let r3 = replica(Some(0), ReplicaRole::Leader, 5, 0);
        let r4 = replica(None, ReplicaRole::Leader, 9, 1);
        let r5 = replica(Some(1), ReplicaRole::Candidate, 7, 0);
        let claims = leader_claims([(1, &r1), (2, &r2), (3, &r3), (1, &r4), (2, &r5)]);
        assert_eq!(
            claims.shards.get(&0),
            Some(&Claim {
                leader_id: 3,
                term: 5,
                self_claim: true
            })
        );
        assert_eq!(claims.shards.get(&1), None);
        assert_eq!(claims.system.map(|c| c.leader_id), Some(1));
    }

    /// The newest epoch of the current cluster is adopted; older or equal ones are not.
    #[test]
    fn ring_choice_prefers_newest_epoch_of_same_cluster() {
        let mut old = ring_info(3, 8, 3);
        old.epoch = 2;
        let mut newer = ring_info(3, 8, 3);
        newer.epoch = 3;
        let mut other_cluster = ring_info(3, 8, 3);
        other_cluster.cluster_id = "other".into();
        other_cluster.epoch = 10;

        assert_eq!(choose_ring(None, &[&old, &newer]).map(|r| r.epoch), Some(3));
        assert_eq!(choose_ring(Some(&newer), &[&old, &newer]), None);
        assert_eq!(
            choose_ring(Some(&old), &[&newer, &other_cluster]).map(|r| r.epoch),
            Some(3)
        );
        // Nobody reports the current cluster any more: it was re-created.
        assert_eq!(
            choose_ring(Some(&old), &[&other_cluster]).map(|r| r.cluster_id.as_str()),
            Some("other")
        );
        assert_eq!(choose_ring(None, &[]), None);
    }

    /// Without a cached leader, attempts walk the placement replicas; with one, go to it.
    #[test]
    fn routes_to_leader_or_placement() {
        let mut topology = topology_with_ring();
        let shard = ShardId(5);
        let Some(view) = topology.ring() else {
            panic!("ring expected")
        };
        let replicas = view.ring.replicas(shard);
        for attempt in 0..6 {
            let target = topology.route(shard, 8, RouteMode::Leader, attempt);
            assert_eq!(
                target.ok().and_then(|t| t.node_id),
                Some(replicas[attempt % replicas.len()])
            );
        }
        topology.update_leader(shard, replicas[2], None);
        let target = topology.route(shard, 8, RouteMode::Leader, 0);
        assert_eq!(target.ok().and_then(|t| t.node_id), Some(replicas[2]));

        topology.invalidate(shard, replicas[1]);
        assert_eq!(topology.leader(shard).map(|l| l.node_id), Some(replicas[2]));
        topology.invalidate(shard, replicas[2]);
        assert_eq!(topology.leader(shard), None);

        assert_eq!(
            topology.route(shard, 16, RouteMode::Leader, 0),
            Err(RouteError::ShardCountChanged {
                expected: 16,
                actual: 8
            })
        );
        assert_eq!(
            Topology::default().route(shard, 8, RouteMode::Leader, 0),
            Err(RouteError::NoRing)
        );
    }

    /// Stale reads rotate over every replica.
    #[test]
    fn stale_routing_rotates() {
        let topology = topology_with_ring();
        let mut seen = HashSet::new();
        for attempt in 0..3 {
            let target = topology.route(ShardId(1), 8, RouteMode::AnyReplica { rotation: 7 }, attempt);
            if let Ok(Target {
                node_id: Some(id), ..
            }) = target
            {
                seen.insert(id);
            }
        }
        assert_eq!(seen.len(), 3);
    }

    /// A refresh claim replaces a hint only with a higher term; same-term claims replace claims.
    #[test]
    fn hints_and_claims_merge_by_term() {
        let mut topology = topology_with_ring();
        let shard = ShardId(2);
        topology.apply_observations(&[observation(
            1,
            None,
            vec![replica(Some(2), ReplicaRole::Leader, 5, 1)],
        )]);
        assert_eq!(topology.leader(shard).map(|l| (l.node_id, l.term)), Some((1, 5)));

        // A hint says node 2 leads now; a stale refresh at term 5 must not undo it.
        topology.update_leader(shard, 2, None);
        let outcome = topology.apply_observations(&[observation(
            1,
            None,
            vec![replica(Some(2), ReplicaRole::Leader, 5, 1)],
        )]);
        assert_eq!(outcome.leaders_changed, 0);
        assert_eq!(topology.leader(shard).map(|l| l.node_id), Some(2));

        // A newer term wins.
        topology.apply_observations(&[observation(
            3,
            None,
            vec![replica(Some(2), ReplicaRole::Leader, 6, 3)],
        )]);
        assert_eq!(topology.leader(shard).map(|l| (l.node_id, l.term)), Some((3, 6)));

        // Hints for shards outside the ring are ignored.
        topology.update_leader(ShardId(99), 1, None);
        assert_eq!(topology.leader(ShardId(99)), None);
    }

    /// A hinted leader outside the ring is reachable through its address hint.
    #[test]
    fn gossip_claims_follow_terms_and_hints() {
        let mut topology = topology_with_ring();
        let cluster_id = topology
            .ring()
            .map(|view| view.info.cluster_id.clone())
            .unwrap_or_default();
        let epoch = topology.ring().map_or(0, |view| view.info.epoch);
        let report = |node: u64, leaders: &[(u32, u64)], epoch: u64| NodeAnnouncement {
            node_id: node,
            addr: format!("n{node}:1"),
            cluster_id: cluster_id.clone(),
            ring_epoch: epoch,
            leaders: leaders
                .iter()
                .map(|&(shard_id, term)| LeaderClaim { shard_id, term })
                .collect(),
            load: Load::default(),
            draining: false,
        };
        let outcome = topology.apply_gossip(&[report(2, &[(0, 5)], epoch)]);
        assert_eq!(outcome.leaders_changed, 1);
        assert!(!outcome.ring_behind);
        assert_eq!(topology.leader(ShardId(0)).map(|entry| entry.node_id), Some(2));
        // An older term does not win; a newer one does.
        topology.apply_gossip(&[report(3, &[(0, 4)], epoch)]);
        assert_eq!(topology.leader(ShardId(0)).map(|entry| entry.node_id), Some(2));
        topology.apply_gossip(&[report(3, &[(0, 6)], epoch)]);
        assert_eq!(topology.leader(ShardId(0)).map(|entry| entry.node_id), Some(3));
        // A hint newer than the gossiped claim is not overridden at the same term.
        topology.update_leader(ShardId(0), 1, None);
        topology.apply_gossip(&[report(3, &[(0, 6)], epoch)]);
        assert_eq!(topology.leader(ShardId(0)).map(|entry| entry.node_id), Some(1));
        // Other clusters are ignored; a newer ring epoch asks for a poll.
        let mut foreign = report(2, &[(1, 99)], epoch);
        foreign.cluster_id = "other".to_string();
        assert_eq!(topology.apply_gossip(&[foreign]), GossipOutcome::default());
        assert!(topology.apply_gossip(&[report(2, &[], epoch + 1)]).ring_behind);
        // Shards beyond the ring are skipped.
        assert_eq!(
            topology
                .apply_gossip(&[report(2, &[(4096, 9)], epoch)])
                .leaders_changed,
            0
        );
    }

    #[test]
    fn hint_addresses_are_remembered() {
        let mut topology = topology_with_ring();
        topology.update_leader(ShardId(0), 42, Some("n42:7001"));
        let target = topology.route(ShardId(0), 8, RouteMode::Leader, 0);
        assert_eq!(
            target.ok(),
            Some(Target {
                node_id: Some(42),
                addr: "n42:7001".into()
            })
        );
    }

    /// Poll targets are seeds then members, deduplicated, without removed members.
    #[test]
    fn poll_targets_dedup_and_skip_removed() {
        let mut info = ring_info(3, 8, 2);
        info.members[2].state = ProtoMemberState::Removed as i32;
        let mut topology = Topology::default();
        topology.apply_observations(&[observation(1, Some(info), vec![])]);
        let targets = topology.poll_targets(&["seed:1".into(), "n1:7001".into()]);
        assert_eq!(targets, vec!["seed:1", "n1:7001", "n2:7001"]);
    }

    /// Requests wait for the next refresh and fail with NoCluster when it finds no ring.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_ring() {
        let handle = TopologyHandle::new();
        let waiter = {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .wait_for_ring(Instant::now() + std::time::Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let pass = handle.begin_pass();
        handle.finish_pass(pass, &[]);
        let result = waiter.await;
        assert!(matches!(result, Ok(Err(RouterError::NoCluster))));

        let waiter = {
            let handle = handle.clone();
            tokio::spawn(async move {
                handle
                    .wait_for_ring(Instant::now() + std::time::Duration::from_secs(5))
                    .await
            })
        };
        tokio::task::yield_now().await;
        let pass = handle.begin_pass();
        handle.finish_pass(pass, &[observation(1, Some(ring_info(3, 8, 3)), vec![])]);
        let result = waiter.await;
        assert!(matches!(result, Ok(Ok(view)) if view.ring.shard_count() == 8));
    }

    /// With no refresher at all, waiting for a ring ends at the deadline.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_ring_is_bounded() {
        let handle = TopologyHandle::new();
        let result = handle
            .wait_for_ring(Instant::now() + std::time::Duration::from_millis(100))
            .await;
        assert!(matches!(result, Err(RouterError::NoCluster)));
    }
}
