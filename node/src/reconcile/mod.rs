//! The reconciler: brings the groups hosted here in line with the ring committed in the
//! system group. [`plan()`](plan::plan) decides (pure, table-tested); this module only does the IO — it
//! gathers the inputs, runs each action, and owns the replica moves and removal checks it
//! starts.
//!
//! A pass runs whenever the committed configuration changes and every `RECONCILE_INTERVAL`
//! (to retry what failed, e.g. a shard initialisation while a peer was down), or every
//! `QUIET_RECONCILE_INTERVAL` after a pass with nothing to do.
//!
//! Shutdown: [`Reconciler::shutdown`] stops the loop and every move or check it started
//! (each watches the same cancellation token) and waits for them.

pub mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use ringkv_ring::{Ring, ShardId};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::error::NodeError;
use crate::group::{self, Group};
use crate::node::Node;
use crate::peers::Peer;
use crate::raft::types::{ClusterConfig, GroupId, NodeId};
use crate::rebalance::{self, MembershipView, MoveOutcome};
use plan::{plan, Action, Inputs};

/// How often the reconciler re-checks placement even without a config change.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// The same after a quiet pass (nothing to do, nothing failed, nothing running): a pass
/// looks at every group, which is most of what an idle node with 1000s of groups does.
const QUIET_RECONCILE_INTERVAL: Duration = Duration::from_secs(10);

/// The running reconciler.
pub struct Reconciler {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Reconciler {
    /// Starts reconciling `node`'s groups with the committed ring.
    pub fn spawn(node: Node) -> Reconciler {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let executor = Arc::new(Executor {
            moves: Arc::new(Semaphore::new(node.config().max_concurrent_moves.max(1))),
            node,
            failed_handovers: Mutex::new(HashSet::new()),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
        });
        tasks.spawn(executor.run());
        Reconciler { cancel, tasks }
    }

    /// Stops the loop and every move or removal check it started, and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

struct Executor {
    node: Node,
    /// Bounds the replica moves this node runs as a shard leader at once.
    moves: Arc<Semaphore>,
    /// Shards whose last leadership hand-over failed: their next move lets the leader
    /// remove itself instead (an election), so a move cannot hang on a transfer.
    failed_handovers: Mutex<HashSet<u32>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Executor {
    async fn run(self: Arc<Self>) {
        let mut cluster = self.node.watch_cluster();
        loop {
            let config = cluster.borrow_and_update().clone();
            let mut next_pass = RECONCILE_INTERVAL;
            if let Some(config) = config {
                match self.pass(&config).await {
                    Ok(true) => next_pass = QUIET_RECONCILE_INTERVAL,
                    Ok(false) => {}
                    Err(err) => warn!(%err, "reconciling shard groups failed; will retry"),
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                changed = cluster.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(next_pass) => {}
            }
        }
        debug!("reconciler stopped");
    }

    /// One pass; true when it was quiet (only skips, no failures, no shard claimed).
    async fn pass(self: &Arc<Self>, config: &ClusterConfig) -> Result<bool, NodeError> {
        let ring = self.node.adopt_config(config)?;
        let local: BTreeMap<u32, MembershipView> = self
            .node
            .groups()
            .iter()
            .filter_map(|group| match group.id {
                GroupId::Shard(shard) => Some((shard, MembershipView::of(group))),
                GroupId::System => None,
            })
            .collect();
        let claimed = self.node.claimed_shards();
        let never_init = self.node.never_init_shards()?;
        let actions = plan(Inputs {
            ring: &ring,
            epoch: config.epoch,
            me: self.node.node_id(),
            local: &local,
            claimed: &claimed,
            never_init: &never_init,
            move_slots: self.moves.available_permits(),
        });
        self.node
            .counters()
            .planned
            .store(plan::moves_wanted(&ring, &local) as u64, Ordering::Relaxed);
        let quiet = claimed.is_empty() && actions.iter().all(|action| matches!(action, Action::Skip { .. }));
        let mut failures = Vec::new();
        for action in actions {
            if self.cancel.is_cancelled() {
                break;
            }
            let shard = match &action {
                Action::Open { shard }
                | Action::Initialise { shard, .. }
                | Action::Move { shard, .. }
                | Action::CheckRemoval { shard }
                | Action::Skip { shard, .. } => *shard,
            };
            if failures.contains(&shard) {
                continue;
            }
            if let Err(err) = self.execute(action, &ring).await {
                warn!(shard, %err, "cannot open or initialise shard group");
                failures.push(shard);
            }
        }
        if failures.is_empty() {
            Ok(quiet)
        } else {
            Err(NodeError::Fatal(format!(
                "shard groups {failures:?} are not ready"
            )))
        }
    }

    async fn execute(self: &Arc<Self>, action: Action, ring: &Arc<Ring>) -> Result<(), NodeError> {
        match action {
            Action::Open { shard } => {
                self.node.open_shard_group(shard).await?;
            }
            Action::Initialise { shard, voters } => {
                let group = self.node.open_shard_group(shard).await?;
                let voters = voters
                    .into_iter()
                    .map(|(id, addr)| (id, BasicNode::new(addr)))
                    .collect();
                group::initialize(&group, voters).await?;
            }
            Action::Move { shard, target } => {
                if let Some(group) = self.node.group(GroupId::Shard(shard)) {
                    self.spawn_move(group, target);
                }
            }
            Action::CheckRemoval { shard } => {
                if let Some(group) = self.node.group(GroupId::Shard(shard)) {
                    self.spawn_removal_check(group, ring.clone());
                }
            }
            Action::Skip { shard, reason } => debug!(shard, ?reason, "leaving shard alone this pass"),
        }
        Ok(())
    }

    fn handover_failed(&self, shard: u32) -> bool {
        self.failed_handovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&shard)
    }

    fn set_handover_failed(&self, shard: u32, failed: bool) {
        let mut failed_handovers = self
            .failed_handovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed {
            failed_handovers.insert(shard);
        } else {
            failed_handovers.remove(&shard);
        }
    }

    /// Starts moving a shard's replicas toward `target` (at most `max_concurrent_moves` at
    /// once on this node; the next pass retries what did not finish).
    fn spawn_move(self: &Arc<Self>, group: Arc<Group>, target: BTreeMap<NodeId, String>) {
        let GroupId::Shard(shard) = group.id else {
            return;
        };
        let Ok(permit) = self.moves.clone().try_acquire_owned() else {
            return;
        };
        if !self.node.claim_shard(shard) {
            return;
        }
        let executor = self.clone();
        self.tasks.spawn(async move {
            let node = &executor.node;
            let timeout = Duration::from_millis(node.config().catch_up_timeout_ms);
            let started = Instant::now();
            let counters = node.counters();
            counters.started.fetch_add(1, Ordering::Relaxed);
            counters.in_progress.fetch_add(1, Ordering::Relaxed);
            let hand_over = !executor.handover_failed(shard);
            let outcome = tokio::select! {
                outcome = rebalance::move_toward(&group, &target, timeout, hand_over) => Some(outcome),
                _ = executor.cancel.cancelled() => None,
            };
            match outcome {
                Some(Ok(MoveOutcome::Moved { from, to })) => {
                    executor.set_handover_failed(shard, false);
                    counters.completed.fetch_add(1, Ordering::Relaxed);
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    info!(shard, ?from, ?to, elapsed_ms, "replicas moved");
                }
                Some(Ok(MoveOutcome::Settled)) => {}
                Some(Ok(MoveOutcome::HandOver { successor })) => {
                    info!(shard, successor, "leaving the group: handing the leadership over first");
                    match node.transfer_claimed(shard, successor).await {
                        Ok(term) => {
                            executor.set_handover_failed(shard, false);
                            info!(shard, successor, term, "leadership handed over; the new leader finishes the move");
                        }
                        Err(err) => {
                            executor.set_handover_failed(shard, true);
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            warn!(shard, successor, %err, "leadership hand-over failed; the next try removes this leader directly");
                        }
                    }
                }
                Some(Err(err)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(shard, %err, "replica move did not finish; will retry");
                }
                None => {}
            }
            counters.in_progress.fetch_sub(1, Ordering::Relaxed);
            node.release_shard(shard);
            drop(permit);
        });
    }

    /// Asks the shard's leader whether this node's replica was removed; deletes it when a
    /// committed membership leaves this node out.
    fn spawn_removal_check(self: &Arc<Self>, group: Arc<Group>, ring: Arc<Ring>) {
        let GroupId::Shard(shard) = group.id else {
            return;
        };
        if !self.node.claim_shard(shard) {
            return;
        }
        let executor = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                result = check_removed(&executor.node, &group, &ring) => {
                    if let Err(err) = result {
                        debug!(shard, %err, "removal check failed; will retry");
                    }
                }
                _ = executor.cancel.cancelled() => {}
            }
            executor.node.release_shard(shard);
        });
    }
}

