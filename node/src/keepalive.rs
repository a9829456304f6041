//! The hibernation driver: one task per node that puts quiet shard groups to sleep and keeps
//! them asleep, and the receiving side of its keep-alives. The decisions are
//! [`hibernation::Sleep`](crate::hibernation::Sleep)'s; this module only observes, sends and
//! applies.
//!
//! Every `keepalive_interval_ms` the driver:
//!
//! 1. looks at every shard group hosted here: a group led here is observed (leading, term,
//!    settled; a new log entry, term or membership since the last pass counts as activity)
//!    and may doze off; a sleeping follower whose lease ran out, or whose leader's node
//!    gossip declares dead, wakes;
//! 2. sends each peer one `Raft.KeepAlive` listing the drowsy and sleeping groups led here in
//!    which the peer votes (at most one call per peer, each bounded by the interval);
//! 3. tells each listed group how its round went: a drowsy leader sleeps once every voter
//!    accepted, except voters gossip declares dead (and at least a quorum did); a refusal
//!    wakes it. A voter that is down thus keeps its groups awake only until gossip declares
//!    it dead; one that is slow to answer never finds itself without heartbeats.
//!
//! Worst-case failover of a sleeping group whose leader's node dies (defaults: keep-alive
//! 1 s, election timeout 1–2 s, heartbeat 500 ms): the followers' lease of three intervals
//! (3 s) plus the jitter (≤ 1 s) plus the driver's period (≤ 2 s: a pause and a round whose
//! keep-alives time out), then openraft's next tick (≤ 750 ms) starts the election at once
//! (no heartbeat was heard for long); a split vote costs one more election timeout (≤ 2 s).
//! About 6.8 s, 8.8 s with a split vote, against about 4.8 s for an awake group (lease 2 s +
//! election timeout + tick); typically 3–4 s. Gossip declaring the node dead earlier wakes them earlier.
//!
//! Shutdown: [`Hibernator::shutdown`] stops the loop (a round in flight is dropped).

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::stream::{self, StreamExt};
use openraft::ServerState;
use ringkv_gossip::Liveness;
use ringkv_proto::v1;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::NodeError;
use crate::gossip_agent::LivenessView;
use crate::group::Group;
use crate::hibernation::{Effect, Observation, Settings};
use crate::node::Node;
use crate::peers::Peer;
use crate::raft::types::{GroupId, NodeId};

type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// Most keep-alive calls in flight at once (one per peer).
const MAX_FANOUT: usize = 16;

/// The hibernation timing of `node`'s configuration.
pub fn settings(node: &Node) -> Settings {
    let config = node.config();
    Settings::new(
        config.hibernate_after_ms,
        config.keepalive_interval_ms,
        config.election_timeout_min_ms,
        config.election_timeout_max_ms,
    )
}

/// The running driver.
pub struct Hibernator {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Hibernator {
    /// Starts the driver of `node`'s groups; `liveness` is gossip's view of the members.
    pub fn spawn(node: Node, liveness: LivenessView) -> Hibernator {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(node, liveness, cancel.clone()));
        Hibernator { cancel, task }
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "hibernation driver task failed");
        }
    }
}

async fn run(node: Node, liveness: LivenessView, cancel: CancellationToken) {
    let settings = settings(&node);
    let mut driver = Driver {
        node,
        settings,
        fingerprints: HashMap::new(),
    };
    loop {
        let asleep_since = Instant::now();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(settings.keepalive_interval) => {}
        }
        // A sleep that overran by a whole interval means this process could not watch the
        // time (it was paused, or starved): give sleeping followers a fresh lease rather than
        // wake every group at once for a silence that was ours. (Only the sleep is timed: a
        // pass that waited on a peer's keep-alive is not lateness, or an unreachable peer
        // would keep its followers' leases alive.)
        let late = asleep_since.elapsed() > settings.keepalive_interval * 2;
        tokio::select! {
            _ = cancel.cancelled() => break,
            () = driver.pass(&liveness, late) => {}
        }
    }
    debug!("hibernation driver stopped");
}

/// What identifies a leader's log position: a change is activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    last_log_index: Option<u64>,
    term: u64,
    membership_index: Option<u64>,
}

/// A group listed in this pass's keep-alives.
struct Listed {
    group: std::sync::Arc<Group>,
    term: u64,
    voters: Vec<NodeId>,
}

