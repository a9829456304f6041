//! The rw-register checker: hand-written histories per anomaly kind, histories whose version
//! order cannot be inferred (no false anomaly), and generated executions of simulated
//! engines (each valid at its level).

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rw_register::{analyze, check};
use super::*;
use crate::checker::fixtures::{r, w, Builder};
use crate::history::{History, Op, OpType, OpValue, Process, RwMicroOp, F};

fn report(history: &Builder, level: Isolation) -> Report {
    analyze(&history.build(), level).expect("the history fits the rw-register model")
}

fn kinds(report: &Report) -> Vec<&'static str> {
    report.kinds().into_iter().map(AnomalyKind::name).collect()
}

/// The levels at which `history` is valid (each analysed with its own level's rules).
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

/// Transactions one after another, each reading what the ones before wrote: no anomaly at
/// any level, and the verdict names the rw-register checker.
#[test]
fn a_serial_history_is_valid_at_every_level() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[r(1, None), w(1, 1), w(2, 2)])
        .rw_committed(1, &[r(1, Some(1)), r(2, Some(2)), w(1, 3)])
        .rw_committed(0, &[w(2, 4), r(2, Some(4)), r(3, None)])
        .rw_committed(1, &[r(1, Some(3)), w(3, 5), r(3, Some(5))])
        .rw_committed(2, &[r(1, Some(3)), r(2, Some(4)), r(3, Some(5))]);
    for level in Isolation::ALL {
        let found = report(&history, level);
        assert!(found.counts.is_empty(), "{level}: {:#?}", found.anomalies);
        assert_eq!(found.graph.nodes, 5);
    }
    assert_eq!(valid_at(&history), Isolation::ALL);
    let verdict = check(&history.build(), Isolation::StrictSerializable);
    assert_eq!(verdict.checker, "rw-register");
    assert_eq!(verdict.ops_checked, 5);
    let strict = report(&history, Isolation::StrictSerializable);
    assert!(strict.graph.ww_edges > 0 && strict.graph.wr_edges > 0 && strict.graph.rw_edges > 0);
}

/// G0: T0 and T1 both write x and y, concurrently. T0 read x as nil before writing it and
/// T1 read y as nil: under first-committer-wins each installed the first version of that
/// key, so T0 precedes T1 on x and T1 precedes T0 on y — a cycle of write dependencies.
/// Read committed does not guarantee the "next version" rule, so there nothing orders the
/// writes, and the anti-dependencies of the nil reads show only write skew (allowed).
#[test]
fn a_write_cycle_is_g0() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[r(1, None), w(1, 1), w(2, 2)])
        .rw_txn(1, &[r(2, None), w(2, 3), w(1, 4)])
        .ok_rw_txn(0)
        .ok_rw_txn(1);
    let found = report(&history, Isolation::RepeatableRead);
    assert_eq!(kinds(&found), ["G0"]);
    assert_eq!(found.anomalies[0].description, "T0 -ww(k1)-> T1 -ww(k2)-> T0");
    assert_eq!(kinds(&report(&history, Isolation::ReadCommitted)), ["G2-item"]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// G1a: a committed read of a value whose transaction failed.
#[test]
fn reading_a_failed_write_is_g1a() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[w(1, 1)])
        .rw_committed(1, &[r(1, Some(1))])
        .fail(0);
    let found = report(&history, Isolation::ReadCommitted);
    assert_eq!(kinds(&found), ["G1a"]);
    assert_eq!(
        found.anomalies[0].description,
        "T1 read key 1 as 1, written by T0, which failed"
    );
    assert_eq!(found.anomalies[0].ops, [1, 2, 0, 3]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// G1b: a committed read of a value its writer overwrote in the same transaction.
#[test]
fn reading_an_intermediate_write_is_g1b() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[w(1, 1), w(1, 2)])
        .rw_committed(1, &[r(1, Some(1))])
        .ok_rw_txn(0);
    let found = report(&history, Isolation::ReadCommitted);
    assert_eq!(kinds(&found), ["G1b"]);
    assert_eq!(
        found.anomalies[0].description,
        "T1 read key 1 as 1, an intermediate write of T0, which later wrote 2"
    );
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// G1c: two transactions each read the other's write.
#[test]
fn reading_each_other_is_g1c() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[w(1, 1), r(2, Some(2))])
        .rw_txn(1, &[w(2, 2), r(1, Some(1))])
        .ok_rw_txn(0)
        .ok_rw_txn(1);
    let found = report(&history, Isolation::ReadCommitted);
    assert_eq!(kinds(&found), ["G1c"]);
    assert_eq!(found.anomalies[0].description, "T0 -wr(k1)-> T1 -wr(k2)-> T0");
    assert_eq!(valid_at(&history), up_to(Isolation::ReadUncommitted));
}

