//! Leader transfer, and the leader balance the system leader keeps with it.
//!
//! openraft 0.9 has no leader-transfer call, and its leader lease makes a follower reject a
//! vote while it hears a leader (up to the maximum election timeout after the last heartbeat).
//! The leader itself, though, grants a higher-term vote once the lease it took when it was
//! elected has run out, and steps down. With three voters that one vote is the majority the
//! target needs, so a transfer is:
//!
//! 1. the leader has led for longer than the maximum election timeout (its own lease is over);
//! 2. while writes still flow, it waits until the target is within a few entries of its log;
//! 3. it stops appending: new writes of the shard wait at its write gate, in-flight ones
//!    finish; then it waits (briefly) until the target has replicated its whole log, still in
//!    the same term (otherwise the vote is refused on the log check, and the target's higher
//!    term would depose the leader for nothing);
//! 4. it asks the target to campaign (`Raft.Campaign`, carrying the leader's term and last log
//!    index: the target refuses a stale or premature order); the target calls
//!    `trigger().elect()`, the leader grants and steps down, the target leads;
//! 5. the gate opens; the waiting writes find a follower and are sent to the new leader.
//!
//! The gate stays closed for at most half the lease plus the lease (usually a round trip).
//!
//! Groups with more than three voters are refused: their other followers' leases would
//! reject the vote, and the failed campaign would cost an election.
//!
//! Writes pause for about a round trip. Safety does not depend on any of this: the target
//! wins a normal Raft election or nobody does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::Fatal;
use openraft::ServerState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{CampaignRefusal, NodeError};
use crate::hibernation::Hibernation;
use crate::raft::types::{GroupId, NodeId, Raft};
use crate::storage::fail_stop;

type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// Most voters a transfer supports (see the module docs).
pub const MAX_TRANSFER_VOTERS: usize = 3;

/// When this replica became leader, and the gate its writes pass.
#[derive(Debug, Default)]
pub struct Leadership {
    /// `(term, since)` while this replica leads.
    since: Mutex<Option<(u64, Instant)>>,
    /// Writes hold it shared while proposing; a transfer holds it exclusively.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// The term in which this replica ordered a transfer target to campaign (0: none). The
    /// target votes for itself despite its lease and may win with another follower's vote,
    /// without this replica's: from the order on, this term's leader lease proves nothing,
    /// and its reads take ReadIndex rounds.
    no_lease_term: AtomicU64,
}

impl Leadership {
    /// The gate writes pass (shared) and a transfer closes (exclusive).
    pub fn gate(&self) -> Arc<tokio::sync::RwLock<()>> {
        self.gate.clone()
    }

    /// Whether reads in `term` may rely on the leader lease (no campaign ordered in it).
    pub fn lease_holds(&self, term: u64) -> bool {
        self.no_lease_term.load(Ordering::SeqCst) != term
    }

    /// This replica orders a campaign in `term`: its lease proves nothing in that term from
    /// now on.
    pub fn end_lease(&self, term: u64) {
        self.no_lease_term.store(term, Ordering::SeqCst);
    }

    /// How long this replica has led in `term`, if it leads in that term.
    pub fn led_for(&self, term: u64) -> Option<Duration> {
        let since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        since.and_then(|(led_term, at)| (led_term == term).then(|| at.elapsed()))
    }

    fn observe(&self, state: ServerState, term: u64) {
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        match (state, *since) {
            (ServerState::Leader, Some((led_term, _))) if led_term == term => {}
            (ServerState::Leader, _) => *since = Some((term, Instant::now())),
            _ => *since = None,
        }
    }
}

/// Follows the group's role to record when it became leader, and wakes a hibernating group
/// when its role or term changes; stops the node (fail-stop) when a storage error stopped
/// the group. Stops with `cancel` or when the group shuts down.
///
/// It follows openraft's *server* metrics (role, vote, leader, membership), which are sent
/// only when one of them changes. The full metrics are sent on every pass of the Raft core's
/// loop (several per entry), and following them woke this task as often, for a role that had
/// not changed.
pub async fn watch_leadership(
    raft: Raft,
    leadership: Arc<Leadership>,
    hibernation: Arc<Hibernation>,
    cancel: CancellationToken,
) {
    let mut server = raft.server_metrics();
    let mut seen = None;
    loop {
        let role = {
            let current = server.borrow_and_update();
            let term = current.vote.leader_id().get_term();
            leadership.observe(current.state, term);
            (current.state, term, current.current_leader)
        };
        if seen.is_some_and(|seen| seen != role) {
            hibernation.role_changed();
        }
        seen = Some(role);
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = server.changed() => if changed.is_err() {
                // The core stopped and dropped its sender. It sent its reason in the full
                // metrics first.
                leadership.observe(ServerState::Shutdown, 0);
                if let Err(Fatal::StorageError(err)) = &raft.metrics().borrow().running_state {
                    // A storage error stopped this group's Raft core (e.g. a snapshot file
                    // on a full disk): the node must not run on without it.
                    fail_stop::storage_failed("the storage of a Raft group", err);
                }
                break;
            },
        }
    }
}

