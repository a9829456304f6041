//! Property tests of consistent-hash placement: determinism, replica-set shape, balance,
//! minimal movement on membership change, agreement of the lookup helpers, and rejection
//! of invalid rings.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use ringkv_ring::ring::DEFAULT_VNODES_PER_NODE;
use ringkv_ring::shard::{shard_of_hash, shard_start, MAX_SHARDS};
use ringkv_ring::{key_hash, MemberState, NodeId, Ring, RingConfig, RingError, RingMember, ShardId};

const RF: u32 = 3;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn member(node_id: NodeId, state: MemberState) -> RingMember {
    RingMember {
        node_id,
        addr: format!("10.0.{}.{}:7000", (node_id >> 8) % 256, node_id % 256),
        state,
    }
}

fn active(ids: &[NodeId]) -> Vec<RingMember> {
    ids.iter().map(|&id| member(id, MemberState::Active)).collect()
}

fn config(shards: u32, replication_factor: u32, vnodes_per_node: u32) -> RingConfig {
    RingConfig {
        shards,
        replication_factor,
        vnodes_per_node,
    }
}

fn build(shards: u32, ids: &[NodeId]) -> Ring {
    Ring::new(config(shards, RF, DEFAULT_VNODES_PER_NODE), active(ids)).expect("valid ring")
}

/// Every `(shard, node)` replica assignment of the ring.
fn pairs(ring: &Ring) -> BTreeSet<(u32, NodeId)> {
    ring.placement()
        .into_iter()
        .enumerate()
        .flat_map(|(shard, replicas)| replicas.into_iter().map(move |n| (shard as u32, n)))
        .collect()
}

/// Replica count of each of `ids` (0 for a node holding none).
fn replica_counts(ring: &Ring, ids: &[NodeId]) -> BTreeMap<NodeId, usize> {
    let mut counts: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
    for replicas in ring.placement() {
        for node in replicas {
            *counts.entry(node).or_insert(0) += 1;
        }
    }
    counts
}

/// Largest `|count - fair| / fair` over `ids`, with fair = RF * S / N.
fn worst_relative_deviation(ring: &Ring, ids: &[NodeId]) -> f64 {
    let fair = f64::from(RF * ring.shard_count()) / ids.len() as f64;
    replica_counts(ring, ids)
        .values()
        .map(|&count| (count as f64 - fair).abs() / fair)
        .fold(0.0, f64::max)
}

fn owner_count(members: &[RingMember]) -> usize {
    members.iter().filter(|m| m.state.owns_tokens()).count()
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Node ids: mostly arbitrary u64s, sometimes small ones (never 0).
fn arb_node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![1u64..=64, 1u64..]
}