/// Read skew (G-single): T1 moves x and y from the versions T0 wrote to new ones (reading
/// each first, so writes follow reads orders them); T2 sees the old x and the new y.
#[test]
fn read_skew_is_g_single() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1), w(2, 2)])
        .rw_txn(2, &[r(1, Some(1)), r(2, Some(4))])
        .rw_committed(1, &[r(1, Some(1)), r(2, Some(2)), w(1, 3), w(2, 4)])
        .ok_rw_txn(2);
    let found = report(&history, Isolation::ReadCommitted);
    assert_eq!(kinds(&found), ["G-single"]);
    assert_eq!(found.anomalies[0].description, "T2 -rw(k1)-> T3 -wr(k2)-> T2");
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
    let verdict = check(&history.build(), Isolation::ReadCommitted);
    assert!(
        verdict
            .notes
            .iter()
            .any(|note| note.starts_with("allowed at read-committed") && note.contains("G-single (1)")),
        "{:?}",
        verdict.notes
    );
}

/// Write skew (G2-item): T1 and T2 read x and y as T0 left them; T1 writes x, T2 writes y.
/// Snapshot isolation allows it.
#[test]
fn write_skew_is_g2_item_allowed_at_repeatable_read() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1), w(2, 2)])
        .rw_txn(1, &[r(1, Some(1)), r(2, Some(2)), w(1, 3)])
        .rw_txn(2, &[r(1, Some(1)), r(2, Some(2)), w(2, 4)])
        .ok_rw_txn(1)
        .ok_rw_txn(2);
    let found = report(&history, Isolation::RepeatableRead);
    assert_eq!(kinds(&found), ["G2-item"]);
    assert_eq!(found.anomalies[0].description, "T2 -rw(k2)-> T3 -rw(k1)-> T2");
    assert_eq!(valid_at(&history), up_to(Isolation::RepeatableRead));
}

/// Lost update: T1 and T2 both read x as T0 wrote it, then both write x.
#[test]
fn two_writes_after_the_same_read_are_a_lost_update() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1)])
        .rw_txn(1, &[r(1, Some(1)), w(1, 2)])
        .rw_txn(2, &[r(1, Some(1)), w(1, 3)])
        .ok_rw_txn(1)
        .ok_rw_txn(2);
    let found = report(&history, Isolation::RepeatableRead);
    assert!(found.has(AnomalyKind::LostUpdate), "{:?}", kinds(&found));
    let lost = found
        .anomalies
        .iter()
        .find(|anomaly| anomaly.kind == "lost-update")
        .expect("listed");
    assert_eq!(lost.description, "T2, T3 all read key 1 as 1 and then wrote it");
    assert!(
        found.anomalies.iter().all(|anomaly| anomaly.kind != "G0"),
        "neither claim to come right after 1 is used: {:?}",
        found.anomalies
    );
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// A read after the transaction's own write must return it.
#[test]
fn reads_inconsistent_with_own_writes_are_internal() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1)])
        .rw_committed(1, &[w(1, 2), r(1, Some(1))])
        .rw_committed(2, &[r(2, Some(3)), w(2, 3)]);
    let found = report(&history, Isolation::ReadUncommitted);
    assert_eq!(found.counts.get(&AnomalyKind::Internal), Some(&2));
    assert_eq!(
        found.anomalies[0].description,
        "T2 wrote 2 to key 1, then read it as 1"
    );
    assert_eq!(
        found.anomalies[1].description,
        "T4 read key 2 as 3, which it writes only later"
    );
    assert_eq!(valid_at(&history), []);
}