/// What a transfer needs from the node.
pub struct TransferContext<'a> {
    pub group: GroupId,
    pub raft: &'a Raft,
    pub leadership: &'a Leadership,
    pub node_id: NodeId,
    /// The maximum election timeout (the leader lease).
    pub lease: Duration,
    /// Bound of each wait.
    pub timeout: Duration,
}

/// Hands the group's leadership to `target`, a voter. `campaign` asks the target to start an
/// election (an RPC to it). Returns the new term.
pub async fn transfer<F, Fut>(ctx: TransferContext<'_>, target: NodeId, campaign: F) -> Result<u64, NodeError>
where
    F: FnOnce(CampaignOrder) -> Fut,
    Fut: std::future::Future<Output = Result<(), NodeError>>,
{
    let invalid = |detail: String| NodeError::InvalidArgument(detail);
    let (term, target_addr) = {
        let metrics = ctx.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(ctx.node_id) {
            return Err(NodeError::NotLeader {
                group: ctx.group,
                leader: None,
                proposed: false,
            });
        }
        let membership = metrics.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return Err(invalid(format!(
                "{} is changing its membership; transfer its leadership later",
                ctx.group
            )));
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        if target == ctx.node_id {
            return Err(invalid(format!("node {target} already leads {}", ctx.group)));
        }
        if !voters.contains(&target) {
            return Err(invalid(format!(
                "node {target} is not a voter of {} (voters {voters:?})",
                ctx.group
            )));
        }
        if voters.len() > MAX_TRANSFER_VOTERS {
            return Err(invalid(format!(
                "{} has {} voters; leader transfer supports at most {MAX_TRANSFER_VOTERS} (openraft 0.9's leader lease)",
                ctx.group,
                voters.len()
            )));
        }
        let addr = membership
            .get_node(&target)
            .map(|node| node.addr.clone())
            .ok_or_else(|| invalid(format!("node {target} has no address in {}", ctx.group)))?;
        (metrics.current_term, addr)
    };

    // 1. The lease this leader took when elected must be over.
    let led_for = ctx.leadership.led_for(term).unwrap_or_default();
    let margin = Duration::from_millis(50);
    if led_for < ctx.lease + margin {
        tokio::time::sleep(ctx.lease + margin - led_for).await;
    }
    let still_leading =
        |metrics: &RaftMetrics| metrics.state == ServerState::Leader && metrics.current_term == term;
    let lost = || NodeError::NotLeader {
        group: ctx.group,
        leader: None,
        proposed: false,
    };
    let timeout_err = |what: String, bound: Duration| NodeError::Timeout {
        what,
        timeout_ms: bound.as_millis() as u64,
        proposed: false,
    };
    let target_matched = |metrics: &RaftMetrics| {
        metrics
            .replication
            .as_ref()
            .and_then(|replication| replication.get(&target).copied().flatten())
            .map(|log_id| log_id.index)
    };

    // 2. While writes still flow, wait until the target is nearly caught up, so the gate
    //    below stays closed only briefly.
    ctx.raft
        .wait(Some(ctx.timeout))
        .metrics(
            |metrics| {
                !still_leading(metrics)
                    || target_matched(metrics).unwrap_or(0) + CATCH_UP_SLACK
                        >= metrics.last_log_index.unwrap_or(0)
            },
            "the transfer target to come close to the leader's log",
        )
        .await
        .map_err(|err| {
            timeout_err(
                format!("node {target} to catch up on {}: {err}", ctx.group),
                ctx.timeout,
            )
        })?;

    // 3. Close the gate (in-flight writes finish, new ones wait), then the target must have
    //    the whole log within a short bound, in the same term.
    let gate = ctx.leadership.gate();
    let _closed = tokio::time::timeout(ctx.timeout, gate.write())
        .await
        .map_err(|_| {
            timeout_err(
                format!("{} writes to drain before a leader transfer", ctx.group),
                ctx.timeout,
            )
        })?;
    let gated = (ctx.lease / 2).max(Duration::from_millis(100));
    let caught_up = ctx
        .raft
        .wait(Some(gated))
        .metrics(
            |metrics| !still_leading(metrics) || target_matched(metrics) == metrics.last_log_index,
            "the transfer target to replicate the whole log",
        )
        .await
        .map_err(|err| {
            timeout_err(
                format!("node {target} to replicate all of {}: {err}", ctx.group),
                gated,
            )
        })?;
    if !still_leading(&caught_up) {
        return Err(lost());
    }
    let last_log_index = caught_up.last_log_index.unwrap_or(0);

    // 4. The target campaigns (it checks that we still lead it at this term and that it has
    //    our log); wait, gate closed, until it leads. Lease reads stop first: the target may
    //    win without our vote.
    ctx.leadership.end_lease(term);
    campaign(CampaignOrder {
        addr: target_addr,
        term,
        last_log_index,
    })
    .await?;
    let taken = ctx
        .raft
        .wait(Some(ctx.lease))
        .metrics(
            |metrics| metrics.current_term > term && metrics.current_leader.is_some(),
            "a new leader after the transfer",
        )
        .await
        .map_err(|err| {
            timeout_err(
                format!("node {target} to take over {}: {err}", ctx.group),
                ctx.lease,
            )
        })?;
    match taken.current_leader {
        Some(leader) if leader == target => Ok(taken.current_term),
        other => Err(NodeError::OutcomeUnknown(format!(
            "{} elected node {} instead of node {target}",
            ctx.group,
            other.unwrap_or(0)
        ))),
    }
}

/// Log entries the target may still miss when the write gate closes.
const CATCH_UP_SLACK: u64 = 64;

/// What the leader asks the transfer target to do.
#[derive(Debug, Clone)]
pub struct CampaignOrder {
    pub addr: String,
    /// The leader's term: the target campaigns only while it follows this leader in it.
    pub term: u64,
    /// The leader's last log index: the target campaigns only if it has at least this much.
    pub last_log_index: u64,
}

/// The target's side: whether a campaign request from leader `from_node` is still current
/// (its leader, in that term, and its log as long as the leader's).
pub fn campaign_is_current(
    metrics: &RaftMetrics,
    from_node: NodeId,
    term: u64,
    last_log_index: u64,
) -> Result<(), CampaignRefusal> {
    if metrics.current_leader != Some(from_node) || metrics.current_term != term {
        return Err(CampaignRefusal::Stale {
            from_node,
            term,
            leader: metrics.current_leader,
            current_term: metrics.current_term,
        });
    }
    let ours = metrics.last_log_index.unwrap_or(0);
    if ours < last_log_index {
        return Err(CampaignRefusal::Behind {
            last_log_index: ours,
            leader_last_log_index: last_log_index,
        });
    }
    Ok(())
}

/// One leader move the balancer wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderMove {
    pub shard: u32,
    pub from: NodeId,
    pub to: NodeId,
}

