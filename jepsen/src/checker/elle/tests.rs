//! Hand-written histories per anomaly kind, the level mapping, the graph algorithms, and
//! generated strictly serializable executions (always valid).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::graph::{shortest_path, strongly_connected, Budget};
use super::*;
use crate::checker::fixtures::{append, read, Builder};
use crate::history::{MicroOp, Op, OpType, OpValue, Process, F};

fn report(history: &Builder) -> Report {
    analyze(&history.build()).expect("the history fits the list-append model")
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report.kinds().into_iter().map(AnomalyKind::name).collect()
}

/// The levels at which `history` is valid.
fn valid_at(history: &Builder) -> Vec<Isolation> {
    Isolation::ALL
        .into_iter()
        .filter(|level| check(&history.build(), *level).validity == Validity::Valid)
        .collect()
}

/// The levels up to and including `level`.
fn up_to(level: Isolation) -> Vec<Isolation> {
    Isolation::ALL
        .into_iter()
        .filter(|weaker| *weaker <= level)
        .collect()
}

/// Each level forbids exactly the kinds of the weaker levels plus its own.
#[test]
fn levels_forbid_the_adya_anomalies() {
    let names =
        |level: Isolation| -> Vec<&str> { level.forbidden().iter().map(|kind| kind.name()).collect() };
    assert_eq!(
        names(Isolation::ReadUncommitted),
        [
            "duplicate-append",
            "incompatible-order",
            "internal",
            "garbage-read",
            "cyclic-versions",
            "G0"
        ]
    );
    assert_eq!(names(Isolation::ReadCommitted)[6..], ["G1a", "G1b", "G1c"]);
    assert_eq!(
        names(Isolation::RepeatableRead)[9..],
        ["G-single", "G-nonadjacent", "lost-update"]
    );
    assert_eq!(names(Isolation::Serializable)[12..], ["G2-item"]);
    assert_eq!(
        names(Isolation::StrictSerializable)[13..],
        [
            "G0-realtime",
            "G1c-realtime",
            "G-single-realtime",
            "G-nonadjacent-realtime",
            "G2-item-realtime"
        ]
    );
    assert!(!Isolation::RepeatableRead.forbids(AnomalyKind::G2Item));
    assert!(!Isolation::Serializable.forbids(AnomalyKind::GSingleRealtime));
    for kind in AnomalyKind::ALL {
        let json = serde_json::to_string(&kind).expect("serialize");
        assert_eq!(json, format!("\"{}\"", kind.name()));
    }
    assert_eq!(
        serde_json::to_string(&Isolation::RepeatableRead).expect("serialize"),
        "\"repeatable-read\""
    );
}

/// Transactions run one after another, each reading what the ones before appended: no
/// anomaly, valid at every level.
#[test]
fn a_serial_history_is_valid_at_every_level() {
    let mut history = Builder::default();
    history
        .committed(0, &[read(1, &[]), append(1, 1), append(2, 1)])
        .committed(1, &[read(1, &[1]), read(2, &[1]), append(1, 2)])
        .committed(0, &[append(2, 2), read(2, &[1, 2]), read(3, &[])])
        .committed(1, &[read(1, &[1, 2]), append(3, 1), read(3, &[1])])
        .committed(2, &[read(1, &[1, 2]), read(2, &[1, 2]), read(3, &[1])]);
    let found = report(&history);
    assert!(found.counts.is_empty(), "{found:#?}");
    assert_eq!(valid_at(&history), Isolation::ALL);
    assert_eq!(found.graph.nodes, 5);
    assert_eq!(
        found.graph.realtime_edges, 4,
        "a serial chain: one edge per successor"
    );
    let verdict = check(&history.build(), Isolation::StrictSerializable);
    assert_eq!(verdict.ops_checked, 5);
    assert!(verdict.anomalies.is_empty());
}

