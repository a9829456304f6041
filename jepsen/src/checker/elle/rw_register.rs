//! Elle's rw-register checker, for histories of `:rw-txn` operations made of `[:w k v]` and
//! `[:r k v]` micro-operations, every written value unique per key.
//!
//! With unique values a read names the write it saw, so write-read (`wr`) dependencies are
//! exact. What a register read does not show is the order in which versions were installed,
//! which `ww` and `rw` dependencies need: `versions` infers it per key, using only
//! what the checked level guarantees (writes follow reads from read committed up,
//! first-committer-wins from repeatable read up, real time per key for strict
//! serializable; the initial `nil` first at every level), so a history the level allows is
//! never given a dependency it does not have. The order stays partial: where it is not
//! known no edge is drawn, and an anomaly may be missed — never invented.
//!
//! 1. **Transactions** (`ok`; `info` ones once an `ok` read saw one of their final writes,
//!    from read committed up — under read uncommitted a read may see a provisional value of
//!    a transaction that then aborted, so there only `ok` ones count).
//! 2. **Reads**: a read after the transaction's own write of the key must return it
//!    (`internal`); a value nobody wrote is a `garbage-read`, one of a failed transaction a
//!    `G1a`, one its writer overwrote in the same transaction a `G1b`; otherwise the read
//!    saw a committed version (`nil` included). Two such reads of one key in one transaction
//!    returning different versions are a non-repeatable read: whichever version came first,
//!    the transaction, an anti-dependency and the other version's writer close a cycle with
//!    one `rw` edge, reported as `G-single`. Two committed transactions whose first read of
//!    a key returned the same version and which both wrote it are a `lost-update`.
//! 3. **Version orders** (`versions`); a level's rules contradicting each other on
//!    a key are `cyclic-versions`.
//! 4. **Dependency graph**: `wr` from the writer of each version read to the reader; for
//!    each inferred `a < b`, `ww` from the writer of `a` to the writer of `b` and `rw` from
//!    every reader of `a` to the writer of `b`; plus realtime edges. When `b` is not known
//!    to come right after `a` these stand for a path through the versions between (an `rw`
//!    then `ww` edges), so a cycle keeps its number of anti-dependencies, and two of them
//!    can only look adjacent when they are not: a `G-nonadjacent` may be reported as
//!    `G2-item`, never the other way round.
//! 5. **Cycles** as for list-append (`cycles`).
//!
//! The report is made for one level (the inference rules depend on it): its verdict is
//! sound at that level and at stronger ones. [`check`] analyses and judges at one level.
//!
//! Differences from Elle: two reads of one key in one transaction may differ (read
//! committed reads each at a fresh timestamp; Elle calls that `internal`); the version-order
//! rules are chosen by the level instead of by options; `info` transactions count only once
//! observed; first-committer-wins (rule 4) is ours.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::cycles;
use super::graph::{Edge, EdgeKind, Graph};
use super::txns::{self, Outcome, Txn};
use super::versions::{self, KeyFacts, Rules, Touch, Version};
use super::{AnomalyKind, Findings, Isolation, Model, ModelError, Report, TxnCounts};
use crate::checker::{Checker, Listing, Verdict};
use crate::history::{History, OpValue, RwMicroOp, F};

/// Name of this checker in verdicts.
pub const CHECKER_NAME: &str = "rw-register";

type RwTxn = Txn<RwMicroOp>;

/// The transaction that wrote a value to a key.
#[derive(Debug, Clone, Copy)]
struct Writer {
    txn: u32,
    /// Whether the value is the transaction's final write to the key.
    last: bool,
}

/// A read of a committed version by an `ok` transaction.
#[derive(Debug, Clone, Copy)]
struct Observation {
    txn: u32,
    key: u64,
    version: Version,
}

/// What one `ok` transaction did to one key, as the version rules need it.
#[derive(Debug, Clone, Default)]
struct KeyAccess {
    /// The committed versions it read (before any write of its own), in order.
    reads: Vec<Version>,
    /// Its final write.
    write: Option<u64>,
}

