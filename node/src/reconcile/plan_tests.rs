//! Table tests of the reconciler's rules: build the inputs, call [`plan`] once, assert the
//! exact actions. Every case names its rule; the case index is in every failure message.

use ringkv_ring::{MemberState, RingConfig, RingMember};

use super::*;

const ME: NodeId = 1;

/// Four nodes, RF 3, 16 shards: node 1 holds some shards (first replica of some, later
/// replica of others) and not others.
fn ring_with(my_state: MemberState) -> Ring {
    let members = (1..=4)
        .map(|node_id| RingMember {
            node_id,
            addr: format!("n{node_id}:7000"),
            state: if node_id == ME {
                my_state
            } else {
                MemberState::Active
            },
        })
        .collect();
    let config = RingConfig {
        shards: 16,
        replication_factor: 3,
        vnodes_per_node: 16,
    };
    Ring::new(config, members).expect("valid ring")
}

/// Shards of `ring` where node 1 is: the first replica, a later replica, not a replica.
struct Shards {
    first: u32,
    later: u32,
    elsewhere: u32,
    /// Another shard where node 1 is the first replica (for the move limit).
    first_again: u32,
}

fn shards(ring: &Ring) -> Shards {
    let pick = |wanted: &dyn Fn(&[NodeId]) -> bool, skip: usize| {
        ring.shards()
            .map(|shard| shard.0)
            .filter(|&shard| wanted(&ring.replicas(ShardId(shard))))
            .nth(skip)
            .expect("the test ring has such a shard")
    };
    Shards {
        first: pick(&|replicas| replicas.first() == Some(&ME), 0),
        first_again: pick(&|replicas| replicas.first() == Some(&ME), 1),
        later: pick(
            &|replicas| replicas.contains(&ME) && replicas.first() != Some(&ME),
            0,
        ),
        elsewhere: pick(&|replicas| !replicas.contains(&ME), 0),
    }
}

fn view(voters: &[NodeId], leader: bool) -> MembershipView {
    MembershipView {
        voters: voters.iter().copied().collect(),
        learners: BTreeSet::new(),
        joint: false,
        log_index: 1,
        committed: true,
        leader,
        leader_id: leader.then_some(ME),
    }
}

fn placement(ring: &Ring, shard: u32) -> BTreeMap<NodeId, String> {
    addresses(ring, &ring.replicas(ShardId(shard)))
}

/// Every replica of every shard placed here, settled, as a follower: the steady state.
fn settled(ring: &Ring) -> BTreeMap<u32, MembershipView> {
    ring.shards_of_node(ME)
        .into_iter()
        .map(|shard| (shard.0, view(&ring.replicas(shard), false)))
        .collect()
}

struct Case {
    rule: &'static str,
    ring: Ring,
    epoch: u64,
    local: BTreeMap<u32, MembershipView>,
    claimed: HashSet<u32>,
    never_init: HashSet<u32>,
    move_slots: usize,
    expected: Vec<Action>,
}

impl Case {
    fn new(rule: &'static str, ring: Ring) -> Case {
        let local = settled(&ring);
        Case {
            rule,
            ring,
            epoch: 2,
            local,
            claimed: HashSet::new(),
            never_init: HashSet::new(),
            move_slots: 4,
            expected: Vec::new(),
        }
    }
}