/// `n` distinct node ids, in random order.
fn arb_ids(n: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<NodeId>> {
    prop::collection::btree_set(arb_node_id(), n)
        .prop_map(|ids| ids.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn arb_state() -> impl Strategy<Value = MemberState> {
    prop_oneof![
        3 => Just(MemberState::Active),
        2 => Just(MemberState::Joining),
        1 => Just(MemberState::Decommissioning),
        1 => Just(MemberState::Removed),
    ]
}

/// 1..=max members with distinct non-zero ids and random states, in random order.
fn arb_members(max: usize) -> impl Strategy<Value = Vec<RingMember>> {
    prop::collection::btree_map(arb_node_id(), arb_state(), 1..=max)
        .prop_map(|m| {
            m.into_iter()
                .map(|(id, state)| member(id, state))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// A valid config with S in 1..=1024, RF in 1..=7 and a smallish V (placement cost is
/// S * walk length, so keep it cheap in debug builds).
fn arb_config() -> impl Strategy<Value = RingConfig> {
    (0u32..=10, 1u32..=7, 1u32..=48).prop_map(|(log2, rf, v)| config(1 << log2, rf, v))
}

/// A valid config and a member list with at least RF token owners.
fn arb_valid_ring_input() -> impl Strategy<Value = (RingConfig, Vec<RingMember>)> {
    (arb_config(), arb_members(12)).prop_map(|(mut cfg, members)| {
        let owners = owner_count(&members).max(1);
        cfg.replication_factor = cfg.replication_factor.min(owners.min(7) as u32);
        let mut members = members;
        if owner_count(&members) == 0 {
            members[0].state = MemberState::Active;
        }
        (cfg, members)
    })
}

// ---------------------------------------------------------------------------------------
// 1. Determinism and 2. replica-set shape
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Building a ring twice from the same members, in any order, gives identical placement.
    #[test]
    fn placement_is_deterministic_in_any_member_order(
        (cfg, members, shuffled) in arb_valid_ring_input().prop_flat_map(|(cfg, members)| {
            (Just(cfg), Just(members.clone()), Just(members).prop_shuffle())
        })
    ) {
        let a = Ring::new(cfg, members.clone()).unwrap();
        let b = Ring::new(cfg, members).unwrap();
        let c = Ring::new(cfg, shuffled).unwrap();
        let placement = a.placement();
        prop_assert_eq!(&placement, &b.placement());
        prop_assert_eq!(&placement, &c.placement());
        prop_assert!(a.members().eq(c.members()));
        prop_assert_eq!(a.config(), c.config());
    }

    /// Every shard has exactly RF distinct replicas, all of them Joining/Active members.
    #[test]
    fn every_shard_has_rf_distinct_token_owning_replicas(
        (cfg, members) in arb_valid_ring_input()
    ) {
        let ring = Ring::new(cfg, members).unwrap();
        let placement = ring.placement();
        prop_assert_eq!(placement.len(), cfg.shards as usize);
        for (shard, replicas) in placement.iter().enumerate() {
            prop_assert_eq!(replicas.len(), cfg.replication_factor as usize, "shard {}", shard);
            let distinct: BTreeSet<_> = replicas.iter().collect();
            prop_assert_eq!(distinct.len(), replicas.len(), "shard {} repeats a node", shard);
            for node in replicas {
                let m = ring.member(*node);
                prop_assert!(m.is_some(), "shard {} placed on non-member {}", shard, node);
                let state = m.unwrap().state;
                prop_assert!(
                    matches!(state, MemberState::Joining | MemberState::Active),
                    "shard {} placed on {} member {}", shard, state.as_str(), node
                );
            }
        }
    }

    /// Decommissioning/Removed members are invisible to placement: dropping them changes nothing.
    #[test]
    fn non_owning_members_do_not_affect_placement((cfg, members) in arb_valid_ring_input()) {
        let owners_only: Vec<RingMember> =
            members.iter().filter(|m| m.state.owns_tokens()).cloned().collect();
        let with_all = Ring::new(cfg, members).unwrap();
        let without = Ring::new(cfg, owners_only).unwrap();
        prop_assert_eq!(with_all.placement(), without.placement());
    }

    /// Ring::new succeeds exactly when at least RF members own tokens (and the config is valid).
    #[test]
    fn ring_builds_iff_enough_token_owners(cfg in arb_config(), members in arb_members(8)) {
        let owners = owner_count(&members);
        match Ring::new(cfg, members) {
            Ok(_) => prop_assert!(owners >= cfg.replication_factor as usize),
            Err(e) => prop_assert_eq!(
                e,
                RingError::TooFewMembers { owners, replication_factor: cfg.replication_factor }
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. Balance
// ---------------------------------------------------------------------------------------

/// Tolerance at S=1024, RF=3, V=DEFAULT_VNODES_PER_NODE (128), N=3..=12 random node ids.
///
/// Measured worst per-node deviation from fair share RF*S/N, over 21,000 random rings:
/// mean of the per-ring worst 6-10% (grows with N), p99 16.5%, max 22.8%. (For reference,
/// V=256 gives max 15.7%, V=512 13.7%: the floor is the sampling noise of 1024 shard
/// start points.) 30% leaves a wide margin over the observed maximum.
const BALANCE_TOLERANCE_S1024: f64 = 0.30;

/// Tolerance at the playground-like S=32, RF=3, N=3..=5.
///
/// With only 32 shards the per-node counts are dominated by which arcs the 32 start points
/// hit, and V does not help (V=64..512 all look alike). Measured over 40,000 random rings:
/// N=4 p99 29.2%, max 45.8%; N=5 p99 42.7%, max 63.5% (fair share 19.2, i.e. a node with 7
/// or 31 replicas). N=3 is always exact (every node holds every shard). 75% means: at N=5
/// every node holds at least 5 replicas of the 96.
const BALANCE_TOLERANCE_S32: f64 = 0.75;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// At S=1024, RF=3, default V, every one of N=3..=12 nodes holds within ±30% of RF*S/N replicas.
    #[test]
    fn replicas_are_balanced_at_1024_shards(ids in (3usize..=12).prop_flat_map(arb_ids)) {
        let ring = build(1024, &ids);
        let worst = worst_relative_deviation(&ring, &ids);
        prop_assert!(
            worst <= BALANCE_TOLERANCE_S1024,
            "worst deviation {:.1}% at N={}: {:?}",
            worst * 100.0,
            ids.len(),
            replica_counts(&ring, &ids)
        );
    }

    /// At S=32, RF=3, default V, every one of N=3..=5 nodes holds within ±75% of RF*S/N replicas.
    #[test]
    fn replicas_are_loosely_balanced_at_32_shards(ids in (3usize..=5).prop_flat_map(arb_ids)) {
        let ring = build(32, &ids);
        let worst = worst_relative_deviation(&ring, &ids);
        prop_assert!(
            worst <= BALANCE_TOLERANCE_S32,
            "worst deviation {:.1}% at N={}: {:?}",
            worst * 100.0,
            ids.len(),
            replica_counts(&ring, &ids)
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Minimal movement
// ---------------------------------------------------------------------------------------

/// Slack (in replica assignments) added to the `1.5 * ideal` movement bound.
///
/// Measured at S=1024, RF=3, default V, N=3..=10, 666 rings per N: moved/ideal ranged
/// 0.79..=1.19 when adding a node and 0.83..=1.19 when removing one; no assignment ever
/// moved between two nodes that were members both before and after.
const MOVE_SLACK: f64 = 8.0;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Adding one node to N=3..=10 only moves replicas onto the new node, about RF*S/(N+1) of them.
    #[test]
    fn adding_a_node_moves_only_its_fair_share(
        (ids, new_at) in (4usize..=11).prop_flat_map(arb_ids).prop_flat_map(|ids| {
            (Just(ids), any::<Index>())
        })
    ) {
        const S: u32 = 1024;
        let new_node = ids[new_at.index(ids.len())];
        let old_ids: Vec<NodeId> = ids.iter().copied().filter(|&id| id != new_node).collect();
        let n = old_ids.len();
        let before = pairs(&build(S, &old_ids));
        let after = pairs(&build(S, &ids));

        let gained: Vec<_> = after.difference(&before).collect();
        let lost: Vec<_> = before.difference(&after).collect();
        // No replica moves between two old nodes: everything gained lands on the new node,
        // and each gained replica displaces exactly one old one in the same shard.
        for &&(shard, node) in &gained {
            prop_assert_eq!(node, new_node, "shard {} moved between old nodes", shard);
        }
        prop_assert_eq!(gained.len(), lost.len());
        for &&(shard, node) in &lost {
            prop_assert!(after.contains(&(shard, new_node)), "shard {} lost {} needlessly", shard, node);
        }
        let ideal = f64::from(RF * S) / (n + 1) as f64;
        let moved = gained.len() as f64;
        prop_assert!(
            moved <= 1.5 * ideal + MOVE_SLACK,
            "N={} moved {} > 1.5 * ideal {:.1} + {}", n, moved, ideal, MOVE_SLACK
        );
        prop_assert!(moved >= 0.5 * ideal, "N={} new node took only {} of ideal {:.1}", n, moved, ideal);
    }

    /// Removing one of N=4..=11 nodes (deleted or Decommissioning/Removed) only moves its replicas, about RF*S/N.
    #[test]
    fn removing_a_node_moves_only_its_replicas(
        (ids, gone_at, how) in (4usize..=11).prop_flat_map(arb_ids).prop_flat_map(|ids| {
            (Just(ids), any::<Index>(), 0u8..3)
        })
    ) {
        const S: u32 = 1024;
        let n = ids.len();
        let gone = ids[gone_at.index(n)];
        let old_ring = build(S, &ids);
        let before = pairs(&old_ring);
        let members: Vec<RingMember> = match how {
            0 => active(&ids).into_iter().filter(|m| m.node_id != gone).collect(),
            1 | 2 => active(&ids)
                .into_iter()
                .map(|mut m| {
                    if m.node_id == gone {
                        m.state = if how == 1 { MemberState::Decommissioning } else { MemberState::Removed };
                    }
                    m
                })
                .collect(),
            _ => unreachable!(),
        };
        let new_ring = Ring::new(config(S, RF, DEFAULT_VNODES_PER_NODE), members).unwrap();
        let after = pairs(&new_ring);

        let gained: Vec<_> = after.difference(&before).collect();
        let lost: Vec<_> = before.difference(&after).collect();
        // Exactly the removed node's replicas are lost, and each is replaced once, in the
        // same shard, by a surviving node.
        let gone_count = before.iter().filter(|&&(_, node)| node == gone).count();
        prop_assert_eq!(lost.len(), gone_count);
        for &&(shard, node) in &lost {
            prop_assert_eq!(node, gone, "shard {} lost a surviving node", shard);
        }
        prop_assert_eq!(gained.len(), gone_count);
        let gained_shards: BTreeSet<u32> = gained.iter().map(|&&(shard, _)| shard).collect();
        prop_assert_eq!(gained_shards.len(), gained.len());
        for &&(shard, node) in &gained {
            prop_assert!(before.contains(&(shard, gone)), "shard {} changed without losing {}", shard, gone);
            prop_assert_ne!(node, gone);
        }
        let ideal = f64::from(RF * S) / n as f64;
        let moved = gained.len() as f64;
        prop_assert!(
            moved <= 1.5 * ideal + MOVE_SLACK,
            "N={} moved {} > 1.5 * ideal {:.1} + {}", n, moved, ideal, MOVE_SLACK
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. Lookup helpers agree with placement
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// shard_for_key(key) is shard_of_hash(key_hash(key), S), a valid shard whose range holds the hash.
    #[test]
    fn shard_for_key_agrees_with_shard_of_hash(
        log2 in 0u32..=16,
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 1..16),
    ) {
        let shards = 1u32 << log2;
        let ring = Ring::new(config(shards, 1, 4), active(&[1, 2, 3])).unwrap();
        for key in keys {
            let shard = ring.shard_for_key(&key);
            let hash = key_hash(&key);
            prop_assert_eq!(shard, shard_of_hash(hash, shards));
            prop_assert!(shard.0 < shards);
            prop_assert!(shard_start(shard, shards) <= hash);
            if shard.0 + 1 < shards {
                prop_assert!(hash < shard_start(ShardId(shard.0 + 1), shards));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// shards_of_node(n) is exactly the shards whose placement() entry contains n, and replicas() matches placement().
    #[test]
    fn shards_of_node_agrees_with_placement((cfg, members) in arb_valid_ring_input()) {
        let ring = Ring::new(cfg, members.clone()).unwrap();
        let placement = ring.placement();
        for (shard, replicas) in placement.iter().enumerate() {
            prop_assert_eq!(&ring.replicas(ShardId(shard as u32)), replicas);
        }
        for m in &members {
            let expected: Vec<ShardId> = placement
                .iter()
                .enumerate()
                .filter(|(_, replicas)| replicas.contains(&m.node_id))
                .map(|(shard, _)| ShardId(shard as u32))
                .collect();
            prop_assert_eq!(ring.shards_of_node(m.node_id), expected);
        }
        // A node that is not a member holds nothing.
        let stranger = (1..).find(|id| ring.member(*id).is_none()).unwrap();
        prop_assert!(ring.shards_of_node(stranger).is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// 6. Rejection of invalid rings
// ---------------------------------------------------------------------------------------

/// Shard counts that are not a power of two in 1..=MAX_SHARDS.
fn arb_bad_shard_count() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(MAX_SHARDS + 1),
        Just(MAX_SHARDS * 2),
        any::<u32>().prop_filter("not a power of two", |s| !s.is_power_of_two()),
        (17u32..32).prop_map(|bits| 1u32 << bits),
        (MAX_SHARDS + 1)..=(2 * MAX_SHARDS),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A shard count that is not a power of two in 1..=65536 is rejected.
    #[test]
    fn rejects_bad_shard_count(shards in arb_bad_shard_count(), ids in arb_ids(3..8)) {
        let cfg = config(shards, RF, DEFAULT_VNODES_PER_NODE);
        prop_assert_eq!(Ring::new(cfg, active(&ids)).unwrap_err(), RingError::InvalidShardCount(shards));
    }

    /// A replication factor of 0 or more than 7 is rejected.
    #[test]
    fn rejects_bad_replication_factor(rf in prop_oneof![Just(0u32), Just(8u32), 9u32..], ids in arb_ids(3..12)) {
        let cfg = config(64, rf, DEFAULT_VNODES_PER_NODE);
        prop_assert_eq!(Ring::new(cfg, active(&ids)).unwrap_err(), RingError::InvalidReplicationFactor(rf));
    }

    /// A V of 0 or more than 1024 is rejected.
    #[test]
    fn rejects_bad_vnodes(v in prop_oneof![Just(0u32), Just(1025u32), 1026u32..], ids in arb_ids(3..8)) {
        let cfg = config(64, RF, v);
        prop_assert_eq!(Ring::new(cfg, active(&ids)).unwrap_err(), RingError::InvalidVnodes(v));
    }

    /// Fewer token-owning (Joining/Active) members than RF is rejected, however many others there are.
    #[test]
    fn rejects_fewer_owners_than_rf(
        (rf, ids, owners) in (1u32..=7).prop_flat_map(|rf| {
            (Just(rf), arb_ids(rf as usize..=rf as usize + 6), 0..rf as usize)
        }),
        states in prop::collection::vec(arb_state(), 13),
    ) {
        // The first `owners` members own tokens, the rest are Decommissioning or Removed.
        let members: Vec<RingMember> = ids
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (&id, state))| {
                let state = match (i < owners, state.owns_tokens()) {
                    (true, true) | (false, false) => state,
                    (true, false) => MemberState::Joining,
                    (false, true) => MemberState::Decommissioning,
                };
                member(id, state)
            })
            .collect();
        let cfg = config(64, rf, 16);
        prop_assert_eq!(
            Ring::new(cfg, members).unwrap_err(),
            RingError::TooFewMembers { owners, replication_factor: rf }
        );
    }

    /// A node id listed twice (whatever its states) is rejected.
    #[test]
    fn rejects_duplicate_node_id(
        (ids, dup_of, at) in arb_ids(1..10).prop_flat_map(|ids| {
            let n = ids.len();
            (Just(ids), 0..n, 0..=n)
        }),
        state_a in arb_state(),
        state_b in arb_state(),
    ) {
        let dup = ids[dup_of];
        let mut members: Vec<RingMember> = ids
            .iter()
            .map(|&id| member(id, if id == dup { state_a } else { MemberState::Active }))
            .collect();
        members.insert(at, member(dup, state_b));
        let cfg = config(64, 1, 16);
        prop_assert_eq!(Ring::new(cfg, members).unwrap_err(), RingError::DuplicateNode(dup));
    }

    /// A member with node id 0 (whatever its state) is rejected.
    #[test]
    fn rejects_node_id_zero(
        (ids, at) in arb_ids(0..10).prop_flat_map(|ids| {
            let n = ids.len();
            (Just(ids), 0..=n)
        }),
        state in arb_state(),
    ) {
        let mut members = active(&ids);
        members.insert(at, member(0, state));
        let cfg = config(64, 1, 16);
        prop_assert_eq!(Ring::new(cfg, members).unwrap_err(), RingError::ZeroNodeId);
    }
}

/// The extreme valid parameters (S=1 and S=65536, RF=1 and RF=7, V=1 and V=1024) are accepted.
#[test]
fn accepts_boundary_parameters() {
    let seven: Vec<NodeId> = (1..=7).collect();
    for (shards, rf, v) in [
        (1, 1, 1),
        (1, 7, 1024),
        (MAX_SHARDS, 1, 1),
        (MAX_SHARDS, 7, 1024),
        (2, 7, DEFAULT_VNODES_PER_NODE),
    ] {
        let ring = Ring::new(config(shards, rf, v), active(&seven))
            .unwrap_or_else(|e| panic!("S={shards} RF={rf} V={v} rejected: {e}"));
        assert_eq!(ring.shard_count(), shards);
        let last = ring.replicas(ShardId(shards - 1));
        assert_eq!(last.len(), rf as usize);
        if shards == 1 {
            assert_eq!(ring.placement().len(), 1);
        }
    }
}
