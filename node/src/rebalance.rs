//! Moving shard replicas toward placement, and deleting the ones a node no longer holds.
//!
//! Leader side ([`move_toward`]): a shard's leader compares the group's voters with the
//! replicas placement gives the shard under the current ring and, when they differ:
//! 1. adds every missing replica as a learner (openraft streams it a snapshot, then the log);
//! 2. waits until each learner has replicated up to the leader's last log index at the time
//!    of adding (bounded by the catch-up timeout);
//! 3. changes the voters to the placement in one joint-consensus change (openraft commits the
//!    joint configuration, then the new one): a quorum of the old *and* of the new voters
//!    must accept every entry in between, so the group is never below quorum;
//! 4. removes stray learners.
//!
//! A leader that is not among the new voters hands its leadership to a voter that stays
//! before step 3 (`transfer.rs`); the new leader finishes the move. Only when no voter stays
//! (or the transfer fails) does the leader remove itself: it steps down once the new
//! configuration is committed and the remaining voters elect a new leader (an election
//! timeout without writes).
//!
//! Replica side ([`removal_committed`]): a node holding a replica that placement no longer
//! gives it asks the shard's leader for the group's membership; only when a committed
//! membership leaves the node out (neither voter nor learner) does it delete its replica.
//! Until then the replica keeps voting: it may still be needed for a quorum.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use ringkv_proto::v1;
use tracing::info;

use crate::error::NodeError;
use crate::group::Group;
use crate::raft::types::NodeId;
use crate::transfer::MAX_TRANSFER_VOTERS;

/// A group's membership as one replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipView {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// In the middle of a joint-consensus change.
    pub joint: bool,
    /// Log index of the membership entry (0 = initial/none).
    pub log_index: u64,
    /// Whether this replica has applied the membership entry (so it is committed).
    pub committed: bool,
    /// Whether this replica is the group's leader.
    pub leader: bool,
    /// The leader this replica knows of.
    pub leader_id: Option<NodeId>,
}

impl MembershipView {
    /// The view of `group`'s local replica.
    pub fn of(group: &Group) -> MembershipView {
        let metrics = group.raft.metrics();
        let metrics = metrics.borrow();
        let stored = &metrics.membership_config;
        let membership = stored.membership();
        let log_index = stored.log_id().map_or(0, |log_id| log_id.index);
        let applied = metrics.last_applied.map_or(0, |log_id| log_id.index);
        MembershipView {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            joint: membership.get_joint_config().len() > 1,
            log_index,
            committed: log_index <= applied,
            leader: metrics.state == ServerState::Leader,
            leader_id: metrics.current_leader,
        }
    }

    /// Whether the group already matches `target`: voters are exactly the target, no joint
    /// configuration, no learners.
    pub fn settled(&self, target: &BTreeSet<NodeId>) -> bool {
        &self.voters == target && !self.joint && self.learners.is_empty()
    }

    /// Whether `node` takes part in the group (voter or learner).
    pub fn includes(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// As sent over the wire to a replica deciding whether to delete itself.
    pub fn to_proto(&self) -> v1::GroupMembershipResponse {
        v1::GroupMembershipResponse {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            joint: self.joint,
            log_index: self.log_index,
            committed: self.committed,
        }
    }
}

/// Whether the membership a leader reported has committed the removal of `node`.
pub fn removal_committed(reported: &v1::GroupMembershipResponse, node: NodeId) -> bool {
    reported.committed
        && !reported.joint
        && !reported.voters.is_empty()
        && !reported.voters.contains(&node)
        && !reported.learners.contains(&node)
}

/// What one [`move_toward`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveOutcome {
    /// The group already matched placement.
    Settled,
    /// Voters changed from `from` to `to`.
    Moved {
        from: BTreeSet<NodeId>,
        to: BTreeSet<NodeId>,
    },
    /// The new replicas caught up, but this leader is not among the new voters: it should
    /// hand the leadership to `successor` (a voter that stays), which finishes the move
    /// without the election a leader removing itself would cost.
    HandOver { successor: NodeId },
}

fn write_error(group: &Group, err: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> NodeError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => NodeError::NotLeader {
            group: group.id,
            leader: crate::proposal::forwarded_leader(forward),
            proposed: false,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(
            progress,
        ))) => NodeError::NoQuorum {
            group: group.id,
            detail: format!("a membership change is still in progress: {progress}"),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => NodeError::NoQuorum {
            group: group.id,
            detail: err.to_string(),
        },
        RaftError::Fatal(fatal) => NodeError::Fatal(fatal.to_string()),
    }
}