fn cases() -> Vec<Case> {
    let ring = ring_with(MemberState::Active);
    let s = shards(&ring);
    let placed: Vec<u32> = ring.shards_of_node(ME).iter().map(|shard| shard.0).collect();
    let mut cases = Vec::new();

    cases.push(Case::new("steady state: nothing to do", ring.clone()));

    let mut case = Case::new(
        "initial ring: open every placed shard, initialise where first",
        ring.clone(),
    );
    case.epoch = 1;
    case.local.clear();
    for &shard in &placed {
        case.expected.push(Action::Open { shard });
        if ring.replicas(ShardId(shard)).first() == Some(&ME) {
            case.expected.push(Action::Initialise {
                shard,
                voters: placement(&ring, shard),
            });
        }
    }
    cases.push(case);

    let mut case = Case::new("later rings open groups but never initialise them", ring.clone());
    case.local.clear();
    case.expected = placed.iter().map(|&shard| Action::Open { shard }).collect();
    cases.push(case);

    let mut case = Case::new("a group that has voters is not initialised again", ring.clone());
    case.epoch = 1;
    cases.push(case);

    let mut case = Case::new(
        "an opened group without voters is initialised by the first replica",
        ring.clone(),
    );
    case.epoch = 1;
    case.local.insert(s.first, view(&[], false));
    case.local.insert(s.later, view(&[], false));
    case.expected = vec![Action::Initialise {
        shard: s.first,
        voters: placement(&ring, s.first),
    }];
    cases.push(case);

    let mut case = Case::new(
        "a replica moved away never initialises its group here",
        ring.clone(),
    );
    case.epoch = 1;
    case.local.remove(&s.first);
    case.never_init.insert(s.first);
    case.expected = vec![
        Action::Open { shard: s.first },
        Action::Skip {
            shard: s.first,
            reason: Skip::NeverInitialise,
        },
    ];
    cases.push(case);

    let mut case = Case::new("no reopening while the old replica's deletion runs", ring.clone());
    case.local.remove(&s.later);
    case.claimed.insert(s.later);
    case.expected = vec![Action::Skip {
        shard: s.later,
        reason: Skip::DeletionRunning,
    }];
    cases.push(case);

    let mut case = Case::new("a leader moves an unsettled group toward placement", ring.clone());
    case.local.insert(s.first, view(&[1, 2], true));
    case.expected = vec![Action::Move {
        shard: s.first,
        target: placement(&ring, s.first),
    }];
    cases.push(case);

    let mut case = Case::new("learners or a joint config are unsettled too", ring.clone());
    let mut with_learner = view(&ring.replicas(ShardId(s.first)), true);
    with_learner.learners.insert(4);
    case.local.insert(s.first, with_learner);
    let mut joint = view(&ring.replicas(ShardId(s.later)), true);
    joint.joint = true;
    case.local.insert(s.later, joint);
    case.expected = vec![s.first, s.later]
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|shard| Action::Move {
            shard,
            target: placement(&ring, shard),
        })
        .collect();
    cases.push(case);

    let mut case = Case::new("a settled leader does nothing", ring.clone());
    case.local
        .insert(s.first, view(&ring.replicas(ShardId(s.first)), true));
    cases.push(case);

    let mut case = Case::new(
        "a leader of a group placed elsewhere moves it (never checks removal)",
        ring.clone(),
    );
    case.local.insert(s.elsewhere, view(&[1, 2, 3], true));
    case.expected = vec![Action::Move {
        shard: s.elsewhere,
        target: placement(&ring, s.elsewhere),
    }];
    cases.push(case);

    let mut case = Case::new("moves are bounded by the free move slots", ring.clone());
    case.move_slots = 1;
    case.local.insert(s.first, view(&[1, 2], true));
    case.local.insert(s.first_again, view(&[1, 2], true));
    let (low, high) = (s.first.min(s.first_again), s.first.max(s.first_again));
    case.expected = vec![
        Action::Move {
            shard: low,
            target: placement(&ring, low),
        },
        Action::Skip {
            shard: high,
            reason: Skip::MoveLimit,
        },
    ];
    cases.push(case);

    let mut case = Case::new("a claimed shard is not moved twice", ring.clone());
    case.local.insert(s.first, view(&[1, 2], true));
    case.claimed.insert(s.first);
    case.expected = vec![Action::Skip {
        shard: s.first,
        reason: Skip::Claimed,
    }];
    cases.push(case);

    let mut case = Case::new(
        "a follower placed elsewhere asks whether it was removed",
        ring.clone(),
    );
    case.local.insert(s.elsewhere, view(&[1, 2, 3], false));
    case.expected = vec![Action::CheckRemoval { shard: s.elsewhere }];
    cases.push(case);

    let mut case = Case::new("no second removal check while one runs", ring.clone());
    case.local.insert(s.elsewhere, view(&[1, 2, 3], false));
    case.claimed.insert(s.elsewhere);
    case.expected = vec![Action::Skip {
        shard: s.elsewhere,
        reason: Skip::Claimed,
    }];
    cases.push(case);

    for gone in [MemberState::Removed, MemberState::Dead] {
        let gone_ring = ring_with(gone);
        let mut case = Case::new(
            "a node that left the ring opens nothing; its followers check removal",
            gone_ring,
        );
        case.epoch = 1;
        case.local = BTreeMap::from([
            (s.first, view(&[1, 2, 3], false)),
            (s.later, view(&[1, 2, 3], false)),
        ]);
        case.expected = vec![s.first, s.later]
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|shard| Action::CheckRemoval { shard })
            .collect();
        cases.push(case);
    }
    cases
}

/// Each rule of the module docs, one case at a time.
#[test]
fn plan_follows_the_rules() {
    for (index, case) in cases().iter().enumerate() {
        let actions = plan(Inputs {
            ring: &case.ring,
            epoch: case.epoch,
            me: ME,
            local: &case.local,
            claimed: &case.claimed,
            never_init: &case.never_init,
            move_slots: case.move_slots,
        });
        assert_eq!(actions, case.expected, "case {index}: {}", case.rule);
    }
}

/// Planning is a function of its inputs: the same inputs give the same actions, and an
/// executor that did everything planned reaches a state with nothing left to do.
#[test]
fn executing_the_plan_reaches_a_fixed_point() {
    let ring = ring_with(MemberState::Active);
    let mut local = BTreeMap::new();
    let empty = HashSet::new();
    for _ in 0..3 {
        let inputs = Inputs {
            ring: &ring,
            epoch: 1,
            me: ME,
            local: &local,
            claimed: &empty,
            never_init: &empty,
            move_slots: 4,
        };
        let actions = plan(inputs);
        assert_eq!(actions, plan(inputs), "deterministic");
        if actions.is_empty() {
            return;
        }
        for action in actions {
            match action {
                Action::Open { shard } => {
                    local.insert(shard, view(&[], false));
                }
                Action::Initialise { shard, voters } => {
                    let voters: Vec<NodeId> = voters.keys().copied().collect();
                    local.insert(shard, view(&voters, false));
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
        // Replicas that are not first learn their membership from the first one.
        for shard in ring.shards_of_node(ME) {
            local.insert(shard.0, view(&ring.replicas(shard), false));
        }
    }
    panic!("no fixed point after three passes");
}

/// The moves a node reports wanted are the moves [`plan`] makes when neither the move limit
/// nor a claim holds one back, in every case of the table.
#[test]
fn moves_wanted_are_the_moves_planned_without_limits() {
    let no_claims = HashSet::new();
    let mut cases_with_moves = 0;
    for (index, case) in cases().iter().enumerate() {
        let unlimited = plan(Inputs {
            ring: &case.ring,
            epoch: case.epoch,
            me: ME,
            local: &case.local,
            claimed: &no_claims,
            never_init: &case.never_init,
            move_slots: usize::MAX,
        });
        let moves = unlimited
            .iter()
            .filter(|action| matches!(action, Action::Move { .. }))
            .count();
        cases_with_moves += usize::from(moves > 0);
        assert_eq!(
            moves_wanted(&case.ring, &case.local),
            moves,
            "case {index}: {}",
            case.rule
        );
    }
    assert!(cases_with_moves > 0, "the table has cases with moves");
}