/// A value no transaction wrote.
#[test]
fn a_value_nobody_wrote_is_a_garbage_read() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1)])
        .rw_committed(1, &[r(1, Some(9))]);
    let found = report(&history, Isolation::ReadUncommitted);
    assert_eq!(kinds(&found), ["garbage-read"]);
    assert_eq!(valid_at(&history), []);
}

/// Two reads of one key in one transaction returning different committed versions: read
/// committed allows it (each read at a fresh timestamp), repeatable read does not.
#[test]
fn a_non_repeatable_read_is_g_single() {
    let mut history = Builder::default();
    history
        .rw_committed(0, &[w(1, 1)])
        .rw_txn(1, &[r(1, Some(1)), r(1, Some(2))])
        .rw_committed(2, &[w(1, 2)])
        .ok_rw_txn(1);
    let found = report(&history, Isolation::ReadCommitted);
    assert_eq!(kinds(&found), ["G-single"]);
    assert!(
        found.anomalies[0]
            .description
            .starts_with("T2 read key 1 as 1 and then as 2 (a non-repeatable read"),
        "{}",
        found.anomalies[0].description
    );
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// A stale read under strict serializability: T1 read x as nil after T0's write of x had
/// completed. Real time orders 1 before nil, the initial version orders nil before 1: the
/// version order is cyclic, and the read's anti-dependency closes a realtime cycle. Plain
/// serializability allows it (T1 first).
#[test]
fn a_stale_read_is_cyclic_versions_under_strict_serializability() {
    let mut history = Builder::default();
    history.rw_committed(0, &[w(1, 1)]).rw_committed(1, &[r(1, None)]);
    let found = report(&history, Isolation::StrictSerializable);
    assert_eq!(kinds(&found), ["cyclic-versions", "G-single-realtime"]);
    assert!(
        found.anomalies[0]
            .description
            .starts_with("key 1: with \"real-time order per key\" the version order is cyclic:"),
        "{}",
        found.anomalies[0].description
    );
    assert_eq!(valid_at(&history), up_to(Isolation::Serializable));
}

/// Concurrent blind writes whose order nothing shows, read by concurrent readers: valid
/// (serially T0, T3, T1, T2), and no level's rules may order the writes.
#[test]
fn unordered_blind_writes_give_no_false_anomaly() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[w(1, 1), w(2, 1)])
        .rw_txn(1, &[w(1, 2), w(2, 2)])
        .rw_txn(2, &[r(1, Some(2))])
        .rw_txn(3, &[r(2, Some(1))])
        .ok_rw_txn(0)
        .ok_rw_txn(1)
        .ok_rw_txn(2)
        .ok_rw_txn(3);
    for level in Isolation::ALL {
        let found = report(&history, level);
        assert!(found.counts.is_empty(), "{level}: {:#?}", found.anomalies);
        assert_eq!(
            found.graph.ww_edges, 0,
            "{level}: nothing orders the blind writes"
        );
    }
    assert_eq!(valid_at(&history), Isolation::ALL);
}

/// Read committed lets T2's blind write of x commit between T1's read of x (as nil) and
/// T1's own write, so x's versions run nil, 2, 3: valid there (T1's anti-dependency on T2
/// and T2's write T1 read close only a `G-single`, which read committed allows). Taking
/// first-committer-wins for granted would put T1's 3 right after nil, so before 2, and call
/// it a `G1c` — it is used only from repeatable read up, where this history is invalid.
#[test]
fn a_blind_write_between_a_read_and_a_write_is_valid_at_read_committed() {
    let mut history = Builder::default();
    history
        .rw_txn(1, &[r(1, None), r(2, Some(5)), w(1, 3)])
        .rw_committed(2, &[w(1, 2), w(2, 5)])
        .ok_rw_txn(1);
    assert_eq!(kinds(&report(&history, Isolation::ReadCommitted)), ["G-single"]);
    assert_eq!(kinds(&report(&history, Isolation::RepeatableRead)), ["G1c"]);
    assert_eq!(valid_at(&history), up_to(Isolation::ReadCommitted));
}