/// Finds every rw-register anomaly in the `:rw-txn` operations of `history` (other
/// operations are ignored), inferring version orders from what `level` guarantees. Fails
/// when the history does not fit the model: broken invoke/complete pairing, an `ok`
/// transaction without read results, a value written twice to one key.
pub fn analyze(history: &History, level: Isolation) -> Result<Report, ModelError> {
    analyze_with(history, level, Listing::Sample)
}

/// [`analyze`], listing as many anomalies of each kind as `listing` says.
pub fn analyze_with(history: &History, level: Isolation, listing: Listing) -> Result<Report, ModelError> {
    let txns = extract(history)?;
    let writers = index_writers(&txns)?;
    let mut findings = Findings::new(listing);
    let committed = committed(&txns, &writers, level);
    let (observations, accesses) = read_observations(&txns, &writers, &committed, &mut findings);
    report_lost_updates(&txns, &accesses, &mut findings);

    let rules = Rules::for_level(level);
    let mut facts: BTreeMap<u64, KeyFacts> = BTreeMap::new();
    for (position, txn) in txns.iter().enumerate() {
        if !committed[position] {
            continue;
        }
        for (key, value) in final_writes(txn) {
            facts.entry(key).or_default().versions.push(value);
        }
    }
    for ((position, key), access) in &accesses {
        let key_facts = facts.entry(*key).or_default();
        if let Some(written) = access.write {
            let distinct: BTreeSet<Version> = access.reads.iter().copied().collect();
            key_facts
                .read_then_wrote
                .extend(distinct.into_iter().map(|read| (read, written)));
            if let Some(first) = access.reads.first() {
                key_facts.first_read_then_wrote.push((*first, written));
            }
        }
        let first = access.reads.first().copied().or(access.write.map(Some));
        let last = access.write.map(Some).or(access.reads.first().copied());
        if let (Some(first), Some(last)) = (first, last) {
            let txn = &txns[*position as usize];
            key_facts.touches.push(Touch {
                invoke_index: txn.invoke_index,
                ok_completion_index: txn.completion_index,
                first,
                last,
            });
        }
    }
    // Committed `info` transactions touch the keys they wrote (their reads are unknown).
    for (position, txn) in txns.iter().enumerate() {
        if committed[position] && txn.outcome == Outcome::Unknown {
            for (key, value) in final_writes(txn) {
                facts.entry(key).or_default().touches.push(Touch {
                    invoke_index: txn.invoke_index,
                    ok_completion_index: None,
                    first: Some(value),
                    last: Some(value),
                });
            }
        }
    }

    let mut readers: HashMap<(u64, Version), Vec<u32>> = HashMap::new();
    let mut edges: Vec<Edge> = Vec::new();
    for observation in &observations {
        let readers_of = readers.entry((observation.key, observation.version)).or_default();
        if readers_of.last() != Some(&observation.txn) {
            readers_of.push(observation.txn);
        }
        if let Some(writer) = observation
            .version
            .and_then(|value| writers.get(&(observation.key, value)))
        {
            edges.push(Edge {
                from: writer.txn,
                to: observation.txn,
                kind: EdgeKind::Wr,
                key: observation.key,
            });
        }
    }
    let mut notes = vec![format!(
        "version orders inferred from what {level} guarantees: {}",
        rules.names().join("; ")
    )];
    let mut version_edges = 0usize;
    for (key, key_facts) in &facts {
        let inferred = versions::infer(key_facts, rules);
        for contradiction in &inferred.contradictions {
            report_contradiction(&txns, &writers, *key, contradiction, &mut findings);
        }
        for rule in &inferred.gave_up {
            notes.push(format!("key {key}: rule \"{rule}\" not applied (too many moves)"));
        }
        version_edges += inferred.edges.len();
        for (earlier, later) in &inferred.edges {
            let Some(later_writer) = later.and_then(|value| writers.get(&(*key, value))) else {
                continue;
            };
            if let Some(earlier_writer) = earlier.and_then(|value| writers.get(&(*key, value))) {
                edges.push(Edge {
                    from: earlier_writer.txn,
                    to: later_writer.txn,
                    kind: EdgeKind::Ww,
                    key: *key,
                });
            }
            for reader in readers.get(&(*key, *earlier)).into_iter().flatten() {
                edges.push(Edge {
                    from: *reader,
                    to: later_writer.txn,
                    kind: EdgeKind::Rw,
                    key: *key,
                });
            }
        }
    }
    notes.push(format!(
        "{version_edges} version-order edges over {} keys",
        facts.len()
    ));

    let graph = Graph::from_txn_edges(&txns, &committed, edges);
    let mut stats = graph.stats();
    cycles::search(&graph, &txns, &mut findings, &mut stats);
    Ok(Report {
        model: Model::RwRegister,
        anomalies: findings.listed,
        counts: findings.counts,
        txns: counts(&txns, &committed),
        graph: stats,
        notes,
    })
}