struct Driver {
    node: Node,
    settings: Settings,
    /// Each shard's fingerprint at the last pass.
    fingerprints: HashMap<u32, Fingerprint>,
}

impl Driver {
    async fn pass(&mut self, liveness: &LivenessView, late: bool) {
        let me = self.node.node_id();
        let claimed = self.node.claimed_shards();
        let dead: HashSet<NodeId> = liveness
            .get()
            .into_iter()
            .filter(|(_, member)| member.liveness == Liveness::Dead)
            .map(|(id, _)| id)
            .collect();
        let now = Instant::now();
        let mut listed = Vec::new();
        let mut keepalives: BTreeMap<NodeId, (String, Vec<v1::SleepingGroup>)> = BTreeMap::new();
        let mut hosted = HashSet::new();
        for group in self.node.groups() {
            let GroupId::Shard(shard) = group.id else {
                continue;
            };
            hosted.insert(shard);
            let (seen, fingerprint) = {
                let metrics = group.raft.metrics();
                let metrics = metrics.borrow();
                (
                    observe(me, &metrics, claimed.contains(&shard)),
                    fingerprint(&metrics),
                )
            };
            if self.fingerprints.insert(shard, fingerprint) != Some(fingerprint) {
                group.hibernation.touch();
            }
            let settings = &self.settings;
            let listed_term = group.hibernation.step(|sleep| {
                if late {
                    sleep.extend(now, settings.sleep_lease);
                }
                let expired = sleep.expire(now, |leader| dead.contains(&leader));
                let observed = sleep.observe(now, seen, settings);
                let effect = if observed == Effect::None {
                    expired
                } else {
                    observed
                };
                (sleep.listed_term(), effect)
            });
            let Some(term) = listed_term else {
                continue;
            };
            let (applied, peers) = {
                let metrics = group.raft.metrics();
                let metrics = metrics.borrow();
                (
                    metrics.last_applied.map_or(0, |log_id| log_id.index),
                    voter_addrs(me, &metrics),
                )
            };
            for (peer, addr) in &peers {
                keepalives
                    .entry(*peer)
                    .or_insert_with(|| (addr.clone(), Vec::new()))
                    .1
                    .push(v1::SleepingGroup {
                        shard_id: shard,
                        term,
                        applied_index: applied,
                    });
            }
            let mut voters: Vec<NodeId> = peers.into_iter().map(|(id, _)| id).collect();
            voters.push(me);
            listed.push(Listed { group, term, voters });
        }
        self.fingerprints.retain(|shard, _| hosted.contains(shard));
        if listed.is_empty() {
            return;
        }
        let replies = self.send(keepalives).await;
        let now = Instant::now();
        for entry in listed {
            let GroupId::Shard(shard) = entry.group.id else {
                continue;
            };
            let mut accepted = 0;
            let mut refused = false;
            let mut live_silent = false;
            for voter in &entry.voters {
                match replies.get(voter) {
                    _ if *voter == me => accepted += 1,
                    Some(Some(refusals)) if refusals.contains(&shard) => refused = true,
                    Some(Some(_)) => accepted += 1,
                    // A voter that did not answer but is not known dead may be alive with its
                    // election timer running: without heartbeats it would campaign.
                    _ => live_silent |= !dead.contains(voter),
                }
            }
            let quorum = accepted * 2 > entry.voters.len() && !live_silent;
            entry
                .group
                .hibernation
                .step(|sleep| ((), sleep.round_outcome(now, entry.term, quorum, refused)));
        }
    }

    /// Sends every peer its keep-alive; per peer, the refused shards (`None`: no answer).
    async fn send(
        &self,
        keepalives: BTreeMap<NodeId, (String, Vec<v1::SleepingGroup>)>,
    ) -> HashMap<NodeId, Option<HashSet<u32>>> {
        let me = self.node.node_id();
        let cluster_id = self.node.cluster_id().unwrap_or_default();
        let timeout = self.settings.keepalive_interval;
        let peers = self.node.peers();
        stream::iter(keepalives)
            .map(|(peer, (addr, groups))| {
                let request = v1::KeepAliveRequest {
                    cluster_id: cluster_id.clone(),
                    from_node: me,
                    to_node: peer,
                    groups,
                };
                async move {
                    let target = Peer {
                        node: peer,
                        addr: &addr,
                    };
                    let reply = match peers.keep_alive(target, request, timeout).await {
                        Ok(reply) => Some(reply.refused_shard_ids.into_iter().collect()),
                        Err(err) => {
                            debug!(peer, %err, "keep-alive failed");
                            None
                        }
                    };
                    (peer, reply)
                }
            })
            .buffer_unordered(MAX_FANOUT)
            .collect()
            .await
    }
}