/// Under read uncommitted a read may see a provisional value: an `info` transaction whose
/// value was read is not taken as committed there (it may have aborted), so it gets no
/// edges; from read committed up it is.
#[test]
fn info_transactions_count_once_observed_from_read_committed() {
    let mut history = Builder::default();
    history
        .rw_txn(0, &[w(1, 1)])
        .rw_committed(1, &[r(1, Some(1))])
        .info(0)
        .rw_txn(2, &[w(1, 2)])
        .info(2);
    let read_uncommitted = report(&history, Isolation::ReadUncommitted);
    assert_eq!(
        (read_uncommitted.txns.info, read_uncommitted.txns.info_observed),
        (2, 0)
    );
    assert_eq!(read_uncommitted.graph.wr_edges, 0);
    let read_committed = report(&history, Isolation::ReadCommitted);
    assert_eq!(
        (read_committed.txns.info, read_committed.txns.info_observed),
        (2, 1)
    );
    assert_eq!(read_committed.graph.wr_edges, 1);
    assert!(read_committed.counts.is_empty());
}

/// Histories the model does not fit are unknown, not invalid.
#[test]
fn malformed_histories_are_unknown() {
    let mut duplicate = Builder::default();
    duplicate.rw_committed(0, &[w(1, 1)]).rw_committed(1, &[w(1, 1)]);
    let verdict = check(&duplicate.build(), Isolation::ReadCommitted);
    assert_eq!(verdict.validity, Validity::Unknown);
    assert!(verdict.notes[0].contains("written twice"), "{:?}", verdict.notes);
    let unread = History::new(vec![
        txn_op(0, OpType::Invoke, vec![RwMicroOp::Read { key: 1, value: None }]),
        txn_op(1, OpType::Ok, vec![RwMicroOp::Read { key: 1, value: None }]),
    ]);
    assert_eq!(
        check(&unread, Isolation::ReadCommitted).validity,
        Validity::Unknown
    );
}

fn txn_op(index: u64, op_type: OpType, micro_ops: Vec<RwMicroOp>) -> Op {
    Op {
        index,
        time_ns: index,
        process: Process::Client(0),
        op_type,
        f: F::RwTxn,
        value: OpValue::RwTxn(micro_ops),
        error: None,
    }
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
    /// All micro-ops and the commit in one step between invocation and completion.
    Atomic,
    /// Reads at the start's snapshot; writes buffered and committed at completion unless
    /// another transaction committed a write to one of its keys since (first committer
    /// wins).
    SnapshotIsolation,
    /// Each read sees what is committed then; no conflict check.
    ReadCommitted,
    /// As read committed, but a read may see another running transaction's buffered write
    /// (which may never commit).
    ReadUncommitted,
}

/// What a generated execution looks like.
#[derive(Debug, Clone, Copy)]
struct Workload {
    engine: Engine,
    txns: usize,
    processes: u64,
    /// Keys in use at once; a key is retired after `writes_per_key` writes (as Elle's
    /// generator does, so that reads of `nil` and short orders stay common).
    active_keys: u64,
    writes_per_key: u64,
    max_micro_ops: usize,
    faults: bool,
}

#[derive(Debug, Clone)]
struct Running {
    planned: Vec<RwMicroOp>,
    done: Vec<RwMicroOp>,
    buffer: std::collections::HashMap<u64, u64>,
    start_ts: u64,
    fate: Fate,
    committed: bool,
}