/// Checks the `:rw-txn` operations of `history` against `level`; `Unknown` when the history
/// does not fit the model.
pub fn check(history: &History, level: Isolation) -> Verdict {
    check_with(history, level, Listing::Sample)
}

/// [`check`], listing as many anomalies of each kind as `listing` says.
pub fn check_with(history: &History, level: Isolation, listing: Listing) -> Verdict {
    match analyze_with(history, level, listing) {
        Ok(report) => report.verdict(level),
        Err(error) => Verdict::unknown(CHECKER_NAME, error.to_string()),
    }
}

/// The rw-register checker at one isolation level, as a [`Checker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwRegisterChecker {
    /// The level the history must satisfy.
    pub level: Isolation,
}

impl Checker for RwRegisterChecker {
    fn name(&self) -> &'static str {
        CHECKER_NAME
    }

    fn check(&self, history: &History) -> Verdict {
        check(history, self.level)
    }
}

/// The `:rw-txn` operations of `history`, in invocation order.
fn extract(history: &History) -> Result<Vec<RwTxn>, ModelError> {
    txns::extract_ops(
        history,
        &F::RwTxn,
        |value| match value {
            OpValue::RwTxn(micro_ops) => Some(micro_ops),
            _ => None,
        },
        |micro_op| matches!(micro_op, RwMicroOp::Read { value: None, .. }),
    )
}

/// Each transaction's final write of each key it wrote.
fn final_writes(txn: &RwTxn) -> BTreeMap<u64, u64> {
    let mut last = BTreeMap::new();
    for micro_op in &txn.micro_ops {
        if let RwMicroOp::Write { key, value } = micro_op {
            last.insert(*key, *value);
        }
    }
    last
}

/// The writer of every written value. Values are unique per key: the workload makes them so,
/// and a read could not name its write otherwise.
fn index_writers(txns: &[RwTxn]) -> Result<HashMap<(u64, u64), Writer>, ModelError> {
    let mut writers: HashMap<(u64, u64), Writer> = HashMap::new();
    for (position, txn) in txns.iter().enumerate() {
        let last = final_writes(txn);
        for micro_op in &txn.micro_ops {
            let RwMicroOp::Write { key, value } = micro_op else {
                continue;
            };
            let writer = Writer {
                txn: position as u32,
                last: last.get(key) == Some(value),
            };
            if writers.insert((*key, *value), writer).is_some() {
                return Err(ModelError::Malformed {
                    index: txn.invoke_index,
                    reason: "a value written twice to one key (rw-register values must be unique)",
                });
            }
        }
    }
    Ok(writers)
}