/// G0: two concurrent transactions each append to x and y, and the version orders put T0
/// first on x but last on y.
#[test]
fn a_write_cycle_is_g0() {
    let mut history = Builder::default();
    history
        .txn(0, &[append(1, 1), append(2, 2)])
        .txn(1, &[append(1, 3), append(2, 4)])
        .ok_txn(0)
        .ok_txn(1)
        .committed(2, &[read(1, &[1, 3]), read(2, &[4, 2])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G0"]);
    let g0 = &found.anomalies[0];
    assert_eq!(g0.description, "T0 -ww(k1)-> T1 -ww(k2)-> T0");
    assert_eq!(g0.ops, [0, 2, 1, 3]);
    assert_eq!(valid_at(&history), []);
}

/// A dirty read of an append that then aborted (what read uncommitted allows) is one G1a:
/// the committed lists read before and after it, which never hold the aborted value, are
/// still one version order — no `incompatible-order`, and valid at read uncommitted.
#[test]
fn a_dirty_read_of_an_aborted_append_is_only_g1a() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .txn(1, &[append(1, 2)])
        .committed(2, &[read(1, &[1, 2])])
        .fail(1)
        .committed(3, &[append(1, 3)])
        .committed(4, &[read(1, &[1, 3])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G1a"]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// A dirty read of an append whose transaction ended unknown, and which a longer read shows
/// never committed (another value took its place), is a G1a as well; one that a read shows
/// with another value after it committed, and an order that contradicts it stays an
/// incompatible order.
#[test]
fn a_dirty_read_of_an_unknown_append_that_never_committed_is_g1a() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .txn(1, &[append(1, 2)])
        .committed(2, &[read(1, &[1, 2])])
        .info(1)
        .committed(3, &[append(1, 3)])
        .committed(5, &[append(1, 5)])
        .committed(4, &[read(1, &[1, 3, 5])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G1a"]);
    assert!(
        found.anomalies[0].description.contains("never committed"),
        "{found:?}"
    );
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));

    let mut seen_inside = Builder::default();
    seen_inside
        .committed(0, &[append(1, 1)])
        .txn(1, &[append(1, 2)])
        .info(1)
        .committed(2, &[read(1, &[1, 2, 4])])
        .committed(3, &[append(1, 3)])
        .committed(5, &[append(1, 4)])
        .committed(4, &[read(1, &[1, 3, 4])]);
    assert!(kinds(&report(&seen_inside)).contains(&"incompatible-order"));
}

/// G1a: a committed read observes the append of a transaction that failed.
#[test]
fn reading_a_failed_append_is_g1a() {
    let mut history = Builder::default();
    history
        .txn(0, &[append(1, 1)])
        .fail(0)
        .committed(1, &[read(1, &[1])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G1a"]);
    assert_eq!(
        found.anomalies[0].description,
        "T2 read key 1 as [1]: 1 was appended by T0, which failed"
    );
    assert_eq!(found.anomalies[0].ops, [2, 3, 0, 1]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// G1b: a read ends at the first of two appends of one transaction. Allowed at READ
/// UNCOMMITTED, forbidden from READ COMMITTED on.
#[test]
fn reading_an_intermediate_append_is_g1b() {
    let mut history = Builder::default();
    history
        .txn(0, &[append(1, 1), append(1, 2)])
        .committed(1, &[read(1, &[1])])
        .ok_txn(0);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G1b"]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
    let at_read_uncommitted = check(&history.build(), Isolation::ReadUncommitted);
    assert_eq!(at_read_uncommitted.validity, Validity::Valid);
    assert_eq!(
        at_read_uncommitted.anomalies.len(),
        1,
        "allowed anomalies are listed"
    );
    assert!(
        at_read_uncommitted
            .notes
            .iter()
            .any(|note| note == "allowed at read-uncommitted (listed, not violations): G1b (1)"),
        "{:?}",
        at_read_uncommitted.notes
    );
    let at_read_committed = check(&history.build(), Isolation::ReadCommitted);
    assert_eq!(at_read_committed.validity, Validity::Invalid);
}

/// G1c: each of two concurrent transactions reads the other's append.
#[test]
fn reading_each_other_is_g1c() {
    let mut history = Builder::default();
    history
        .txn(0, &[append(1, 1), read(2, &[2])])
        .txn(1, &[append(2, 2), read(1, &[1])])
        .ok_txn(0)
        .ok_txn(1);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G1c"]);
    assert_eq!(found.anomalies[0].description, "T0 -wr(k1)-> T1 -wr(k2)-> T0");
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// G-single (read skew): T0 reads x before T1's append and y after it.
#[test]
fn read_skew_is_g_single() {
    let mut history = Builder::default();
    history
        .txn(0, &[read(1, &[]), read(2, &[1])])
        .txn(1, &[append(1, 1), append(2, 1)])
        .ok_txn(1)
        .ok_txn(0)
        .committed(2, &[read(1, &[1])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G-single"]);
    let cycle = &found.anomalies[0];
    assert_eq!(cycle.description, "T0 -rw(k1)-> T1 -wr(k2)-> T0");
    assert_eq!(cycle.ops, [0, 3, 1, 2]);
    assert_eq!(cycle.key, None);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// G-nonadjacent: T0 -rw(x)-> T1 -wr(x)-> T2 -rw(y)-> T3 -wr(y)-> T0, all concurrent.
#[test]
fn two_separated_anti_dependencies_are_g_nonadjacent() {
    let mut history = Builder::default();
    history
        .txn(0, &[read(1, &[]), read(2, &[1])])
        .txn(1, &[append(1, 1)])
        .txn(2, &[read(1, &[1]), read(2, &[])])
        .txn(3, &[append(2, 1)])
        .ok_txn(0)
        .ok_txn(1)
        .ok_txn(2)
        .ok_txn(3);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G-nonadjacent"]);
    assert_eq!(
        found.anomalies[0].description,
        "T0 -rw(k1)-> T1 -wr(k1)-> T2 -rw(k2)-> T3 -wr(k2)-> T0"
    );
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// G2-item (write skew): T0 and T1 both read x and y empty, then T0 appends to x and T1 to
/// y. Snapshot isolation allows it; serializability does not.
#[test]
fn write_skew_is_g2_item_allowed_by_snapshot_isolation() {
    let mut history = Builder::default();
    history
        .txn(0, &[read(1, &[]), read(2, &[]), append(1, 1)])
        .txn(1, &[read(1, &[]), read(2, &[]), append(2, 1)])
        .ok_txn(0)
        .ok_txn(1)
        .committed(2, &[read(1, &[1]), read(2, &[1])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G2-item"]);
    assert_eq!(found.anomalies[0].description, "T0 -rw(k2)-> T1 -rw(k1)-> T0");
    assert_eq!(valid_at(&history), up_to(Isolation::RepeatableRead));
    let at_snapshot_isolation = check(&history.build(), Isolation::RepeatableRead);
    assert_eq!(at_snapshot_isolation.validity, Validity::Valid);
    assert_eq!(at_snapshot_isolation.anomalies[0].kind, "G2-item");
    assert_eq!(
        check(&history.build(), Isolation::Serializable).validity,
        Validity::Invalid
    );
}

/// Lost update: two transactions read x empty and both append to it. Without a later read
/// nothing orders the appends, so only the lost update shows; with one, also a G-single.
#[test]
fn two_appends_after_the_same_read_are_a_lost_update() {
    let mut history = Builder::default();
    history
        .txn(0, &[read(1, &[]), append(1, 1)])
        .txn(1, &[read(1, &[]), append(1, 2)])
        .ok_txn(0)
        .ok_txn(1);
    let found = report(&history);
    assert_eq!(kinds(&found), ["lost-update"]);
    assert_eq!(
        found.anomalies[0].description,
        "T0, T1 all read key 1 empty and then appended to it"
    );
    assert_eq!(found.anomalies[0].key, Some(1));
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
    history.committed(2, &[read(1, &[1, 2])]);
    assert_eq!(kinds(&report(&history)), ["G-single", "lost-update"]);
}

/// Internal: a read after the transaction's own append that does not end with it, and a read
/// that shows an own append before it was made.
#[test]
fn reads_inconsistent_with_own_appends_are_internal() {
    let mut history = Builder::default();
    history.committed(0, &[append(1, 5), read(1, &[])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["internal"]);
    assert_eq!(
        found.anomalies[0].description,
        "T0 appended [5] to key 1, then read it as [], which does not end with them"
    );
    assert_eq!(valid_at(&history), []);
    let mut early = Builder::default();
    early.committed(0, &[read(1, &[5]), append(1, 5)]);
    assert_eq!(kinds(&report(&early)), ["internal"]);
    // Reading the committed list followed by its own appends is fine, also when another
    // transaction's append committed in between (a fresh read at READ COMMITTED).
    let mut fine = Builder::default();
    fine.committed(1, &[append(1, 1)]).committed(
        0,
        &[
            read(1, &[1]),
            append(1, 5),
            read(1, &[1, 5]),
            append(1, 6),
            read(1, &[1, 5, 6]),
        ],
    );
    assert!(report(&fine).counts.is_empty(), "{:#?}", report(&fine));
}

/// Incompatible order: two reads of one key of which neither is a prefix of the other.
#[test]
fn diverging_reads_are_an_incompatible_order() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .committed(0, &[append(1, 2)])
        .committed(3, &[append(1, 3)])
        .committed(1, &[read(1, &[1, 2])])
        .committed(2, &[read(1, &[1, 3])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["incompatible-order"]);
    assert_eq!(
        found.anomalies[0].description,
        "T8 read key 1 as [1 3], which is not a prefix of [1 2] read by T6"
    );
    assert_eq!(valid_at(&history), []);
}

/// Duplicate append: one value appended by two transactions, or shown twice by one read. The
/// key is left out of the dependency graph, the rest is still checked.
#[test]
fn a_value_appended_twice_is_a_duplicate_append() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .committed(1, &[append(1, 1)])
        .committed(2, &[read(1, &[1])])
        .committed(0, &[append(2, 7)])
        .committed(1, &[read(2, &[7, 7])])
        .txn(0, &[append(3, 1)])
        .fail(0)
        .committed(2, &[read(3, &[1])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["duplicate-append", "G1a"]);
    let duplicates: Vec<&str> = found
        .anomalies
        .iter()
        .filter(|anomaly| anomaly.kind == "duplicate-append")
        .map(|anomaly| anomaly.description.as_str())
        .collect();
    assert_eq!(
        duplicates,
        [
            "T0 and T2 both appended 1 to key 1",
            "T8 read key 2 as [7 7]: 7 appears twice"
        ]
    );
    assert_eq!(
        found.graph.ww_edges + found.graph.wr_edges + found.graph.rw_edges,
        0
    );
    assert!(
        found.notes[0].starts_with("2 keys with duplicated values"),
        "{:?}",
        found.notes
    );
}

/// A value nobody appended is a garbage read, at every level.
#[test]
fn a_value_nobody_appended_is_a_garbage_read() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .committed(1, &[read(1, &[1, 9])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["garbage-read"]);
    assert_eq!(valid_at(&history), []);
}

/// A stale read: T2 begins after T0's append completed but reads the key empty. Serializable
/// (T2 before T0), not strictly serializable.
#[test]
fn a_stale_read_is_g_single_realtime() {
    let mut history = Builder::default();
    history
        .committed(0, &[append(1, 1)])
        .committed(1, &[read(1, &[])])
        .committed(2, &[read(1, &[1])]);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G-single-realtime"]);
    assert_eq!(found.anomalies[0].description, "T0 -rt-> T2 -rw(k1)-> T0");
    assert_eq!(found.anomalies[0].key, Some(1));
    assert_eq!(valid_at(&history), up_to(Isolation::Serializable));
}

/// An `info` transaction whose append a read observed committed: it joins the graph and its
/// cycles. One never observed adds no node and no edge.
#[test]
fn info_transactions_count_only_when_observed() {
    let mut history = Builder::default();
    history
        .txn(0, &[append(1, 1), append(2, 1)])
        .txn(1, &[read(1, &[1]), read(2, &[])])
        .ok_txn(1)
        .info(0)
        .committed(2, &[read(2, &[1])])
        .txn(3, &[append(3, 9)])
        .info(3)
        .committed(4, &[read(3, &[])]);
    let found = report(&history);
    assert_eq!(
        found.txns,
        TxnCounts {
            ok: 3,
            failed: 0,
            info: 2,
            info_observed: 1
        }
    );
    assert_eq!(kinds(&found), ["G-single"]);
    assert_eq!(found.anomalies[0].description, "T0 -wr(k1)-> T1 -rw(k2)-> T0");
    assert_eq!(found.graph.nodes, 4, "T0 and the three ok transactions");
    assert_eq!(found.graph.rw_edges, 1, "nothing from the read of key 3 to T7");
    assert_eq!(
        found.graph.realtime_edges, 2,
        "T1 -> T4 -> T11; none to or from the info ones"
    );
}

/// An `ok` transaction without its read results, or with something else than micro-ops,
/// does not fit the model: the verdict is unknown.
#[test]
fn an_ok_txn_without_read_results_is_unknown() {
    let mut history = Builder::default();
    history.txn(0, &[read(1, &[])]).ok(0);
    let verdict = check(&history.build(), Isolation::ReadCommitted);
    assert_eq!(verdict.validity, Validity::Unknown);
    assert_eq!(verdict.notes, ["op 1: an ok txn without read results"]);
    let checker = ListAppendChecker {
        level: Isolation::Serializable,
    };
    assert_eq!(checker.check(&history.build()).validity, Validity::Unknown);
    assert_eq!(checker.name(), CHECKER_NAME);
}

/// One component of 20,000 transactions: T(i) reads key i + 1 empty and appends to key i,
/// all concurrently, so each anti-depends on the next, around the ring. Found, classified
/// (adjacent rw edges: G2-item) and described briefly.
#[test]
fn a_cycle_through_a_huge_component_is_found_and_described_briefly() {
    let ring = 20_000u64;
    let mut history = Builder::default();
    for process in 0..ring {
        history.txn(process, &[read((process + 1) % ring, &[]), append(process, 1)]);
    }
    for process in 0..ring {
        history.ok_txn(process);
    }
    let final_reads: Vec<MicroOp> = (0..ring).map(|key| read(key, &[1])).collect();
    history.committed(ring, &final_reads);
    let found = report(&history);
    assert_eq!(kinds(&found), ["G2-item"]);
    assert_eq!(found.graph.ww_wr_rw_components, 1);
    let description = &found.anomalies[0].description;
    assert!(
        description.starts_with("T0 -rw(k1)-> T1 -rw(k2)-> T2")
            && description.ends_with(" -rw(k24)-> ... (19976 more edges) ... T0"),
        "{description}"
    );
    assert_eq!(found.anomalies[0].ops.len(), 2 * 24);
}

/// Tarjan without recursion: a path of 300,000 nodes closed into one cycle is one component.
#[test]
fn components_of_a_long_cycle_need_no_recursion() {
    let count = 300_000u32;
    let components = strongly_connected(count as usize, |node, out| out.push((node + 1) % count));
    assert_eq!(components.members.len(), 1);
    assert_eq!(components.members[0].len(), count as usize);
    let chain = strongly_connected(count as usize, |node, out| {
        if node + 1 < count {
            out.push(node + 1);
        }
    });
    assert!(chain.members.is_empty());
    // Two cycles joined by one edge are two components.
    let edges = [(0, 1), (1, 0), (1, 2), (2, 3), (3, 2)];
    let joined = strongly_connected(4, |node, out| {
        out.extend(edges.iter().filter(|(from, _)| *from == node).map(|(_, to)| *to));
    });
    assert_eq!(joined.members.len(), 2);
    assert_ne!(joined.of[0], joined.of[2]);
}

/// The breadth-first search finds the fewest edges, and stops when the budget runs out.
#[test]
fn shortest_paths_take_the_fewest_edges_within_budget() {
    // 0 -> 1 -> 2 -> 3 and 0 -> 3 directly (edge ids are positions).
    let edges = [(0u64, 1u64), (1, 2), (2, 3), (0, 3)];
    let successors = |state: u64, out: &mut Vec<(u64, usize)>| {
        for (id, (from, to)) in edges.iter().enumerate() {
            if *from == state {
                out.push((*to, id));
            }
        }
    };
    let mut budget = Budget::unlimited();
    assert_eq!(
        shortest_path(0, |state| state == 3, successors, &mut budget),
        Some(vec![3])
    );
    assert_eq!(
        shortest_path(1, |state| state == 3, successors, &mut budget),
        Some(vec![1, 2])
    );
    assert_eq!(
        shortest_path(3, |state| state == 0, successors, &mut budget),
        None
    );
    let mut tiny = Budget::new(1);
    assert_eq!(shortest_path(1, |state| state == 3, successors, &mut tiny), None);
    assert!(tiny.exhausted);
}

/// How a generated transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    Fail,
    /// Took effect, but the client learned nothing.
    InfoApplied,
    /// Never took effect, and the client learned nothing.
    InfoLost,
}

/// How the simulated database runs transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// All micro-ops and the commit in one step between invocation and completion: strictly
    /// serializable.
    Atomic,
    /// Reads at the snapshot of the transaction's start, appends buffered and committed at
    /// completion unless another transaction committed an append to one of its keys after
    /// its start (first committer wins).
    SnapshotIsolation,
    /// Every read sees what is committed at that moment, appends buffered and committed at
    /// completion, no conflict check.
    ReadCommitted,
}

/// What a generated execution looks like.
#[derive(Debug, Clone, Copy)]
struct Workload {
    engine: Engine,
    txns: usize,
    processes: u64,
    /// Keys in use at once; a key is retired after `appends_per_key` appends (as Elle's
    /// generator does, so lists stay short).
    active_keys: u64,
    appends_per_key: u64,
    max_micro_ops: usize,
    /// Whether transactions may fail or end unknown.
    faults: bool,
}

/// A transaction the simulation is running.
#[derive(Debug, Clone)]
struct Running {
    planned: Vec<MicroOp>,
    /// The micro-ops executed so far, reads with their results.
    done: Vec<MicroOp>,
    /// Own appends not yet committed, by key.
    buffer: std::collections::HashMap<u64, Vec<u64>>,
    start_ts: u64,
    fate: Fate,
    committed: bool,
}

/// A history of a simulated database: clients (one transaction outstanding each) take random
/// steps; every read returns exactly what the engine shows it, own buffered appends last.
fn simulated_history(seed: u64, workload: Workload) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops: Vec<Op> = Vec::new();
    let mut record = |process: u64, op_type: OpType, micro_ops: Vec<MicroOp>| {
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            time_ns: index,
            process: Process::Client(process),
            op_type,
            f: F::Txn,
            value: OpValue::Txn(micro_ops),
            error: None,
        });
    };
    // Committed values of each key with their commit timestamps, oldest first.
    let mut lists: std::collections::HashMap<u64, Vec<(u64, u64)>> = std::collections::HashMap::new();
    let mut now = 0u64;
    let mut active: Vec<(u64, u64)> = (0..workload.active_keys).map(|key| (key, 0)).collect();
    let mut next_key = workload.active_keys;
    let mut next_value = 1u64;
    let mut running: Vec<Option<Running>> = vec![None; workload.processes as usize];
    // A client whose request hangs goes on as a new process, as in Jepsen.
    let mut process_of: Vec<u64> = (0..workload.processes).collect();
    let mut invoked = 0;
    loop {
        if invoked == workload.txns && running.iter().all(Option::is_none) {
            break;
        }
        let slot = rng.random_range(0..workload.processes) as usize;
        let process = process_of[slot];
        let Some(mut txn) = running[slot].take() else {
            if invoked == workload.txns {
                continue;
            }
            invoked += 1;
            let count = rng.random_range(1..=workload.max_micro_ops);
            let planned: Vec<MicroOp> = (0..count)
                .map(|_| {
                    let position = rng.random_range(0..active.len());
                    let key = active[position].0;
                    if rng.random_bool(0.5) {
                        return MicroOp::Read { key, values: None };
                    }
                    active[position].1 += 1;
                    if active[position].1 >= workload.appends_per_key {
                        active[position] = (next_key, 0);
                        next_key += 1;
                    }
                    next_value += 1;
                    MicroOp::Append {
                        key,
                        value: next_value,
                    }
                })
                .collect();
            let fate = match (workload.faults, rng.random_range(0..10)) {
                (true, 0) => Fate::Fail,
                (true, 1) => Fate::InfoApplied,
                (true, 2) => Fate::InfoLost,
                _ => Fate::Ok,
            };
            record(process, OpType::Invoke, planned.clone());
            running[slot] = Some(Running {
                planned,
                done: Vec::new(),
                buffer: std::collections::HashMap::new(),
                start_ts: now,
                fate,
                committed: false,
            });
            continue;
        };
        if txn.done.len() < txn.planned.len() {
            let steps = if workload.engine == Engine::Atomic {
                txn.planned.len()
            } else {
                1
            };
            for micro_op in txn.planned[txn.done.len()..][..steps].iter().cloned() {
                let executed = match micro_op {
                    MicroOp::Append { key, value } => {
                        txn.buffer.entry(key).or_default().push(value);
                        micro_op
                    }
                    MicroOp::Read { key, .. } => {
                        let visible_ts = match workload.engine {
                            Engine::SnapshotIsolation => txn.start_ts,
                            Engine::Atomic | Engine::ReadCommitted => u64::MAX,
                        };
                        let mut values: Vec<u64> = lists
                            .get(&key)
                            .map(|list| {
                                list.iter()
                                    .take_while(|(_, ts)| *ts <= visible_ts)
                                    .map(|(value, _)| *value)
                                    .collect()
                            })
                            .unwrap_or_default();
                        values.extend(txn.buffer.get(&key).into_iter().flatten());
                        MicroOp::Read {
                            key,
                            values: Some(values),
                        }
                    }
                };
                txn.done.push(executed);
            }
            if workload.engine == Engine::Atomic {
                commit(workload.engine, &mut txn, &mut lists, &mut now);
            }
            running[slot] = Some(txn);
            continue;
        }
        if workload.engine != Engine::Atomic {
            commit(workload.engine, &mut txn, &mut lists, &mut now);
        }
        let sent = txn.planned;
        match txn.fate {
            Fate::Ok if txn.committed => record(process, OpType::Ok, txn.done),
            Fate::Ok | Fate::Fail => record(process, OpType::Fail, sent),
            Fate::InfoApplied => record(process, OpType::Info, sent),
            // Half never complete.
            Fate::InfoLost if rng.random_bool(0.5) => record(process, OpType::Info, sent),
            Fate::InfoLost => process_of[slot] += workload.processes,
        }
    }
    History::new(ops)
}

/// Commits `txn`'s buffered appends at the next timestamp, unless its fate is not to, or
/// (snapshot isolation) another transaction committed to one of its keys since it started.
fn commit(
    engine: Engine,
    txn: &mut Running,
    lists: &mut std::collections::HashMap<u64, Vec<(u64, u64)>>,
    now: &mut u64,
) {
    let wants_commit = matches!(txn.fate, Fate::Ok | Fate::InfoApplied);
    let conflict = engine == Engine::SnapshotIsolation
        && txn.buffer.keys().any(|key| {
            lists
                .get(key)
                .and_then(|list| list.last())
                .is_some_and(|(_, ts)| *ts > txn.start_ts)
        });
    if !wants_commit || conflict {
        return;
    }
    *now += 1;
    for (key, values) in &txn.buffer {
        lists
            .entry(*key)
            .or_default()
            .extend(values.iter().map(|value| (*value, *now)));
    }
    txn.committed = true;
}

/// 100,000 transactions of up to 4 micro-ops over 100 keys at a time, 10 clients: a valid
/// strictly serializable history (about 0.3 s to check in a release build).
#[test]
fn a_large_serializable_history_is_valid() {
    let history = simulated_history(
        7,
        Workload {
            engine: Engine::Atomic,
            txns: 100_000,
            processes: 10,
            active_keys: 100,
            appends_per_key: 32,
            max_micro_ops: 4,
            faults: false,
        },
    );
    let found = analyze(&history).expect("fits the model");
    assert!(found.counts.is_empty(), "{:?}", found.anomalies);
    assert_eq!(found.txns.ok, 100_000);
    assert!(
        found.graph.ww_edges > 10_000 && found.graph.rw_edges > 10_000,
        "{:?}",
        found.graph
    );
    assert_eq!(
        found.verdict(Isolation::StrictSerializable).validity,
        Validity::Valid
    );
}

/// Contended workloads (4 keys, 6 clients) on the weaker engines: each is valid at its own
/// level and shows anomalies that level allows, which the next level forbids.
#[test]
fn weaker_engines_show_the_anomalies_their_level_allows() {
    let contended = |engine: Engine| Workload {
        engine,
        txns: 3_000,
        processes: 6,
        active_keys: 4,
        appends_per_key: 64,
        max_micro_ops: 4,
        faults: true,
    };
    let read_committed = analyze(&simulated_history(3, contended(Engine::ReadCommitted))).expect("fits");
    assert_eq!(
        read_committed.verdict(Isolation::ReadCommitted).validity,
        Validity::Valid
    );
    assert_eq!(
        read_committed.verdict(Isolation::RepeatableRead).validity,
        Validity::Invalid
    );
    assert!(
        read_committed.has(AnomalyKind::GSingle),
        "{:?}",
        read_committed.kinds()
    );
    assert!(
        read_committed.has(AnomalyKind::LostUpdate),
        "{:?}",
        read_committed.kinds()
    );
    let snapshot = analyze(&simulated_history(3, contended(Engine::SnapshotIsolation))).expect("fits");
    assert_eq!(
        snapshot.verdict(Isolation::RepeatableRead).validity,
        Validity::Valid
    );
    assert_eq!(
        snapshot.verdict(Isolation::Serializable).validity,
        Validity::Invalid
    );
    // Write skew, also closed through real-time order; never a cycle with fewer than two
    // adjacent anti-dependencies (what snapshot isolation forbids), with real time or not.
    assert_eq!(
        snapshot.kinds(),
        [AnomalyKind::G2Item, AnomalyKind::G2ItemRealtime],
        "{:?}",
        snapshot.anomalies
    );
}

proptest! {
    /// Any strictly serializable execution, with failed and unknown transactions among the
    /// committed ones, is valid at every level and shows no anomaly at all.
    #[test]
    fn strictly_serializable_executions_are_valid(
        seed in any::<u64>(),
        txns in 1usize..60,
        processes in 1u64..6,
        active_keys in 1u64..5,
    ) {
        let history = simulated_history(seed, Workload {
            engine: Engine::Atomic,
            txns,
            processes,
            active_keys,
            appends_per_key: 6,
            max_micro_ops: 5,
            faults: true,
        });
        let found = analyze(&history).expect("fits the model");
        prop_assert!(found.counts.is_empty(), "{:#?}\n{}", found.anomalies, crate::edn::history_to_edn(&history));
        prop_assert_eq!(check(&history, Isolation::StrictSerializable).validity, Validity::Valid);
    }

    /// Executions of the snapshot-isolation and read-committed engines are valid at
    /// REPEATABLE READ and READ COMMITTED respectively, whatever they interleave.
    #[test]
    fn weaker_engines_are_valid_at_their_level(
        seed in any::<u64>(),
        txns in 1usize..60,
        processes in 1u64..6,
        active_keys in 1u64..5,
        snapshot in any::<bool>(),
    ) {
        let (engine, level) = if snapshot {
            (Engine::SnapshotIsolation, Isolation::RepeatableRead)
        } else {
            (Engine::ReadCommitted, Isolation::ReadCommitted)
        };
        let history = simulated_history(seed, Workload {
            engine,
            txns,
            processes,
            active_keys,
            appends_per_key: 6,
            max_micro_ops: 5,
            faults: true,
        });
        let verdict = check(&history, level);
        prop_assert_eq!(verdict.validity, Validity::Valid, "{:#?}\n{}", verdict, crate::edn::history_to_edn(&history));
    }
}
