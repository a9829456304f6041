//! The reconciler's decisions, without IO: given the committed ring and what this node's
//! replicas see, which groups to open, initialise, move or check for removal.
//!
//! The rules, in the order [`plan`] applies them:
//!
//! 1. **Open what placement gives this node.** Every shard placement gives this node gets a
//!    group here ([`Action::Open`]) — unless the node has left the ring (decommissioned or
//!    dead: it opens nothing), or a deletion of the shard's old replica still runs here
//!    (the shard is claimed and has no group: [`Skip::DeletionRunning`], reopened after).
//! 2. **Only the first replica initialises, and only under the initial ring.** Under ring
//!    epoch 1 the first replica in ring order initialises the group with placement's voters
//!    ([`Action::Initialise`]). Later every group already exists (ring changes wait until each
//!    shard of the initial ring has a leader) and grows by membership changes: initialising
//!    again would start a second group with the same id. A replica that was moved away from
//!    this node is marked never to initialise here ([`Skip::NeverInitialise`]), since its
//!    group lives on elsewhere. A group that already has voters is initialised.
//! 3. **Leaders move their groups toward placement.** A replica that leads its group and
//!    whose membership differs from placement (other voters, learners, or a joint config)
//!    moves it ([`Action::Move`]), at most `move_slots` at once ([`Skip::MoveLimit`]).
//! 4. **Followers placed elsewhere ask whether they were removed.** A replica placement no
//!    longer gives this node, and that does not lead, asks the leader whether a committed
//!    membership left it out ([`Action::CheckRemoval`]); until then it keeps voting.
//!
//! A shard with a move, transfer or removal check already running is left alone
//! ([`Skip::Claimed`]): never two of them for one shard.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use ringkv_ring::{Ring, ShardId};

use crate::raft::types::NodeId;
use crate::rebalance::MembershipView;

/// What the reconciler sees in one pass.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The committed ring.
    pub ring: &'a Ring,
    /// Its epoch (1 = the initial ring).
    pub epoch: u64,
    /// This node.
    pub me: NodeId,
    /// The shard replicas hosted here, each as it sees its group.
    pub local: &'a BTreeMap<u32, MembershipView>,
    /// Shards with a move, transfer, removal check or deletion running here.
    pub claimed: &'a HashSet<u32>,
    /// Shards marked never to be initialised here.
    pub never_init: &'a HashSet<u32>,
    /// How many more moves may start now.
    pub move_slots: usize,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open (create, not initialise) the shard's group here.
    Open { shard: u32 },
    /// Initialise the shard's group with these voters (node id → address).
    Initialise {
        shard: u32,
        voters: BTreeMap<NodeId, String>,
    },
    /// Move the group (led here) toward these voters (node id → address).
    Move {
        shard: u32,
        target: BTreeMap<NodeId, String>,
    },
    /// Ask the shard's leader whether this replica was removed; delete it if so.
    CheckRemoval { shard: u32 },
    /// Nothing this pass, and why.
    Skip { shard: u32, reason: Skip },
}

/// Why a shard is left alone this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The deletion of the shard's old replica still runs here: reopen after it.
    DeletionRunning,
    /// This node held a replica that moved away: the group exists elsewhere.
    NeverInitialise,
    /// A move, transfer or removal check of the shard already runs.
    Claimed,
    /// As many moves as allowed already run.
    MoveLimit,
}

/// The actions that bring this node's groups in line with the ring (see the module docs).
pub fn plan(inputs: Inputs<'_>) -> Vec<Action> {
    let Inputs {
        ring,
        epoch,
        me,
        local,
        claimed,
        never_init,
        mut move_slots,
    } = inputs;
    let mut actions = Vec::new();
    let placed: BTreeSet<u32> = ring.shards_of_node(me).into_iter().map(|shard| shard.0).collect();
    let gone = ring.member(me).is_some_and(|member| member.state.is_gone());
    if !gone {
        for &shard in &placed {
            let hosted = local.get(&shard);
            if hosted.is_none() && claimed.contains(&shard) {
                actions.push(Action::Skip {
                    shard,
                    reason: Skip::DeletionRunning,
                });
                continue;
            }
            if hosted.is_none() {
                actions.push(Action::Open { shard });
            }
            let replicas = ring.replicas(ShardId(shard));
            let initialises = epoch == 1 && replicas.first() == Some(&me);
            let initialised = hosted.is_some_and(|view| !view.voters.is_empty());
            if !initialises || initialised {
                continue;
            }
            if never_init.contains(&shard) {
                actions.push(Action::Skip {
                    shard,
                    reason: Skip::NeverInitialise,
                });
                continue;
            }
            actions.push(Action::Initialise {
                shard,
                voters: addresses(ring, &replicas),
            });
        }
    }
    for (&shard, view) in local {
        let target = addresses(ring, &ring.replicas(ShardId(shard)));
        let wanted: BTreeSet<NodeId> = target.keys().copied().collect();
        let action = if view.leader {
            if view.settled(&wanted) {
                continue;
            }
            Action::Move { shard, target }
        } else if !placed.contains(&shard) {
            Action::CheckRemoval { shard }
        } else {
            continue;
        };
        if claimed.contains(&shard) {
            actions.push(Action::Skip {
                shard,
                reason: Skip::Claimed,
            });
        } else if matches!(action, Action::Move { .. }) && move_slots == 0 {
            actions.push(Action::Skip {
                shard,
                reason: Skip::MoveLimit,
            });
        } else {
            if matches!(action, Action::Move { .. }) {
                move_slots -= 1;
            }
            actions.push(action);
        }
    }
    actions
}

/// How many shards led here have voters other than placement gives them: the moves this
/// node has to make (those [`plan()`] turns into [`Action::Move`] when slots allow).
pub fn moves_wanted(ring: &Ring, local: &BTreeMap<u32, MembershipView>) -> usize {
    local
        .iter()
        .filter(|(shard, view)| {
            let wanted: BTreeSet<NodeId> = addresses(ring, &ring.replicas(ShardId(**shard)))
                .into_keys()
                .collect();
            view.leader && !view.settled(&wanted)
        })
        .count()
}

/// `node id → address` of `nodes` (members the ring does not know are left out).
fn addresses(ring: &Ring, nodes: &[NodeId]) -> BTreeMap<NodeId, String> {
    nodes
        .iter()
        .filter_map(|&id| ring.member(id).map(|member| (id, member.addr.clone())))
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