/// Per transaction: `ok`, or (from read committed up) `info` with a final write an `ok`
/// transaction read.
fn committed(txns: &[RwTxn], writers: &HashMap<(u64, u64), Writer>, level: Isolation) -> Vec<bool> {
    let mut committed: Vec<bool> = txns.iter().map(|txn| txn.outcome == Outcome::Ok).collect();
    if level < Isolation::ReadCommitted {
        return committed;
    }
    for (position, txn) in txns.iter().enumerate() {
        if txn.outcome != Outcome::Ok {
            continue;
        }
        for micro_op in &txn.micro_ops {
            let RwMicroOp::Read {
                key,
                value: Some(Some(value)),
            } = micro_op
            else {
                continue;
            };
            if let Some(writer) = writers.get(&(*key, *value)) {
                let writer_txn = &txns[writer.txn as usize];
                if writer.last && writer.txn as usize != position && writer_txn.outcome == Outcome::Unknown {
                    committed[writer.txn as usize] = true;
                }
            }
        }
    }
    committed
}

/// Walks every `ok` transaction's reads: reports `internal`, `garbage-read`, `G1a`, `G1b`
/// and non-repeatable reads; returns the reads of committed versions, and per
/// (transaction, key) what the version rules need.
fn read_observations(
    txns: &[RwTxn],
    writers: &HashMap<(u64, u64), Writer>,
    committed: &[bool],
    findings: &mut Findings,
) -> (Vec<Observation>, BTreeMap<(u32, u64), KeyAccess>) {
    let mut observations = Vec::new();
    let mut accesses: BTreeMap<(u32, u64), KeyAccess> = BTreeMap::new();
    for (position, txn) in txns.iter().enumerate() {
        if txn.outcome != Outcome::Ok {
            continue;
        }
        let position = position as u32;
        let mut own: HashMap<u64, u64> = HashMap::new();
        let mut non_repeatable_reported: BTreeSet<u64> = BTreeSet::new();
        for micro_op in &txn.micro_ops {
            let (key, read) = match micro_op {
                RwMicroOp::Write { key, value } => {
                    own.insert(*key, *value);
                    continue;
                }
                RwMicroOp::Read {
                    key,
                    value: Some(read),
                } => (*key, *read),
                // `extract` refuses ok transactions with unread reads.
                RwMicroOp::Read { value: None, .. } => continue,
            };
            let shown = versions::show_version(read);
            if let Some(written) = own.get(&key) {
                if read != Some(*written) {
                    findings.add(
                        AnomalyKind::Internal,
                        Some(key),
                        format!(
                            "{} wrote {written} to key {key}, then read it as {shown}",
                            txn.name()
                        ),
                        txn.ops().collect(),
                    );
                }
                continue;
            }
            let Some(version) =
                committed_version(txns, writers, committed, txn, position, key, read, findings)
            else {
                continue;
            };
            observations.push(Observation {
                txn: position,
                key,
                version,
            });
            let access = accesses.entry((position, key)).or_default();
            if let Some(first) = access.reads.first().copied() {
                if first != version && non_repeatable_reported.insert(key) {
                    let mut ops: Vec<u64> = txn.ops().collect();
                    for other in [first, version].into_iter().flatten() {
                        if let Some(writer) = writers.get(&(key, other)) {
                            ops.extend(txns[writer.txn as usize].ops());
                        }
                    }
                    findings.add(
                        AnomalyKind::GSingle,
                        Some(key),
                        format!(
                            "{} read key {key} as {} and then as {shown} (a non-repeatable read: whichever \
                             version came first, a cycle with one anti-dependency)",
                            txn.name(),
                            versions::show_version(first)
                        ),
                        ops,
                    );
                }
            }
            access.reads.push(version);
        }
        for (key, value) in final_writes(txn) {
            accesses.entry((position, key)).or_default().write = Some(value);
        }
    }
    (observations, accesses)
}