/// The shard view the balancer needs: its leader and voters.
#[derive(Debug, Clone)]
pub struct LedShard {
    pub leader: NodeId,
    pub voters: Vec<NodeId>,
}

/// One move that narrows the spread of leaders over `nodes` (the nodes that may lead),
/// or `None` when every node leads within one shard of every other (or no move helps).
/// Picks the most loaded leader and, among its shards, the voter that leads fewest.
pub fn next_leader_move(shards: &BTreeMap<u32, LedShard>, nodes: &[NodeId]) -> Option<LeaderMove> {
    if nodes.len() < 2 {
        return None;
    }
    let mut led: HashMap<NodeId, usize> = nodes.iter().map(|node| (*node, 0)).collect();
    for shard in shards.values() {
        if let Some(count) = led.get_mut(&shard.leader) {
            *count += 1;
        }
    }
    let mut busiest: Vec<NodeId> = nodes.to_vec();
    busiest.sort_by_key(|node| (std::cmp::Reverse(led[node]), *node));
    for from in busiest {
        let from_count = led[&from];
        let best = shards
            .iter()
            .filter(|(_, shard)| shard.leader == from && shard.voters.len() <= MAX_TRANSFER_VOTERS)
            .flat_map(|(id, shard)| {
                shard
                    .voters
                    .iter()
                    .filter(|voter| **voter != from)
                    .filter_map(|voter| led.get(voter).map(|count| (*count, *voter, *id)))
                    .collect::<Vec<_>>()
            })
            .filter(|(count, _, _)| count + 1 < from_count)
            .min();
        if let Some((_, to, shard)) = best {
            return Some(LeaderMove { shard, from, to });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(leaders: &[(u32, NodeId, &[NodeId])]) -> BTreeMap<u32, LedShard> {
        leaders
            .iter()
            .map(|(shard, leader, voters)| {
                (
                    *shard,
                    LedShard {
                        leader: *leader,
                        voters: voters.to_vec(),
                    },
                )
            })
            .collect()
    }

    /// The most loaded node hands a shard to the least loaded voter; balanced stays put.
    #[test]
    fn moves_narrow_the_spread() {
        let all = [1, 2, 3];
        let skewed = shards(&[(0, 1, &all), (1, 1, &all), (2, 1, &all), (3, 2, &all)]);
        assert_eq!(
            next_leader_move(&skewed, &[1, 2, 3]),
            Some(LeaderMove {
                shard: 0,
                from: 1,
                to: 3
            })
        );
        let balanced = shards(&[(0, 1, &all), (1, 2, &all), (2, 3, &all), (3, 1, &all)]);
        assert_eq!(next_leader_move(&balanced, &[1, 2, 3]), None);
        // A node that is no voter of the busy node's shards cannot take them.
        let placed = shards(&[(0, 1, &[1, 2]), (1, 1, &[1, 2]), (2, 2, &[2, 3])]);
        assert_eq!(next_leader_move(&placed, &[1, 2, 3]), None);
        // Groups beyond the transfer limit are left alone.
        let five = [1, 2, 3, 4, 5];
        let wide = shards(&[(0, 1, &five), (1, 1, &five), (2, 1, &five)]);
        assert_eq!(next_leader_move(&wide, &[1, 2, 3, 4, 5]), None);
    }

    /// A campaign order is obeyed only from the current leader, in its term, with its log.
    #[test]
    fn stale_or_early_campaign_orders_are_refused() {
        let mut metrics = RaftMetrics::new_initial(2);
        metrics.current_leader = Some(1);
        metrics.current_term = 7;
        metrics.last_log_index = Some(40);
        assert_eq!(campaign_is_current(&metrics, 1, 7, 40), Ok(()));
        assert!(
            matches!(
                campaign_is_current(&metrics, 1, 6, 40),
                Err(CampaignRefusal::Stale { .. })
            ),
            "older term"
        );
        assert!(
            matches!(
                campaign_is_current(&metrics, 3, 7, 40),
                Err(CampaignRefusal::Stale { .. })
            ),
            "not our leader"
        );
        assert_eq!(
            campaign_is_current(&metrics, 1, 7, 41),
            Err(CampaignRefusal::Behind {
                last_log_index: 40,
                leader_last_log_index: 41
            }),
            "log behind the leader's"
        );
    }

    /// Repeating the moves ends balanced (every node within one of every other).
    #[test]
    fn repeated_moves_converge() {
        let all = [1, 2, 3, 4];
        let mut state: BTreeMap<u32, LedShard> = (0..16)
            .map(|shard| {
                let voters: Vec<NodeId> = all
                    .iter()
                    .copied()
                    .filter(|n| *n != 1 + shard as u64 % 4)
                    .take(3)
                    .collect();
                (
                    shard,
                    LedShard {
                        leader: voters[0],
                        voters,
                    },
                )
            })
            .collect();
        let mut moves = 0;
        while let Some(step) = next_leader_move(&state, &all) {
            if let Some(shard) = state.get_mut(&step.shard) {
                shard.leader = step.to;
            }
            moves += 1;
            assert!(moves < 64, "converges");
        }
        let mut led: HashMap<NodeId, usize> = HashMap::new();
        for shard in state.values() {
            *led.entry(shard.leader).or_default() += 1;
        }
        let max = all.iter().map(|n| led.get(n).copied().unwrap_or(0)).max();
        let min = all.iter().map(|n| led.get(n).copied().unwrap_or(0)).min();
        assert_eq!(max, Some(4));
        assert_eq!(min, Some(4));
    }
}