/// Moves `group` (led by this node) toward the voters `target` (node id → address). See the
/// module docs for the steps. Returns early with an error when leadership is lost, a
/// learner does not catch up within `catch_up_timeout`, or a change cannot commit; calling
/// again later resumes from wherever the group is.
///
/// With `hand_over`, a leader that is not among the new voters returns
/// [`MoveOutcome::HandOver`] once the new replicas caught up (groups of at most
/// [`MAX_TRANSFER_VOTERS`] voters).
pub async fn move_toward(
    group: &Group,
    target: &BTreeMap<NodeId, String>,
    catch_up_timeout: Duration,
    hand_over: bool,
) -> Result<MoveOutcome, NodeError> {
    let wanted: BTreeSet<NodeId> = target.keys().copied().collect();
    let view = MembershipView::of(group);
    if !view.leader {
        return Err(NodeError::NotLeader {
            group: group.id,
            leader: None,
            proposed: false,
        });
    }
    if view.settled(&wanted) {
        return Ok(MoveOutcome::Settled);
    }
    let from = view.voters.clone();
    let newcomers: Vec<NodeId> = wanted.difference(&view.voters).copied().collect();
    for &node in &newcomers {
        if !view.learners.contains(&node) {
            let addr = target.get(&node).cloned().unwrap_or_default();
            info!(group = %group.id, node, %addr, "adding learner");
            bounded(
                group,
                catch_up_timeout,
                group.raft.add_learner(node, BasicNode::new(addr), false),
            )
            .await?;
        }
    }
    if !newcomers.is_empty() {
        wait_caught_up(group, &newcomers, catch_up_timeout).await?;
    }
    let self_id = group.raft.metrics().borrow().id;
    if hand_over && !wanted.contains(&self_id) && !view.joint && view.voters.len() <= MAX_TRANSFER_VOTERS {
        // The staying voter furthest along the log takes over.
        let metrics = group.raft.metrics().borrow().clone();
        let matched = |node: &NodeId| {
            metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(node).copied().flatten())
                .map(|log_id| log_id.index)
        };
        if let Some(successor) = view
            .voters
            .intersection(&wanted)
            .max_by_key(|node| (matched(node), std::cmp::Reverse(**node)))
        {
            return Ok(MoveOutcome::HandOver {
                successor: *successor,
            });
        }
    }
    if view.voters != wanted || view.joint {
        info!(group = %group.id, from = ?view.voters, to = ?wanted, "changing voters");
        bounded(
            group,
            catch_up_timeout,
            group.raft.change_membership(wanted.clone(), false),
        )
        .await?;
    }
    let after = MembershipView::of(group);
    let strays: BTreeSet<NodeId> = after.learners.difference(&wanted).copied().collect();
    if after.leader && !strays.is_empty() {
        info!(group = %group.id, learners = ?strays, "removing stray learners");
        bounded(
            group,
            catch_up_timeout,
            group
                .raft
                .change_membership(ChangeMembers::RemoveNodes(strays), false),
        )
        .await?;
    }
    Ok(MoveOutcome::Moved { from, to: wanted })
}

/// Runs a membership call with a timeout: a leader that lost its quorum does not step down
/// in openraft 0.9, and a move must not hold its permit forever (openraft goes on committing
/// the change in the background; the next attempt sees it in progress or done).
async fn bounded<T>(
    group: &Group,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>>,
) -> Result<T, NodeError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|err| write_error(group, err)),
        Err(_elapsed) => Err(NodeError::Timeout {
            what: format!("{}: membership change", group.id),
            timeout_ms: timeout.as_millis() as u64,
            proposed: true,
        }),
    }
}

/// Waits until every node of `learners` has replicated the leader's log up to its last
/// index as of now.
async fn wait_caught_up(group: &Group, learners: &[NodeId], timeout: Duration) -> Result<(), NodeError> {
    let goal = group.raft.metrics().borrow().last_log_index.unwrap_or(0);
    let caught_up = |metrics: &openraft::RaftMetrics<NodeId, BasicNode>| {
        metrics.state != ServerState::Leader
            || metrics.replication.as_ref().is_some_and(|replication| {
                learners.iter().all(|node| {
                    replication
                        .get(node)
                        .and_then(|matched| matched.as_ref())
                        .is_some_and(|matched| matched.index >= goal)
                })
            })
    };
    let waited = group
        .raft
        .wait(Some(timeout))
        .metrics(caught_up, "learners caught up")
        .await;
    match waited {
        Ok(metrics) if metrics.state == ServerState::Leader => Ok(()),
        Ok(_) => Err(NodeError::NotLeader {
            group: group.id,
            leader: None,
            proposed: false,
        }),
        Err(err) => Err(NodeError::Timeout {
            what: format!(
                "{}: learners {learners:?} catching up to index {goal} ({err})",
                group.id
            ),
            timeout_ms: timeout.as_millis() as u64,
            proposed: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(
        voters: &[u64],
        learners: &[u64],
        joint: bool,
        committed: bool,
    ) -> v1::GroupMembershipResponse {
        v1::GroupMembershipResponse {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            joint,
            log_index: 9,
            committed,
        }
    }

    /// A replica deletes itself only on a committed, uniform membership that leaves it out.
    #[test]
    fn removal_needs_a_committed_uniform_membership_without_the_node() {
        assert!(removal_committed(&reported(&[1, 2, 4], &[], false, true), 3));
        assert!(
            !removal_committed(&reported(&[1, 2, 4], &[], false, false), 3),
            "uncommitted"
        );
        assert!(
            !removal_committed(&reported(&[1, 2, 4], &[], true, true), 3),
            "joint"
        );
        assert!(
            !removal_committed(&reported(&[1, 2, 3], &[], false, true), 3),
            "voter"
        );
        assert!(
            !removal_committed(&reported(&[1, 2, 4], &[3], false, true), 3),
            "learner"
        );
        assert!(
            !removal_committed(&reported(&[], &[], false, true), 3),
            "no voters: not an answer"
        );
    }
}