/// Asks the shard's leader (or, not knowing it, the replicas placement names) for the
/// group's membership, and deletes this replica if a committed one leaves it out.
async fn check_removed(node: &Node, group: &Arc<Group>, ring: &Ring) -> Result<(), NodeError> {
    let GroupId::Shard(shard) = group.id else {
        return Ok(());
    };
    if node.cluster_id().is_none() {
        return Err(NodeError::NotInitialized);
    }
    let view = MembershipView::of(group);
    let known_leader = view.leader_id.and_then(|id| {
        let addr = ring.member(id).map(|member| member.addr.clone()).or_else(|| {
            let metrics = group.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| node.addr.clone())
        });
        addr.map(|addr| (id, addr))
    });
    let mut candidates: Vec<(NodeId, String)> = known_leader.into_iter().collect();
    for id in ring.replicas(ShardId(shard)) {
        if let Some(member) = ring.member(id) {
            candidates.push((id, member.addr.clone()));
        }
    }
    let mut seen = HashSet::new();
    candidates.retain(|(_, addr)| addr != node.addr() && seen.insert(addr.clone()));
    for (id, addr) in candidates {
        let peer = Peer {
            node: id,
            addr: &addr,
        };
        let Ok(reply) = node.peers().group_membership(peer, shard, node.node_id()).await else {
            continue;
        };
        // Decide on an answer at least as new as what this replica knows, and only if the
        // ring (which may have changed meanwhile) still leaves this node out.
        let still_placed_elsewhere = node
            .ring()
            .is_some_and(|ring| !ring.replicas(ShardId(shard)).contains(&node.node_id()));
        if reply.log_index >= view.log_index
            && still_placed_elsewhere
            && rebalance::removal_committed(&reply, node.node_id())
        {
            info!(shard, voters = ?reply.voters, "replica removed from the group; deleting it");
            return node.retire_group(group.id).await;
        }
        return Ok(());
    }
    Err(NodeError::NoQuorum {
        group: group.id,
        detail: "no leader answered".to_string(),
    })
}