/// The committed version `read` (of `key`, by `reader` at `position`) saw, or `None` after
/// reporting why it is none: a value nobody wrote, one of a failed transaction, an
/// intermediate one, or the reader's own later write. A read of an `info` transaction not
/// known to have committed (read uncommitted) is no version and no anomaly.
#[allow(clippy::too_many_arguments)]
fn committed_version(
    txns: &[RwTxn],
    writers: &HashMap<(u64, u64), Writer>,
    committed: &[bool],
    reader: &RwTxn,
    position: u32,
    key: u64,
    read: Option<u64>,
    findings: &mut Findings,
) -> Option<Version> {
    let Some(value) = read else {
        return Some(None);
    };
    let Some(writer) = writers.get(&(key, value)) else {
        findings.add(
            AnomalyKind::GarbageRead,
            Some(key),
            format!(
                "{} read key {key} as {value}, which no transaction wrote to it",
                reader.name()
            ),
            reader.ops().collect(),
        );
        return None;
    };
    let writer_txn = &txns[writer.txn as usize];
    let both = || reader.ops().chain(writer_txn.ops()).collect::<Vec<u64>>();
    if writer.txn == position {
        findings.add(
            AnomalyKind::Internal,
            Some(key),
            format!(
                "{} read key {key} as {value}, which it writes only later",
                reader.name()
            ),
            reader.ops().collect(),
        );
        return None;
    }
    if writer_txn.outcome == Outcome::Failed {
        findings.add(
            AnomalyKind::G1a,
            Some(key),
            format!(
                "{} read key {key} as {value}, written by {}, which failed",
                reader.name(),
                writer_txn.name()
            ),
            both(),
        );
        return None;
    }
    if !writer.last {
        let later = final_writes(writer_txn).get(&key).copied().unwrap_or(value);
        findings.add(
            AnomalyKind::G1b,
            Some(key),
            format!(
                "{} read key {key} as {value}, an intermediate write of {}, which later wrote {later}",
                reader.name(),
                writer_txn.name()
            ),
            both(),
        );
        return None;
    }
    if !committed[writer.txn as usize] {
        return None;
    }
    Some(Some(value))
}

/// Two or more `ok` transactions whose first read of a key returned the same committed
/// version and which wrote the key: at most one of their writes came right after it.
fn report_lost_updates(txns: &[RwTxn], accesses: &BTreeMap<(u32, u64), KeyAccess>, findings: &mut Findings) {
    let mut based_on: BTreeMap<(u64, Version), Vec<u32>> = BTreeMap::new();
    for ((position, key), access) in accesses {
        if let (Some(first), Some(_)) = (access.reads.first(), access.write) {
            based_on.entry((*key, *first)).or_default().push(*position);
        }
    }
    for ((key, version), positions) in based_on {
        if positions.len() < 2 {
            continue;
        }
        let names: Vec<String> = positions
            .iter()
            .map(|position| txns[*position as usize].name())
            .collect();
        findings.add(
            AnomalyKind::LostUpdate,
            Some(key),
            format!(
                "{} all read key {key} as {} and then wrote it",
                names.join(", "),
                versions::show_version(version)
            ),
            positions
                .iter()
                .flat_map(|position| txns[*position as usize].ops())
                .collect(),
        );
    }
}

/// Reports the rules of the level contradicting each other on `key`.
fn report_contradiction(
    txns: &[RwTxn],
    writers: &HashMap<(u64, u64), Writer>,
    key: u64,
    contradiction: &versions::Contradiction,
    findings: &mut Findings,
) {
    let ops = contradiction
        .cycle
        .iter()
        .flatten()
        .filter_map(|value| writers.get(&(key, *value)))
        .flat_map(|writer| txns[writer.txn as usize].ops())
        .collect();
    findings.add(
        AnomalyKind::CyclicVersions,
        Some(key),
        format!(
            "key {key}: with \"{}\" the version order is cyclic: {} (that rule is not used for the key)",
            contradiction.rule,
            versions::show_cycle(&contradiction.cycle)
        ),
        ops,
    );
}

fn counts(txns: &[RwTxn], committed: &[bool]) -> TxnCounts {
    let mut counts = TxnCounts::default();
    for (txn, committed) in txns.iter().zip(committed) {
        match txn.outcome {
            Outcome::Ok => counts.ok += 1,
            Outcome::Failed => counts.failed += 1,
            Outcome::Unknown => {
                counts.info += 1;
                counts.info_observed += usize::from(*committed);
            }
        }
    }
    counts
}