/// A history of a simulated database; every read returns what the engine shows it.
fn simulated_history(seed: u64, workload: Workload) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops: Vec<Op> = Vec::new();
    let mut record = |process: u64, op_type: OpType, micro_ops: Vec<RwMicroOp>| {
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            time_ns: index,
            process: Process::Client(process),
            op_type,
            f: F::RwTxn,
            value: OpValue::RwTxn(micro_ops),
            error: None,
        });
    };
    // Committed versions of each key with their commit timestamps, oldest first.
    let mut registers: std::collections::HashMap<u64, Vec<(u64, u64)>> = std::collections::HashMap::new();
    let mut now = 0u64;
    let mut active: Vec<(u64, u64)> = (0..workload.active_keys).map(|key| (key, 0)).collect();
    let mut next_key = workload.active_keys;
    let mut next_value = 0u64;
    let mut running: Vec<Option<Running>> = vec![None; workload.processes as usize];
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
            let mut planned: Vec<RwMicroOp> = Vec::new();
            while planned.len() < count {
                let position = rng.random_range(0..active.len());
                let key = active[position].0;
                let choice = rng.random_range(0..3);
                if choice == 0 {
                    planned.push(RwMicroOp::Read { key, value: None });
                    continue;
                }
                if choice == 2 {
                    planned.push(RwMicroOp::Read { key, value: None });
                }
                active[position].1 += 1;
                if active[position].1 >= workload.writes_per_key {
                    active[position] = (next_key, 0);
                    next_key += 1;
                }
                next_value += 1;
                planned.push(RwMicroOp::Write {
                    key,
                    value: next_value,
                });
            }
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
            let next: Vec<RwMicroOp> = txn.planned[txn.done.len()..][..steps].to_vec();
            for micro_op in next {
                let executed = match micro_op {
                    RwMicroOp::Write { key, value } => {
                        txn.buffer.insert(key, value);
                        micro_op
                    }
                    RwMicroOp::Read { key, .. } => {
                        let provisional = (workload.engine == Engine::ReadUncommitted
                            && rng.random_bool(0.5))
                        .then(|| {
                            running
                                .iter()
                                .flatten()
                                .find_map(|other| other.buffer.get(&key).copied())
                        })
                        .flatten();
                        let visible_ts = match workload.engine {
                            Engine::SnapshotIsolation => txn.start_ts,
                            _ => u64::MAX,
                        };
                        let committed = registers.get(&key).and_then(|versions| {
                            versions
                                .iter()
                                .take_while(|(_, ts)| *ts <= visible_ts)
                                .last()
                                .map(|(value, _)| *value)
                        });
                        let value = txn.buffer.get(&key).copied().or(provisional).or(committed);
                        RwMicroOp::Read {
                            key,
                            value: Some(value),
                        }
                    }
                };
                txn.done.push(executed);
            }
            if workload.engine == Engine::Atomic {
                commit(workload.engine, &mut txn, &mut registers, &mut now);
            }
            running[slot] = Some(txn);
            continue;
        }
        if workload.engine != Engine::Atomic {
            commit(workload.engine, &mut txn, &mut registers, &mut now);
        }
        let sent: Vec<RwMicroOp> = txn
            .planned
            .iter()
            .map(|micro_op| match micro_op {
                RwMicroOp::Read { key, .. } => RwMicroOp::Read {
                    key: *key,
                    value: None,
                },
                write => *write,
            })
            .collect();
        match txn.fate {
            Fate::Ok if txn.committed => record(process, OpType::Ok, txn.done),
            Fate::Ok | Fate::Fail => record(process, OpType::Fail, sent),
            Fate::InfoApplied => record(process, OpType::Info, sent),
            Fate::InfoLost if rng.random_bool(0.5) => record(process, OpType::Info, sent),
            Fate::InfoLost => process_of[slot] += workload.processes,
        }
    }
    History::new(ops)
}

/// Commits `txn`'s buffered writes at the next timestamp, unless its fate is not to, or
/// (snapshot isolation) another transaction committed to one of its keys since it started.
fn commit(
    engine: Engine,
    txn: &mut Running,
    registers: &mut std::collections::HashMap<u64, Vec<(u64, u64)>>,
    now: &mut u64,
) {
    let wants_commit = matches!(txn.fate, Fate::Ok | Fate::InfoApplied);
    let conflict = engine == Engine::SnapshotIsolation
        && txn.buffer.keys().any(|key| {
            registers
                .get(key)
                .and_then(|versions| versions.last())
                .is_some_and(|(_, ts)| *ts > txn.start_ts)
        });
    if !wants_commit || conflict {
        return;
    }
    *now += 1;
    for (key, value) in &txn.buffer {
        registers.entry(*key).or_default().push((*value, *now));
    }
    txn.committed = true;
}