/// How the driver sees a group: leading, term, settled (see `hibernation.rs`).
fn observe(me: NodeId, metrics: &RaftMetrics, claimed: bool) -> Observation {
    let leading = metrics.state == ServerState::Leader && metrics.current_leader == Some(me);
    if !leading {
        return Observation {
            leading,
            term: metrics.current_term,
            settled: false,
        };
    }
    let membership = metrics.membership_config.membership();
    let uniform = membership.get_joint_config().len() == 1;
    let no_learners = membership.learner_ids().next().is_none();
    let last = metrics.last_log_index;
    let applied = metrics.last_applied.map(|log_id| log_id.index);
    let replicated = metrics.replication.as_ref().is_some_and(|replication| {
        membership.voter_ids().all(|voter| {
            voter == me
                || replication
                    .get(&voter)
                    .copied()
                    .flatten()
                    .map(|log_id| log_id.index)
                    == last
        })
    });
    Observation {
        leading,
        term: metrics.current_term,
        settled: leading && uniform && no_learners && applied == last && replicated && !claimed,
    }
}

fn fingerprint(metrics: &RaftMetrics) -> Fingerprint {
    Fingerprint {
        last_log_index: metrics.last_log_index,
        term: metrics.current_term,
        membership_index: metrics.membership_config.log_id().map(|log_id| log_id.index),
    }
}

/// The group's other voters and their addresses.
fn voter_addrs(me: NodeId, metrics: &RaftMetrics) -> Vec<(NodeId, String)> {
    let membership = metrics.membership_config.membership();
    membership
        .voter_ids()
        .filter(|voter| *voter != me)
        .filter_map(|voter| membership.get_node(&voter).map(|node| (voter, node.addr.clone())))
        .collect()
}

/// The receiving side: puts the listed groups this node follows the sender in to sleep
/// (see [`Sleep::accept`](crate::hibernation::Sleep::accept)); answers the ones it refused.
pub fn receive(node: &Node, request: v1::KeepAliveRequest) -> Result<v1::KeepAliveResponse, NodeError> {
    node.check_cluster(&request.cluster_id)?;
    if request.to_node != node.node_id() {
        return Err(NodeError::WrongNode {
            meant_for: request.to_node,
            reached: node.node_id(),
        });
    }
    let settings = settings(node);
    let from = request.from_node;
    let now = Instant::now();
    let mut refused_shard_ids = Vec::new();
    for listed in request.groups {
        let shard = listed.shard_id;
        let accepted = settings.hibernate_after.is_some()
            && node.group(GroupId::Shard(shard)).is_some_and(|group| {
                let follows = {
                    let metrics = group.raft.metrics();
                    let metrics = metrics.borrow();
                    follows_caught_up(node.node_id(), &metrics, from, &listed)
                };
                let until = now + settings.sleep_lease + settings.jitter(node.node_id(), shard);
                follows
                    && group
                        .hibernation
                        .step(|sleep| sleep.accept(from, listed.term, until))
            });
        if !accepted {
            refused_shard_ids.push(shard);
        }
    }
    Ok(v1::KeepAliveResponse { refused_shard_ids })
}

/// This replica is a voter following `from` in the listed term, in a uniform membership,
/// and has applied as far as the leader.
fn follows_caught_up(me: NodeId, metrics: &RaftMetrics, from: NodeId, listed: &v1::SleepingGroup) -> bool {
    let membership = metrics.membership_config.membership();
    metrics.state == ServerState::Follower
        && metrics.current_leader == Some(from)
        && metrics.current_term == listed.term
        && membership.get_joint_config().len() == 1
        && membership.voter_ids().any(|voter| voter == me)
        && metrics.last_applied.map_or(0, |log_id| log_id.index) >= listed.applied_index
}