/// 50,000 transactions over 100 keys at a time, 10 clients, strictly serializable: valid,
/// with the version order inferred far enough to give thousands of `ww` and `rw` edges.
#[test]
fn a_large_serializable_history_is_valid() {
    let history = simulated_history(
        7,
        Workload {
            engine: Engine::Atomic,
            txns: 50_000,
            processes: 10,
            active_keys: 100,
            writes_per_key: 32,
            max_micro_ops: 4,
            faults: false,
        },
    );
    let found = analyze(&history, Isolation::StrictSerializable).expect("fits the model");
    assert!(found.counts.is_empty(), "{:?}", found.anomalies);
    assert_eq!(found.txns.ok, 50_000);
    assert!(
        found.graph.ww_edges > 10_000 && found.graph.rw_edges > 10_000,
        "{:?}",
        found.graph
    );
}

/// Contended workloads (4 keys, 6 clients) on the weaker engines: each valid at its own
/// level, showing anomalies that level allows and the next one forbids.
#[test]
fn weaker_engines_show_the_anomalies_their_level_allows() {
    let contended = |engine: Engine| Workload {
        engine,
        txns: 3_000,
        processes: 6,
        active_keys: 4,
        writes_per_key: 64,
        max_micro_ops: 4,
        faults: true,
    };
    let history = simulated_history(3, contended(Engine::ReadCommitted));
    let read_committed = analyze(&history, Isolation::ReadCommitted).expect("fits");
    assert_eq!(
        read_committed.verdict(Isolation::ReadCommitted).validity,
        Validity::Valid,
        "{:?}",
        read_committed.anomalies
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
    assert_eq!(
        check(&history, Isolation::RepeatableRead).validity,
        Validity::Invalid
    );

    let history = simulated_history(3, contended(Engine::SnapshotIsolation));
    let snapshot = analyze(&history, Isolation::RepeatableRead).expect("fits");
    assert_eq!(
        snapshot.verdict(Isolation::RepeatableRead).validity,
        Validity::Valid,
        "{:?}",
        snapshot.anomalies
    );
    assert!(snapshot.has(AnomalyKind::G2Item), "{:?}", snapshot.kinds());
    assert_eq!(
        check(&history, Isolation::Serializable).validity,
        Validity::Invalid
    );
}

proptest! {
    /// Any strictly serializable execution, with failed and unknown transactions among the
    /// committed ones, shows no anomaly at all, whatever level's rules infer its versions.
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
            writes_per_key: 6,
            max_micro_ops: 5,
            faults: true,
        });
        for level in Isolation::ALL {
            let found = analyze(&history, level).expect("fits the model");
            prop_assert!(found.counts.is_empty(), "{level}: {:#?}\n{}", found.anomalies, crate::edn::history_to_edn(&history));
        }
    }

    /// Executions of the snapshot-isolation, read-committed and read-uncommitted engines
    /// are valid at their levels, whatever they interleave.
    #[test]
    fn weaker_engines_are_valid_at_their_level(
        seed in any::<u64>(),
        txns in 1usize..60,
        processes in 1u64..6,
        active_keys in 1u64..5,
        engine in 0..3,
    ) {
        let (engine, level) = match engine {
            0 => (Engine::SnapshotIsolation, Isolation::RepeatableRead),
            1 => (Engine::ReadCommitted, Isolation::ReadCommitted),
            _ => (Engine::ReadUncommitted, Isolation::ReadUncommitted),
        };
        let history = simulated_history(seed, Workload {
            engine,
            txns,
            processes,
            active_keys,
            writes_per_key: 6,
            max_micro_ops: 5,
            faults: true,
        });
        let verdict = check(&history, level);
        prop_assert_eq!(verdict.validity, Validity::Valid, "{:#?}\n{}", verdict, crate::edn::history_to_edn(&history));
    }
}
